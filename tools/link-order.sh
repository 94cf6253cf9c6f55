#!/usr/bin/env bash
# Regenerates link/hot-functions.txt, the functions the daemon runs, which tools/cc-ordered lays
# out together in the binary (see there why). The daemon runs under callgrind, which records
# every function executed, in six runs: the simulated house by day and by night, the chip
# family and the benchmarks' 16 sensors (start-up, sampling, /metrics plain and gzipped, the
# status page and its API, /healthz, connections that end, a reload, shutdown), then the house
# again behind TLS and basic auth, and with MQTT publishing to a local Mosquitto. The list holds
# the first four runs' functions, then what TLS adds, then what MQTT adds, so that each of
# these stays together after the common part.
#
#   tools/link-order.sh        (about three minutes; then rebuild and check with bench/compare.sh)
#
# Needs: valgrind, curl, openssl, mosquitto, c++filt (binutils).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind curl openssl c++filt; do
  command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosquitto" ] || { echo "mosquitto is missing" >&2; exit 1; }

# Symbols kept; the same mangling (v0, .cargo/config.toml) as the real build.
CARGO_PROFILE_RELEASE_STRIP=false CARGO_TARGET_DIR=target/link-order cargo build --release --quiet
bin=$PWD/target/link-order/release/power-monitord

# shellcheck source=bench/scratch.sh
. bench/scratch.sh

# run NAME CONFIG SCHEME [curl options]: the daemon under callgrind, used, reloaded and stopped.
run() {
  local name=$1 config=$2 scheme=$3 port pid base
  shift 3
  port=$(free_port)
  base="$scheme://127.0.0.1:$port"
  mkdir -p "$work/$name"
  STATE_DIRECTORY="$work/$name" RUNTIME_DIRECTORY="$work/$name" valgrind --tool=callgrind \
    --demangle=no --callgrind-out-file="$work/$name.out" \
    "$bin" --config "$config" --listen "127.0.0.1:$port" 2>"$work/$name.log" &
  pid=$!
  for _ in $(seq 300); do curl -ksf -o /dev/null "$@" "$base/healthz" && break; sleep 0.2; done
  sleep 3
  for round in 1 2; do
    for path in /metrics / /api/readings /api/history '/api/history?sensor=x' /healthz /nowhere; do
      curl -ks -o /dev/null "$@" "$base$path"
    done
    curl -ks -o /dev/null -H 'Accept-Encoding: gzip' "$@" "$base/metrics"
    # Connections that end: after a response, and halfway through a request.
    [ "$scheme" = http ] && /usr/bin/python3 -c '
import socket, sys
for request in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /metrics HTTP/1.1\r\nHo"):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(request)
    s.settimeout(2)
    try:
        s.recv(65536)
    except OSError:
        pass
    s.close()
' "$port"
    [ "$round" = 1 ] && { kill -HUP "$pid"; sleep 3; }
  done
  kill "$pid"
  wait "$pid" || { echo "$name: the daemon failed" >&2; cat "$work/$name.log" >&2; exit 1; }
}

# Functions of the daemon's own binary in a callgrind profile, without hashes, one per line.
functions() {
  awk -v bin="$bin" '
    function id() { return substr($0, index($0, "(") + 1, index($0, ")") - index($0, "(") - 1) }
    function name() { return substr($0, index($0, ")") + 2) }
    /^c?ob=\(/ { if (index($0, ") ")) ob[id()] = name(); if (/^ob=/) ours = ob[id()] == bin }
    /^c?fn=\(/ { if (index($0, ") ")) fn[id()] = name(); if (/^fn=/ && ours) ran[id()] = 1 }
    END { for (i in ran) print fn[i] }
  ' "$1" | sed -e "s/'[0-9]*\$//" -e 's/\.llvm\.[0-9]*$//' | grep -E '^[A-Za-z_.$][A-Za-z0-9_.$]*$' | c++filt |
    sed -e 's/\[[0-9a-f][0-9a-f]*\]//g' -e 's/::h[0-9a-f]\{16\}$//' | LC_ALL=C sort -u
}

# The house by day (the battery charging) and by night (discharging), whatever the time.
for at in 12:00 22:00; do
  sed "s/clouds = 0.3 }/clouds = 0.3, time_of_day = \"$at\" }/" config/simulated.toml >"$work/house-$at.toml"
  grep -q "time_of_day = \"$at\"" "$work/house-$at.toml" || { echo "no solar table in the house" >&2; exit 1; }
  run "house-${at%:*}" "$work/house-$at.toml" http
done
run family config/family.toml http
bench/sixteen-sensors.sh >"$work/sixteen.toml"
run sixteen "$work/sixteen.toml" http

# TLS and basic auth (password "hot-functions").
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -keyout "$work/server.key" \
  -out "$work/server.crt" 2>/dev/null
printf 'tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  %s\n' \
  'prometheus: $2b$04$/JwnTBZJarmWv0q.Ybtk2uknlMnlkdj3dbzh9tTKMPFpKmLbtk6Re' >"$work/web.yml"
sed 's/^\[daemon\]$/[daemon]\nweb_config_file = "web.yml"/' config/simulated.toml >"$work/tls.toml"
run tls "$work/tls.toml" https --user prometheus:hot-functions

# MQTT to a local Mosquitto.
mqtt_port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mqtt_port" >"$work/mosquitto.conf"
"$mosquitto" -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
pids+=($!)
{ cat config/simulated.toml; printf '\n[mqtt]\nbroker = "mqtt://127.0.0.1:%s"\n' "$mqtt_port"; } >"$work/mqtt.toml"
run mqtt "$work/mqtt.toml" http

functions "$work/house-12.out" >"$work/list.common"
functions "$work/house-22.out" >>"$work/list.common"
functions "$work/family.out" >>"$work/list.common"
functions "$work/sixteen.out" >>"$work/list.common"
LC_ALL=C sort -u -o "$work/list.common" "$work/list.common"
functions "$work/tls.out" | LC_ALL=C comm -23 - "$work/list.common" >"$work/list.tls"
functions "$work/mqtt.out" | LC_ALL=C comm -23 - "$work/list.common" | LC_ALL=C comm -23 - "$work/list.tls" >"$work/list.mqtt"
{
  echo "# Written by tools/link-order.sh: the functions the daemon runs, laid out in this order"
  echo "# by tools/cc-ordered. Those of every daemon:"
  cat "$work/list.common"
  echo "# What TLS and basic auth add:"
  cat "$work/list.tls"
  echo "# What MQTT adds:"
  cat "$work/list.mqtt"
} >link/hot-functions.txt
echo "link/hot-functions.txt: $(wc -l <"$work/list.common") common, $(wc -l <"$work/list.tls") for TLS, $(wc -l <"$work/list.mqtt") for MQTT"
