#!/usr/bin/env bash
# Builds the Debian package (scripts/package.sh) and walks it through what a host
# does with it, as root: install, check, upgrade, remove, purge. Fails on the
# first check that does not hold. scripts/test.sh runs it under CI=true / --full.
#   - install: files in place, /etc/pgsidecar/pgsidecar.yaml a conffile,
#     the pgsidecar user, /etc/pgsidecar readable by it and no one else,
#     `pgsidecar --version`, `--check-config` of the shipped config as that user,
#     the daemon starting on it (GET /healthz), `systemd-analyze verify` and
#     `security` of the unit, man pages rendering without markup warnings;
#   - upgrade to a higher version keeps a local edit of the conffile;
#   - remove keeps the conffile, purge removes it; afterwards the file tree is
#     what it was before install. The pgsidecar user stays (debian/pgsidecar.postrm).
# PACKAGE_DEB skips the build and tests that file.
set -euo pipefail
cd "$(dirname "$0")/../.."

((EUID == 0)) || { echo "package_test: needs root (dpkg -i)" >&2; exit 1; }
fail() { echo "package_test: FAILED: $*" >&2; exit 1; }
step() { echo "package_test: $*"; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
deb="${PACKAGE_DEB:-}"
if [[ -z "$deb" ]]; then
  PACKAGE_OUT="$tmp" scripts/package.sh >"$tmp/package.out" || fail "scripts/package.sh"
  deb="$(tail -1 "$tmp/package.out")"
fi
version="$(dpkg-deb -f "$deb" Version)"
conf=/etc/pgsidecar/pgsidecar.yaml
unit=/lib/systemd/system/pgsidecar.service

if dpkg-query -W -f='${db:Status-Status}' pgsidecar 2>/dev/null | grep -qv not-installed; then
  step "purging an earlier install first"
  dpkg -P pgsidecar >/dev/null
fi

# Every path in the trees a package touches, minus dpkg's and apt's own state,
# caches and logs, and the backups shadow's tools write beside /etc/passwd.
snapshot() {
  find /etc /lib /usr /var/lib /opt -xdev \
    \( -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/lib/man-db \) -prune -o -print 2>/dev/null |
    grep -Ev '^/etc/(passwd|group|shadow|gshadow)-$' | sort
}
snapshot >"$tmp/before"

step "install $deb"
dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -i"; }
for f in /usr/bin/pgsidecar "$conf" "$unit" /usr/share/pgsidecar/pgsidecar-invalidate.sql \
         /usr/share/pgsidecar/grafana-dashboard.json /usr/share/man/man1/pgsidecar.1.gz \
         /usr/share/man/man5/pgsidecar.yaml.5.gz /usr/share/doc/pgsidecar/README.md \
         /usr/share/doc/pgsidecar/docs/configuration.md; do
  [[ -e "$f" ]] || fail "$f is not installed"
done
dpkg-query -W -f='${Conffiles}\n' pgsidecar | grep -q "^ $conf " || fail "$conf is not a conffile"
id pgsidecar >/dev/null 2>&1 || fail "no pgsidecar user"
[[ "$(stat -c '%U:%G %a' /etc/pgsidecar)" == "root:pgsidecar 750" ]] ||
  fail "/etc/pgsidecar is $(stat -c '%U:%G %a' /etc/pgsidecar), want root:pgsidecar 750"

[[ "$(/usr/bin/pgsidecar --version)" == *"${version%%[-+~]*}"* ]] ||
  fail "pgsidecar --version says '$(/usr/bin/pgsidecar --version)', the package is $version"
runuser -u pgsidecar -- /usr/bin/pgsidecar -c "$conf" --check-config ||
  fail "--check-config of the shipped config, as the pgsidecar user"

step "start on the shipped config as the pgsidecar user"
install -d -o pgsidecar -g pgsidecar -m 0750 /run/pgsidecar   # what RuntimeDirectory= makes
runuser -u pgsidecar -- /usr/bin/pgsidecar -c "$conf" 2>"$tmp/daemon.log" &
daemon=$!
healthy=0
for _ in $(seq 100); do
  if curl -fsS http://127.0.0.1:9127/healthz >/dev/null 2>&1; then healthy=1; break; fi
  kill -0 "$daemon" 2>/dev/null || break
  sleep 0.1
done
[[ -S /run/pgsidecar/lockd.sock ]] || healthy=0
kill -TERM "$daemon" 2>/dev/null || true
wait "$daemon" || true
rm -rf /run/pgsidecar
((healthy)) || { cat "$tmp/daemon.log" >&2; fail "the daemon did not answer /healthz with its lockd socket up"; }

step "systemd-analyze"
out="$(systemd-analyze verify --man=no "$unit" 2>&1)" || { echo "$out" >&2; fail "systemd-analyze verify"; }
grep -q pgsidecar.service <<<"$out" && { echo "$out" >&2; fail "systemd-analyze verify warns"; }
exposure="$(systemd-analyze security --offline=true "$unit" 2>&1 | sed -n 's/.*exposure level for pgsidecar.service: \([0-9.]*\).*/\1/p')"
[[ -n "$exposure" ]] || fail "systemd-analyze security printed no exposure level"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "systemd-analyze security exposure $exposure, want <= 2.0"
step "exposure level $exposure"

# Broken markup warns; a code line too long for 80 columns (a JSON log line) only
# "cannot adjust" or "can't break", which is layout, not an error.
for page in /usr/share/man/man1/pgsidecar.1.gz /usr/share/man/man5/pgsidecar.yaml.5.gz; do
  warnings="$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null |
    grep -v -e "cannot adjust line" -e "can't break line" || true)"
  [[ -z "$warnings" ]] || { echo "$warnings" >&2; fail "$page renders with warnings"; }
done

step "upgrade to $version+upgradetest keeps a local edit of $conf"
echo "# a local edit" >>"$conf"
dpkg-deb -R "$deb" "$tmp/next"
sed -i "s/^Version: .*/Version: $version+upgradetest/" "$tmp/next/DEBIAN/control"
dpkg-deb -b "$tmp/next" "$tmp/next.deb" >/dev/null
dpkg -i "$tmp/next.deb" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -i (upgrade)"; }
[[ "$(dpkg-query -W -f='${Version}' pgsidecar)" == "$version+upgradetest" ]] || fail "the upgrade did not land"
grep -q '^# a local edit$' "$conf" || fail "the upgrade lost the local edit of $conf"
[[ "$(stat -c '%U:%G %a' /etc/pgsidecar)" == "root:pgsidecar 750" ]] || fail "the upgrade reset /etc/pgsidecar's mode"

step "remove keeps $conf, purge leaves the tree as it was"
dpkg -r pgsidecar >/dev/null 2>&1 || fail "dpkg -r"
[[ ! -e /usr/bin/pgsidecar ]] || fail "dpkg -r left /usr/bin/pgsidecar"
[[ -e "$conf" ]] || fail "dpkg -r removed the conffile"
dpkg -P pgsidecar >/dev/null 2>&1 || fail "dpkg -P"
[[ -z "$(dpkg-statoverride --list /etc/pgsidecar)" ]] || fail "purge left the statoverride of /etc/pgsidecar"
snapshot >"$tmp/after"
if ! diff "$tmp/before" "$tmp/after" >"$tmp/diff"; then
  cat "$tmp/diff" >&2
  fail "install + upgrade + purge changed the file tree (above: < gone, > stray)"
fi
step "ok"
