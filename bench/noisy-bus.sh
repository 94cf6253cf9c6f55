#!/usr/bin/env bash
# What gets through a noisy I2C bus: the daemon on a simulated bus whose chips fail a share of
# their transfers, for SECONDS; then, per sensor, samples against the ticks that were due,
# failed transfers, retries, reprogramming, and energy against what the load drew.
#
#   bench/noisy-bus.sh [SECONDS] [FAULT] [BINARY]
#
# FAULT is a [sensor.simulation] faults entry, by default { kind = "nack", rate = 0.2 } (a
# fifth of all transfers NACKed at random); e.g. '{ kind = "nack", every = 5 }'. With
# CHIPS=ina219 only an INA219 is simulated (for binaries that know no other chip).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
fault=${2:-'{ kind = "nack", rate = 0.2 }'}
bin=${3:-target/release/power-monitord}
chips=${CHIPS:-ina219 ina226 ina260 ina3221}
interval_ms=200
watts=10

work=$(mktemp -d /tmp/pm-noisy.XXXXXX)
pid=
cleanup() {
  [ -z "$pid" ] || { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
{
  printf '[daemon]\nlisten = "127.0.0.1:%s"\npersist_interval = "1s"\n' "$port"
  address=64
  for chip in $chips; do
    printf '\n[[sensor]]\nname = "%s"\ndriver = "simulated"\nbus = "noisy"\naddress = %d\ninterval = "%dms"\n' \
      "$chip" "$address" "$interval_ms"
    [ "$chip" = ina3221 ] && printf 'channel = 1\n'
    printf '[sensor.simulation]\n'
    [ "$chip" = ina219 ] && [ "${CHIPS:-}" = ina219 ] || printf 'chip = "%s"\n' "$chip"
    printf 'load = { model = "constant", watts = %s }\nfaults = [%s]\n' "$watts" "$fault"
    address=$((address + 1))
  done
} > "$work/config.toml"

STATE_DIRECTORY=$work/state RUNTIME_DIRECTORY=$work/run "$bin" --config "$work/config.toml" \
  2> "$work/log" &
pid=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/metrics" > /dev/null && break
  sleep 0.1
done
start=$(date +%s.%N)
sleep "$seconds"
curl -sf "http://127.0.0.1:$port/metrics" > "$work/metrics"
# Stopped, the daemon saves its totals: energy is compared over the whole run.
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
elapsed=$(echo "$(date +%s.%N) - $start" | bc)

value() {  # metric sensor [extra label match]; 0 for a metric the binary does not have
  awk -v m="$1{" -v s="sensor=\"$2\"" -v x="${3:-}" \
    'index($0, m) == 1 && index($0, s) && index($0, x) { t += $NF } END { print t + 0 }' \
    "$work/metrics"
}
echo "$bin, fault $fault, ${seconds}s at ${interval_ms} ms, ${watts} W each"
printf '%-8s %8s %8s %8s %8s %8s %9s %10s\n' sensor due samples valid% failed retries reprogram energy%
for chip in $chips; do
  due=$(echo "$elapsed * 1000 / $interval_ms" | bc)
  samples=$(value powermon_samples_total "$chip")
  failed=$(value powermon_read_errors_total "$chip")
  retries=$(value powermon_sensor_recoveries_total "$chip" 'action="retry"')
  reprogram=$(value powermon_sensor_recoveries_total "$chip" 'action="reprogram"')
  joules=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["sensors"][sys.argv[2]]["energy_joules"])' \
    "$work/state/state.json" "$chip")
  printf '%-8s %8d %8d %8.1f %8d %8d %9d %10.1f\n' "$chip" "$due" "$samples" \
    "$(echo "100 * $samples / $due" | bc -l)" "$failed" "$retries" "$reprogram" \
    "$(echo "100 * ${joules:-0} / ($watts * $elapsed)" | bc -l)"
done
