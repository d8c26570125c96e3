"""Training throughput of the reference configuration, TorchRec against a plain-PyTorch twin.

Both train the same head (every layer after the lookups, built by recsys/model/factory.py) on the
same synthetic batches (batch 1024, five GSU sequences of length 64, dim 32, about 20 pooled
features, two-level PLE). TorchRec path: the training's own task, tables in
DistributedModelParallel (one process), sequences as position bags, the sparse optimizer
(`bench.training.task.sparse_optimizer`) fused into the embedding kernels' backward. Plain path:
nn.EmbeddingBag / nn.Embedding with the same optimizer class stepping over dense gradients.
Dense layers use the task's dense optimizer in both; each precision in `bench.training.precisions` runs both, the
forward under the context Lightning's precision plugin enters. The embedding share of a step: the
lookup and backward kernels (torch.profiler), plus the separate embedding optimizer step on the
plain path. The layers after the lookups are also timed alone: no embedding path can beat that step.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.profiler import ProfilerActivity, profile
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from bench.plain_model import PlainInput, PlainMomentCross
from data_pipelines.contract import DENSE_FEATURES, MASKED, NEG, POS, SIDE_FIELDS, SIDE_ROWS, TASKS
from recsys.model.factory import build_head, build_model, specs
from recsys.model.inputs import ModelInput, sequence_bags
from recsys.model.losses import task_losses
from recsys.model.moment_cross import MomentCrossModel
from recsys.train.precision import forward_context, warn_if_emulated
from recsys.train.strategy import distributed_model, ensure_process_group

EMBEDDING_OPS = ("embedding", "fbgemm", "lookup")  # profiler op names that are lookups or their backward


def reference_manifest(bc: DictConfig, item_rows: int) -> dict:
    """What a stream's manifest would say of the reference configuration, items at `item_rows`."""
    rows = {t: int(n) for t, n in bc.pooled_rows.items()} | {"item": item_rows, "author": int(bc.author_rows)}
    return {"tasks": list(TASKS), "table_sizes": rows, "side_rows": dict(SIDE_ROWS),
            "dense_features": list(DENSE_FEATURES), "features": {"gsu_length": int(bc.model.seq_len)}}


def synthetic_batch(bc: DictConfig, manifest: dict, rng: np.random.Generator) -> tuple[ModelInput, PlainInput]:
    model, cross = specs(bc)
    b, g, L = bc.batch_size, len(cross.gsu_names), model.seq_len
    rows = manifest["table_sizes"]
    lengths = rng.integers(0, L + 1, size=(b, g))
    mask = np.arange(L)[None, None, :] < lengths[:, :, None]  # [B, G, L]
    items = np.where(mask, rng.integers(1, rows["item"], size=(b, g, L)), 0)
    authors = np.where(mask, rng.integers(1, rows["author"], size=(b, g, L)), 0)
    side = np.where(mask[..., None], np.stack([rng.integers(1, SIDE_ROWS[f], size=(b, g, L)) for f in SIDE_FIELDS],
                                              -1), 0)
    pooled_features = [f for fs in model.pooled_tables.values() for f in fs]
    feature_rows = {f: rows[t] for t, fs in model.pooled_tables.items() for f in fs}
    pooled = np.stack([rng.integers(1, feature_rows[f], size=b) for f in pooled_features], axis=1)
    target_item, target_author = rng.integers(1, rows["item"], size=b), rng.integers(1, rows["author"], size=b)
    dense = rng.standard_normal((b, len(manifest["dense_features"]))).astype(np.float32)
    states = rng.choice([MASKED, NEG, POS], size=(b, len(TASKS)), p=[0.3, 0.6, 0.1])

    t = torch.from_numpy
    seq_ids = t(np.stack([items, authors], -1)).long()  # [B, G, L, 2]
    target_ids = t(np.stack([target_item, target_author], -1)).long()
    model_input = ModelInput(
        pooled=KeyedJaggedTensor(keys=pooled_features, values=t(pooled.T.reshape(-1)).long(),
                                 lengths=torch.ones(b * len(pooled_features), dtype=torch.int32)),
        sequence=sequence_bags(target_ids, seq_ids, t(mask)),
        side=t(side).long(), mask=t(mask), dense=t(dense), states=t(states).long(), user=t(pooled[:, 0]).long(),
        targets=target_ids)
    plain = PlainInput(pooled=t(pooled).long(), target_item=t(target_item).long(), target_author=t(target_author).long(),
                       items=t(items).long(), authors=t(authors).long(), side=t(side).long(), mask=t(mask),
                       dense=t(dense), states=t(states).long())
    return model_input, plain


def synthetic_batches(bc: DictConfig, manifest: dict, n: int, seed: int = 0) -> list[tuple[ModelInput, PlainInput]]:
    """`n` batches, each as both implementations take it."""
    rng = np.random.default_rng(seed)
    return [synthetic_batch(bc, manifest, rng) for _ in range(n)]


def reference_model(bc: DictConfig, manifest: dict, device: str) -> MomentCrossModel:
    return build_model(*specs(bc), manifest, embedding_device=device)


def plain_model(bc: DictConfig, manifest: dict) -> PlainMomentCross:
    model, cross = specs(bc)
    return PlainMomentCross(build_head(model, cross, manifest), manifest["table_sizes"], model.pooled_tables,
                            model.embedding_dim)


def _loss(logits: torch.Tensor, contrastive: dict[str, torch.Tensor], states: torch.Tensor,
          weights: dict[str, float]) -> torch.Tensor:
    return task_losses(logits, states).sum() + sum(weights[g] * v for g, v in contrastive.items())


def _step(model, weights: dict[str, float], optimizers, batch, precision: str, timed_optimizer=None) -> float:
    """One training step; returns the seconds `timed_optimizer`'s step took (0 without one)."""
    for opt in optimizers:
        opt.zero_grad()
    with forward_context(precision):
        out = model(batch)
    _loss(out.logits, out.contrastive, batch.states, weights).backward()
    timed_s = 0.0
    for opt in optimizers:
        start = time.perf_counter()
        opt.step()
        if opt is timed_optimizer:
            timed_s = time.perf_counter() - start
    return timed_s


def _is_embedding(name: str) -> bool:
    name = name.lower()
    return any(k in name for k in EMBEDDING_OPS) and "optimizer" not in name


def _outermost_embedding_us(events) -> float:
    """Total time of embedding ops (children included: the zero-filled dense gradient of an
    nn.Embedding backward counts), each counted once at its outermost embedding ancestor."""
    total = 0.0
    for event in events:
        if not _is_embedding(event.name):
            continue
        parent = event.cpu_parent
        while parent is not None and not _is_embedding(parent.name):
            parent = parent.cpu_parent
        if parent is None:
            total += event.cpu_time_total
    return total


def _measure(model, weights: dict[str, float], optimizers, batches, bc: DictConfig, precision: str,
             embedding_optimizer=None) -> dict:
    for batch in batches[: bc.warmup_steps]:
        _step(model, weights, optimizers, batch, precision)
    step_times, update_times = [], []
    for i in range(bc.steps):  # the median step: this machine is shared, single steps stall now and then
        start = time.perf_counter()
        update_times.append(_step(model, weights, optimizers, batches[i % len(batches)], precision,
                                  embedding_optimizer))
        step_times.append(time.perf_counter() - start)
    step_s, update_s = float(np.median(step_times)), float(np.median(update_times))

    # Embedding share: the plain path's separate table update (0 on the fused path) from the timed
    # steps, plus the lookup and backward kernels' share of the rest of a step, profiled. The update
    # stays out of the profiled window's figures: under the profiler the plain path's full-table
    # update ran slower than a whole unprofiled step.
    window_s = 0.0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(bc.profile_steps):
            start = time.perf_counter()
            update = _step(model, weights, optimizers, batches[i % len(batches)], precision, embedding_optimizer)
            window_s += time.perf_counter() - start - update
    kernel_share = min(_outermost_embedding_us(prof.events()) / 1e6 / window_s, 1.0)
    return {"samples_per_s": bc.batch_size / step_s, "step_ms": step_s * 1000,
            "embedding_share": (kernel_share * (step_s - update_s) + update_s) / step_s}


def compare(bc: DictConfig, item_rows: int, precision: str) -> dict:
    """Both implementations on the reference configuration with an item table of `item_rows`."""
    torch.manual_seed(0)
    manifest = reference_manifest(bc, item_rows)
    batches = synthetic_batches(bc, manifest, 4)

    # The TorchRec path is the training's own: its task (fused sparse optimizer, dense optimizer)
    # around a model in DistributedModelParallel.
    task = instantiate(bc.task, model=reference_model(bc, manifest, "meta"))
    task.model = distributed_model(task.model, torch.device("cpu"), local_world_size=1)
    weights = task.contrastive_weights
    torchrec_figures = _measure(task.model, weights, [task.configure_optimizers()], [b[0] for b in batches], bc,
                                precision)

    plain = plain_model(bc, manifest)
    embedding_params = [*plain.pooled.parameters(), *plain.item.parameters(), *plain.author.parameters()]
    embedding_ids = {id(p) for p in embedding_params}
    embedding_opt = task.sparse_optimizer(embedding_params)  # the same update rule, on dense gradients
    dense_opt = task.dense_optimizer([p for p in plain.parameters() if id(p) not in embedding_ids])
    batches = [b[1] for b in batches]
    plain_figures = _measure(plain, weights, [embedding_opt, dense_opt], batches, bc, precision, embedding_opt)
    dense_ms = _dense_layers_ms(plain, weights, dense_opt, batches, bc, precision)
    return {"item_rows": item_rows, "precision": precision, "torchrec": torchrec_figures, "plain": plain_figures,
            "dense_ms": dense_ms, "speedup": torchrec_figures["samples_per_s"] / plain_figures["samples_per_s"],
            "speedup_ceiling": plain_figures["step_ms"] / dense_ms}


def _dense_layers_ms(plain: PlainMomentCross, weights: dict[str, float], dense_opt: torch.optim.Optimizer,
                     batches: list[PlainInput], bc: DictConfig, precision: str) -> float:
    """Median step of the layers after the lookups alone (embeddings given, not learned): the same
    code in both implementations, so no embedding path can make a step cheaper than this."""
    with torch.no_grad():
        embedded = [plain.embed(x) for x in batches]
    times = []
    for i in range(bc.warmup_steps + bc.steps):
        x, (pooled, target, sequence) = batches[i % len(batches)], embedded[i % len(batches)]
        start = time.perf_counter()
        dense_opt.zero_grad()
        for looked_up in (pooled, target, sequence):  # the backward reaches the embeddings, as in training
            looked_up.requires_grad_().grad = None
        with forward_context(precision):
            logits, means = plain.head(pooled, target, sequence, x.side, x.mask, x.dense, with_means=True)
            contrastive = plain.head.contrastive_losses(means, x.mask)
        _loss(logits, contrastive, x.states, weights).backward()
        dense_opt.step()
        if i >= bc.warmup_steps:
            times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def run(cfg: DictConfig) -> dict:
    bc = cfg.bench.training
    ensure_process_group()
    model, cross = specs(bc)
    optimizer = bc.task.sparse_optimizer._target_.rsplit(".", 1)[-1]
    print(f"training, reference config (batch {bc.batch_size}, {len(cross.gsu_names)} GSUs x {model.seq_len}, "
          f"dim {model.embedding_dim}, {sum(len(fs) for fs in model.pooled_tables.values())} pooled features, "
          f"PLE x{model.multitask['n_levels']}, {torch.get_num_threads()} threads)")
    results = []
    for precision in bc.precisions:
        warn_if_emulated(precision, "cpu")
    for item_rows, precision in itertools.product([bc.item_rows, *bc.more_item_rows], bc.precisions):
        r = compare(bc, int(item_rows), precision)
        results.append(r)
        print(f"  item table {item_rows:,} rows, precision {precision}")
        for name, f in ((f"TorchRec (DMP, fused {optimizer})", r["torchrec"]),
                        (f"plain PyTorch (dense {optimizer})", r["plain"])):
            print(f"    {name:<40} {f['samples_per_s']:>9,.0f} samples/s  {f['step_ms']:>7.0f} ms/step  "
                  f"embeddings {f['embedding_share']:.0%} of the step")
        print(f"    speed-up                                 {r['speedup']:>9.1f}x")
        print(f"    layers after the lookups alone: {r['dense_ms']:.0f} ms/step, so at most "
              f"{r['speedup_ceiling']:.1f}x for any embedding path at this size")
    return {"results": results}
