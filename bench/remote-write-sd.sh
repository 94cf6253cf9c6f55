#!/usr/bin/env bash
# What remote write costs an SD card, measured as bench/sd-writes.sh measures the energy
# totals (the state directory on an ext4 loop device of its own, sectors the device really
# wrote): the simulated house with no [[remote_write]], with one whose receiver (a local
# Prometheus) takes every sample, and with one whose receiver is unreachable (the spool is
# written every spool_flush_interval, default 5 min: run for a multiple of 5 minutes plus a
# little, or a segment falls outside the window). Runs in parallel; the live file and the
# remote write tail on a tmpfs, as on a Pi. Also prints each daemon's peak RSS (VmHWM).
#
#   sudo bench/remote-write-sd.sh [MINUTES] [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
bin=${2:-target/release/power-monitord}
# shellcheck source=bench/disks.sh
. bench/disks.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

receiver=$(free_port)
mkdir -p "$work/prometheus"
printf 'global:\n  scrape_interval: 1m\n' >"$work/prometheus/prometheus.yml"
prometheus --config.file="$work/prometheus/prometheus.yml" --storage.tsdb.path="$work/prometheus/data" \
  --web.listen-address="127.0.0.1:$receiver" --web.enable-remote-write-receiver 2>"$work/prometheus.log" &
pids+=($!)
closed=$(free_port)

base=$(grep -v '^persist_interval' config/simulated.toml)
remote() { printf '\n[[remote_write]]\nurl = "http://127.0.0.1:%s/api/v1/write"\nwait_for_clock_sync = false\n' "$1"; }

runs=()
start_run() {  # label config-text
  local label=$1 n=${#runs[@]}
  printf '%s\n' "$2" >"$work/config$n.toml"
  disk "$n"
  local run_dir; run_dir=$(tmpfs_dir)
  STATE_DIRECTORY="$work/mnt$n/state" RUNTIME_DIRECTORY="$run_dir" \
    "$bin" --config "$work/config$n.toml" --listen 127.0.0.1:0 2>"$work/log$n" &
  pids+=($!)
  runs+=("$label|$loop|$work/mnt$n|$!")
}
start_run "no remote write" "$base"
start_run "remote write, receiver up" "$base$(remote "$receiver")"
start_run "remote write, receiver unreachable" "$base$(remote "$closed")"

sleep 10
declare -A before
for r in "${runs[@]}"; do IFS='|' read -r label loop mnt _ <<<"$r"; sync -f "$mnt"; before[$loop]=$(writes "$loop"); done
sleep $((minutes * 60))
printf '%-40s %10s %12s %14s\n' "run: $minutes min, every 15 s" "KiB/hour" "writes/hour" "peak RSS KiB"
for r in "${runs[@]}"; do
  IFS='|' read -r label loop mnt pid <<<"$r"
  sync -f "$mnt"
  read -r ios0 sectors0 <<<"${before[$loop]}"
  read -r ios1 sectors1 <<<"$(writes "$loop")"
  rss=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
  printf '%-40s %10d %12d %14d\n' "$label" $(( (sectors1 - sectors0) * 60 / 2 / minutes )) $(( (ios1 - ios0) * 60 / minutes )) "$rss"
done
du -sk "$work"/mnt2/state/remote-write 2>/dev/null | awk -v m="$minutes" '{printf "spool after the run: %d KiB (%d KiB an hour)\n", $1, $1 * 60 / m}'
find "$work"/mnt2/state/remote-write -name "*.seg" | wc -l | sed "s/^/segments: /"
