"""Model blocks against hand-computed values: gates, attention masking, InfoNCE, loss terms, score."""

from __future__ import annotations

import math

import pytest
import torch

from data_pipelines.streams.labels import MASKED, NEG, POS, PU_POS
from recsys.model.cross import TargetAttention, info_nce, masked_mean
from recsys.model.losses import ranking_score, task_losses
from recsys.model.multitask import CGC, PLE, CGCLayer


@pytest.mark.parametrize("model", [CGC(12, n_tasks=5, n_shared_experts=2, n_task_experts=1, expert_dims=[16, 8]),
                                   PLE(12, n_tasks=5, n_levels=2, n_shared_experts=2, n_task_experts=2,
                                       expert_dims=[16, 8])])
def test_multitask_outputs_one_vector_per_task(model):
    outputs = model(torch.randn(7, 12))
    assert len(outputs) == 5 and all(o.shape == (7, 8) for o in outputs)


def test_gates_are_distributions_over_the_right_experts():
    layer = CGCLayer(6, n_tasks=3, n_shared_experts=2, n_task_experts=2, expert_dims=[4], with_shared_output=True)
    weights = layer.gate_weights([torch.randn(5, 6) for _ in range(4)])
    assert [w.shape for w in weights] == [(5, 4)] * 3 + [(5, 8)]  # own 2 + shared 2; shared gate sees all 8
    for w in weights:
        torch.testing.assert_close(w.sum(-1), torch.ones(5))
        assert (w >= 0).all()


def test_cgc_output_is_the_gated_mix_of_its_experts():
    layer = CGCLayer(3, n_tasks=1, n_shared_experts=1, n_task_experts=1, expert_dims=[2], with_shared_output=False)
    x = torch.randn(4, 3)
    w = layer.gate_weights([x, x])[0]
    own, shared = layer.task_experts[0][0](x), layer.shared_experts[0](x)
    torch.testing.assert_close(layer([x, x])[0], w[:, :1] * own + w[:, 1:] * shared)


def test_attention_ignores_padding_and_empty_sequences_give_zeros():
    torch.manual_seed(0)
    attention = TargetAttention(query_dim=4, sequence_dim=6, attention_dim=5)
    query, sequence = torch.randn(3, 4), torch.randn(3, 7, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1] * 7, [0] * 7], dtype=torch.bool)
    out = attention(query, sequence, mask)
    changed = sequence.clone()
    changed[~mask] = 1000.0  # whatever sits in padded positions must not matter
    torch.testing.assert_close(attention(query, changed, mask), out)
    torch.testing.assert_close(out[2], torch.zeros(5))
    # By hand for row 0: softmax over the three real positions.
    q = attention.w_q(query[0])
    k, v = attention.w_k(sequence[0, :3]), attention.w_v(sequence[0, :3])
    weights = torch.softmax(k @ q / math.sqrt(5), dim=0)
    torch.testing.assert_close(out[0], weights @ v)
    # The same sequence given as parts of its feature dimension gives the same result.
    split = TargetAttention(query_dim=4, sequence_dim=6, attention_dim=5, part_dims=[2, 4])
    split.load_state_dict(attention.state_dict())
    torch.testing.assert_close(split(query, [sequence[..., :2], sequence[..., 2:]], mask), out)
    with pytest.raises(ValueError, match="expected 2 sequence parts"):
        split(query, sequence, mask)
    out.sum().backward()  # an all-padding row must not poison the gradients
    assert all(torch.isfinite(p.grad).all() for p in attention.parameters())


def test_masked_mean():
    seq = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    torch.testing.assert_close(masked_mean(seq, mask), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))


def test_info_nce_matches_a_hand_computed_value():
    # Unit vectors at 0 and 90 degrees; positives equal to anchors; temperature 0.5.
    anchor = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    positive = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = cos / 0.5 = [[2, 0], [0, 2]]; each row's loss = -log(e^2 / (e^2 + e^0)).
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert info_nce(anchor, positive, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)
    # A third, invalid row (empty sequence) takes no part at all.
    anchor3 = torch.cat([anchor, torch.tensor([[5.0, 5.0]])])
    positive3 = torch.cat([positive, torch.tensor([[0.0, 0.0]])])
    valid = torch.tensor([True, True, False])
    assert info_nce(anchor3, positive3, 0.5, valid).item() == pytest.approx(expected, rel=1e-6)
    assert info_nce(anchor3, positive3, 0.5, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_loss_terms_by_label_state():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-0.7, 1.1]], requires_grad=True)
    states = torch.tensor([[POS, NEG], [PU_POS, MASKED], [NEG, PU_POS]])
    p = torch.sigmoid(logits.detach())
    expected_task0 = (-math.log(p[0, 0]) - (math.log(p[1, 0]) - math.log(1 - p[1, 0])) - math.log(1 - p[2, 0])) / 3
    expected_task1 = (-math.log(1 - p[0, 1]) - (math.log(p[2, 1]) - math.log(1 - p[2, 1]))) / 3
    losses = task_losses(logits, states)
    assert losses[0].item() == pytest.approx(expected_task0, rel=1e-5)
    assert losses[1].item() == pytest.approx(expected_task1, rel=1e-5)
    losses.sum().backward()
    assert logits.grad[1, 1].item() == 0.0  # masked: no gradient
    assert logits.grad[1, 0].item() == pytest.approx(-1 / 3)  # pu_pos = -logit, / batch of 3


def test_ranking_score_is_the_weighted_product():
    p = torch.tensor([[0.5, 0.2, 0.0]])
    w = torch.tensor([1.0, 2.0, 3.0])
    assert ranking_score(p, w).item() == pytest.approx(1.5 * 1.2**2 * 1.0)
