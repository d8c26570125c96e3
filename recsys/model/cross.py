"""Cross: the ESU target attention over the GSU sequences (eq. 7) and the contrastive alignment of
the sequences' embedding spaces (eq. 6).

Both read the sequence embeddings where the embedding kernel wrote them: one [B, L, S * d] tensor
with S embedding slots per position (every GSU's item and author features, in the lookup's output
order, recsys/model/inputs.py). Slicing that tensor per feature would hand strided
views to every product and build full-size zero gradients for each slice; instead every read of it
is one batched matrix product over all slots, and the GSU-specific parts are picked from the small
results.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.fx.tracer import is_fx_tracing


MASKED_SCORE = -1e9  # far below any real score; finite in float32 and bfloat16


def _attend(sequence: torch.Tensor, queries: torch.Tensor, extra_scores: torch.Tensor, mask: torch.Tensor,
            mean_weights: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, ...]:
    """The two products over the sequences and the masked softmax between them.

    sequence [B, L, C]; queries [B, G, C] (each GSU's query at its own slots, zeros elsewhere);
    extra_scores [B, G, L] (the side buckets' part); mask [B, G, L]; mean_weights [B, R, L] or None
    -> (sums [B, G + R, C] of the sequence weighted by the attention weights, then by the mean
    weights; attention weights [B, G, L]; softmax probabilities [B, G, L]; the rows of
    the second product [B, G + R, L]). The softmax runs in float32 at least (bfloat16 inputs)."""
    scores = torch.bmm(sequence, queries.transpose(1, 2)).transpose(1, 2) + extra_scores
    # A finite floor rather than -inf keeps an all-padding row free of NaN; multiplying by the mask
    # then gives that row zero weight everywhere.
    softmax_dtype = torch.promote_types(scores.dtype, torch.float32)
    probabilities = torch.softmax((scores.to(softmax_dtype) * scale).masked_fill(~mask, MASKED_SCORE), dim=-1)
    weights = (probabilities * mask).to(sequence.dtype)
    rows = weights if mean_weights is None else torch.cat([weights, mean_weights], dim=1)
    return torch.bmm(rows, sequence), weights, probabilities, rows


class _Attend(torch.autograd.Function):
    """`_attend` with a backward written for these shapes. Autograd's own backward of the two
    products computes the sequence's gradient twice with inner dimensions of G and G + R (a few
    rows: slow, and each writes a [B, L, C] tensor that is then added to the other) and the queries'
    gradient from the transposed sequence; here the sequence's gradient is one product with inner
    dimension 2G + R, and every other product reads the sequence in its own layout."""

    @staticmethod
    def forward(ctx, sequence, queries, extra_scores, mask, mean_weights, scale):
        sums, weights, probabilities, rows = _attend(sequence, queries, extra_scores, mask, mean_weights, scale)
        ctx.save_for_backward(sequence, queries, mask, probabilities, rows)
        ctx.scale = scale
        return sums, weights

    @staticmethod
    def backward(ctx, grad_sums, grad_weights):
        sequence, queries, mask, probabilities, rows = ctx.saved_tensors
        n_seq = queries.shape[1]
        grad_sums = grad_sums.to(sequence.dtype)
        # d sums / d weights, as the forward's scores product: [B, L, C] @ [B, C, G + R].
        grad_rows = torch.bmm(sequence, grad_sums.transpose(1, 2)).transpose(1, 2)
        dtype = probabilities.dtype
        grad_probabilities = (grad_rows[:, :n_seq].to(dtype) + grad_weights.to(dtype)) * mask
        # Softmax backward; padding (probability 0, or a masked all-padding row) gets nothing.
        grad_logits = probabilities * (grad_probabilities - (grad_probabilities * probabilities).sum(-1, keepdim=True))
        grad_scores = (grad_logits * ctx.scale).masked_fill(~mask, 0.0).to(sequence.dtype)  # [B, G, L]
        grad_sequence = torch.bmm(torch.cat([grad_scores, rows], dim=1).transpose(1, 2),
                                  torch.cat([queries.to(sequence.dtype), grad_sums], dim=1))
        return grad_sequence, torch.bmm(grad_scores, sequence), grad_scores, None, None, None


def attend(sequence: torch.Tensor, queries: torch.Tensor, extra_scores: torch.Tensor, mask: torch.Tensor,
           mean_weights: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sums [B, G + R, C], attention weights [B, G, L]); see `_attend`. The export traces the
    plain function (TorchScript cannot hold a Python autograd Function)."""
    if is_fx_tracing() or not torch.is_grad_enabled():
        return _attend(sequence, queries, extra_scores, mask, mean_weights, scale)[:2]
    return _Attend.apply(sequence, queries, extra_scores, mask, mean_weights, scale)


class TargetAttention(nn.Module):
    """ESU (eq. 7) for G sequences at once: per GSU g, softmax(q_g k^T / sqrt(A)) v with its own
    projections W_q[g], W_k[g], W_v[g] and q from the live-side features of the sample.

    The element at position l of GSU g is the concatenation of its embedding slots `slots[g]` at
    l (item, author) and the embeddings of its side buckets side[b, g, l, :] (one small table per
    side field; bucket 0 = padding, a zero vector). That concatenation is never built:
      * the projections are linear, so they move off the L positions: q.(W_k e) = (W_k^T q).e and
        sum_l a_l W_v e_l = W_v (sum_l a_l e_l);
      * the embedding part of every GSU's scores is one product of the slot layout with the
        queries placed at their GSU's slots (zeros elsewhere), and its weighted sums one product
        of the attention weights with the layout, from which each GSU keeps its own slots;
      * a side table has a handful of rows, so a side bucket's score is a row of (table @ q) and
        the weighted sum of side embeddings is (attention mass per bucket) @ table.

    query [B, D_q]; sequence [B, L, S * d]; side [B, G, L, J] int64; mask [B, G, L] bool (True = a
    real element) -> [B, G, A]. Padding gets no weight; an empty sequence gives zeros.
    `mean_of` (indices of sequences) also returns their mean embedding slots over the real
    elements, [B, R, P * d], from the same product (the contrastive terms read them); else None.
    """

    def __init__(self, slots: list[list[int]], n_slots: int, embedding_dim: int, query_dim: int,
                 attention_dim: int, side_rows: list[int], side_dim: int):
        """`side_rows`: rows of each side field's bucket table (row 0 = padding), in SIDE_FIELDS order."""
        super().__init__()
        if len({len(s) for s in slots}) != 1:
            raise ValueError(f"every sequence needs the same number of embedding slots, got {slots}")
        if any(not 0 <= s < n_slots for ss in slots for s in ss):
            raise ValueError(f"slots {slots} outside the layout's {n_slots} slots")
        n_seq, self.n_parts = len(slots), len(slots[0])
        self.n_slots, self.embedding_dim, self.side_dim = n_slots, embedding_dim, side_dim
        self.side_rows = list(side_rows)
        element_dim = self.n_parts * embedding_dim + len(side_rows) * side_dim
        self.side_embeddings = nn.ModuleList(nn.Embedding(rows, side_dim, padding_idx=0) for rows in side_rows)
        self.w_q = nn.Parameter(torch.empty(n_seq, attention_dim, query_dim))
        self.w_k = nn.Parameter(torch.empty(n_seq, attention_dim, element_dim))
        self.w_v = nn.Parameter(torch.empty(n_seq, attention_dim, element_dim))
        for g in range(n_seq):  # as an nn.Linear per GSU and projection would be initialised, in that order
            for w in (self.w_q[g], self.w_k[g], self.w_v[g]):
                bound = 1.0 / math.sqrt(w.shape[-1])
                nn.init.uniform_(w, -bound, bound)
        self.scale = 1.0 / math.sqrt(attention_dim)
        self.register_buffer("slots", torch.tensor(slots), persistent=False)  # [G, P]
        # Row g * S + slot of the [B, G * S, d] view of a per-sequence product over the layout.
        self.register_buffer("own_rows", (torch.arange(n_seq).unsqueeze(1) * n_slots + self.slots).reshape(-1),
                             persistent=False)
        # The side tables side by side: field j's bucket r is row side_offsets[j] + r.
        offsets = [sum(side_rows[:j]) for j in range(len(side_rows))]
        self.register_buffer("side_offsets", torch.tensor(offsets), persistent=False)
        not_padding = torch.ones(sum(side_rows), 1)
        not_padding[offsets] = 0.0
        self.register_buffer("not_padding", not_padding, persistent=False)

    def side_table(self) -> torch.Tensor:
        """[sum of side rows, s]: every side field's table, stacked; padding rows held at zero, as
        nn.Embedding's padding_idx does."""
        return torch.cat([e.weight for e in self.side_embeddings]) * self.not_padding

    def forward(self, query: torch.Tensor, sequence: torch.Tensor, side: torch.Tensor, mask: torch.Tensor,
                mean_of: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n_seq, length, n_side = side.shape
        d, parts, n_slots = self.embedding_dim, self.n_parts, self.n_slots
        q = torch.einsum("bq,gaq->bga", query, self.w_q)
        q = torch.einsum("bga,gae->bge", q, self.w_k)  # [B, G, D_e]: the query in element space
        q_embedding = q[..., : parts * d].reshape(b, n_seq * parts, d)
        q_side = q[..., parts * d:].reshape(b, n_seq, n_side, self.side_dim)

        # The queries at their GSU's slots of the layout, [B, G, S * d]: the scores are then one
        # product with the sequences, whose gradient comes out in the layout's own order.
        q_layout = q_embedding.new_zeros(b, n_seq * n_slots, d).index_copy(1, self.own_rows, q_embedding)
        # Indexed, not iterated: the export traces this with torch.fx, which cannot iterate a split.
        fields = range(len(self.side_rows))
        tables = torch.split(self.side_table(), self.side_rows)
        # [B, G, sum of side rows]: each field's query part against its own table.
        side_scores = torch.cat([q_side[:, :, j] @ tables[j].T for j in fields], dim=-1)
        side_index = (side + self.side_offsets).view(b, n_seq, length * n_side)
        extra_scores = side_scores.gather(2, side_index).view(b, n_seq, length, n_side).sum(-1)

        mean_weights, picked = None, self.own_rows
        if mean_of is not None:
            counted = mask.index_select(1, mean_of).to(sequence.dtype)
            mean_weights = counted / counted.sum(-1, keepdim=True).clamp(min=1)
            mean_rows = (torch.arange(mean_of.shape[0], device=mean_of.device).unsqueeze(1) + n_seq) * n_slots \
                + self.slots.index_select(0, mean_of)
            picked = torch.cat([picked, mean_rows.reshape(-1)])
        summed, weights = attend(sequence, q_layout.view(b, n_seq, n_slots * d).to(sequence.dtype),
                                 extra_scores.to(sequence.dtype), mask, mean_weights, self.scale)
        summed = summed.view(b, -1, d).index_select(1, picked).view(b, -1, parts * d)
        v_embedding, means = summed[:, :n_seq], (summed[:, n_seq:] if mean_of is not None else None)
        mass = weights.unsqueeze(-1).expand(b, n_seq, length, n_side).reshape(b, n_seq, length * n_side)
        per_bucket = torch.zeros_like(side_scores).scatter_add(2, side_index, mass)  # attention mass per bucket
        mass_per_field = torch.split(per_bucket, self.side_rows, dim=-1)
        v_side = [mass_per_field[j] @ tables[j] for j in fields]
        values = torch.cat([v_embedding, *v_side], dim=-1)  # [B, G, P * d + J * s]
        return torch.einsum("bge,gae->bga", values, self.w_v), means


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, temperature: float,
             valid: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i of `positive` is the positive of row i of `anchor`,
    every other row a negative. Both are L2-normalised here. Rows where `valid` is False (an empty
    sequence on either side) take no part. Returns the mean over anchors (0 if none is valid).
    Computed in float32 under autocast too: at temperature 0.1, bfloat16's rounding of the
    cosines would move the logits by several hundredths."""
    if valid is not None:
        anchor, positive = anchor[valid], positive[valid]
    if anchor.shape[0] == 0:
        return anchor.new_zeros((), dtype=torch.float32)
    with torch.autocast(anchor.device.type, enabled=False):
        anchor, positive = anchor.float(), positive.float()
        logits = F.normalize(anchor, dim=-1) @ F.normalize(positive, dim=-1).T / temperature  # [N, N]
        return F.cross_entropy(logits, torch.arange(anchor.shape[0], device=anchor.device))
