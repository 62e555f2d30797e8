// `pgsidecar ctl ...`: the lockd client (docs/lockd-protocol.md).
#pragma once

namespace ctl {

// argv holds the arguments after "ctl". Returns the process exit status.
int main(int argc, char** argv);

}  // namespace ctl
