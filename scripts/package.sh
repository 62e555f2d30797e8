#!/usr/bin/env bash
# Builds the Debian package from debian/ with dpkg-buildpackage:
#   scripts/package.sh        # -> dist/pgsidecar_<version>_<arch>.deb (path printed last)
# It builds on a copy of the tree's files (tracked and new, not ignored) in a temp
# dir, so no build leftovers land in the tree and nothing is written beside it.
# Needs debhelper and go-md2man (scripts/deps.sh installs them). PACKAGE_OUT
# changes dist/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${PACKAGE_OUT:-$PWD/dist}"

version="$(dpkg-parsechangelog -S Version)"
cmake_version="$(sed -n 's/^project(pgsidecar VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)"
if [[ "${version%%[-+~]*}" != "$cmake_version" ]]; then
  echo "package.sh: debian/changelog says $version, CMakeLists.txt $cmake_version" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
src="$tmp/pgsidecar-$version"
mkdir "$src"
git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
  [[ -e "$f" ]] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$src"

(cd "$src" && dpkg-buildpackage -b -us -uc -j"$(nproc)" >"$tmp/build.log" 2>&1) || {
  tail -40 "$tmp/build.log" >&2
  echo "package.sh: dpkg-buildpackage failed" >&2
  exit 1
}
mkdir -p "$out"
deb="$(find "$tmp" -maxdepth 1 -name "pgsidecar_${version}_*.deb")"
cp "$deb" "$out/"
echo "$out/$(basename "$deb")"
