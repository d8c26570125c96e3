"""The sparse optimizers the replay experiments use, through TorchRec's fused path on CPU exactly as
training builds it (apply_optimizer_in_backward, then DistributedModelParallel): fbgemm's counter
mode, and plain SGD for a table of its own."""

from __future__ import annotations

import math

import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.train.strategy import ensure_process_group

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


class _Table(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(
            name="t", embedding_dim=4, num_embeddings=8, feature_names=["f"], pooling=PoolingType.SUM,
            init_fn=torch.nn.init.zeros_)], device=torch.device("meta"))

    def forward(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.ebc(kjt).values()


def _row_after_each_step(optimizer_class, keywords: dict, gradient: float, steps: int) -> list[float]:
    """Row 0's first weight after each of `steps` updates whose loss is gradient * sum(row 0)."""
    ensure_process_group()
    module = _Table()
    apply_optimizer_in_backward(optimizer_class, module.ebc.parameters(), keywords)
    # Table-wise, as training shards tables of any size (a tiny table would be planned data-parallel).
    import torch.distributed as dist
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology

    planner = EmbeddingShardingPlanner(topology=Topology(world_size=1, compute_device="cpu"),
                                       constraints={"t": ParameterConstraints(sharding_types=["table_wise"])})
    model = DistributedModelParallel(module, device=torch.device("cpu"),
                                     plan=planner.collective_plan(module, None, dist.GroupMember.WORLD))
    kjt = KeyedJaggedTensor(keys=["f"], values=torch.tensor([0]), lengths=torch.tensor([1], dtype=torch.int32))
    out = []
    for _ in range(steps):
        (model(kjt).sum() * gradient).backward()
        weight = model.state_dict()["ebc.embedding_bags.t.weight"]
        out.append(float(weight.local_shards()[0].tensor[0, 0]))
    return out


def test_counter_mode_steps_lr_times_gradient_over_the_root_of_the_decayed_update_count():
    from fbgemm_gpu.tbe.config.optimizer_config import (CounterBasedRegularizationDefinition, LearningRateMode,
                                                        WeightDecayMode)

    lr, g, halflife = 0.5, 0.01, 4
    counter = CounterBasedRegularizationDefinition(counter_halflife=halflife,
                                                   learning_rate_mode=LearningRateMode.COUNTER_SGD)
    got = _row_after_each_step(RowWiseAdagrad, {"lr": lr, "eps": 1e-8, "weight_decay_mode": WeightDecayMode.COUNTER,
                                                "counter_based_regularization": counter}, g, 6)
    # Updated every step: count_k = 1 + 2^(-1/halflife) * count_(k-1), step_k = lr * g / sqrt(count_k).
    expected, weight, count = [], 0.0, 0.0
    for _ in range(6):
        count = 1.0 + 2.0 ** (-1.0 / halflife) * count
        weight -= lr * g / math.sqrt(count)
        expected.append(weight)
    assert got == pytest.approx(expected, rel=1e-4)
    # Plain row-wise Adagrad at the same rate steps lr / sqrt(k) whatever the gradient's size.
    adagrad = _row_after_each_step(RowWiseAdagrad, {"lr": lr, "eps": 1e-8}, g, 3)
    assert adagrad == pytest.approx([-lr * sum(1 / math.sqrt(j) for j in range(1, k + 1)) for k in (1, 2, 3)],
                                    rel=1e-4)


def test_a_table_with_plain_sgd_steps_lr_times_gradient():
    from torchrec.optim.optimizers import SGD

    assert _row_after_each_step(SGD, {"lr": 3.0}, 0.01, 3) == pytest.approx([-0.03, -0.06, -0.09], rel=1e-5)
