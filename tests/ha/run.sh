#!/usr/bin/env bash
# A real Home Assistant core against the daemon: what HA makes of the daemon's MQTT discovery
# and states, and every warning it logs about them.
#
#   bash tests/ha/run.sh                      # from the repository's root
#
# Needs Python 3.11 or 3.12 (python3, or $PYTHON), Mosquitto (/usr/sbin/mosquitto) and a built
# daemon: $POWER_MONITORD_BIN, default target/debug/power-monitord (relative to the repository;
# it is copied, so a build during the run does not change it). Network: PyPI for the first
# install only; the run itself stays on 127.0.0.1, on free ports.
#
# The first run makes a venv in ${CACHE:-$HOME/.cache/power-monitord}/ha-venv with the pinned
# tests/ha/requirements.txt (Home Assistant 2024.3.3); later runs reuse it, and reinstall only
# when requirements.txt changed. tests/ha/check.py then starts Mosquitto, Home Assistant
# (`hass -c DIR`, the MQTT integration as a stored config entry) and the daemon on
# config/simulated.toml with an [mqtt] section; restarts the daemon, makes one sensor fail and
# recover by reloads; and prints HA's warnings and each entity's states over the run.
#
# Exit 0: no HA warning or error about MQTT, templates or the device, and every entity had a
# value one publish interval after each start and reload where the daemon published one.
# Exit 1: otherwise (the report says which). Exit 2: the harness could not run.
#
# Environment: HA_TEST_INTERVAL (the daemon's mqtt.interval in seconds, 10),
# HA_TEST_GRACE (seconds HA gets on top of an interval, 3), HA_TEST_FAULT_SENSOR (pi_5v),
# KEEP=1 (keep the temporary directory with HA's and the daemon's logs).
set -euo pipefail
cd "$(dirname "$0")/../.."

cache=${CACHE:-$HOME/.cache/power-monitord}
venv=$cache/ha-venv
requirements=tests/ha/requirements.txt

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))'; then
  echo "tests/ha: Home Assistant 2024.3 runs on Python 3.11 or 3.12; set PYTHON" >&2
  exit 2
fi

wanted=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$wanted" ]; then
  echo "tests/ha: installing $requirements into $venv" >&2
  start=$SECONDS
  if [ ! -x "$venv/bin/python" ] && ! "$python" -m venv "$venv"; then
    rm -rf "$venv"
    echo "tests/ha: $python -m venv failed (on Debian: apt-get install python3-venv)" >&2
    exit 2
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$wanted" >"$venv/.requirements.sha256"
  echo "tests/ha: installed in $((SECONDS - start)) s" >&2
fi

export POWER_MONITORD_BIN=${POWER_MONITORD_BIN:-target/debug/power-monitord}
exec "$venv/bin/python" tests/ha/check.py
