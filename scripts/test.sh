#!/usr/bin/env bash
# Runs every test: installs deps, builds into build/, runs ctest (unit tests and
# integration tests, which start their own PostgreSQL under /tmp) and checks the
# systemd unit. SANITIZE=1 builds into build-asan/ with ASan+UBSan instead.
#
# With CI=true (as .ci/run has it) or --full, four more stages follow:
#   budget  bench/budget.sh on build/'s daemon: instructions per transaction
#         (valgrind) within 10% of bench/budgets.json; skipped with SANITIZE=1
#   package  tests/package/package_test.sh: builds the Debian package, installs,
#         upgrades, removes and purges it on this machine (needs root)
#   asan  the ASan/UBSan build (build-asan/) and ctest under it (ASAN_TESTS
#         picks the tests: "all" (default), "unit", or a ctest -L label regex);
#         skipped when SANITIZE=1 already made the main run a sanitizer run
#   fuzz  scripts/fuzz.sh: every tests/fuzz target for FUZZ_SECONDS (30 here)
# FULL=0 turns them off under CI=true; BUDGET=0 / PACKAGE=0 / ASAN=0 / FUZZ=0 turn off one of them.
# Every stage prints a header and its duration; all stages run even after a
# failure, and the failures are listed at the end. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

full="${FULL:-}"
for arg in "$@"; do
  case "$arg" in
    --full) full=1 ;;
    *) echo "test.sh: unknown argument $arg (only --full)" >&2; exit 2 ;;
  esac
done
[[ -z "$full" && "${CI:-}" == true ]] && full=1
[[ "$full" == 1 ]] || full=0

jobs="$(nproc)"
failed=()
durations=()
started=$SECONDS

# stage NAME COMMAND...: header, run, duration; a failure is recorded, not fatal.
stage() {
  local name="$1" t0=$SECONDS rc=0
  shift
  echo "== $name"
  "$@" || rc=$?
  local took=$((SECONDS - t0))
  durations+=("$(printf '%-16s %5ss  %s' "$name" "$took" "$([[ $rc == 0 ]] && echo ok || echo FAILED)")")
  if ((rc)); then
    failed+=("$name")
    echo "== $name: FAILED (exit $rc, ${took}s)" >&2
  else
    echo "== $name: ok (${took}s)"
  fi
  return 0
}

build() {   # build DIR CMAKE_ARGS...
  local dir="$1"
  shift
  cmake -S . -B "$dir" "$@" && cmake --build "$dir" -j "$jobs"
}

sanitizer_env() {
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
}

stage deps scripts/deps.sh
((${#failed[@]} == 0)) || { echo "== FAILED: deps" >&2; exit 1; }

build_dir=build
cmake_args=()
if [[ "${SANITIZE:-0}" == 1 ]]; then
  build_dir=build-asan
  cmake_args+=(-DPGSIDECAR_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
  sanitizer_env
fi

stage "build ($build_dir)" build "$build_dir" "${cmake_args[@]}"
if ((${#failed[@]})); then
  echo "== FAILED: ${failed[*]}" >&2
  exit 1
fi
stage ctest ctest --test-dir "$build_dir" --output-on-failure -j1
stage "systemd unit" systemd/verify.sh "$build_dir/app/pgsidecar"

if ((full)); then
  if [[ "${BUDGET:-1}" == 1 && "$build_dir" == build ]]; then
    stage "instruction budget" env PGSIDECAR_BIN="$PWD/$build_dir/app/pgsidecar" bench/budget.sh
  fi
  if [[ "${PACKAGE:-1}" == 1 ]]; then
    stage package tests/package/package_test.sh
  fi
  if [[ "${ASAN:-1}" == 1 && "$build_dir" != build-asan ]]; then
    asan_ctest() {
      local select=()
      case "${ASAN_TESTS:-all}" in
        all) ;;
        unit) select=(-LE integration) ;;
        *) select=(-L "$ASAN_TESTS") ;;
      esac
      (sanitizer_env && ctest --test-dir build-asan --output-on-failure -j1 "${select[@]}")
    }
    stage "asan build" build build-asan -DPGSIDECAR_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
    if [[ " ${failed[*]} " == *" asan build "* ]]; then
      echo "== asan ctest: skipped, the build failed"
    else
      stage "asan ctest (${ASAN_TESTS:-all})" asan_ctest
    fi
  fi
  if [[ "${FUZZ:-1}" == 1 ]]; then
    stage fuzz env FUZZ_SECONDS="${FUZZ_SECONDS:-30}" scripts/fuzz.sh
  fi
fi

echo "== stages ($((SECONDS - started))s in all)"
printf '%s\n' "${durations[@]}"
if ((${#failed[@]})); then
  echo "== FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "== all tests passed"
