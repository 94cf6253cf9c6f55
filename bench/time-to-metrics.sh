#!/usr/bin/env bash
# Time from starting the daemon on config/simulated.toml until /metrics shows all four sensors
# with power and energy above zero (the quick start's promise). Prints each run in ms, then
# the median.
#
#   bench/time-to-metrics.sh [runs]        (default 10; builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
cargo build --release --quiet
bin=target/release/power-monitord
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ready() {
  # All four sensors with positive power and positive energy.
  local m; m=$(curl -s "http://$1/metrics") || return 1
  for s in ac001 wm002 fr003 pi_5v; do
    grep -Eq "^powermon_power_watts\{sensor=\"$s\"\} [0-9]*\.?[0-9]*[1-9]" <<<"$m" || return 1
    grep -Eq "^powermon_energy_joules_total\{sensor=\"$s\"\} [0-9]*\.?[0-9]*[1-9]" <<<"$m" || return 1
  done
}

times=()
for i in $(seq "$runs"); do
  rm -rf "$work/state"
  start=$(date +%s%N)
  STATE_DIRECTORY="$work/state" RUNTIME_DIRECTORY="$work/run" "$bin" --config config/simulated.toml --listen 127.0.0.1:0 2>"$work/log" &
  pid=$!
  addr=""
  until [ -n "$addr" ]; do
    addr=$(grep -o 'listening on http://[^/]*' "$work/log" | head -1 | sed 's|listening on http://||' || true)
    sleep 0.005
  done
  until ready "$addr"; do sleep 0.02; done
  end=$(date +%s%N)
  kill -TERM "$pid"; wait "$pid"
  ms=$(( (end - start) / 1000000 ))
  times+=("$ms")
  echo "run $i: ${ms} ms"
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "median %s ms over %d runs (min %s, max %s)\n", m, NR, a[1], a[NR]}'
