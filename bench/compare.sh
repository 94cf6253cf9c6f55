#!/usr/bin/env bash
# power-monitord beside its peers, in one run on this machine, printed as one table:
#  - power-monitord with 16 simulated sensors on one bus (the node under test);
#  - node_exporter with only its hwmon collector (what a Pi's kernel drivers would give);
#  - a Python exporter of the same 16 sensors on the official prometheus_client
#    (bench/peer_exporter.py);
#  - and, for idle cost only, power-monitord on the simulated house (config/simulated.toml).
#
# Idle: CPU time summed over every thread from /proc/PID/task/*/schedstat (nanoseconds) and
# the times they were scheduled in (wake-ups), over a window in which nobody scrapes; all four
# are measured in the same window. Then each /metrics is loaded in turn with wrk (1 thread,
# 4 connections), without and with Accept-Encoding: gzip: requests/s, p50, p99. Peak RSS is
# VmHWM at the end, after both loads.
#
#   bench/compare.sh [load seconds] [idle seconds]      (defaults 10 and 60)
#
# POWER_MONITORD_BIN=… measures that binary (the packaged one:
# target/x86_64-unknown-linux-gnu/release/power-monitord after packaging/build-debs.sh amd64)
# instead of a fresh `cargo build --release`.
#
# Needs: wrk, prometheus-node-exporter, python3-prometheus-client, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
load=${1:-10}
idle=${2:-60}
for tool in wrk prometheus-node-exporter curl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y $tool" >&2; exit 1; }
done
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null ||
  { echo "prometheus_client is missing: apt-get install -y python3-prometheus-client" >&2; exit 1; }
bin=${POWER_MONITORD_BIN:-target/release/power-monitord}
[ -n "${POWER_MONITORD_BIN:-}" ] || cargo build --release --quiet

# shellcheck source=bench/scratch.sh
. bench/scratch.sh

# 16 INA219s on one virtual bus with every rule, as benches/common/mod.rs makes them.
bench/sixteen-sensors.sh >"$work/sixteen.toml"

declare -A url pid
pm_port=$(free_port)
mkdir -p "$work/pm" "$work/house"
STATE_DIRECTORY="$work/pm" RUNTIME_DIRECTORY="$work/pm" "$bin" \
  --config "$work/sixteen.toml" --listen "127.0.0.1:$pm_port" 2>"$work/pm.log" &
pids+=($!); pid[pm]=$!; url[pm]="http://127.0.0.1:$pm_port/metrics"
STATE_DIRECTORY="$work/house" RUNTIME_DIRECTORY="$work/house" "$bin" \
  --config config/simulated.toml --listen 127.0.0.1:0 2>"$work/house.log" &
pids+=($!); pid[house]=$!
ne_port=$(free_port)
prometheus-node-exporter --collector.disable-defaults --collector.hwmon \
  --web.listen-address="127.0.0.1:$ne_port" 2>"$work/ne.log" &
pids+=($!); pid[ne]=$!; url[ne]="http://127.0.0.1:$ne_port/metrics"
py_port=$(free_port)
/usr/bin/python3 bench/peer_exporter.py "$py_port" 16 2>"$work/py.log" &
pids+=($!); pid[py]=$!; url[py]="http://127.0.0.1:$py_port/metrics"

for k in pm ne py; do
  for _ in $(seq 100); do curl -sf -o /dev/null "${url[$k]}" && break; sleep 0.1; done
done
sleep 5 # past start-up; the sensors have sampled

# CPU nanoseconds and times scheduled in, summed over a process's threads.
schedstat() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ns += $1; n += $3} END {print ns + 0, n + 0}'; }
declare -A cpu0 cpu1
for k in pm house ne py; do cpu0[$k]=$(schedstat "${pid[$k]}"); done
sleep "$idle"
for k in pm house ne py; do cpu1[$k]=$(schedstat "${pid[$k]}"); done
idle_of() { # key -> "ms per 30 s" "wake-ups/s"
  read -r a an <<<"${cpu0[$1]}"; read -r b bn <<<"${cpu1[$1]}"
  awk -v d="$((b - a))" -v n="$((bn - an))" -v s="$idle" 'BEGIN {printf "%.2f %.1f", d / 1e6 * 30 / s, n / s}'
}

# wrk's latency in ms whatever unit it printed.
ms() { awk '{v = $1; u = $1; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
  if (u == "us") v /= 1000; else if (u == "s") v *= 1000; printf "%.2f", v}' <<<"$1"; }
bench() { # url [header] -> "req/s p50 p99"
  local out
  out=$(wrk -t1 -c4 -d"${load}s" --latency ${2:+-H "$2"} "$1")
  printf '%s %s %s' "$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")" \
    "$(ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")" "$(ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
}
declare -A plain gz series bytes gzbytes
for k in pm ne py; do
  series[$k]=$(curl -s "${url[$k]}" | grep -vc '^#')
  bytes[$k]=$(curl -s "${url[$k]}" | wc -c)
  gzbytes[$k]=$(curl -s -H 'Accept-Encoding: gzip' "${url[$k]}" | wc -c)
  plain[$k]=$(bench "${url[$k]}")
  gz[$k]=$(bench "${url[$k]}" 'Accept-Encoding: gzip')
done
# Peak resident memory, and of the resident memory now the anonymous part (heap and stacks;
# the rest is mapped code and data, the program's and its libraries').
peak() { awk '/^VmHWM/ {h = $2} /^RssAnon/ {a = $2} END {printf "%.1f (%.1f)", h / 1024, a / 1024}' /proc/"$1"/status; }

echo "bench/compare.sh on $(nproc) cores: wrk -t1 -c4 -d${load}s per load, idle over ${idle} s"
printf '%-34s %7s %9s | %9s %7s %7s | %9s %7s %7s | %19s | %11s %8s\n' \
  "" series "bytes(gz)" "req/s" "p50 ms" "p99 ms" "gz req/s" "p50 ms" "p99 ms" "peak RSS (anon) MiB" "idle ms/30s" "wakes/s"
row() { # key label
  local k=$1 p g i
  read -r -a p <<<"${plain[$k]}"; read -r -a g <<<"${gz[$k]}"; read -r -a i <<<"$(idle_of "$k")"
  printf '%-34s %7s %9s | %9s %7s %7s | %9s %7s %7s | %19s | %11s %8s\n' "$2" "${series[$k]}" \
    "${bytes[$k]}(${gzbytes[$k]})" "${p[0]}" "${p[1]}" "${p[2]}" "${g[0]}" "${g[1]}" "${g[2]}" \
    "$(peak "${pid[$k]}")" "${i[0]}" "${i[1]}"
}
row pm "power-monitord, 16 sensors"
row ne "node_exporter, hwmon only"
row py "Python prometheus_client, 16"
read -r -a h <<<"$(idle_of house)"
printf '%-34s %7s %9s | %9s %7s %7s | %9s %7s %7s | %19s | %11s %8s\n' \
  "power-monitord, simulated house" - - - - - - - - "$(peak "${pid[house]}")" "${h[0]}" "${h[1]}"
read -r -a p <<<"${plain[pm]}"; read -r -a n <<<"${plain[ne]}"; read -r -a y <<<"${plain[py]}"
read -r -a pg <<<"${gz[pm]}"; read -r -a ng <<<"${gz[ne]}"
# Sampling kept its schedule under the loads: no integration gaps, no late ticks.
gaps=$(curl -s "${url[pm]}" | awk '/^powermon_integration_gaps_total/ {s += $2} END {print s + 0}')
health=$(curl -s -o /dev/null -w '%{http_code}' "${url[pm]%/metrics}/healthz")
echo "power-monitord after the loads: integration gaps $gaps, /healthz $health"
awk -v a="${p[0]}" -v b="${n[0]}" -v c="${y[0]}" -v ag="${pg[0]}" -v bg="${ng[0]}" 'BEGIN {
  printf "power-monitord / node_exporter req/s: %.2fx (gzip %.2fx); / Python: %.1fx\n", a / b, ag / bg, a / c }'
