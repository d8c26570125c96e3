"""Closed-loop load from client threads, the one harness every served ranker is measured with (the C++
service, and the peers in bench/peers): each thread sends its next request as soon as the previous
answer is in, until it has sent `per_client` requests or `seconds` have passed. Latency is taken
around the call: serialisation, loopback, the server's queue and work, the answer.

Only the standard library and NumPy, so that a peer's own environment can run it too.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import AbstractContextManager
from typing import Callable

import numpy as np

# A client: opened once per thread, then called with the request's index; returns a tag of the
# answer (the model generation that served it, or None). Raises for an answer that is an error.
Client = Callable[[int], "int | None"]
OpenClient = Callable[[], AbstractContextManager[Client]]


def percentile(sorted_ms: np.ndarray, q: float) -> float:
    """Nearest rank, as the C++ ranker's bench computes it."""
    return float(sorted_ms[max(int(np.ceil(q * len(sorted_ms))) - 1, 0)]) if len(sorted_ms) else float("nan")


def _client_loop(open_client: OpenClient, stop: threading.Event, limit: int, out: dict) -> None:
    latencies, errors, tags = [], 0, set()
    with open_client() as call:
        for i in range(limit):
            if stop.is_set():
                break
            t0 = time.perf_counter()
            try:
                tags.add(call(i))
            except Exception:  # an answer that is an error: counted, and the load goes on
                errors += 1
            latencies.append(time.perf_counter() - t0)
    out.update(latencies=latencies, errors=errors, tags=tags)


def drive(open_client: OpenClient, clients: int, candidates: int, seconds: float, per_client: int,
          during: Callable[[], None] | None = None) -> dict:
    """`clients` threads for at most `per_client` requests each or `seconds` in all; `during`, if
    given, runs in this thread once the clients have started, and they go on for 2 s after it (the
    per-client bound still holds). -> requests, errors, p50/p99 ms, requests/s, candidates/s, the tags seen."""
    results = [{} for _ in range(clients)]
    stop = threading.Event()
    start = time.perf_counter()
    threads = [threading.Thread(target=_client_loop, args=(open_client, stop, per_client, results[i]))
               for i in range(clients)]
    for t in threads:
        t.start()
    until = start + seconds
    if during is not None:
        during()
        until = max(until, time.perf_counter() + 2.0)
    while time.perf_counter() < until and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies = np.sort(np.concatenate([r["latencies"] for r in results])) * 1e3
    n = len(latencies)
    return {"clients": clients, "requests": n, "errors": sum(r["errors"] for r in results),
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99), "requests_per_s": n / wall,
            "candidates_per_s": n * candidates / wall,
            "tags": sorted(t for t in set().union(*(r["tags"] for r in results)) if t is not None)}


def pin_to(cores: list[int] | None) -> None:
    """Run this process (and what it starts afterwards) on `cores` only; None leaves it as it is."""
    if cores:
        os.sched_setaffinity(0, set(cores))


def free_port() -> int:
    """A TCP port free on loopback now (for a server started next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
