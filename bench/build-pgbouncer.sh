#!/usr/bin/env bash
# Builds PgBouncer from a release tag into /tmp/pgbouncer-<major.minor>/bin/pgbouncer,
# the peer bench/compare.sh and bench/startup-mem.sh compare against
# (PGBOUNCER_BIN=/tmp/pgbouncer-1.25/bin/pgbouncer). Debian 12 ships 1.18.
#
#   bench/build-pgbouncer.sh GIT_DIR [TAG]
#
# GIT_DIR is a git directory (or work tree) of github.com/pgbouncer/pgbouncer that
# holds TAG (default pgbouncer_1_25_2); its tags include libusual (lib/) as a tree.
# The tag's files are exported with git archive into a scratch directory, so GIT_DIR
# is only read. Build dependencies come from apt-get. Only the binary is built: the
# man pages need pandoc, which the benchmarks do not.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

git_dir="${1:-}"
tag="${2:-pgbouncer_1_25_2}"
[[ -n "$git_dir" ]] || die "usage: $bench_name GIT_DIR [TAG]"
git --git-dir="$git_dir" rev-parse -q --verify "$tag^{commit}" >/dev/null 2>&1 ||
  git -C "$git_dir" rev-parse -q --verify "$tag^{commit}" >/dev/null 2>&1 ||
  die "no tag $tag in $git_dir"
version="$(sed -E 's/^pgbouncer_([0-9]+)_([0-9]+).*/\1.\2/' <<<"$tag")"
prefix="/tmp/pgbouncer-$version"
src="/tmp/pgbouncer-$version-src"

((EUID == 0)) || die "run as root (apt-get)"
need=()
for p in autoconf automake libtool pkg-config libevent-dev libssl-dev libc-ares-dev python3; do
  [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" == installed ]] || need+=("$p")
done
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

rm -rf "$src"
mkdir -p "$src"
{ git --git-dir="$git_dir" archive "$tag" 2>/dev/null || git -C "$git_dir" archive "$tag"; } | tar x -C "$src"
echo "== building PgBouncer $tag in $src"
(
  cd "$src"
  ./autogen.sh >build.log 2>&1
  ./configure --prefix="$prefix" >>build.log 2>&1
  make -j "$(nproc)" pgbouncer >>build.log 2>&1
) || { tail -20 "$src/build.log" >&2; die "build failed (log: $src/build.log)"; }
install -D -m 755 "$src/pgbouncer" "$prefix/bin/pgbouncer"
"$prefix/bin/pgbouncer" --version | head -1
echo "$prefix/bin/pgbouncer"
