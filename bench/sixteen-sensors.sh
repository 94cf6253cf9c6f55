#!/usr/bin/env bash
# Prints the benchmarks' node: 16 INA219s on one virtual bus with every rule, as
# benches/common/mod.rs makes them (bench/compare.sh, tools/link-order.sh).
set -euo pipefail
printf '[daemon]\nlisten = "127.0.0.1:0"\n'
for i in $(seq 0 15); do
  printf '\n[[sensor]]\nname = "s%02d"\ndriver = "simulated"\nbus = "virtual-0"\naddress = %#04x\n' "$i" $((0x40 + i))
  printf 'shunt_ohms = 0.1\nmax_current_amps = 3.2\ninterval = "1s"\n'
  printf 'labels = { room = "room %d", appliance = "load %d" }\n' "$i" "$i"
  printf '[sensor.simulation]\nload = { model = "uniform", min_watts = 5.0, max_watts = 30.0 }\nnoise = 0.01\n'
  printf '[sensor.anomaly]\nmax_power_watts = 25.0\nmax_power_for = "10s"\n'
  printf 'energy_budget = { kwh = 1.0, window = "24h" }\nspike_sigma = 4.0\nallowed_bus_volts = [11.0, 14.6]\n'
done
