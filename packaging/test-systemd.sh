#!/usr/bin/env bash
# The package under a real systemd: boot this machine's systemd as PID 1 in throwaway
# namespaces (mount, PID, network with loopback only, UTS, IPC, cgroup) on an overlay of /,
# install the .deb inside, and check what a user relies on:
#
#   start reaches active through READY=1, with a STATUS line; systemctl reload applies an
#   edited configuration and a broken edit is refused while the service runs on; journal
#   priorities (info 6, warning 4) with the SENSOR=/KIND= fields; kill -9 of the main PID
#   restarts it without an energy counter going backwards; SIGSTOP ends in a watchdog abort
#   and a restart; stop saves the totals; purge is silent and leaves nothing behind.
#
#   sudo packaging/test-systemd.sh path/to/power-monitord_<version>_<arch>.deb
#
# The host keeps its PID 1, mounts, network, cgroups and root file system: everything this
# makes lives in the namespaces and in a temporary directory, and goes when it ends (pass or
# fail). It kills only the processes it started.
set -euo pipefail

deb=$(readlink -f "${1:?usage: $0 path/to/power-monitord.deb}")
[ "$(id -u)" = 0 ] || { echo "run as root: it creates namespaces and mounts" >&2; exit 1; }
for tool in unshare nsenter setpriv /lib/systemd/systemd; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y systemd util-linux)" >&2; exit 1; }
done

# The container's PID 1 runs this script again, in the new namespaces, with the same work dir.
work=${PM_SYSTEMD_WORK:-$(mktemp -d /tmp/pm-systemd.XXXXXX)}
root=$work/root
cgroup_parent=/sys/fs/cgroup/unified
[ -f $cgroup_parent/cgroup.procs ] || cgroup_parent=/sys/fs/cgroup
cgroup=$cgroup_parent/pm-systemd-$$
# Capabilities the container never gets (host-global effects).
drop=-sys_module,-sys_time,-audit_control,-sys_rawio,-syslog,-mac_admin,-mac_override,-sys_pacct,-wake_alarm
# Units of the host image that have nothing to do with the test; masked in the overlay only.
mask="postgresql.service prometheus.service prometheus-node-exporter.service mosquitto.service
 smartmontools.service smartd.service e2scrub_reap.service e2scrub_all.timer
 systemd-timesyncd.service systemd-random-seed.service apt-daily.timer apt-daily-upgrade.timer
 man-db.timer dpkg-db-backup.timer fstrim.timer getty@tty1.service console-getty.service
 systemd-pstore.service prometheus-node-exporter-apt.timer prometheus-node-exporter-smartmon.timer
 prometheus-node-exporter-nvme.timer prometheus-node-exporter-ipmitool-sensor.timer
 prometheus-node-exporter-mellanox-hca-temp.timer openipmi.service"

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

inner() {  # PID 1 of the new PID namespace, in the new mount/net/uts/ipc/cgroup namespaces
  set -e
  mount --make-rprivate /
  mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/ovl" "$root"
  mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
  mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup"
  mount -t tmpfs -o mode=755,nosuid,size=64m tmpfs "$root/dev"
  ( cd "$root/dev"
    mknod -m 666 null c 1 3; mknod -m 666 zero c 1 5; mknod -m 666 full c 1 7
    mknod -m 666 random c 1 8; mknod -m 666 urandom c 1 9; mknod -m 666 tty c 5 0
    mkdir -m 755 pts; mkdir -m 1777 shm
    ln -s pts/ptmx ptmx; ln -s /proc/self/fd fd; ln -s fd/0 stdin; ln -s fd/1 stdout; ln -s fd/2 stderr )
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5,nosuid,noexec devpts "$root/dev/pts"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
  mount -t tmpfs -o mode=755,nosuid,nodev,size=256m tmpfs "$root/run"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
  echo pm-systemd-test > "$root/etc/hostname"; hostname pm-systemd-test
  rm -f "$root/etc/machine-id"; tr -d - < /proc/sys/kernel/random/uuid > "$root/etc/machine-id"
  for u in $mask; do ln -sfn /dev/null "$root/etc/systemd/system/$u"; done
  rm -f "$root/usr/sbin/policy-rc.d"   # a Docker-image leftover that blocks postinst's start
  mkdir -p "$root/root/pm"; cp "$deb" "$root/root/pm/power-monitord.deb"
  mkdir -p "$root/.oldroot"
  cd "$root"; pivot_root . .oldroot; umount -l /.oldroot; rmdir /.oldroot; cd /
  exec setpriv --bounding-set "$drop" -- env -i container=other TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --log-level=info --show-status=no
}

if [ -n "${PM_SYSTEMD_WORK:-}" ]; then inner; fi

pid1() {
  local u c; u=$(cat "$work/unshare.pid" 2>/dev/null) || return 1
  [ -d "/proc/$u" ] || return 1
  c=$(awk '{print $1}' "/proc/$u/task/$u/children" 2>/dev/null)
  [ -n "$c" ] && [ -d "/proc/$c" ] && echo "$c"
}

ex() {  # run a command inside the container
  local p; p=$(pid1) || fail "the container is not running"
  nsenter -t "$p" -m -u -i -n -p -C -r -w \
    setpriv --bounding-set "$drop" -- env -i TERM=dumb LANG=C.UTF-8 HOME=/root SYSTEMD_PAGER= \
    SYSTEMD_COLORS=0 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

down() {
  local p u
  if p=$(pid1); then
    ex systemctl poweroff --no-block >/dev/null 2>&1 || true
    for _ in $(seq 40); do [ -d "/proc/$p" ] || break; sleep 0.25; done
    # PID 1 of our PID namespace: killing it takes the whole namespace down.
    [ -d "/proc/$p" ] && kill -KILL "$p" 2>/dev/null || true
  fi
  if u=$(cat "$work/unshare.pid" 2>/dev/null); then
    for _ in $(seq 40); do [ -d "/proc/$u" ] || break; sleep 0.25; done
  fi
  [ -d "$cgroup" ] && find "$cgroup" -depth -type d -exec rmdir {} \; 2>/dev/null
  [ -d "$cgroup" ] && echo "warning: $cgroup is still there" >&2
  rm -rf "$work"
}
trap down EXIT

echo "== boot systemd in namespaces"
mkdir -p "$work/upper" "$work/ovl" "$root" "$cgroup"
setsid bash -c "echo \$\$ > $cgroup/cgroup.procs; exec env PM_SYSTEMD_WORK=$work unshare --fork \
  --pid --mount --net --uts --ipc --cgroup --propagation private -- bash $(readlink -f "$0") $deb" \
  </dev/null >"$work/console.log" 2>&1 &
echo $! > "$work/unshare.pid"
for _ in $(seq 40); do pid1 >/dev/null && break; sleep 0.25; done
pid1 >/dev/null || fail "systemd did not start: $(cat "$work/console.log")"
echo "$(cat "$work/unshare.pid")" > "$cgroup_parent/cgroup.procs" 2>/dev/null || true
state=""
for _ in $(seq 120); do
  state=$(ex systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 0.5
done
case "$state" in running|degraded) ok "systemd is up ($state)" ;; *) fail "systemd: $state" ;; esac

metric() {  # metric NAME SENSOR: its value on the daemon's /metrics, inside the container
  ex curl -sf --max-time 5 http://127.0.0.1:9723/metrics | awk -v m="$1" -v s="sensor=\"$2\"" \
    '$1 ~ "^"m"\\{" && index($1, s) { print $2 }'
}
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  fail "$what (not within ${seconds}s)"
}
active() { [ "$(ex systemctl is-active power-monitord)" = active ]; }
main_pid() { ex systemctl show -p MainPID --value power-monitord; }
restarts() { ex systemctl show -p NRestarts --value power-monitord; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }
journal_has() { ex journalctl -u power-monitord -o json --no-pager | grep "$1" | grep -q "$2"; }
sensor_up() { [ "$(metric powermon_sensor_up "$1")" = 1 ]; }
reload_refused() {
  [ "$(ex curl -sf http://127.0.0.1:9723/metrics | awk '/^powermon_config_last_reload_successful/ {print $2}')" = 0 ]
}
new_pid() { local p; p=$(main_pid); [ -n "$p" ] && [ "$p" != 0 ] && [ "$p" != "$1" ]; }
restarted() { [ "$(restarts)" -gt "$1" ]; }

echo "== install and start"
ex dpkg -i /root/pm/power-monitord.deb >/dev/null || fail "dpkg -i"
# As the README says: enabled and started at install, on the example configuration, its
# INA219 down before I2C is enabled; `read` will not share the chips with it.
[ "$(ex systemctl is-enabled power-monitord)" = enabled ] || fail "not enabled at install"
wait_for 10 "the service runs after the install" active
first=$(ex systemctl show -p StatusText --value power-monitord)
[[ "$first" == *"0 of 1 sensors up"* ]] || fail "first start: '$first'"
if said=$(ex runuser -u power-monitord -- power-monitord read --duration 2s 2>&1); then
  fail "read ran beside the daemon: $said"
fi
[[ "$said" == *"the power-monitord daemon is running"* ]] || fail "read said: $said"
ok "started at install on the example configuration ($first); read refuses to share its chips"
# The simulated house instead of hardware, with a sensor whose bus drops out for a while (a
# warning and an info line with SENSOR=/KIND=), a short watchdog, and one more sensor's file.
ex sh -c 'grep -v "^persist_interval" /usr/share/doc/power-monitord/examples/simulated.toml \
  > /etc/power-monitord/config.toml && cat >> /etc/power-monitord/config.toml' <<'EOF'

[[sensor]]
name = "flaky"
driver = "simulated"
bus = "garage"
interval = "500ms"
[sensor.simulation]
load = { model = "constant", watts = 20.0 }
faults = [{ kind = "disconnect", start = "2s", duration = "2s" }]
EOF
ex mkdir -p /etc/systemd/system/power-monitord.service.d
ex sh -c 'printf "[Service]\nWatchdogSec=2s\nTimeoutAbortSec=2s\nRestartSec=1s\n" \
  > /etc/systemd/system/power-monitord.service.d/test.conf'
ex systemctl daemon-reload
ex systemctl restart power-monitord || fail "start: $(ex journalctl -u power-monitord --no-pager | tail -20)"
active || fail "not active after start"
status=$(ex systemctl show -p StatusText --value power-monitord)
[[ "$status" == *"sensors up"* ]] || fail "no STATUS line: '$status'"
wait_for 10 "the daemon answers" ex curl -sf http://127.0.0.1:9723/healthz
ok "active through READY=1; STATUS: $status"

echo "== journal priorities and fields"
wait_for 15 "sensor flaky came back" journal_has '"SENSOR":"flaky"' "is back"
journal=$(ex journalctl -u power-monitord -o json --no-pager)
python3 - "$journal" <<'EOF' || fail "journal priorities or fields"
import json, sys
entries = [json.loads(l) for l in sys.argv[1].splitlines() if l.startswith("{")]
ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "power-monitord"]
def find(pred):
    return next((e for e in ours if pred(e)), None)
listening = find(lambda e: "listening on" in e.get("MESSAGE", ""))
down = find(lambda e: e.get("SENSOR") == "flaky" and "is down" in e.get("MESSAGE", ""))
back = find(lambda e: e.get("SENSOR") == "flaky" and "is back" in e.get("MESSAGE", ""))
assert listening and listening["PRIORITY"] == "6", listening
assert down and down["PRIORITY"] == "4" and down.get("KIND") == "nack", down
assert back and back["PRIORITY"] == "6", back
assert not [e for e in ours if e.get("PRIORITY") == "5"], "lines at notice"
EOF
ok "info at 6, warning at 4, SENSOR= and KIND= fields"

echo "== reload"
pid=$(main_pid)
ex sh -c 'cat >> /etc/power-monitord/config.toml' <<'EOF'

[[sensor]]
name = "kettle"
driver = "simulated"
bus = "kitchen"
interval = "500ms"
[sensor.simulation]
load = { model = "constant", watts = 30.0 }
EOF
ex systemctl reload power-monitord || fail "systemctl reload"
wait_for 5 "kettle up after the reload" sensor_up kettle
[ "$(main_pid)" = "$pid" ] || fail "the reload restarted the process"
ok "systemctl reload added a sensor, same PID $pid"
ex sh -c 'cp /etc/power-monitord/config.toml /root/good.toml; echo "bogus = 1" >> /etc/power-monitord/config.toml'
ex systemctl reload power-monitord || true
wait_for 5 "the broken edit is reported" reload_refused
active || fail "a broken edit stopped the service"
[ "$(main_pid)" = "$pid" ] || fail "a broken edit restarted the process"
# The journal takes the line a moment after the metric shows the refusal.
wait_for 5 "a log line for the refused reload" journal_has '"MESSAGE"' "reload refused"
status=$(ex systemctl show -p StatusText --value power-monitord)
[[ "$status" == *"refused"* ]] || fail "STATUS does not say the reload was refused: $status"
ex cp /root/good.toml /etc/power-monitord/config.toml
ok "a broken edit is refused and logged; the service runs on"

echo "== kill -9: restart, no counter backwards"
before=$(metric powermon_energy_joules_total ac001)
ex kill -KILL "$pid"
wait_for 15 "a new main PID" new_pid "$pid"
wait_for 10 "the daemon answers again" ex curl -sf http://127.0.0.1:9723/healthz
after=$(metric powermon_energy_joules_total ac001)
ge "$after" "$before" || fail "ac001 came back at $after after $before"
ok "restarted after kill -9; ac001 $before -> $after J"

echo "== SIGSTOP: watchdog abort and restart"
pid=$(main_pid)
before=$(metric powermon_energy_joules_total ac001)
count=$(restarts)
ex kill -STOP "$pid"
wait_for 30 "a restart after the watchdog" restarted "$count"
wait_for 15 "the daemon answers after the watchdog restart" ex curl -sf http://127.0.0.1:9723/healthz
ex journalctl -u power-monitord --no-pager | grep -qi "watchdog" || fail "no watchdog line in the journal"
after=$(metric powermon_energy_joules_total ac001)
ge "$after" "$before" || fail "ac001 came back at $after after $before"
ok "watchdog abort and restart; ac001 $before -> $after J"

echo "== stop saves"
sleep 3   # samples after the last save (persist_interval is 30 s): the stop must save them
served=$(metric powermon_energy_joules_total ac001)
ex systemctl stop power-monitord
saved=$(ex cat /var/lib/power-monitord/state.json | awk '/"ac001"/ { f = 1 } f && /"energy_joules"/ { gsub(/[,]/, ""); print $2; exit }')
ge "$saved" "$served" && [ "$saved" != "$served" ] || fail "saved $saved after serving $served"
ok "stop saved ac001 at $saved J (served $served)"

echo "== purge"
out=$(ex dpkg --purge power-monitord 2>&1) || fail "dpkg --purge: $out"
extra=$(grep -v -e '^(Reading database' -e '^Removing power-monitord' -e '^Purging configuration files' \
  -e '^Processing triggers' <<<"$out" || true)
[ -z "$extra" ] || fail "purge said more than dpkg does: $extra"
for p in /var/lib/power-monitord /etc/power-monitord /usr/bin/power-monitord; do
  ex test ! -e "$p" || fail "$p is left after purge"
done
ex getent passwd power-monitord >/dev/null && fail "the user is left after purge"
ok "purge is silent and clean"

down
trap - EXIT
findmnt -rn -o TARGET | grep -q "$work" && fail "mounts of the test are left on the host"
[ -d "$cgroup" ] && fail "$cgroup is left on the host"
ok "the host is as it was"
