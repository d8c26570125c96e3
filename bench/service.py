"""Load test of the gRPC ranker (export/ranker/build/ranker_server) on loopback: 1, 4 and 16
concurrent clients sending requests of real evaluation samples, for each model format; then once
more while a re-export lands mid-run. Bounded in requests and time: it stops by itself.

Each client is a thread with its own channel, sending prepared proto requests back to back; latency
is measured around the call (serialisation, loopback, queue, forward, answer). The server's own
/metrics give the batch sizes the micro-batching queue formed.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from bench.data import ensure_shards
from bench.serving import ensure_ranker, export_bench_model
from export.client import RankError, RankerClient, request_to_proto
from export.requests import RequestSchema, requests_from_inputs
from export.server_process import RankerServer


def _client_loop(address: str, requests: list, stop: threading.Event, limit: int, out: dict) -> None:
    latencies, errors, generations = [], 0, set()
    with RankerClient(address, timeout_s=30) as client:
        for i in range(limit):
            if stop.is_set():
                break
            t0 = time.perf_counter()
            try:
                answer = client.rank_proto(requests[i % len(requests)])
                generations.add(answer.model_generation)
            except RankError:
                errors += 1
            latencies.append(time.perf_counter() - t0)
    out.update(latencies=latencies, errors=errors, generations=generations)


def _batch_histogram(metrics: dict[str, float], name: str) -> dict[str, float]:
    return {k.split('le="')[1].rstrip('"}'): v for k, v in metrics.items() if k.startswith(f"{name}_bucket")}


def _mean_batch(before: dict, after: dict, name: str) -> float:
    n = after[f"{name}_count"] - before.get(f"{name}_count", 0)
    return (after[f"{name}_sum"] - before.get(f"{name}_sum", 0)) / n if n else float("nan")


def load(server: RankerServer, requests: list, clients: int, seconds: float, per_client: int, during=None) -> dict:
    """`clients` threads for at most `per_client` requests each or `seconds` in all; `during`, if
    given, runs in this thread once the clients have started, and the clients go on for 2 s after it
    (the per-client bound still holds)."""
    before = server.metrics()
    results = [{} for _ in range(clients)]
    stop = threading.Event()
    start = time.perf_counter()
    threads = [threading.Thread(target=_client_loop,
                                args=(server.grpc_address, requests[i::clients] or requests, stop, per_client,
                                      results[i]))
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
    after = server.metrics()
    latencies = np.sort(np.concatenate([r["latencies"] for r in results])) * 1e3
    n = len(latencies)
    at = lambda q: float(latencies[max(int(np.ceil(q * n)) - 1, 0)])  # nearest rank
    candidates = len(requests[0].candidates)
    return {"clients": clients, "requests": n, "errors": sum(r["errors"] for r in results),
            "p50_ms": at(0.5), "p99_ms": at(0.99), "requests_per_s": n / wall, "candidates_per_s": n * candidates / wall,
            "mean_batch_requests": _mean_batch(before, after, "ranker_batch_requests"),
            "mean_batch_candidates": _mean_batch(before, after, "ranker_batch_candidates"),
            "batch_requests_le": {le: after_v - _batch_histogram(before, "ranker_batch_requests").get(le, 0)
                                  for le, after_v in _batch_histogram(after, "ranker_batch_requests").items()},
            "generations": sorted(set().union(*(r["generations"] for r in results)))}


def _print(fmt: str, row: dict, label: str = "") -> None:
    print(f"  {fmt:<12} {row['clients']:>7} {row['requests']:>8} {row['errors']:>6} {row['p50_ms']:>8.2f} "
          f"{row['p99_ms']:>8.2f} {row['requests_per_s']:>8.1f} {row['candidates_per_s']:>12,.0f} "
          f"{row['mean_batch_requests']:>10.2f}  {label}")


def run(cfg: DictConfig) -> dict:
    bc = cfg.bench.service
    data = ensure_shards(cfg)
    ensure_ranker()
    n = int(bc.candidates)
    flags = ["--workers", str(bc.workers), "--intra-op-threads", str(bc.intra_op_threads),
             "--max-batch-candidates", str(bc.max_batch_candidates), "--max-delay-us", str(bc.max_delay_us),
             "--reload-check-ms", "200"]
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        formats = tuple(bc.formats)
        print(f"[bench] exporting the served model ({', '.join(formats)}; AOTInductor compiles for ~1 min)")
        report, inputs = export_bench_model(cfg, data, model_dir, n * int(bc.distinct_requests), formats)
        schema = RequestSchema(json.loads(report.meta_path.read_text()))
        requests = [request_to_proto(r) for r in requests_from_inputs(inputs, schema, n, prefix="load")]
        print(f"service load test ({cfg.world.name} world tables, {n} candidates per request, {len(requests)} distinct "
              f"requests; server: {bc.workers} worker(s) x {bc.intra_op_threads} intra-op thread(s), max delay "
              f"{bc.max_delay_us} us; each setting stops after {bc.requests_per_client} requests per client or "
              f"{bc.seconds} s)")
        print(f"  {'format':<12} {'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'req/s':>8} {'candidates/s':>12} {'batch req':>10}")
        for fmt in formats:
            with RankerServer(model_dir, "--format", fmt, *flags) as server:
                for clients in bc.clients:
                    load(server, requests[:4], 1, 5.0, 10)  # warm the channel
                    row = load(server, requests, int(clients), float(bc.seconds), int(bc.requests_per_client))
                    figures[f"{fmt}/{clients}"] = row
                    _print(fmt, row)
        if int(bc.reload_clients) > 0:
            reload_format = formats[0]
            with RankerServer(model_dir, "--format", reload_format, *flags) as server:
                def re_export():
                    time.sleep(float(bc.seconds) / 4)
                    export_bench_model(cfg, data, model_dir, n * int(bc.distinct_requests), (reload_format,), seed=1)
                # Bounded by time only: the clients keep calling until 2 s after the re-export has landed.
                row = load(server, requests, int(bc.reload_clients), float(bc.seconds), 10 ** 9, during=re_export)
                figures["reload"] = row
                _print(reload_format, row, f"re-export mid-run: generations {row['generations']}")
                if 2 not in row["generations"]:
                    raise SystemExit("the re-export did not reach the server within the run: no call was answered "
                                     "by model generation 2")
    bad = {k: r["errors"] for k, r in figures.items() if r["errors"]}
    if bad:
        raise SystemExit(f"the ranker answered with errors under load: {bad}")
    return figures
