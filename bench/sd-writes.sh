#!/usr/bin/env bash
# What the energy totals cost an SD card: sectors that reach the device, per hour, with the
# state directory on an ext4 file system of its own (a loop device, mounted as Raspberry Pi OS
# mounts its root: defaults,noatime; ext4 commits its journal every 5 s) and the default
# persist_interval (30 s). /proc/PID/io would count every page dirtied; the loop device's
# counter (/sys/block/loopN/stat, field 7) counts what the kernel really wrote.
#
#   sudo bench/sd-writes.sh [MINUTES] [BINARY]...
#
# Each BINARY (default: target/release/power-monitord) runs twice, in parallel: with the live
# file on a tmpfs (/dev/shm, as /run is on a Pi) and with it on the same disk (the fallback when
# no runtime directory is writable). Binaries that predate the live file run once.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
shift || true
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=(target/release/power-monitord)
[ "$(id -u)" = 0 ] || { echo "run as root (loop devices and mounts)" >&2; exit 1; }

work=$(mktemp -d /tmp/pm-sd-writes.XXXXXX)
loops=() mounts=() pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || true; done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work" /dev/shm/pm-sd-writes.*
}
trap cleanup EXIT

# The hardware default: the simulated house with its persist_interval line taken out.
grep -v '^persist_interval' config/simulated.toml > "$work/config.toml"

# Write I/Os completed and sectors written.
writes() { awk '{print $5, $7}' "/sys/block/$(basename "$1")/stat"; }

runs=()
start_run() {  # label binary live-on-disk
  local label=$1 bin=$2 live_on_disk=$3 n=${#runs[@]}
  truncate -s 256M "$work/disk$n.img"
  mkfs.ext4 -q -F "$work/disk$n.img"
  local loop; loop=$(losetup -f --show "$work/disk$n.img"); loops+=("$loop")
  mkdir -p "$work/mnt$n"; mount -o noatime "$loop" "$work/mnt$n"; mounts+=("$work/mnt$n")
  local run_dir; run_dir=$(mktemp -d /dev/shm/pm-sd-writes.XXXXXX)
  [ "$live_on_disk" = yes ] && run_dir="$work/mnt$n/run"
  STATE_DIRECTORY="$work/mnt$n/state" RUNTIME_DIRECTORY="$run_dir" \
    "$bin" --config "$work/config.toml" --listen 127.0.0.1:0 2>"$work/log$n" &
  pids+=($!)
  runs+=("$label|$loop|$work/mnt$n")
}

for bin in "${binaries[@]}"; do
  if grep -aq RUNTIME_DIRECTORY "$bin"; then
    start_run "$bin, live file on tmpfs" "$bin" no
    start_run "$bin, live file on the disk" "$bin" yes
  else
    start_run "$bin (no live file)" "$bin" no
  fi
done

sleep 10
declare -A before
for r in "${runs[@]}"; do IFS='|' read -r label loop mnt <<<"$r"; sync -f "$mnt"; before[$loop]=$(writes "$loop"); done
sleep $((minutes * 60))
printf '%-56s %10s %12s\n' "run: $minutes min, persist_interval 30s" "KiB/hour" "writes/hour"
for r in "${runs[@]}"; do
  IFS='|' read -r label loop mnt <<<"$r"
  sync -f "$mnt"
  read -r ios0 sectors0 <<<"${before[$loop]}"
  read -r ios1 sectors1 <<<"$(writes "$loop")"
  printf '%-56s %10d %12d\n' "$label" $(( (sectors1 - sectors0) * 60 / 2 / minutes )) $(( (ios1 - ios0) * 60 / minutes ))
done
