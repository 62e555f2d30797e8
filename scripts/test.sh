#!/usr/bin/env bash
# Runs every test: installs deps, builds into build/, runs ctest (unit tests and
# integration tests, which start their own PostgreSQL under /tmp) and checks the
# systemd unit. SANITIZE=1 builds into build-asan/ with ASan+UBSan instead.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

build_dir=build
cmake_args=()
if [[ "${SANITIZE:-0}" == 1 ]]; then
  build_dir=build-asan
  cmake_args+=(-DPGSIDECAR_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
fi

echo "== configure + build ($build_dir)"
cmake -S . -B "$build_dir" "${cmake_args[@]}"
cmake --build "$build_dir" -j "$(nproc)"

# Run every check even after a failure, so one CI run reports all of them.
failed=()
echo "== ctest"
ctest --test-dir "$build_dir" --output-on-failure -j1 || failed+=(ctest)

echo "== systemd unit"
systemd/verify.sh "$build_dir/app/pgsidecar" || failed+=(systemd/verify.sh)

if ((${#failed[@]})); then
  echo "== FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "== all tests passed"
