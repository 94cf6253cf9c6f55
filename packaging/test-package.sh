#!/usr/bin/env bash
# Takes the amd64 package through its life on this machine: its contents, systemd-analyze,
# install, a run as the service user, the system calls of a traced run against the unit's
# filter, an upgrade over an edited conffile, remove, purge. Checks files, user and state at
# each step, and purges on any failure.
#
#   packaging/build-debs.sh amd64 && packaging/build-debs.sh --revision 2 amd64
#   sudo packaging/test-package.sh
#
# Needs root (it installs and purges the package), the two revisions of this machine's
# package in target/debs, systemd (for systemd-analyze) and strace
# (apt-get install -y systemd strace). packaging/check-debs.sh checks the binary and lintian.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
need() { command -v "$1" >/dev/null || fail "$1 is missing; $2"; }

[ "$(id -u)" = 0 ] || fail "run as root: this installs and purges the package"
need systemd-analyze "install it with: apt-get install -y systemd"
need strace "install it with: apt-get install -y strace"
if dpkg-query -W -f='${Status}' power-monitord 2>/dev/null | grep -q installed; then
  fail "power-monitord is already installed on this machine; purge it first"
fi

export DEBIAN_FRONTEND=noninteractive
pkg=power-monitord
unit=/lib/systemd/system/power-monitord.service
cleanup() {
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -qv not-installed; then
    apt-get purge -y -qq "$pkg" >/dev/null 2>&1 || dpkg --purge "$pkg" >/dev/null 2>&1 || true
  fi
  [ -n "${daemon_pid:-}" ] && kill "$daemon_pid" 2>/dev/null || true
}
trap cleanup EXIT

arch=$(dpkg --print-architecture)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
deb1=target/debs/${pkg}_${version}-1_${arch}.deb
deb2=target/debs/${pkg}_${version}-2_${arch}.deb
[ -f "$deb1" ] && [ -f "$deb2" ] ||
  fail "$deb1 and $deb2 are missing: packaging/build-debs.sh $arch && packaging/build-debs.sh --revision 2 $arch"
ok "testing $deb1 and $deb2"

echo "== contents"
listing=$(dpkg-deb -c "$deb1" | awk '{print $6}')
for path in \
  ./usr/bin/power-monitord \
  ./etc/power-monitord/config.toml \
  ./usr/lib/systemd/system/power-monitord.service \
  ./usr/share/power-monitord/grafana/power-monitord.json \
  ./usr/share/power-monitord/prometheus/power-monitord.rules.yml \
  ./usr/share/power-monitord/prometheus/power-monitord.rules.test.yml \
  ./usr/share/power-monitord/prometheus/prometheus.yml \
  ./usr/share/power-monitord/grafana-provisioning/dashboards/power-monitord.yml \
  ./usr/share/power-monitord/grafana-provisioning/datasources/power-monitord.yml \
  ./usr/share/doc/power-monitord/README.md \
  ./usr/share/doc/power-monitord/docs/home-assistant.md \
  ./usr/share/doc/power-monitord/docs/battery.md \
  ./usr/share/doc/power-monitord/docs/hardware.md \
  ./usr/share/doc/power-monitord/docs/images/status-phone.png \
  ./usr/share/doc/power-monitord/docs/images/dashboard-layout.svg \
  ./usr/share/doc/power-monitord/examples/config.toml \
  ./usr/share/power-monitord/prometheus/power-monitord.rules.days.test.yml \
  ./usr/share/doc/power-monitord/copyright \
  ./usr/share/doc/power-monitord/changelog.Debian.gz \
  ./usr/share/man/man8/power-monitord.8.gz; do
  grep -qx -- "$path" <<<"$listing" || fail "$path is not in the package"
done
ok "every path is in the package"

echo "== install"
apt-get install -y -qq "./$deb1" </dev/null >/dev/null || fail "apt-get install $deb1"
for f in /usr/bin/power-monitord /etc/power-monitord/config.toml "$unit" \
         /usr/share/power-monitord/grafana/power-monitord.json \
         /usr/share/power-monitord/prometheus/power-monitord.rules.yml \
         /usr/share/doc/power-monitord/copyright /usr/share/man/man8/power-monitord.8.gz; do
  [ -e "$f" ] || fail "$f is missing after install"
done
dpkg-query -W -f='${Conffiles}' "$pkg" | grep -q /etc/power-monitord/config.toml \
  || fail "/etc/power-monitord/config.toml is not a conffile"
getent passwd power-monitord | grep -q ':/var/lib/power-monitord:/usr/sbin/nologin$' \
  || fail "system user power-monitord missing or wrong: $(getent passwd power-monitord)"
id -nG power-monitord | tr ' ' '\n' | grep -qx i2c || fail "power-monitord is not in group i2c"
[ "$(stat -c '%U:%G %a' /var/lib/power-monitord)" = "power-monitord:power-monitord 750" ] \
  || fail "state directory: $(stat -c '%U:%G %a' /var/lib/power-monitord)"
power-monitord check-config >/dev/null || fail "the installed config does not check"
ok "files, conffile, user in group i2c, state directory"

echo "== systemd-analyze"
out=$(systemd-analyze verify --man=no "$unit" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify complains: $out"
score() { systemd-analyze security --offline=true "$1" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p'; }
ours=$(score "$unit")
awk -v s="$ours" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure $ours is above 2.0"
ok "verify is silent; exposure $ours"
for peer in /lib/systemd/system/prometheus-node-exporter.service /lib/systemd/system/prometheus.service; do
  [ -f "$peer" ] && echo "   for comparison: $(basename "$peer") $(score "$peer")"
done

echo "== run as the service user"
setpriv --reuid=power-monitord --regid=power-monitord --init-groups \
  env STATE_DIRECTORY=/var/lib/power-monitord \
  /usr/bin/power-monitord --config /usr/share/doc/power-monitord/examples/simulated.toml \
  --listen 127.0.0.1:0 2>/tmp/power-monitord-package-test.log &
daemon_pid=$!
for _ in $(seq 50); do grep -q 'ready:' /tmp/power-monitord-package-test.log && break; sleep 0.1; done
sleep 2
kill -TERM "$daemon_pid"; wait "$daemon_pid" || fail "the daemon did not stop cleanly: $(cat /tmp/power-monitord-package-test.log)"
daemon_pid=
[ "$(stat -c %U /var/lib/power-monitord/state.json)" = power-monitord ] || fail "no state written by the service user"
grep -q '"ac001"' /var/lib/power-monitord/state.json || fail "state.json holds no totals"
ok "the service user runs the daemon and writes its state"

echo "== system calls against the unit's filter"
# Every system call a run makes (start, sampling, each endpoint, gzip, SIGTERM, the final
# save) must be in SystemCallFilter=@system-service and not in ~@privileged @resources.
expand() {
  systemd-analyze syscall-filter "$1" | tail -n +2 | sed 's/^ *//' | grep -v -e '^#' -e '^$' |
    while read -r w; do case "$w" in @*) expand "$w" ;; *) echo "$w" ;; esac; done
}
get() { exec 3<>"/dev/tcp/${1%:*}/${1#*:}"; printf 'GET %s HTTP/1.0\r\nAccept-Encoding: %s\r\n\r\n' "$2" "${3:-identity}" >&3; cat <&3 >/dev/null; exec 3<&-; }
trace=$(mktemp -d)
STATE_DIRECTORY="$trace/state" strace -f -qq -o "$trace/calls" /usr/bin/power-monitord \
  --config /usr/share/doc/power-monitord/examples/simulated.toml --listen 127.0.0.1:0 2>"$trace/log" &
strace_pid=$!
sleep 0.5
daemon_pid=$(pgrep -P "$strace_pid" -x power-monitord) || fail "no traced daemon"
for _ in $(seq 100); do grep -q 'ready:' "$trace/log" && break; sleep 0.1; done
addr=$(sed -n 's|.*listening on http://\([^/]*\)/.*|\1|p' "$trace/log" | head -1)
[ -n "$addr" ] || fail "the traced daemon did not start: $(cat "$trace/log")"
sleep 2
get "$addr" /metrics; get "$addr" /metrics gzip; get "$addr" /; get "$addr" /api/readings; get "$addr" /healthz
# strace does not pass signals on: stop the daemon itself, then collect strace.
kill -TERM "$daemon_pid"; wait "$strace_pid" || true
daemon_pid=
awk '{ split($2, a, "("); print a[1] }' "$trace/calls" | grep -E '^[a-z_0-9]+$' | sort -u >"$trace/used"
expand @system-service | sort -u >"$trace/allowed"
{ expand @privileged; expand @resources; } | sort -u >"$trace/denied"
outside=$(comm -23 "$trace/used" "$trace/allowed" | tr '\n' ' ')
denied=$(comm -12 "$trace/used" "$trace/denied" | tr '\n' ' ')
[ -z "$outside" ] || fail "system calls outside @system-service: $outside"
[ -z "$denied" ] || fail "system calls the unit denies: $denied"
ok "$(wc -l <"$trace/used") distinct system calls, all allowed by the unit's filter"
rm -rf "$trace"

echo "== upgrade over an edited conffile"
echo "# edited by the package test" >>/etc/power-monitord/config.toml
apt-get install -y -qq "./$deb2" </dev/null >/dev/null || fail "apt-get install $deb2"
[ "$(dpkg-query -W -f='${Version}' "$pkg")" = "${version}-2" ] || fail "the upgrade did not install ${version}-2"
grep -q '^# edited by the package test$' /etc/power-monitord/config.toml || fail "the upgrade lost the edit to the conffile"
grep -q '"ac001"' /var/lib/power-monitord/state.json || fail "the upgrade lost the state"
getent passwd power-monitord >/dev/null || fail "the upgrade lost the user"
ok "version ${version}-2; the edited conffile, the state and the user are kept"

echo "== remove"
apt-get remove -y -qq "$pkg" </dev/null >/dev/null || fail "apt-get remove"
[ ! -e /usr/bin/power-monitord ] || fail "the binary is still there after remove"
[ -f /etc/power-monitord/config.toml ] || fail "remove deleted the conffile"
[ -f /var/lib/power-monitord/state.json ] || fail "remove deleted the state"
getent passwd power-monitord >/dev/null || fail "remove deleted the user"
ok "binary gone; conffile, state and user kept"

echo "== purge"
apt-get purge -y -qq "$pkg" </dev/null >/dev/null || fail "apt-get purge"
[ ! -e /etc/power-monitord ] || fail "/etc/power-monitord is still there after purge"
[ ! -e /var/lib/power-monitord ] || fail "/var/lib/power-monitord is still there after purge"
! getent passwd power-monitord >/dev/null || fail "the user is still there after purge"
! getent group power-monitord >/dev/null || fail "the group is still there after purge"
[ ! -e /etc/systemd/system/multi-user.target.wants/power-monitord.service ] || fail "the enablement symlink survived purge"
getent group i2c >/dev/null || fail "purge removed the shared group i2c"
ok "configuration, state, user and group gone; group i2c kept"

echo "PASS: package life cycle"
