// lockd's pure parts: migration file names, version order, checksums, the
// incremental directory scan, and status evaluation.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "lockd/locks.h"
#include "lockd/manifest.h"
#include "lockd/migrations.h"

using conf::MigrationFormat;
using namespace lockd;

TEST(LockdManifest, ParsesGolangMigrateAndFlywayNames) {
  auto g = parse_file_name("0003_add_users.up.sql", MigrationFormat::GolangMigrate);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->first, "0003");
  EXPECT_EQ(g->second, "add_users");
  EXPECT_FALSE(parse_file_name("0003_add_users.down.sql", MigrationFormat::GolangMigrate));
  EXPECT_FALSE(parse_file_name("V1__init.sql", MigrationFormat::GolangMigrate));
  EXPECT_FALSE(parse_file_name("x_init.up.sql", MigrationFormat::GolangMigrate));
  EXPECT_FALSE(parse_file_name("3.up.sql", MigrationFormat::GolangMigrate));

  auto f = parse_file_name("V1_2__add_index.sql", MigrationFormat::Flyway);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->first, "1.2");
  EXPECT_EQ(f->second, "add_index");
  EXPECT_FALSE(parse_file_name("V1__.sql", MigrationFormat::Flyway));
  EXPECT_FALSE(parse_file_name("R__view.sql", MigrationFormat::Flyway));
  EXPECT_FALSE(parse_file_name("V1a__x.sql", MigrationFormat::Flyway));
  EXPECT_FALSE(parse_file_name("1_init.up.sql", MigrationFormat::Flyway));

  EXPECT_TRUE(parse_file_name("1_init.up.sql", MigrationFormat::Pgsidecar));
  EXPECT_TRUE(parse_file_name("V2__more.sql", MigrationFormat::Pgsidecar));
  EXPECT_FALSE(parse_file_name("README.md", MigrationFormat::Pgsidecar));
}

TEST(LockdManifest, VersionsCompareNumericallyPartByPart) {
  EXPECT_LT(compare_versions("2", "10"), 0);
  EXPECT_EQ(compare_versions("010", "10"), 0);
  EXPECT_GT(compare_versions("1.10", "1.9"), 0);
  EXPECT_EQ(compare_versions("1.0", "1"), 0);
  EXPECT_LT(compare_versions("1", "1.1"), 0);
  EXPECT_GT(compare_versions("20240101120000", "9"), 0);
}

TEST(LockdManifest, FlywayChecksumIgnoresLineEndingsAndBom) {
  int32_t unix_style = flyway_checksum("CREATE TABLE a (id int);\nSELECT 1;\n");
  EXPECT_EQ(flyway_checksum("CREATE TABLE a (id int);\r\nSELECT 1;\r\n"), unix_style);
  EXPECT_EQ(flyway_checksum("\xEF\xBB\xBF" "CREATE TABLE a (id int);\nSELECT 1;"), unix_style);
  EXPECT_NE(flyway_checksum("CREATE TABLE b (id int);\nSELECT 1;\n"), unix_style);
  // CRC32 of "abc" (a single line) is 0x352441C2.
  EXPECT_EQ(flyway_checksum("abc\n"), int32_t(0x352441C2));
}

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/lockd-unit-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf " + path).c_str()); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path + "/" + name) << text; }
};

}  // namespace

TEST(LockdManifest, ScanHashesOnlyChangedFiles) {
  TempDir d;
  d.write("1_a.up.sql", "create table a (id int);");
  d.write("2_b.up.sql", "create table b (id int);");
  d.write("2_b.down.sql", "drop table b;");
  d.write("notes.txt", "ignored");
  Manifest first = scan(d.path, MigrationFormat::Pgsidecar, Manifest{}, {}, true);
  ASSERT_EQ(first.error, "");
  ASSERT_EQ(first.files.size(), 2u);
  EXPECT_EQ(first.rehashed, 2);
  EXPECT_EQ(first.files[0].version, "1");
  EXPECT_EQ(first.files[1].name, "b");
  // echo -n 'create table a (id int);' | sha256sum
  EXPECT_EQ(first.files[0].sha256.size(), 64u);

  Manifest same = scan(d.path, MigrationFormat::Pgsidecar, first, {}, false);
  EXPECT_EQ(same.rehashed, 0);
  EXPECT_EQ(same.files[0].sha256, first.files[0].sha256);

  d.write("3_c.up.sql", "create table c (id int);");
  Manifest added = scan(d.path, MigrationFormat::Pgsidecar, same, {"3_c.up.sql"}, false);
  EXPECT_EQ(added.rehashed, 1);
  ASSERT_EQ(added.files.size(), 3u);

  d.write("1_a.up.sql", "create table a (id bigint);");   // an event names it
  Manifest edited = scan(d.path, MigrationFormat::Pgsidecar, added, {"1_a.up.sql"}, false);
  EXPECT_EQ(edited.rehashed, 1);
  EXPECT_NE(edited.files[0].sha256, first.files[0].sha256);
}

TEST(LockdManifest, DuplicateVersionsAndMissingDirectoryAreErrors) {
  TempDir d;
  d.write("1_a.up.sql", "select 1;");
  d.write("V1__b.sql", "select 2;");
  Manifest dup = scan(d.path, MigrationFormat::Pgsidecar, Manifest{}, {}, true);
  EXPECT_NE(dup.error.find("two migration files have version 1"), std::string::npos) << dup.error;
  EXPECT_TRUE(dup.files.empty());
  Manifest missing = scan(d.path + "/nope", MigrationFormat::Pgsidecar, Manifest{}, {}, true);
  EXPECT_NE(missing.error.find("cannot read migrations.dir"), std::string::npos) << missing.error;
}

namespace {

Manifest manifest_of(std::vector<std::pair<std::string, std::string>> version_sha) {
  Manifest m;
  for (auto& [v, sha] : version_sha) m.files.push_back({v, "m" + v, v + "_m.up.sql", sha, 0, 0, 0});
  return m;
}

}  // namespace

TEST(LockdEvaluate, PendingCurrentMismatchFailedUnknown) {
  Manifest m = manifest_of({{"1", "aa"}, {"2", "bb"}, {"3", "cc"}});
  History none{true, "", {}, false};
  Status s = evaluate(m, none, MigrationFormat::Pgsidecar);
  EXPECT_EQ(s.status, "pending");
  EXPECT_FALSE(s.head);
  EXPECT_EQ(s.pending, (std::vector<std::string>{"1", "2", "3"}));

  History all{true, "", {{"1", "aa", true, ""}, {"2", "bb", true, ""}, {"3", "cc", true, ""}}, false};
  s = evaluate(m, all, MigrationFormat::Pgsidecar);
  EXPECT_EQ(s.status, "current");
  EXPECT_EQ(s.head, "3");

  History edited{true, "", {{"1", "aa", true, ""}, {"2", "XX", true, ""}}, false};
  s = evaluate(m, edited, MigrationFormat::Pgsidecar);
  EXPECT_EQ(s.status, "checksum-mismatch");
  EXPECT_EQ(s.mismatched, (std::vector<std::string>{"2"}));
  EXPECT_EQ(s.pending, (std::vector<std::string>{"3"}));

  History failed{true, "", {{"1", "aa", true, ""}, {"2", "bb", false, "ERROR 42601: syntax error"}}, false};
  s = evaluate(m, failed, MigrationFormat::Pgsidecar);
  EXPECT_EQ(s.status, "failed");
  ASSERT_TRUE(s.failed);
  EXPECT_EQ(s.failed->version, "2");
  EXPECT_EQ(s.head, "1");

  History failed_then_edited{true, "", {{"1", "aa", true, ""}, {"2", "old", false, "ERROR 42601: syntax error"}}, false};
  s = evaluate(m, failed_then_edited, MigrationFormat::Pgsidecar);
  EXPECT_EQ(s.status, "pending");   // the edited file will be tried again
  EXPECT_FALSE(s.failed);
  EXPECT_EQ(s.pending, (std::vector<std::string>{"2", "3"}));

  History down{false, "connection refused", {}, false};
  s = evaluate(m, down, MigrationFormat::Pgsidecar);
  EXPECT_EQ(s.status, "unknown");
  EXPECT_EQ(s.reason, "connection refused");
}

TEST(LockdEvaluate, GolangMigrateHeadAndDirty) {
  Manifest m = manifest_of({{"1", ""}, {"2", ""}, {"10", ""}});
  Status s = evaluate(m, History{true, "", {{"2", "", true, ""}}, true}, MigrationFormat::GolangMigrate);
  EXPECT_EQ(s.status, "pending");
  EXPECT_EQ(s.head, "2");
  EXPECT_EQ(s.pending, (std::vector<std::string>{"10"}));
  s = evaluate(m, History{true, "", {{"10", "", false, "dirty"}}, true}, MigrationFormat::GolangMigrate);
  EXPECT_EQ(s.status, "failed");
}

TEST(LockdLocks, KeysAreStableAndDistinct) {
  EXPECT_EQ(lock_key("nightly"), lock_key("nightly"));
  EXPECT_NE(lock_key("nightly"), lock_key("nightly2"));
}
