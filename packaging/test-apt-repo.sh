#!/usr/bin/env bash
# A fleet's life with the apt repository, on a 64-bit Pi (a Debian bookworm arm64 root under
# qemu-user-static, packaging/roots.sh):
#
#   packaging/build-debs.sh && packaging/build-debs.sh --revision 2 arm64
#   sudo packaging/test-apt-repo.sh
#
# packaging/apt-repo.sh makes a repository of the revision-1 packages, signed by a key made for
# the test, served on loopback by `python3 -m http.server`. The root trusts the key through
# `signed-by=` only (and refuses the repository under another key), installs power-monitord
# with apt-get, runs it on an edited configuration (the simulated house), then the repository
# gains revision 2 and `apt-get upgrade` takes the root to it without a question: the edited
# configuration is kept, and the energy totals continue (no counter lower than before).
set -eEuo pipefail
# A command that fails says where.
trap 'echo "FAIL: ${BASH_SOURCE[0]}:$LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
# shellcheck source=packaging/toolchain.sh
. packaging/toolchain.sh
# shellcheck source=packaging/roots.sh
. packaging/roots.sh

need_debs qemu-aarch64-static:qemu-user-static debootstrap:debootstrap curl:curl \
  python3:python3 gpg:gpg apt-ftparchive:apt-utils

first=(target/debs/power-monitord_"$VERSION"-1_*.deb)
second=target/debs/power-monitord_${VERSION}-2_arm64.deb
[ -f "${first[0]}" ] && [ -f "$second" ] ||
  fail "packages missing: packaging/build-debs.sh && packaging/build-debs.sh --revision 2 arm64"


echo "== the repository"
export GNUPGHOME=$work/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key 'power-monitord fleet test <fleet@power-monitord.invalid>' ed25519 sign never
gpg --batch --quiet --passphrase '' --quick-gen-key 'someone else <other@power-monitord.invalid>' ed25519 sign never
repo=$work/repo
packaging/apt-repo.sh --key fleet@power-monitord.invalid --out "$repo" "${first[@]}"
port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$repo" "$port" >"$work/http.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fsS -o /dev/null "http://127.0.0.1:$port/dists/stable/InRelease" 2>/dev/null && break; sleep 0.1; done
ok "signed repository of ${#first[@]} package(s) on http://127.0.0.1:$port/"

echo "== a Pi on bookworm arm64 adds it"
root=$work/root
root_make bookworm arm64 "$root"
# Only this repository: the test needs nothing from Debian's mirror.
: >"$root/etc/apt/sources.list"
list=$root/etc/apt/sources.list.d/power-monitord.list
echo "deb [signed-by=/usr/share/keyrings/power-monitord.gpg] http://127.0.0.1:$port stable main" >"$list"
# Under another key, apt refuses the repository.
gpg --batch --export other@power-monitord.invalid >"$root/usr/share/keyrings/power-monitord.gpg"
if root_run "$root" apt-get update -q >"$work/apt.log" 2>&1 && ! grep -q NO_PUBKEY "$work/apt.log"; then
  fail "apt accepted the repository signed by a key it was not given: $(tail "$work/apt.log")"
fi
grep -q NO_PUBKEY "$work/apt.log" || fail "apt-get update failed for another reason: $(tail "$work/apt.log")"
curl -fsS -o "$root/usr/share/keyrings/power-monitord.gpg" "http://127.0.0.1:$port/power-monitord.gpg"
root_run "$root" apt-get update -q >"$work/apt.log" 2>&1 || fail "apt-get update: $(tail "$work/apt.log")"
root_run "$root" apt-get install -y -q power-monitord >"$work/apt.log" 2>&1 ||
  fail "apt-get install power-monitord: $(tail -20 "$work/apt.log")"
installed() { root_run "$root" dpkg-query -W -f '${Version}' power-monitord; }
[ "$(installed)" = "${VERSION}-1" ] || fail "installed $(installed), not ${VERSION}-1"
ok "refused under another key; apt-get install power-monitord: ${VERSION}-1"

# The edited configuration: the simulated house, with a note of the fleet's own, pushing to a
# central store that is away (its samples spooled in the state directory).
conf=$root/etc/power-monitord/config.toml
{
  echo "# fleet: pi-017, garage"
  cat config/simulated.toml
  printf '\n[[remote_write]]\nurl = "http://127.0.0.1:9/api/v1/write"\nname = "central"\n'
  printf 'interval = "1s"\nwait_for_clock_sync = false\n'
} >"$conf"
spool=$root/var/lib/power-monitord/remote-write/central
# spooled: the samples the spool's segments hold (their names say).
spooled() { find "$spool" -name '*.seg' | sed 's/.*-\([0-9]*\)\.seg$/\1/' | awk '{ n += $1 } END { print n + 0 }'; }

# run: the daemon as its service user on the installed configuration until its totals are
# saved, then SIGTERM; leaves the energy counters of its last scrape in $work/$1.
run() {
  root_start "$root" setpriv --reuid=power-monitord --regid=power-monitord --init-groups \
    env STATE_DIRECTORY=/var/lib/power-monitord power-monitord --listen 127.0.0.1:0 \
    >"$work/daemon-$1.log" 2>&1
  local pid=$! addr='' i
  pids+=("$pid")
  for ((i = 0; i < 600; i++)); do
    addr=$(sed -n 's|.*listening on http://\([^/]*\)/.*|\1|p' "$work/daemon-$1.log" | head -1)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || fail "the daemon did not listen: $(tail -5 "$work/daemon-$1.log")"
  # Two saves, so every total has moved on from what an earlier run left.
  local saves=0 last=
  for ((i = 0; i < 120 && saves < 2; i++)); do
    curl -fsS "http://$addr/metrics" >"$work/metrics" 2>/dev/null || true
    local t
    t=$(sed -n 's/^powermon_state_last_persist_timestamp_seconds //p' "$work/metrics")
    if [ -n "$t" ] && [ "$t" != 0 ] && [ "$t" != "$last" ]; then saves=$((saves + 1)); last=$t; fi
    sleep 0.5
  done
  [ "$saves" -ge 2 ] || fail "the totals were not saved twice in 60 s"
  { grep '^powermon_energy_joules_total{' "$work/metrics" || true; } | sort >"$work/$1"
  [ "$(wc -l <"$work/$1")" -ge 5 ] || fail "no energy totals: $(cat "$work/$1")"
  kill -TERM "$pid"
  wait "$pid" || fail "the daemon did not stop cleanly: $(tail -5 "$work/daemon-$1.log")"
}
run before
ok "the daemon ran on the edited configuration: $(tr '\n' ' ' <"$work/before" | cut -c1-120)…"
held=$(spooled)
[ "$held" -gt 0 ] || fail "nothing spooled for the central store: $(grep 'remote write' "$work/daemon-before.log")"

echo "== revision 2 reaches the fleet"
packaging/apt-repo.sh --key fleet@power-monitord.invalid --out "$repo" "$second" >/dev/null
root_run "$root" apt-get update -q >"$work/apt.log" 2>&1 || fail "apt-get update: $(tail "$work/apt.log")"
root_run "$root" apt-get upgrade -y -q </dev/null >"$work/apt.log" 2>&1 ||
  fail "apt-get upgrade: $(tail -20 "$work/apt.log")"
[ "$(installed)" = "${VERSION}-2" ] || fail "apt-get upgrade left $(installed): $(tail "$work/apt.log")"
head -1 "$conf" | grep -qx '# fleet: pi-017, garage' || fail "the upgrade replaced the edited configuration"
[ ! -e "$conf.dpkg-new" ] && [ ! -e "$conf.dpkg-dist" ] || fail "dpkg set a new configuration beside it"
ok "apt-get upgrade: ${VERSION}-2, the edited configuration kept"
[ "$(spooled)" -ge "$held" ] || fail "the upgrade lost spooled samples: $held before, $(spooled) after"
ok "the remote write spool kept: $held samples waiting for the central store"

run after
join "$work/before" "$work/after" | awk '
  { if ($3 + 0 < $2 + 0) { print "FAIL: " $1 " went from " $2 " to " $3; bad = 1 } n++ }
  END { if (n < 5) { print "FAIL: only " n " totals in both runs"; bad = 1 } exit bad }' ||
  fail "an energy total is lower after the upgrade"
grep -q 'remote write central: [1-9][0-9]* spooled segment(s)' "$work/daemon-after.log" ||
  fail "revision 2 did not take up the spool: $(grep 'remote write' "$work/daemon-after.log")"
ok "every energy total continues: $(join "$work/before" "$work/after" | awk '{ printf "%s %.0f→%.0f J; ", $1, $2, $3 }' | sed 's/powermon_energy_joules_total{sensor="\([^"]*\)"}/\1/g')"
echo "PASS: repository install and upgrade"
