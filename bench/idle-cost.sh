#!/usr/bin/env bash
# What the daemon costs while it samples the simulated house and nobody scrapes: CPU time,
# resident memory and context switches (wakeups) over a window, from /proc.
#
#   bench/idle-cost.sh [seconds]           (default 60; builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
STATE_DIRECTORY="$work/state" RUNTIME_DIRECTORY="$work/run" target/release/power-monitord --config config/simulated.toml \
  --listen 127.0.0.1:0 2>"$work/log" &
pid=$!
sleep 5   # past start-up

ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
switches() {
  local total=0
  for t in /proc/$pid/task/*/status; do
    total=$(( total + $(awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {s += $2} END {print s}' "$t") ))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)
t0=$(ticks); s0=$(switches)
sleep "$seconds"
t1=$(ticks); s1=$(switches)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
threads=$(ls "/proc/$pid/task" | wc -l)
awk -v t="$((t1 - t0))" -v hz="$hz" -v s="$seconds" -v sw="$((s1 - s0))" -v rss="$rss" -v th="$threads" 'BEGIN {
  printf "over %d s: CPU %.3f s (%.2f%% of one core), %.1f wakeups/s, RSS %d KiB, %d threads\n",
         s, t / hz, 100 * t / hz / s, sw / s, rss, th
}'
