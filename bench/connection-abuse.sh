#!/usr/bin/env bash
# /metrics under connection abuse: 300 half-sent requests, then 1000 idle kept-alive
# connections, held by a script that reopens what the server closes, while a scraper from
# another address fetches /metrics every 0.5 s. Once with the daemon's own file limit (a cap of
# 2048 connections: nothing has to give way), once with prlimit --nofile=256 (a cap of 192:
# the attack is beyond it, and the server closes the attacker's waiting connections first).
#
#   bench/connection-abuse.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
cargo build --release --quiet
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
printf '[[sensor]]\nname = "a"\ndriver = "simulated"\ninterval = "200ms"\n' > "$work/config.toml"
ulimit -n "$(ulimit -Hn)"
for limit in "" "prlimit --nofile=256:256"; do
  port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  STATE_DIRECTORY="$work/state" RUNTIME_DIRECTORY="$work/run" $limit target/release/power-monitord \
    --config "$work/config.toml" --listen "127.0.0.1:$port" 2>"$work/log" &
  pid=$!
  sleep 1
  echo "== ${limit:-the daemon with its own file limit}"
  python3 bench/abuse.py "$port" 300 partial "$seconds"
  python3 bench/abuse.py "$port" 1000 idle "$seconds"
  kill "$pid"; wait "$pid" || true; pid=
  rm -rf "$work/state" "$work/run"
done
