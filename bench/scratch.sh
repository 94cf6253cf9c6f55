# shellcheck shell=bash
# Sourced by the scripts that start daemons and peers: a scratch directory `$work`, the PIDs
# in `pids` stopped and the directory removed on exit, and `free_port`.
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
