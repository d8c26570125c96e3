"""Training throughput of the reference configuration, TorchRec against a plain-PyTorch twin.

Both train the same MomentCrossModel layers on the same synthetic batches (batch 1024, five GSU
sequences of length 64, dim 32, about 20 pooled features, two-level PLE). TorchRec path: tables in
DistributedModelParallel (one process), sequences as position bags, Adagrad fused into the
embedding kernels' backward. Plain path: nn.EmbeddingBag / nn.Embedding with torch.optim.Adagrad
over dense gradients. Dense layers use Adam in both. The embedding share of a step is measured with
torch.profiler: lookup and backward kernels, plus the separate embedding optimizer step on the
plain path.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.profiler import ProfilerActivity, profile
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
from torchrec.distributed.types import ShardingEnv
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data_pipelines.streams.labels import MASKED, NEG, POS, TASKS
from recsys.bench.plain_model import PlainInput, PlainMomentCross
from recsys.model.inputs import SIDE_FIELDS, ModelInput
from recsys.model.losses import task_losses
from recsys.model.moment_cross import MomentCrossModel

GSUS = ["short", "long", "aidhard", "livelong", "mixed"]
EMBEDDING_OPS = ("embedding", "fbgemm", "lookup")  # profiler op names that are lookups or their backward


def synthetic_batch(bc: DictConfig, pooled_features: list[str], rows: dict[str, int],
                    rng: np.random.Generator) -> tuple[ModelInput, PlainInput]:
    b, g, L = bc.batch_size, len(GSUS), bc.seq_len
    lengths = rng.integers(0, L + 1, size=(b, g))
    mask = np.arange(L)[None, None, :] < lengths[:, :, None]  # [B, G, L]
    items = np.where(mask, rng.integers(1, bc.item_rows, size=(b, g, L)), 0)
    authors = np.where(mask, rng.integers(1, bc.author_rows, size=(b, g, L)), 0)
    side = np.where(mask[..., None], rng.integers(1, 17, size=(b, g, L, len(SIDE_FIELDS))), 0)
    pooled = np.stack([rng.integers(1, rows[f], size=b) for f in pooled_features], axis=1)
    target_item, target_author = rng.integers(1, bc.item_rows, size=b), rng.integers(1, bc.author_rows, size=b)
    dense = rng.standard_normal((b, bc.n_dense)).astype(np.float32)
    states = rng.choice([MASKED, NEG, POS], size=(b, len(TASKS)), p=[0.3, 0.6, 0.1])

    first_slot = (np.arange(L) == 0)[None, :].repeat(b, 0).reshape(-1)
    keys, values, lens = ["live_item", "author_id"], [target_item, target_author], [first_slot, first_slot]
    for j, name in enumerate(GSUS):
        for field, ids in (("item", items), ("author", authors)):
            keys.append(f"{name}.{field}")
            values.append(ids[:, j][mask[:, j]])
            lens.append(mask[:, j].reshape(-1))
    t = torch.from_numpy
    model_input = ModelInput(
        pooled=KeyedJaggedTensor(keys=pooled_features, values=t(pooled.T.reshape(-1)).long(),
                                 lengths=torch.ones(b * len(pooled_features), dtype=torch.int32)),
        sequence=KeyedJaggedTensor(keys=keys, values=t(np.concatenate(values)).long(),
                                   lengths=t(np.concatenate(lens).astype(np.int32))),
        side=t(side).long(), mask=t(mask), dense=t(dense), states=t(states).long(), user=t(pooled[:, 0]).long())
    plain = PlainInput(pooled=t(pooled).long(), target_item=t(target_item).long(), target_author=t(target_author).long(),
                       items=t(items).long(), authors=t(authors).long(), side=t(side).long(), mask=t(mask),
                       dense=t(dense), states=t(states).long())
    return model_input, plain


def _model(bc: DictConfig, pooled_tables: dict[str, list[str]], rows: dict[str, int], device: str) -> MomentCrossModel:
    m = bc.model
    return MomentCrossModel(
        tasks=list(TASKS), table_sizes=rows, pooled_tables=pooled_tables, gsu_names=GSUS, seq_len=bc.seq_len,
        n_dense=bc.n_dense, embedding_dim=bc.embedding_dim, side_dim=m.side_dim, attention_dim=m.attention_dim,
        multitask=OmegaConf.to_container(m.multitask), tower_dims=list(m.tower_dims),
        contrastive={"temperature": 0.1, "weights": {g: 0.05 for g in GSUS if g != "mixed"}},
        embedding_device=device)


def _ensure_process_group() -> None:
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29611")
        dist.init_process_group("gloo", rank=0, world_size=1)


def _step(model, optimizers, batch) -> None:
    for opt in optimizers:
        opt.zero_grad()
    out = model(batch)
    loss = task_losses(out.logits, batch.states).sum() + 0.05 * sum(out.contrastive.values())
    loss.backward()
    for opt in optimizers:
        opt.step()


def _measure(model, optimizers, batches, bc: DictConfig, embedding_optimizer=None) -> dict:
    for batch in batches[: bc.warmup_steps]:
        _step(model, optimizers, batch)
    start = time.perf_counter()
    for i in range(bc.steps):
        _step(model, optimizers, batches[i % len(batches)])
    step_s = (time.perf_counter() - start) / bc.steps

    # Embedding share: lookup/backward kernels from the profiler, plus a separate embedding update.
    update_s = 0.0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(bc.profile_steps):
            batch = batches[i % len(batches)]
            for opt in optimizers:
                opt.zero_grad()
            out = model(batch)
            (task_losses(out.logits, batch.states).sum() + 0.05 * sum(out.contrastive.values())).backward()
            for opt in optimizers:
                if opt is embedding_optimizer:
                    t0 = time.perf_counter()
                    opt.step()
                    update_s += time.perf_counter() - t0
                else:
                    opt.step()
    events = prof.key_averages()
    kernel_us = sum(e.self_cpu_time_total for e in events
                    if any(k in e.key.lower() for k in EMBEDDING_OPS) and "optimizer" not in e.key.lower())
    embedding_s = kernel_us / 1e6 / bc.profile_steps + update_s / bc.profile_steps
    return {"samples_per_s": bc.batch_size / step_s, "step_ms": step_s * 1000,
            "embedding_share": min(embedding_s / step_s, 1.0)}


def run(cfg: DictConfig) -> dict:
    bc = cfg.bench.training
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pooled_tables = {t: list(spec.features) for t, spec in bc.pooled_tables.items()}
    rows = {t: int(spec.rows) for t, spec in bc.pooled_tables.items()} | {"item": bc.item_rows, "author": bc.author_rows}
    feature_rows = {f: rows[t] for t, fs in pooled_tables.items() for f in fs}
    pooled_features = [f for fs in pooled_tables.values() for f in fs]
    batches = [synthetic_batch(bc, pooled_features, feature_rows, rng) for _ in range(4)]

    _ensure_process_group()
    model = _model(bc, pooled_tables, rows, "meta")
    apply_optimizer_in_backward(torch.optim.Adagrad, [*model.pooled_ebc.parameters(), *model.sequence_ebc.parameters()],
                                {"lr": 0.05})
    dmp = DistributedModelParallel(model, env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
                                   device=torch.device("cpu"),
                                   data_parallel_wrapper=DefaultDataParallelWrapper(static_graph=False))
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())),
                                  lambda params: torch.optim.Adam(params, lr=1e-3))
    torchrec_figures = _measure(dmp, [CombinedOptimizer([dmp.fused_optimizer, dense])], [b[0] for b in batches], bc)

    plain = PlainMomentCross(_model(bc, pooled_tables, rows, "meta"), rows, pooled_tables, bc.embedding_dim)
    embedding_params = [*plain.pooled.parameters(), *plain.item.parameters(), *plain.author.parameters()]
    embedding_ids = {id(p) for p in embedding_params}
    embedding_opt = torch.optim.Adagrad(embedding_params, lr=0.05)
    dense_opt = torch.optim.Adam([p for p in plain.parameters() if id(p) not in embedding_ids], lr=1e-3)
    plain_figures = _measure(plain, [embedding_opt, dense_opt], [b[1] for b in batches], bc, embedding_opt)

    speedup = torchrec_figures["samples_per_s"] / plain_figures["samples_per_s"]
    n_pooled = len(pooled_features)
    print(f"training, reference config (batch {bc.batch_size}, 5 GSUs x {bc.seq_len}, dim {bc.embedding_dim}, "
          f"{n_pooled} pooled features, PLE x{bc.model.multitask.n_levels}, {torch.get_num_threads()} threads)")
    for name, f in (("TorchRec (DMP, fused Adagrad)", torchrec_figures), ("plain PyTorch (dense Adagrad)", plain_figures)):
        print(f"  {name:<31} {f['samples_per_s']:>9,.0f} samples/s  {f['step_ms']:>7.0f} ms/step  "
              f"embeddings {f['embedding_share']:.0%} of the step")
    print(f"  speed-up                        {speedup:>9.1f}x")
    return {"torchrec": torchrec_figures, "plain": plain_figures, "speedup": speedup}
