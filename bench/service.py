"""Load test of the gRPC ranker (serving/ranker/build/ranker_server) on loopback: 1, 4 and 16 concurrent
clients sending requests of real evaluation samples, for each model format; the ids-only form, its
features assembled by the ranker's feature state from the events streams (bench/features.py's user
with a 10,000-event history; the state rebuilt from a broker first), beside it; the same model served by
the peers a user might pick instead (Ray Serve, PyTriton; bench/peers), with the same requests and
client threads; then the ranker once more while a re-export lands mid-run. Bounded in requests and
time: it stops by itself.

Every server gets the same cores (`bench.service.server_cores`, with `taskset`) and the clients the
others (`client_cores`), so that each is measured with what the others had. The ranker's own /metrics
give the batch sizes its micro-batching formed.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from bench.data import ensure_shards
from bench.load import drive, pin_to
from bench.serving import ensure_ranker, export_bench_model
from serving.client import request_to_proto
from serving.proto import ranker_pb2
from export.requests import RequestSchema, requests_from_inputs
from serving.server_process import RankerServer

TOLERANCE = 1e-5  # a peer must answer as the ranker does


def _ranker_clients(server: RankerServer, requests: list[ranker_pb2.RankRequest]):
    from serving.client import RankerClient

    class Client:
        def __enter__(self):
            self.client = RankerClient(server.grpc_address, timeout_s=30)
            return lambda i: self.client.rank_proto(requests[i % len(requests)]).model_generation

        def __exit__(self, *exc):
            self.client.close()

    return Client


def _batch_histogram(metrics: dict[str, float], name: str) -> dict[str, float]:
    return {k.split('le="')[1].rstrip('"}'): v for k, v in metrics.items() if k.startswith(f"{name}_bucket")}


def _mean_batch(before: dict, after: dict, name: str) -> float:
    n = after[f"{name}_count"] - before.get(f"{name}_count", 0)
    return (after[f"{name}_sum"] - before.get(f"{name}_sum", 0)) / n if n else float("nan")


def load(server: RankerServer, requests: list, clients: int, seconds: float, per_client: int, during=None) -> dict:
    """The harness against the ranker, with the batches its /metrics saw form."""
    before = server.metrics()
    candidates = len(requests[0].ids.live_ids) if requests[0].HasField("ids") else len(requests[0].candidates)
    row = drive(_ranker_clients(server, requests), clients, candidates, seconds, per_client, during)
    after = server.metrics()
    return {**row, "generations": row.pop("tags"),
            "mean_batch_requests": _mean_batch(before, after, "ranker_batch_requests"),
            "mean_batch_candidates": _mean_batch(before, after, "ranker_batch_candidates"),
            "batch_requests_le": {le: after_v - _batch_histogram(before, "ranker_batch_requests").get(le, 0)
                                  for le, after_v in _batch_histogram(after, "ranker_batch_requests").items()}}


def _print(server: str, row: dict, label: str = "") -> None:
    batch = f"{row['mean_batch_requests']:>10.2f}" if "mean_batch_requests" in row else f"{'':>10}"
    print(f"  {server:<22} {row['clients']:>7} {row['requests']:>8} {row['errors']:>6} {row['p50_ms']:>8.2f} "
          f"{row['p99_ms']:>8.2f} {row['requests_per_s']:>8.1f} {row['candidates_per_s']:>12,.0f} {batch}  {label}")


def _check_same_answer(name: str, scores: list[float], expected: ranker_pb2.RankResponse) -> None:
    want = np.zeros(len(expected.ranked), dtype=np.float32)
    for r in expected.ranked:
        want[r.candidate] = r.score
    worst = float(np.abs(np.asarray(scores, dtype=np.float32) - want).max())
    if not worst <= TOLERANCE:
        raise SystemExit(f"{name} scores the first request differently from the ranker: max |dscore| = {worst:.3g}")


def _ray_serve_rows(model_dir: Path, requests: list, expected: ranker_pb2.RankResponse, bc: DictConfig,
                    max_batch_requests: int) -> dict:
    from bench.peers.ray_serve import RayServeRanker

    rows = {}
    with RayServeRanker(model_dir, str(bc.peer_format), int(bc.intra_op_threads), max_batch_requests,
                        list(bc.server_cores) if bc.server_cores else None) as server:
        first = server.rank(requests[0])
        _check_same_answer("Ray Serve", [s for _, s in sorted((r.candidate, r.score) for r in first.ranked)], expected)
        for clients in bc.clients:
            drive(server.clients(requests[:4]), 1, len(requests[0].candidates), 5.0, 10)  # warm the channel
            rows[int(clients)] = drive(server.clients(requests), int(clients), len(requests[0].candidates),
                                       float(bc.seconds), int(bc.requests_per_client))
            _print(f"Ray Serve ({bc.peer_format})", rows[int(clients)])
    return rows


def _pytriton_rows(model_dir: Path, requests: list[dict], schema: RequestSchema, expected: ranker_pb2.RankResponse,
                   bc: DictConfig, max_batch_requests: int, work_dir: Path) -> dict:
    from bench.peers.pytriton_peer import PyTritonRanker

    rows = {}
    cores = list(bc.client_cores) if bc.client_cores else None
    with PyTritonRanker(model_dir, requests, schema, str(bc.peer_format), int(bc.intra_op_threads), max_batch_requests,
                        list(bc.server_cores) if bc.server_cores else None, work_dir) as server:
        _check_same_answer("PyTriton", server.first_scores(), expected)
        for clients in bc.clients:
            server.load(1, 5.0, 10, cores)  # warm up
            rows[int(clients)] = server.load(int(clients), float(bc.seconds), int(bc.requests_per_client), cores)
            _print(f"PyTriton ({bc.peer_format})", rows[int(clients)])
    return rows


def _ratios(figures: dict, formats: tuple[str, ...], clients: list[int]) -> None:
    """The ranker (its best format at each client count) against each peer."""
    peers = [name for name in figures.get("peers", {})]
    if not peers:
        return
    print("  ranker / peer: throughput ratio (higher is better for the ranker), p99 ratio (lower is better)")
    for n in clients:
        best = max((figures[f"{fmt}/{n}"] for fmt in formats), key=lambda r: r["requests_per_s"])
        cells = []
        for peer in peers:
            row = figures["peers"][peer].get(n)
            if row:
                cells.append(f"{peer}: x{best['requests_per_s'] / row['requests_per_s']:.2f} req/s, "
                             f"p99 x{best['p99_ms'] / row['p99_ms']:.2f}")
        print(f"    {n:>2} client(s): " + "; ".join(cells))


def _ids_only_rows(cfg: DictConfig, data, model_dir: Path, formats: tuple[str, ...], flags: list[str],
                   server_cores, figures: dict, full_request: ranker_pb2.RankRequest) -> dict:
    """The ids-only form at the same candidates, against the same model: the events of bench/features.py's
    synthetic feed on a broker, the ranker's feature state rebuilt from them, then the load."""
    from bench.features import ensure_catalog, synthetic_feed
    from online.broker import BrokerServer, Producer, connect, events_stream

    bc = cfg.bench.service
    n = int(bc.candidates)
    rows: dict = {}
    for history in bc.ids_only.history_events:
        events, id_requests, _ = synthetic_feed(data, int(history), n, int(bc.distinct_requests))
        requests = [request_to_proto(r) for r in id_requests]
        sizes = {"full": len(full_request.SerializeToString()), "ids": len(requests[0].SerializeToString())}
        rows["request_bytes"] = sizes
        print(f"  request bytes at {n} candidates: full-feature {sizes['full']:,}, ids-only {sizes['ids']:,} "
              f"(x{sizes['full'] / sizes['ids']:.0f} smaller); the ids-only user's history: {int(history):,} events")
        with BrokerServer(fsync="everysec") as broker:
            entries = [(events_stream(0), f"{max(int(e['ts']), 0)}-{i + 1}",
                        {k.encode(): str(v).encode() for k, v in e.items()}) for i, e in enumerate(events)]
            Producer(connect(broker.url)).send_keyed(entries)
            feature_flags = ["--features-catalog", str(ensure_catalog(cfg, data)), "--events-broker",
                             f"127.0.0.1:{broker.port}", "--event-partitions", "1"]
            for fmt in formats:
                with RankerServer(model_dir, "--format", fmt, *flags, *feature_flags, cores=server_cores) as server:
                    rebuilt = [line for line in server.stderr.splitlines() if "feature state rebuilt" in line]
                    if rebuilt:
                        print(f"  ({rebuilt[0].split('ranker_server: ')[-1]})")
                    for clients in bc.ids_only.clients:
                        load(server, requests[:4], 1, 5.0, 10)  # warm the channel
                        row = load(server, requests, int(clients), float(bc.seconds), int(bc.requests_per_client))
                        full = figures.get(f"{fmt}/{clients}")
                        label = f"ids-only, {int(history):,}-event history"
                        if full:
                            label += f"; p99 x{row['p99_ms'] / full['p99_ms']:.2f} the full-feature form's"
                        stages = server.metrics()
                        count = stages.get('ranker_stage_seconds_count{stage="features"}', 0)
                        if count:
                            row["features_mean_ms"] = 1e3 * stages['ranker_stage_seconds_sum{stage="features"}'] / count
                            label += f"; assembly {row['features_mean_ms']:.2f} ms mean"
                        rows[f"{fmt}/{clients}/{int(history)}"] = row
                        _print(f"C++ ranker ({fmt})", row, label)
    return rows


def run(cfg: DictConfig) -> dict:
    bc = cfg.bench.service
    data = ensure_shards(cfg)
    ensure_ranker()
    n = int(bc.candidates)
    server_cores = list(bc.server_cores) if bc.server_cores else None
    flags = ["--workers", str(bc.workers), "--intra-op-threads", str(bc.intra_op_threads),
             "--max-batch-candidates", str(bc.max_batch_candidates), "--max-delay-us", str(bc.max_delay_us),
             "--reload-check-ms", "200"]
    max_batch_requests = max(1, int(bc.max_batch_candidates) // n)  # the peers batch whole requests
    figures: dict = {}
    cores_before = os.sched_getaffinity(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        formats = tuple(bc.formats)
        export_formats = tuple(dict.fromkeys([*formats, *([bc.peer_format] if bc.peers else [])]))
        print(f"[bench] exporting the served model ({', '.join(export_formats)}; AOTInductor compiles for ~1 min)")
        report, inputs = export_bench_model(cfg, data, model_dir, n * int(bc.distinct_requests), export_formats,
                                            threads=int(bc.intra_op_threads))
        schema = RequestSchema(json.loads(report.meta_path.read_text()))
        request_dicts = requests_from_inputs(inputs, schema, n, prefix="load")
        requests = [request_to_proto(r) for r in request_dicts]
        print(f"service load test ({cfg.world.name} world tables, {n} candidates per request, {len(requests)} distinct "
              f"requests; each server {bc.workers} worker(s) x {bc.intra_op_threads} intra-op thread(s) on cores "
              f"{server_cores or 'any'}, clients on cores {list(bc.client_cores) if bc.client_cores else 'any'}; the "
              f"ranker's max delay {bc.max_delay_us} us, {bc.max_batch_candidates} candidates a batch, the peers "
              f"{max_batch_requests} requests; each setting stops after {bc.requests_per_client} requests per "
              f"client or {bc.seconds} s)")
        print(f"  {'server':<22} {'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'req/s':>8} {'candidates/s':>12} {'batch req':>10}")
        pin_to(list(bc.client_cores) if bc.client_cores else None)
        try:
            expected = None
            for fmt in formats:
                with RankerServer(model_dir, "--format", fmt, *flags, cores=server_cores) as server:
                    expected = expected or server.client.rank_proto(requests[0])
                    for clients in bc.clients:
                        load(server, requests[:4], 1, 5.0, 10)  # warm the channel
                        row = load(server, requests, int(clients), float(bc.seconds), int(bc.requests_per_client))
                        figures[f"{fmt}/{clients}"] = row
                        _print(f"C++ ranker ({fmt})", row)
            peers = {"ray_serve": lambda: _ray_serve_rows(model_dir, requests, expected, bc, max_batch_requests),
                     "pytriton": lambda: _pytriton_rows(model_dir, request_dicts, schema, expected, bc,
                                                        max_batch_requests, Path(tmp))}
            figures["peers"] = {}
            for peer in bc.peers:
                if peer not in peers:
                    raise SystemExit(f"unknown peer '{peer}'; known: {sorted(peers)}")
                figures["peers"][peer] = peers[peer]()
            _ratios(figures, formats, [int(c) for c in bc.clients])
            if bc.ids_only.clients:
                figures["ids_only"] = _ids_only_rows(cfg, data, model_dir, formats, flags, server_cores, figures,
                                                     requests[0])
            if int(bc.reload_clients) > 0:
                reload_format = formats[0]
                with RankerServer(model_dir, "--format", reload_format, *flags, cores=server_cores) as server:
                    def re_export():
                        time.sleep(float(bc.seconds) / 4)
                        export_bench_model(cfg, data, model_dir, n * int(bc.distinct_requests), (reload_format,),
                                           seed=1, threads=int(bc.intra_op_threads))
                    # Bounded by time only: the clients keep calling until 2 s after the re-export has landed.
                    row = load(server, requests, int(bc.reload_clients), float(bc.seconds), 10 ** 9, during=re_export)
                    figures["reload"] = row
                    _print(f"C++ ranker ({reload_format})", row, f"re-export mid-run: generations {row['generations']}")
                    if 2 not in row["generations"]:
                        raise SystemExit("the re-export did not reach the server within the run: no call was "
                                         "answered by model generation 2")
        finally:
            os.sched_setaffinity(0, cores_before)
    bad = {k: r["errors"] for k, r in figures.items() if k not in ("peers", "ids_only") and r["errors"]}
    bad |= {f"ids_only/{k}": r["errors"] for k, r in figures.get("ids_only", {}).items()
            if isinstance(r, dict) and r.get("errors")}
    bad |= {f"{peer}/{n}": r["errors"] for peer, rows in figures["peers"].items() for n, r in rows.items() if r["errors"]}
    if bad:
        raise SystemExit(f"servers answered with errors under load: {bad}")
    return figures
