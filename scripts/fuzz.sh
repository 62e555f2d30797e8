#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/*_fuzz.cpp) into build-fuzz/ with
# clang-14 + ASan/UBSan and runs each one for a bounded time, on a temp copy of
# its seed corpus (tests/fuzz/corpus/<name>/), so committed seeds stay as they are.
# Prints one line per target (executions, exec/s, corpus size, ok or CRASH with
# the reproducer) and exits non-zero on any finding.
#
#   scripts/fuzz.sh                          # every target, FUZZ_SECONDS each
#   scripts/fuzz.sh startup_packet config    # only these (name or name_fuzz)
#   scripts/fuzz.sh --runs 10000000 value_codec   # a number of executions, no time bound
#   scripts/fuzz.sh --list                   # the target names
#   scripts/fuzz.sh --no-build ...           # reuse build-fuzz/ as it is
#
# Environment: FUZZ_SECONDS (per target, default 60), FUZZ_RUNS (same as --runs),
# FUZZ_BUILD_DIR (default build-fuzz), FUZZ_OUT (logs and crash reproducers,
# default $FUZZ_BUILD_DIR/fuzz-out), FUZZ_JOBS (build parallelism, default nproc),
# FUZZ_ARGS (extra libFuzzer flags, e.g. "-only_ascii=1"). A tests/fuzz/<name>.dict
# is passed as -dict. Reproduce a finding: build-fuzz/tests/fuzz/<name>_fuzz <artifact>.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

seconds="${FUZZ_SECONDS:-60}"
runs="${FUZZ_RUNS:-}"
build=1
list=0
names=()
while (($#)); do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --runs=*) runs="${1#--runs=}"; shift ;;
    --seconds) seconds="$2"; shift 2 ;;
    --seconds=*) seconds="${1#--seconds=}"; shift ;;
    --no-build) build=0; shift ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) names+=("${1%_fuzz}"); shift ;;
  esac
done

all=()
for src in tests/fuzz/*_fuzz.cpp; do
  [[ -e "$src" ]] || continue
  n="${src##*/}"; all+=("${n%_fuzz.cpp}")
done
if ((list)); then printf '%s\n' "${all[@]}"; exit 0; fi
if ((${#names[@]} == 0)); then
  names=("${all[@]}")
else
  for n in "${names[@]}"; do
    [[ " ${all[*]} " == *" $n "* ]] || { echo "fuzz.sh: no target $n (have: ${all[*]})" >&2; exit 2; }
  done
fi
if ((${#names[@]} == 0)); then echo "fuzz.sh: no tests/fuzz/*_fuzz.cpp" >&2; exit 2; fi

build_dir="${FUZZ_BUILD_DIR:-build-fuzz}"
out="${FUZZ_OUT:-$build_dir/fuzz-out}"

# clang-14 and its libFuzzer/sanitizer runtimes (libclang-rt-14-dev holds
# libclang_rt.fuzzer*.a; libfuzzer-14-dev the standalone libFuzzer).
if ((build)); then
  pkgs=(clang-14 libclang-rt-14-dev libfuzzer-14-dev)
  missing=()
  for p in "${pkgs[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
    [[ "$status" == installed ]] || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if ((EUID != 0)); then
      echo "fuzz.sh: missing packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
      exit 1
    fi
    echo "fuzz.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi

  echo "== fuzz build ($build_dir)"
  t0=$SECONDS
  cmake -S . -B "$build_dir" -DPGSIDECAR_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build "$build_dir" -j "${FUZZ_JOBS:-$(nproc)}" --target "${names[@]/%/_fuzz}"
  echo "== fuzz build done ($((SECONDS - t0))s)"
fi

symbolizer="$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)"
[[ -z "$symbolizer" && -x /usr/lib/llvm-14/bin/llvm-symbolizer ]] && symbolizer=/usr/lib/llvm-14/bin/llvm-symbolizer
[[ -n "$symbolizer" ]] && export ASAN_SYMBOLIZER_PATH="$symbolizer"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

mkdir -p "$out"
work="$(mktemp -d /tmp/pgsidecar-fuzz.XXXXXX)"
trap 'rm -rf "$work"' EXIT

if [[ -n "$runs" ]]; then bound=(-runs="$runs"); mode="$runs runs"
else bound=(-max_total_time="$seconds"); mode="${seconds}s"; fi
read -r -a extra <<<"${FUZZ_ARGS:-}"

echo "== fuzzing ${#names[@]} target(s), $mode each; logs and reproducers in $out/"
lines=()
findings=0
for n in "${names[@]}"; do
  bin="$build_dir/tests/fuzz/${n}_fuzz"
  log="$out/$n.log"
  if [[ ! -x "$bin" ]]; then
    lines+=("$(printf '%-20s %s' "$n" "MISSING $bin (build failed?)")"); findings=$((findings + 1))
    echo "${lines[-1]}"; continue
  fi
  corpus="$work/$n"
  mkdir -p "$corpus"
  [[ -d "tests/fuzz/corpus/$n" ]] && cp -r "tests/fuzz/corpus/$n/." "$corpus/"
  seeds="$(find "$corpus" -type f | wc -l)"
  dict=()
  [[ -f "tests/fuzz/$n.dict" ]] && dict=(-dict="tests/fuzz/$n.dict")
  rm -f "$out/$n"-crash-* "$out/$n"-leak-* "$out/$n"-timeout-* "$out/$n"-oom-* "$out/$n"-slow-unit-*
  # A hard stop well past the libFuzzer bound, in case a run wedges outside an input.
  guard=()
  [[ -z "$runs" ]] && guard=(timeout --kill-after=30 $((seconds * 2 + 120)))
  t0=$SECONDS
  rc=0
  "${guard[@]}" "$bin" "${bound[@]}" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$out/$n-" "${dict[@]}" "${extra[@]}" "$corpus" >"$log" 2>&1 || rc=$?
  secs=$((SECONDS - t0))
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  size="$(find "$corpus" -type f | wc -l)"
  artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
  if ((rc == 0)); then
    result="ok"
  else
    findings=$((findings + 1))
    kind="$(grep -o -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer): [a-z-]+' "$log" || true)"
    grep -q -m1 'runtime error:' "$log" && kind="${kind:-UBSan runtime error}"
    grep -q -m1 'check failed:' "$log" && kind="${kind:-$(grep -m1 'check failed:' "$log")}"
    ((rc == 124 || rc == 137)) && kind="hung past the time bound"
    result="CRASH ${artifact:-(no artifact)} [${kind:-exit $rc}] log $log"
  fi
  lines+=("$(printf '%-20s execs %-10s exec/s %-7s corpus %5s (%s seeds)  %4ss  %s' \
    "$n" "${execs:-?}" "${rate:-?}" "$size" "$seeds" "$secs" "$result")")
  echo "${lines[-1]}"
  if ((rc != 0)); then
    echo "---- $n: the report (full log: $log)" >&2
    { grep -m1 -A30 -E 'ERROR: |runtime error:|check failed:' "$log" || tail -40 "$log"; } >&2
    echo "---- reproduce: $bin ${artifact:-<artifact>}" >&2
  fi
done

echo "== fuzz summary ($mode per target)"
printf '%s\n' "${lines[@]}"
if ((findings)); then
  echo "== fuzz: $findings target(s) with findings" >&2
  exit 1
fi
echo "== fuzz: no findings"
