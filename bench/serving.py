"""Serving latency: the same requests through the C++ ranker's JSON tool (each export format), and the
model's own cost: the forward before and after the request-level scorer, its FLOPs and the
single-core bound they imply.

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
from torch.utils.flop_counter import FlopCounterMode
from omegaconf import DictConfig, OmegaConf

from bench.data import ensure_shards
from data_pipelines.dataset import FINAL, REALTIME, DataSet
from export.requests import RequestSchema, parse_request, requests_from_inputs
from export.request_scorer import RequestLayout, RequestScorer
from export.scorer import CandidateScorer, inputs_from_batch, model_id_features
from export.torchscript import to_torchscript
from export.artifact import export, metadata
from recsys.data import ShardDataset, make_loader
from recsys.model.factory import model_from_config
from serving.binaries import RANKER_TOOL

ROOT = Path(__file__).resolve().parents[1]



def bench_model(cfg: DictConfig, data: DataSet, seed: int = 0):
    """The served architecture (bench.serving's model and cross) with the world's tables and untrained
    weights (latency does not depend on them), and its request layout."""
    bc = cfg.bench.serving
    torch.manual_seed(seed)
    model = model_from_config(bc, data.manifest(REALTIME), embedding_device="cpu").eval()
    return model, OmegaConf.to_container(bc.request_layout, resolve=True)


def export_bench_model(cfg: DictConfig, data: DataSet, out_dir: Path, n_samples: int,
                       formats: tuple[str, ...] = ("torchscript",), seed: int = 0, threads: int = 1):
    """`bench_model` exported to `out_dir`; (the export report, per-candidate inputs of the last
    `n_samples` evaluation samples)."""
    model, layout = bench_model(cfg, data, seed)
    inputs = inputs_from_batch(latest_samples(data, n_samples), model)
    validation = inputs.slice(0, 256)
    with torch.no_grad():
        expected = CandidateScorer(model, model_id_features(model))(*validation)
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


def _median_ms(call, args, repeat: int, warmup: int) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            call(*args)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            call(*args)
            times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _flops(module, args) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(*args)
    return counter.get_total_flops()


def gemm_flops_per_s(repeat: int = 20) -> float:
    """What this process's threads multiply at: float32 GEMMs of the first level's shape (200 x 424
    by 424 x 918), the bulk of the model's arithmetic."""
    a, b = torch.randn(200, 424), torch.randn(424, 918)
    return 2 * 200 * 424 * 918 / (_median_ms(torch.mm, (a, b), repeat, 3) / 1e3)


def model_cost(cfg: DictConfig, data: DataSet, requests: dict[int, list[dict]], schema: RequestSchema,
               repeat: int, warmup: int, model_dir: Path, formats: tuple[str, ...]) -> dict[int, dict]:
    """Per request size: the forward before (the per-candidate model, every candidate a whole sample,
    as exported before the request scorer) and after (the request scorer, each format), timed from
    Python on the same requests; the FLOPs of each per request and per candidate (matrix products, as
    torch's FLOP counter counts them); and the single-core bound those FLOPs imply at this machine's
    GEMM rate."""
    model, layout_dict = bench_model(cfg, data)
    layout = RequestLayout.of(model, layout_dict)
    ids, gsus = model_id_features(model), list(model.gsu_names)
    eager_before, eager_after = CandidateScorer(model, ids).eval(), RequestScorer(model, layout).eval()
    before = to_torchscript(eager_before)
    after = {"torchscript": torch.jit.load(str(model_dir / "model.pt"))} if "torchscript" in formats else {}
    if "aoti" in formats:
        after["aoti"] = torch._inductor.aoti_load_package(str(model_dir / "model.pt2"))
    rate = gemm_flops_per_s()
    figures = {}
    for n, batch in requests.items():
        request = parse_request(batch[0], schema)[1].trimmed()
        per_candidate = layout.join(request, ids, gsus)
        flops_before, flops_after = _flops(eager_before, per_candidate), _flops(eager_after, request)
        figures[n] = {"before_ms": _median_ms(before, per_candidate, repeat, warmup),
                      **{f"after_{fmt}_ms": _median_ms(m, request, repeat, warmup) for fmt, m in after.items()},
                      "flops_before": flops_before, "flops_after": flops_after,
                      "bound_ms": flops_after / rate * 1e3, "gemm_gflops": rate / 1e9}
    return figures


def ensure_ranker() -> None:
    """`make ranker` (incremental: quick when the build is current)."""
    print("[bench] make ranker")
    subprocess.run(["make", "--no-print-directory", "ranker"], cwd=ROOT, check=True, capture_output=True)


def _ranker_figures(model_dir: Path, requests: Path, repeat: int, warmup: int, threads: int,
                    fmt: str) -> dict[int, dict]:
    result = subprocess.run([str(RANKER_TOOL), "--model", str(model_dir), "--format", fmt, "--bench", str(requests),
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
            cost = model_cost(cfg, data, {n: [json.loads(l) for l in lines] for n, lines in lines_by_size.items()},
                              schema, int(bc.repeat), int(bc.warmup), model_dir, formats)
        finally:
            torch.set_num_threads(before)

    print(f"serving ({cfg.world.name} world tables, {len(meta['gsus']['names'])} GSUs x {meta['gsus']['length']}, "
          f"{threads} intra-op thread(s), {bc.requests_per_size} requests x {bc.repeat} repeats per size, from the "
          f"end of the evaluation stream; end to end = parse + validate + score + rank + JSON)")
    print(f"  {'candidates':>10}  {'':<26} {'p50 ms':>8} {'p99 ms':>8} {'forward p50':>12} {'candidates/s':>13}")
    for n in sizes:
        for fmt in formats:
            f = cpp[fmt][n]
            print(f"  {n:>10}  {'C++ ranker, ' + fmt:<26} {f['p50_ms']:>8.2f} {f['p99_ms']:>8.2f} "
                  f"{f['forward_p50_ms']:>12.2f} {f['candidates_per_s']:>13,.0f}")
    print(f"model cost (forward from Python, median; before = the per-candidate model every candidate a whole "
          f"sample, after = the request scorer; FLOPs of the matrix products; bound = FLOPs at this machine's "
          f"{cost[sizes[0]]['gemm_gflops']:.0f} GFLOP/s float32 GEMM rate on {threads} thread(s))")
    after_columns = [f"after_{fmt}_ms" for fmt in formats]
    print(f"  {'candidates':>10} {'before ms':>10} " + " ".join(f"{'after ' + fmt + ' ms':>17}" for fmt in formats)
          + f" {'MFLOP/request before':>21} {'after':>8} {'kFLOP/cand. before':>19} {'after':>8} {'bound ms':>9}")
    for n in sizes:
        c = cost[n]
        print(f"  {n:>10} {c['before_ms']:>10.2f} " + " ".join(f"{c[k]:>17.2f}" for k in after_columns)
              + f" {c['flops_before'] / 1e6:>21.1f} {c['flops_after'] / 1e6:>8.1f} {c['flops_before'] / n / 1e3:>19.0f}"
              f" {c['flops_after'] / n / 1e3:>8.0f} {c['bound_ms']:>9.2f}")
    return {"cpp": cpp, "model_cost": cost}
