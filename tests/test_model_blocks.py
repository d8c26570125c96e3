"""Model blocks against hand-computed values: gates, attention masking, InfoNCE, loss terms, score."""

from __future__ import annotations

import math

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedTensor

from data_pipelines.contract import MASKED, NEG, POS, PU_POS
from recsys.model.cross import TargetAttention, _attend, _Attend, info_nce
from recsys.model.losses import ranking_score, task_losses
from recsys.model.moment_cross import ordered_values
from recsys.model.multitask import PLE, CGCLayer


@pytest.mark.parametrize("model", [PLE(12, n_tasks=5, n_levels=1, n_shared_experts=2, n_task_experts=1,
                                       expert_dims=[16, 8]),
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


def _naive_attention(attention: TargetAttention, query, sequence, side, mask, slots, d):
    """Eq. 7 written out per sample and GSU: build each element by concatenation, project, softmax
    over the real positions."""
    b, n_seq, length, n_side = side.shape
    out = torch.zeros(b, n_seq, attention.w_q.shape[1])
    for i in range(b):
        for g in range(n_seq):
            real = [pos for pos in range(length) if mask[i, g, pos]]
            if not real:
                continue
            elements = torch.stack([torch.cat(
                [sequence[i, pos, s * d:(s + 1) * d] for s in slots[g]]
                + [attention.side_embeddings[j].weight[side[i, g, pos, j]] if side[i, g, pos, j] else torch.zeros(
                    attention.side_dim) for j in range(n_side)]) for pos in real])
            q = attention.w_q[g] @ query[i]
            keys, values = elements @ attention.w_k[g].T, elements @ attention.w_v[g].T
            weights = torch.softmax(keys @ q / math.sqrt(attention.w_q.shape[1]), dim=0)
            out[i, g] = weights @ values
    return out


def test_attention_matches_eq7_ignores_padding_and_gives_zeros_for_empty_sequences():
    torch.manual_seed(0)
    d, n_slots, slots = 3, 5, [[1, 3], [2, 4]]  # slot 0 is not read by either sequence (a target)
    # Two side fields with tables of different sizes: 5 and 3 rows (row 0 padding in each).
    attention = TargetAttention(slots=slots, n_slots=n_slots, embedding_dim=d, query_dim=4, attention_dim=6,
                                side_rows=[5, 3], side_dim=2)
    b, length = 3, 4
    query, sequence = torch.randn(b, 4), torch.randn(b, length, n_slots * d)
    mask = torch.tensor([[[1, 1, 1, 0], [1, 0, 0, 0]],
                         [[1, 1, 1, 1], [0, 0, 0, 0]],
                         [[0, 0, 0, 0], [1, 1, 0, 0]]], dtype=torch.bool)
    side = torch.stack([torch.randint(1, 5, (b, 2, length)), torch.randint(1, 3, (b, 2, length))], -1)
    side = side * mask.unsqueeze(-1)
    side[0, 0, 1, 0] = 0  # a real element may carry the zero bucket: its side embedding is zero
    out, means = attention(query, sequence, side, mask)
    assert out.shape == (b, 2, 6) and means is None
    torch.testing.assert_close(out, _naive_attention(attention, query, sequence, side, mask, slots, d))
    torch.testing.assert_close(out[1, 1], torch.zeros(6))
    torch.testing.assert_close(out[2, 0], torch.zeros(6))
    # Whatever a sequence's padded positions hold (its slots, its side buckets) must not matter.
    changed, changed_side = sequence.clone(), side.clone()
    for g, own in enumerate(slots):
        for s in own:
            changed[..., s * d:(s + 1) * d][~mask[:, g]] = 1000.0
    changed[..., 0:d] = -50.0  # a slot no sequence reads
    changed_side[~mask] = torch.tensor([4, 2])
    torch.testing.assert_close(attention(query, changed, changed_side, mask)[0], out)
    out.sum().backward()  # an all-padding row must not poison the gradients
    assert all(torch.isfinite(p.grad).all() for p in attention.parameters())
    for table in attention.side_embeddings:  # the padding rows stay zero
        assert table.weight.grad[0].abs().sum() == 0
    assert all(table.weight.grad[1:].abs().sum() > 0 for table in attention.side_embeddings)


def test_attention_also_gives_the_mean_embedding_slots_of_the_sequences_asked_for():
    torch.manual_seed(1)
    d, slots = 2, [[0, 1], [2, 3]]
    attention = TargetAttention(slots=slots, n_slots=4, embedding_dim=d, query_dim=3, attention_dim=4,
                                side_rows=[3], side_dim=2)
    sequence = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)  # [B=2, L=3, S * d = 8]
    mask = torch.tensor([[[True, True, False], [False, False, True]], [[False, False, False], [True, False, False]]])
    side = torch.ones(2, 2, 3, 1, dtype=torch.long) * mask.unsqueeze(-1)
    attended, means = attention(torch.randn(2, 3), sequence, side, mask, mean_of=torch.tensor([1, 0]))
    # Sequence 1 reads slots 2, 3 (columns 4..7); sequence 0 slots 0, 1 (columns 0..3).
    expected = torch.stack([
        torch.stack([sequence[0, 2, 4:8], sequence[0, :2, 0:4].mean(0)]),
        torch.stack([sequence[1, 0, 4:8], torch.zeros(4)])])  # sample 1 has no element in sequence 0
    torch.testing.assert_close(means, expected)
    assert attended.shape == (2, 2, 4)


def test_attention_products_backward_matches_numerical_and_autograd_gradients():
    # Float64, so that finite differences are exact enough; a full, a partial and an all-padding row.
    torch.manual_seed(0)
    b, length, n_seq, width = 3, 5, 2, 6
    sequence = torch.randn(b, length, width, dtype=torch.float64, requires_grad=True)
    queries = torch.randn(b, n_seq, width, dtype=torch.float64, requires_grad=True)
    extra = torch.randn(b, n_seq, length, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(b, n_seq, length, dtype=torch.bool)
    mask[0, 1, 3:] = False
    mask[2, 0] = False  # an empty sequence
    counted = mask[:, 1:].double()
    mean_weights = counted / counted.sum(-1, keepdim=True).clamp(min=1)  # [B, 1, L]

    def custom(s, q, e):
        return _Attend.apply(s, q, e, mask, mean_weights, 0.7)

    assert torch.autograd.gradcheck(custom, (sequence, queries, extra))
    # ... and equals autograd's own backward of the same forward, on both outputs at once.
    upstream = [torch.randn(b, n_seq + 1, width, dtype=torch.float64),
                torch.randn(b, n_seq, length, dtype=torch.float64)]
    sums, weights = custom(sequence, queries, extra)
    mine = torch.autograd.grad([sums, weights], [sequence, queries, extra], upstream)
    sums, weights = _attend(sequence, queries, extra, mask, mean_weights, 0.7)[:2]
    reference = torch.autograd.grad([sums, weights], [sequence, queries, extra], upstream)
    for got, expected in zip(mine, reference):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(weights[2, 0], torch.zeros(length, dtype=torch.float64))  # the empty sequence: no weight


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


def test_embedding_outputs_are_read_in_the_model_s_feature_order():
    # A sharded collection may hand back its features grouped by rank: [c, a, b] instead of [a, b, c].
    a, b, c = torch.full((2, 2), 1.0), torch.full((2, 3), 2.0), torch.full((2, 1), 3.0)
    sharded_order = KeyedTensor.from_tensor_list(["c", "a", "b"], [c, a, b])
    torch.testing.assert_close(ordered_values(sharded_order, ["a", "b", "c"]), torch.cat([a, b, c], dim=1))
    in_order = KeyedTensor.from_tensor_list(["a", "b", "c"], [a, b, c])
    assert ordered_values(in_order, ["a", "b", "c"]) is in_order.values()  # no copy when nothing moves
