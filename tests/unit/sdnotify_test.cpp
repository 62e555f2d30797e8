// sd_notify messages arrive on $NOTIFY_SOCKET as systemd would receive them.
#include "systemd/sdnotify.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace {

class NotifySocket : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd_, 0);
    path_ = "/tmp/pgsidecar-sdnotify-" + std::to_string(::getpid());
    ::unlink(path_.c_str());
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    timeval timeout{2, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  void TearDown() override {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    ::unsetenv("WATCHDOG_PID");
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  std::string receive() {
    char buf[512];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n < 0 ? std::string("<nothing>") : std::string(buf, static_cast<std::size_t>(n));
  }

  int fd_ = -1;
  std::string path_;
};

TEST_F(NotifySocket, SendsEachStateAsOneDatagram) {
  sdnotify::ready();
  EXPECT_EQ(receive(), "READY=1");
  sdnotify::stopping();
  EXPECT_EQ(receive(), "STOPPING=1");
  sdnotify::watchdog();
  EXPECT_EQ(receive(), "WATCHDOG=1");
  sdnotify::status("two\nlines");
  EXPECT_EQ(receive(), "STATUS=two lines");
  sdnotify::reloading();
  EXPECT_EQ(receive().rfind("RELOADING=1\nMONOTONIC_USEC=", 0), 0u);
}

TEST_F(NotifySocket, WatchdogIntervalFollowsEnvironment) {
  EXPECT_EQ(sdnotify::watchdog_interval().count(), 0);
  ::setenv("WATCHDOG_USEC", "3000000", 1);
  EXPECT_EQ(sdnotify::watchdog_interval().count(), 3000000);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  EXPECT_EQ(sdnotify::watchdog_interval().count(), 3000000);
  ::setenv("WATCHDOG_PID", "1", 1);  // meant for another process
  EXPECT_EQ(sdnotify::watchdog_interval().count(), 0);
}

TEST(SdNotify, SilentWithoutNotifySocket) {
  ::unsetenv("NOTIFY_SOCKET");
  sdnotify::ready();  // must not crash or block
  SUCCEED();
}

}  // namespace
