#!/usr/bin/python3
"""A peer for bench/compare.sh: the same sensors as power-monitord's, exported the way a
Python exporter would (the official prometheus_client), so the two can be compared.

Each sensor has power-monitord's per-sensor families (voltages, current, power, energy,
samples, read errors by kind, recoveries, up, last sample, anomaly rules, gaps, info), updated
once a second from a random load; /metrics is prometheus_client's own HTTP server (gzip when
asked).

    bench/peer_exporter.py PORT [SENSORS]      (Debian: apt-get install python3-prometheus-client)
"""

import random
import sys
import threading
import time

from prometheus_client import Counter, Gauge, Info, start_http_server

KINDS = ["nack", "timeout", "i2c", "unavailable", "invalid", "overflow", "stale"]
RULES = ["over_power", "energy_budget", "spike", "under_voltage", "over_voltage", "overrange"]


def main():
    port = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    s = ["sensor"]
    bus = Gauge("powermon_bus_voltage_volts", "Bus voltage.", s)
    shunt = Gauge("powermon_shunt_voltage_volts", "Shunt voltage.", s)
    current = Gauge("powermon_current_amperes", "Current.", s)
    power = Gauge("powermon_power_watts", "Power.", s)
    energy = Counter("powermon_energy_joules", "Energy.", s)
    reverse = Counter("powermon_energy_reverse_joules", "Reverse energy.", s)
    samples = Counter("powermon_samples", "Samples.", s)
    errors = Counter("powermon_read_errors", "Read errors.", ["sensor", "kind"])
    recoveries = Counter("powermon_sensor_recoveries", "Recoveries.", ["sensor", "action"])
    up = Gauge("powermon_sensor_up", "Up.", s)
    last = Gauge("powermon_last_sample_timestamp_seconds", "Last sample.", s)
    active = Gauge("powermon_anomaly_active", "Anomaly active.", ["sensor", "rule"])
    anomalies = Counter("powermon_anomalies", "Anomalies.", ["sensor", "rule"])
    gaps = Counter("powermon_integration_gaps", "Gaps.", s)
    info = Info("powermon_sensor", "Sensor info.", s)

    names = [f"s{i:02}" for i in range(n)]
    for name in names:
        for kind in KINDS:
            errors.labels(name, kind)
        for action in ["retry", "reprogram"]:
            recoveries.labels(name, action)
        for rule in RULES[:4]:
            active.labels(name, rule).set(0)
            anomalies.labels(name, rule)
        gaps.labels(name)
        reverse.labels(name)
        info.labels(name).info({"driver": "simulated", "chip": "ina219", "bus": "virtual-0"})

    def sample():
        while True:
            now = time.time()
            for name in names:
                watts = random.uniform(5.0, 30.0)
                volts = 12.0 + random.uniform(-0.1, 0.1)
                bus.labels(name).set(volts)
                current.labels(name).set(watts / volts)
                shunt.labels(name).set(watts / volts * 0.1)
                power.labels(name).set(watts)
                energy.labels(name).inc(watts)
                samples.labels(name).inc()
                up.labels(name).set(1)
                last.labels(name).set(now)
            time.sleep(1.0)

    start_http_server(port, addr="127.0.0.1")
    threading.Thread(target=sample, daemon=True).start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
