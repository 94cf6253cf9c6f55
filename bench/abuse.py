#!/usr/bin/env python3
"""Hold COUNT connections to ADDR from 127.0.0.1 (half-sent request headers, or idle
kept-alive connections after one request), reopening those the server closes, while a scraper
at 127.0.0.2 fetches /metrics every 0.5 s; print how many scrapes were answered within a second
and their p50 and p99 latency.

    bench/abuse.py PORT COUNT partial|idle [SECONDS]
"""
import socket
import sys
import threading
import time

port, count, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 10
addr = ("127.0.0.1", port)
opening = {
    "partial": b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
    "idle": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
}[kind]
stop = False


def open_one():
    s = socket.create_connection(addr, timeout=1)
    s.sendall(opening)
    if kind == "idle":
        seen = b""
        while b"\r\n\r\n" not in seen:
            data = s.recv(65536)
            if not data:
                raise OSError("closed")
            seen += data
    s.setblocking(False)
    return s


def alive(s):
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def attack():
    held = [None] * count
    while not stop:
        for i, s in enumerate(held):
            if s is None or not alive(s):
                if s is not None:
                    s.close()
                try:
                    held[i] = open_one()
                except OSError:
                    held[i] = None
        time.sleep(0.05)
    for s in held:
        if s is not None:
            s.close()


attacker = threading.Thread(target=attack)
attacker.start()
time.sleep(2)
latencies, tries = [], seconds * 2
for _ in range(tries):
    start = time.monotonic()
    try:
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.settimeout(1)
        s.connect(addr)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            body += data
        s.close()
        took = time.monotonic() - start
        if body.startswith(b"HTTP/1.1 200") and took < 1:
            latencies.append(took)
    except OSError:
        pass
    time.sleep(max(0, 0.5 - (time.monotonic() - start)))
stop = True
attacker.join()
latencies.sort()
pick = lambda q: latencies[int((len(latencies) - 1) * q)] * 1000 if latencies else float("nan")
print(f"{count:>5} {kind:<8} {len(latencies):>3}/{tries:<3} answered   p50 {pick(0.5):7.2f} ms   p99 {pick(0.99):7.2f} ms")
