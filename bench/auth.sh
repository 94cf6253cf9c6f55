#!/usr/bin/env bash
# Basic auth under attack (bench/auth.py): unknown-user against wrong-password medians at bcrypt
# costs 4, 10 and 12, then 300 attacking connections at cost 10 and 10 at cost 14, each against
# a scraper that logged in once. Needs htpasswd (apache2-utils).
#
#   bench/auth.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
cargo build --release --quiet
# shellcheck source=bench/scratch.sh
. bench/scratch.sh
printf '[[sensor]]\nname = "a"\ndriver = "simulated"\ninterval = "200ms"\n' > "$work/config.toml"
ulimit -n "$(ulimit -Hn)"
start() { # COST
  hash=$(htpasswd -nbBC "$1" prometheus secret | cut -d: -f2)
  printf 'basic_auth_users:\n  prometheus: %s\n' "$hash" > "$work/web.yml"
  port=$(free_port)
  STATE_DIRECTORY="$work/state" RUNTIME_DIRECTORY="$work/run" target/release/power-monitord \
    --config "$work/config.toml" --listen "127.0.0.1:$port" --web.config.file "$work/web.yml" 2>"$work/log" &
  pid=$!
  pids+=("$pid")
  sleep 1
}
stop() { kill "$pid"; wait "$pid" || true; rm -rf "$work/state" "$work/run"; }
for cost in ${COSTS:-4 10 12}; do
  start "$cost"
  echo "== cost $cost: refusal times"
  python3 bench/auth.py "$port" "$pid" timing 200
  stop
done
for attack in "10 300" "14 10"; do
  read -r cost connections <<<"$attack"
  start "$cost"
  echo "== cost $cost"
  python3 bench/auth.py "$port" "$pid" attack "$connections" "$seconds"
  stop
done
