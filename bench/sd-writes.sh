#!/usr/bin/env bash
# What the energy totals cost an SD card: sectors that reach the device, per hour, with the
# state directory on an ext4 file system of its own (bench/disks.sh) and the default
# persist_interval (30 s).
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
# shellcheck source=bench/disks.sh
. bench/disks.sh

# The hardware default: the simulated house with its persist_interval line taken out.
grep -v '^persist_interval' config/simulated.toml > "$work/config.toml"

runs=()
start_run() {  # label binary live-on-disk
  local label=$1 bin=$2 live_on_disk=$3 n=${#runs[@]}
  disk "$n"
  local run_dir; run_dir=$(tmpfs_dir)
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
