#!/usr/bin/env python3
"""Basic auth under attack, and what a refusal's time tells, against a running daemon whose
web configuration has the user `prometheus` with the password `secret`.

    bench/auth.py PORT PID timing [COUNT]
        medians of COUNT (200) refusals each: an unknown user, and a wrong password for
        `prometheus`, interleaved; and their ratio.
    bench/auth.py PORT PID attack CONNECTIONS [SECONDS]
        CONNECTIONS clients (threads of another process) from 127.0.0.1 send unique wrong passwords as fast as they are
        answered for SECONDS (20), while a scraper at 127.0.0.2 (logged in once before) fetches
        /metrics every 0.5 s with a 1 s timeout; print the share of scrapes answered 200
        within 1 s, their p50 and p99, the attackers' answers, and the most threads the
        daemon had.
"""
import base64
import http.client
import socket
import statistics
import subprocess
import sys
import threading
import time

port, pid, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


def header(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(auth, source="127.0.0.1", timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        c.request("GET", "/metrics", headers={"Authorization": auth})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def threads():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


if mode == "timing":
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    times = {"unknown user": [], "wrong password": []}
    for i in range(count):
        for kind, user in (("unknown user", f"nobody{i}"), ("wrong password", "prometheus")):
            t = time.perf_counter()
            status = get(header(user, f"guess{i}"))
            times[kind].append(time.perf_counter() - t)
            assert status == 401, status
    medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
    for k, v in medians.items():
        print(f"{k}: median {v:.2f} ms of {count}")
    print(f"ratio unknown/wrong: {medians['unknown user'] / medians['wrong password']:.3f}")
    sys.exit(0)

connections = int(sys.argv[4])
stop = False
answers = {}
lock = threading.Lock()


def attacker(i):
    n = 0
    while not stop:
        n += 1
        try:
            status = get(header("prometheus" if n % 2 else "mallory", f"x{i}-{n}"), timeout=30)
        except OSError as e:
            status = type(e).__name__
        with lock:
            answers[status] = answers.get(status, 0) + 1


if mode == "flood":
    # The attackers, in a process of their own: the scraper's times are not the client's.
    for i in range(connections):
        threading.Thread(target=attacker, args=(i,), daemon=True).start()
    sys.stdin.read()
    stop = True
    with lock:
        print(f"attackers' answers {dict(sorted(answers.items(), key=str))}")
    sys.exit(0)

seconds = int(sys.argv[5]) if len(sys.argv) > 5 else 20
right = header("prometheus", "secret")
assert get(right, "127.0.0.2") == 200
flood = subprocess.Popen([sys.executable, __file__, str(port), str(pid), "flood", str(connections)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
time.sleep(1)
latencies, ok, most = [], 0, 0
end = time.time() + seconds
while time.time() < end:
    t = time.perf_counter()
    try:
        status = get(right, "127.0.0.2", timeout=1)
    except OSError:
        status = None
    took = time.perf_counter() - t
    latencies.append(took)
    if status == 200 and took <= 1.0:
        ok += 1
    most = max(most, threads())
    time.sleep(0.5)
attackers, _ = flood.communicate("")
latencies.sort()
p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
print(f"{connections} attacking connections, {seconds} s: scraper {ok}/{len(latencies)} "
      f"({100 * ok / len(latencies):.0f} %) answered 200 within 1 s, p50 {p(0.5):.1f} ms, "
      f"p99 {p(0.99):.1f} ms; {attackers.strip()}; at most {most} threads")
