"""Serving latency: the same requests through the C++ ranker (each export format) and through the Python TorchScript call.

The model has the default architecture (conf/model, conf/cross) with the world's table sizes, freshly
initialised: latency does not depend on trained weights, and the benchmark needs no training run.
Requests are built from real samples at the end of the evaluation stream (export/requests.py), where
users have histories.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from bench.data import ensure_shards
from data_pipelines.dataset import FINAL, REALTIME, DataSet
from export.requests import RequestSchema, parse_request, rank, requests_from_inputs
from export.request_scorer import RequestLayout
from export.scorer import CandidateScorer, inputs_from_batch, model_id_features
from export.artifact import export, metadata
from recsys.data import ShardDataset, make_loader
from recsys.model.factory import model_from_config

ROOT = Path(__file__).resolve().parents[1]
RANKER = ROOT / "export" / "ranker" / "build" / "ranker"


def export_bench_model(cfg: DictConfig, data: DataSet, out_dir: Path, n_samples: int,
                       formats: tuple[str, ...] = ("torchscript",), seed: int = 0, threads: int = 1):
    """The served architecture with untrained weights (latency does not depend on them), exported to
    `out_dir`; (the export report, scorer inputs of `n_samples` evaluation samples)."""
    bc = cfg.bench.serving
    torch.manual_seed(seed)
    model = model_from_config(bc, data.manifest(REALTIME), embedding_device="cpu").eval()
    inputs = inputs_from_batch(latest_samples(data, n_samples), model)
    validation = inputs.slice(0, 256)
    with torch.no_grad():
        expected = CandidateScorer(model, model_id_features(model))(*validation)
    layout = OmegaConf.to_container(bc.request_layout, resolve=True)
    meta = metadata(model, layout, 10_000, {"run_id": "bench (untrained)"})
    report = export(model, RequestLayout.of(model, layout), meta, out_dir, validation, expected, formats=formats,
                    aoti_threads=threads)
    return report, inputs


def latest_samples(data: DataSet, n_samples: int):
    """A batch of the evaluation stream's last `n_samples` samples (or all, if fewer): requests of a
    service in its steady state, whose users have histories. The stream's first samples come from a
    world that has just begun, with sequences nearly empty, and would make every request cheap."""
    shards = data.manifest(FINAL)["shards"]
    chosen, held = [], 0
    for shard in reversed(shards):  # from the end until enough samples are in
        chosen.insert(0, shard["file"])
        held += shard["samples"]
        if held >= n_samples:
            break
    for batch in make_loader(ShardDataset(data.stream(FINAL), min(n_samples, held), shards=chosen)):
        last = batch  # the last full batch of those shards
    return last


def _percentiles(ms: list[float]) -> tuple[float, float]:
    # nearest rank, as the ranker computes them
    values = np.sort(np.asarray(ms))
    def at(q: float) -> float:
        return float(values[max(int(np.ceil(q * len(values))) - 1, 0)])
    return at(0.5), at(0.99)


def _python_figures(model_path: Path, schema: RequestSchema, lines: list[str], tasks: list[str],
                    repeat: int, warmup: int) -> dict:
    module = torch.jit.load(str(model_path))
    total, forward = [], []
    for r in range(warmup + repeat):
        for line in lines:
            t0 = time.perf_counter()
            request_id, inputs = parse_request(line, schema)
            t1 = time.perf_counter()
            with torch.inference_mode():
                probabilities, score = module(*inputs)
            t2 = time.perf_counter()
            json.dumps(rank(request_id, probabilities, score, tasks))
            t3 = time.perf_counter()
            if r >= warmup:
                total.append((t3 - t0) * 1e3)
                forward.append((t2 - t1) * 1e3)
    p50, p99 = _percentiles(total)
    return {"p50_ms": p50, "p99_ms": p99, "forward_p50_ms": _percentiles(forward)[0],
            "candidates_per_s": len(json.loads(lines[0])["candidates"]) / (np.mean(total) / 1e3)}


def ensure_ranker() -> None:
    """`make ranker` (incremental: quick when the build is current)."""
    print("[bench] make ranker")
    subprocess.run(["make", "--no-print-directory", "ranker"], cwd=ROOT, check=True, capture_output=True)


def _ranker_figures(model_dir: Path, requests: Path, repeat: int, warmup: int, threads: int,
                    fmt: str) -> dict[int, dict]:
    result = subprocess.run([str(RANKER), "--model", str(model_dir), "--format", fmt, "--bench", str(requests),
                             "--repeat", str(repeat), "--warmup", str(warmup), "--threads", str(threads)],
                            capture_output=True, text=True, check=True)
    line = next(l for l in result.stdout.splitlines() if l.startswith("BENCH_JSON "))
    return {r["candidates"]: r for r in json.loads(line.removeprefix("BENCH_JSON "))["results"]}


def run(cfg: DictConfig) -> dict:
    bc = cfg.bench.serving
    data = ensure_shards(cfg)
    sizes = [int(n) for n in bc.candidates]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        formats = tuple(bc.formats)
        report, inputs = export_bench_model(cfg, data, model_dir, max(sizes) * int(bc.requests_per_size), formats,
                                            threads=int(bc.threads))
        meta = json.loads(report.meta_path.read_text())
        schema = RequestSchema(meta)
        lines_by_size = {}
        for n in sizes:
            requests = requests_from_inputs(inputs, schema, n, prefix="bench")[: int(bc.requests_per_size)]
            lines_by_size[n] = [json.dumps(r) for r in requests]
        request_file = Path(tmp) / "requests.jsonl"
        request_file.write_text("".join(l + "\n" for ls in lines_by_size.values() for l in ls))
        threads = int(bc.threads)
        ensure_ranker()
        cpp = {fmt: _ranker_figures(model_dir, request_file, int(bc.repeat), int(bc.warmup), threads, fmt)
               for fmt in formats}
        before = torch.get_num_threads()
        torch.set_num_threads(threads)  # as the ranker runs
        try:
            python = {n: _python_figures(report.files["torchscript"], schema, lines, meta["tasks"], int(bc.repeat),
                                         int(bc.warmup)) for n, lines in lines_by_size.items()} \
                if "torchscript" in formats else {}
        finally:
            torch.set_num_threads(before)

    print(f"serving ({cfg.world.name} world tables, {len(meta['gsus']['names'])} GSUs x {meta['gsus']['length']}, "
          f"{threads} intra-op thread(s), {bc.requests_per_size} requests x {bc.repeat} repeats per size; "
          f"end to end = parse + validate + score + rank + JSON)")
    print(f"  {'candidates':>10}  {'':<26} {'p50 ms':>8} {'p99 ms':>8} {'forward p50':>12} {'candidates/s':>13}")
    for n in sizes:
        rows = [(f"C++ ranker, {fmt}", cpp[fmt][n]) for fmt in formats]
        rows += [("Python TorchScript call", python[n])] if python else []
        for name, f in rows:
            print(f"  {n:>10}  {name:<26} {f['p50_ms']:>8.2f} {f['p99_ms']:>8.2f} {f['forward_p50_ms']:>12.2f} "
                  f"{f['candidates_per_s']:>13,.0f}")
    return {"cpp": cpp, "python": python}
