"""A sharded model computes what the unsharded one computes, whatever order the sharded
collections hand their features back in."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingEnv

from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data_pipelines.contract import SIDE_FIELDS, SIDE_ROWS
from recsys.model.factory import ContrastiveSpec, CrossSpec, ModelSpec, build_model
from recsys.model.inputs import ModelInput, sequence_bags
from recsys.model.moment_cross import MomentCrossModel
from recsys.train.strategy import ensure_process_group

POOLED = {"user": ["user_id"], "category": ["category"], "live_type": ["live_type"], "hour": ["hour", "user_hour"]}
ROWS = {"user": 50, "category": 8, "live_type": 4, "hour": 25, "item": 300, "author": 40}
GSUS = ["short", "mixed"]
MANIFEST = {"tasks": ["ctr", "gtr"], "table_sizes": ROWS, "side_rows": SIDE_ROWS, "dense_features": ["a", "b", "c"],
            "features": {"gsu_length": 4}}


def _model(device: str) -> MomentCrossModel:
    spec = ModelSpec(seq_len=4, embedding_dim=8, side_dim=4, attention_dim=8, tower_dims=[8],
                     multitask={"n_levels": 2, "n_shared_experts": 1, "n_task_experts": 1, "expert_dims": [16]},
                     pooled_tables=POOLED, score_weights={})
    cross = CrossSpec(GSUS, ContrastiveSpec(enabled=True, temperature=0.1, weights={"short": 0.1}))
    return build_model(spec, cross, MANIFEST, embedding_device=device)


def _batch(b: int, rng: np.random.Generator) -> ModelInput:
    features = [f for fs in POOLED.values() for f in fs]
    table_of = {f: t for t, fs in POOLED.items() for f in fs}
    ids = torch.tensor(np.stack([rng.integers(0, ROWS[table_of[f]], b) for f in features]))
    mask = torch.tensor(rng.random((b, len(GSUS), 4)) < 0.6)
    seq_ids = torch.stack([torch.tensor(rng.integers(1, ROWS["item"], (b, len(GSUS), 4))),
                           torch.tensor(rng.integers(1, ROWS["author"], (b, len(GSUS), 4)))], -1) * mask.unsqueeze(-1)
    targets = torch.stack([torch.tensor(rng.integers(1, ROWS["item"], b)),
                           torch.tensor(rng.integers(1, ROWS["author"], b))], 1)
    return ModelInput(
        pooled=KeyedJaggedTensor(keys=features, values=ids.reshape(-1),
                                 lengths=torch.ones(b * len(features), dtype=torch.int32)),
        sequence=sequence_bags(targets, seq_ids, mask),
        side=torch.stack([torch.tensor(rng.integers(1, SIDE_ROWS[f], (b, len(GSUS), 4))) for f in SIDE_FIELDS],
                         -1) * mask.unsqueeze(-1), mask=mask,
        dense=torch.tensor(rng.standard_normal((b, 3)), dtype=torch.float32),
        states=torch.zeros(b, 2, dtype=torch.long), user=ids[0], targets=targets)


def test_sharded_forward_equals_unsharded_with_features_returned_out_of_order():
    ensure_process_group()
    torch.manual_seed(0)
    # Small tables data-parallel, the rest table-wise: the collections return their features grouped
    # by sharding type, not in the config's order.
    kinds = {"user": "table_wise", "category": "data_parallel", "live_type": "table_wise",
             "hour": "data_parallel", "item": "data_parallel", "author": "table_wise"}
    constraints = {t: ParameterConstraints(sharding_types=[k]) for t, k in kinds.items()}
    sharded_inner = _model("meta")
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=1, compute_device="cpu"), constraints=constraints)
    plan = planner.collective_plan(sharded_inner, None, dist.GroupMember.WORLD)
    sharded = DistributedModelParallel(sharded_inner, env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
                                       device=torch.device("cpu"), plan=plan)
    x = _batch(16, np.random.default_rng(0))
    pooled_kt = sharded.module.lookup.pooled_ebc(x.pooled)
    sequence_kt = sharded.module.lookup.sequence_ebc(x.sequence)
    assert pooled_kt.keys() != sharded_inner.pooled_features or sequence_kt.keys() != ["item", "author"]

    unsharded = _model("cpu")
    state = {}
    for key, value in sharded.state_dict().items():
        local = value.local_shards()[0].tensor if hasattr(value, "local_shards") else value
        state[key.removeprefix("module.")] = local
    unsharded.load_state_dict(state)
    sharded.eval()
    unsharded.eval()
    with torch.no_grad():
        torch.testing.assert_close(sharded(x).logits, unsharded(x).logits)
