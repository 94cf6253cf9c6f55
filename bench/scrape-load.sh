#!/usr/bin/env bash
# /metrics under load, power-monitord (the simulated house) beside Debian's node_exporter:
# requests per second, latency percentiles, response size and resident memory afterwards.
# wrk runs on one thread with 4 connections for each; both servers are on 127.0.0.1.
#
#   bench/scrape-load.sh [seconds]   (default 10; needs wrk and prometheus-node-exporter)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
for tool in wrk prometheus-node-exporter curl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y ${tool/prometheus-node-exporter/prometheus-node-exporter}" >&2; exit 1; }
done
cargo build --release --quiet
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT

STATE_DIRECTORY="$work/state" RUNTIME_DIRECTORY="$work/run" target/release/power-monitord --config config/simulated.toml \
  --listen 127.0.0.1:0 2>"$work/pm.log" &
pids+=($!); pm_pid=$!
ne_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
prometheus-node-exporter --web.listen-address="127.0.0.1:$ne_port" 2>"$work/ne.log" &
pids+=($!); ne_pid=$!
sleep 3
pm_addr=$(sed -n 's|.*listening on http://\([^/]*\)/.*|\1|p' "$work/pm.log" | head -1)

run() { # name pid url
  local size; size=$(curl -s "$3" | wc -c)
  local gz; gz=$(curl -s -H 'Accept-Encoding: gzip' "$3" | wc -c)
  local out; out=$(wrk -t1 -c4 -d"${seconds}s" --latency "$3")
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  local p50; p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  local p99; p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  local rss; rss=$(awk '/^VmRSS/ {print $2}' "/proc/$2/status")
  printf '%-16s %10s req/s   p50 %8s   p99 %8s   %7d bytes (%6d gzipped)   RSS %6d KiB\n' "$1" "$rps" "$p50" "$p99" "$size" "$gz" "$rss"
}
echo "wrk -t1 -c4 -d${seconds}s against /metrics on $(nproc) cores:"
run power-monitord "$pm_pid" "http://$pm_addr/metrics"
run node_exporter "$ne_pid" "http://127.0.0.1:$ne_port/metrics"
# Sampling kept its schedule under the load: no integration gaps, no late ticks.
gaps=$(curl -s "http://$pm_addr/metrics" | awk '/^powermon_integration_gaps_total/ {s += $2} END {print s + 0}')
health=$(curl -s -o /dev/null -w '%{http_code}' "http://$pm_addr/healthz")
echo "power-monitord after the load: integration gaps $gaps, /healthz $health"
