"""The model as the ranker calls it: the user's part of a request once, its candidates as a batch.

    user_ids          [U, F_u] int64    the user-owned id features (model.json "request_layout")
    user_dense        [U, D_u] float32
    user_seq_ids      [U, G_u, L_u, 2] int64   the user-owned GSUs (short, mixed): item and author rows
    user_seq_side     [U, G_u, L_u, 3] int64   their side buckets (gap, watch, domain)
    user_seq_lengths  [U, G_u] int64
    candidate_user    [B] int64         the row of `user_*` each candidate belongs to
    ids               [B, F_c] int64    the candidate-owned id features (the target live and author among them)
    dense             [B, D_c] float32
    seq_ids           [E, 2] int64      every element of the candidates' own (target-dependent) GSUs
                                        (long, aidhard, livelong), all candidates' one after the other
    seq_side          [E, 3] int64      their side buckets
    seq_owner         [E, 2] int64      whose each element is: (candidate row, GSU among the candidate GSUs)
  -> probabilities [B, T] float32, score [B] float32

U is the number of requests in a batch (one for a single request; the ranker's micro-batcher merges
several), L_u the positions the longest user sequence fills. The candidates' sequences are jagged, as
TorchRec's KeyedJaggedTensor holds them: only real elements travel and are computed on (most of a
candidate's three sequences are often empty or short). Every order (features, GSUs, fields) is model.json's.

Same parameters and the same answers as the per-candidate model (export/scorer.py, within 1e-5),
computed the way a request is shaped:
  * the user's embeddings, sequence embeddings and sequence side buckets are looked up once per
    request, not once per candidate;
  * target attention over a user GSU scores every candidate's query against the one copy of the
    user's sequence (a product over the U users' positions, other users' masked out), and each GSU
    multiplies only its own slots (training's layout multiplies every GSU's query over all slots);
  * target attention over a candidate's own GSUs runs on their real elements only, a softmax per
    (candidate, GSU) by scatter operations;
  * the first layer of every first-level expert and gate is one matrix product, split by input
    column: W [x_u; x_c] = W_u x_u + W_c x_c, with W_u x_u computed once per request.
Lookups are plain row reads of the trained tables (a bag of one id pooled by SUM is that id's row),
so the file needs no fbgemm operator.

The split first-layer weights are derived from the model's parameters (`derived_buffers`); anything
that changes those parameters in a built scorer must assign its buffers again. Every tensor the
forward reads is a parameter or buffer read whole (`serving_tensors`), so that the exported files
hold each under its own name and a push (export/push.py) can replace it.
"""

# No `from __future__ import annotations`: torch.fx and TorchScript need real annotations.
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from data_pipelines.contract import DENSE_FEATURES, SEQUENCE_ID_FIELDS, TARGET_FEATURES
from recsys.model.cross import MASKED_SCORE
from recsys.model.moment_cross import QUERY_POOLED_FEATURES, MomentCrossModel
from export.scorer import CandidateInputs, model_id_features


class RequestInputs(NamedTuple):
    user_ids: torch.Tensor
    user_dense: torch.Tensor
    user_seq_ids: torch.Tensor
    user_seq_side: torch.Tensor
    user_seq_lengths: torch.Tensor
    candidate_user: torch.Tensor
    ids: torch.Tensor
    dense: torch.Tensor
    seq_ids: torch.Tensor
    seq_side: torch.Tensor
    seq_owner: torch.Tensor

    @property
    def candidates(self) -> int:
        return self.ids.shape[0]

    def trimmed(self) -> "RequestInputs":
        """Only the user sequence positions some user sequence fills (at least one), as the ranker
        sends them: the same scores, at a fraction of the cost for short histories."""
        used = max(1, int(self.user_seq_lengths.max())) if self.user_seq_lengths.numel() else self.user_seq_ids.shape[2]
        return self._replace(user_seq_ids=self.user_seq_ids[:, :, :used].contiguous(),
                             user_seq_side=self.user_seq_side[:, :, :used].contiguous())


def merged(requests: List[RequestInputs]) -> RequestInputs:
    """Requests scored together, as the ranker's micro-batcher sends them: the users one after the
    other (their sequences padded to the batch's longest), the candidates and their elements after
    each other's, each pointing at its own user and candidate."""
    if len(requests) == 1:
        return requests[0]
    longest = max(r.user_seq_ids.shape[2] for r in requests)

    def cat(name: str) -> torch.Tensor:
        parts = [getattr(r, name) for r in requests]
        if name in ("user_seq_ids", "user_seq_side"):
            parts = [F.pad(t, (0, 0, 0, longest - t.shape[2])) for t in parts]
        return torch.cat(parts)

    first_user, first_candidate = [0], [0]
    for r in requests[:-1]:
        first_user.append(first_user[-1] + r.user_ids.shape[0])
        first_candidate.append(first_candidate[-1] + r.candidates)
    owners = [r.seq_owner + torch.tensor([first, 0]) for r, first in zip(requests, first_candidate)]
    return RequestInputs(*(cat(name) for name in RequestInputs._fields))._replace(
        candidate_user=torch.cat([r.candidate_user + first for r, first in zip(requests, first_user)]),
        seq_owner=torch.cat(owners))


def jagged(seq_ids: torch.Tensor, seq_side: torch.Tensor, lengths: torch.Tensor
           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded sequences [B, G, L, .] with lengths [B, G] -> their real elements (seq_ids, seq_side,
    seq_owner) in (candidate, GSU, position) order."""
    b, g, length = seq_ids.shape[0], seq_ids.shape[1], seq_ids.shape[2]
    real = torch.arange(length).view(1, 1, length) < lengths.unsqueeze(-1)
    owner = torch.stack(torch.meshgrid(torch.arange(b), torch.arange(g), indexing="ij"), -1)  # [B, G, 2]
    return seq_ids[real], seq_side[real], owner.unsqueeze(2).expand(b, g, length, 2)[real]


INPUT_NAMES = RequestInputs._fields
USER_INPUTS = tuple(name for name in INPUT_NAMES if name.startswith("user_"))  # axis 0: users, not candidates


@dataclass(frozen=True)
class RequestLayout:
    """Which of the model's inputs a request's user sends once and which every candidate sends,
    each list in the model's order (model.json "request_layout" holds the user's)."""

    user_ids: List[str]
    candidate_ids: List[str]
    user_dense: List[str]
    candidate_dense: List[str]
    user_gsus: List[str]
    candidate_gsus: List[str]

    @classmethod
    def of(cls, model: MomentCrossModel, user: Dict[str, List[str]]) -> "RequestLayout":
        ids = model_id_features(model)
        layout = cls(user_ids=[f for f in ids if f in user["ids"]], candidate_ids=[f for f in ids if f not in user["ids"]],
                     user_dense=[f for f in DENSE_FEATURES if f in user["dense"]],
                     candidate_dense=[f for f in DENSE_FEATURES if f not in user["dense"]],
                     user_gsus=[g for g in model.gsu_names if g in user["sequences"]],
                     candidate_gsus=[g for g in model.gsu_names if g not in user["sequences"]])
        if any(f in layout.user_ids for f in TARGET_FEATURES):
            raise ValueError(f"the target features {list(TARGET_FEATURES)} belong to each candidate, not to the user")
        return layout

    def split(self, inputs: CandidateInputs, id_features: List[str], gsu_names: List[str]) -> RequestInputs:
        """Per-candidate inputs (each row its own user) as request inputs with one user per row."""
        def columns(names: List[str], order: List[str]) -> torch.Tensor:
            return torch.tensor([order.index(n) for n in names], dtype=torch.long)

        user_g, cand_g = columns(self.user_gsus, gsu_names), columns(self.candidate_gsus, gsu_names)
        dense = list(DENSE_FEATURES)
        seq_ids, seq_side, seq_owner = jagged(inputs.seq_ids[:, cand_g], inputs.seq_side[:, cand_g],
                                              inputs.seq_lengths[:, cand_g])
        return RequestInputs(
            user_ids=inputs.ids[:, columns(self.user_ids, id_features)], user_dense=inputs.dense[:, columns(self.user_dense, dense)],
            user_seq_ids=inputs.seq_ids[:, user_g], user_seq_side=inputs.seq_side[:, user_g],
            user_seq_lengths=inputs.seq_lengths[:, user_g], candidate_user=torch.arange(len(inputs)),
            ids=inputs.ids[:, columns(self.candidate_ids, id_features)],
            dense=inputs.dense[:, columns(self.candidate_dense, dense)], seq_ids=seq_ids, seq_side=seq_side,
            seq_owner=seq_owner)

    def join(self, inputs: RequestInputs, id_features: List[str], gsu_names: List[str]) -> CandidateInputs:
        """Request inputs as the per-candidate model reads them: the user's part repeated for each of
        its candidates, every sequence padded (the reference the request scorer is held to)."""
        u = inputs.candidate_user
        b = inputs.candidates
        ids = torch.zeros(b, len(id_features), dtype=torch.long)
        ids[:, [id_features.index(f) for f in self.user_ids]] = inputs.user_ids[u]
        ids[:, [id_features.index(f) for f in self.candidate_ids]] = inputs.ids
        dense = torch.zeros(b, len(DENSE_FEATURES), dtype=torch.float32)
        dense[:, [DENSE_FEATURES.index(f) for f in self.user_dense]] = inputs.user_dense[u]
        dense[:, [DENSE_FEATURES.index(f) for f in self.candidate_dense]] = inputs.dense
        # The candidates' elements at their positions: the k-th element of a (candidate, GSU) is position k.
        g_c = len(self.candidate_gsus)
        bag = inputs.seq_owner[:, 0] * g_c + inputs.seq_owner[:, 1]
        order = torch.argsort(bag, stable=True)
        sorted_bag = bag[order]
        position = torch.empty_like(bag)
        position[order] = torch.arange(len(bag)) - torch.searchsorted(sorted_bag, sorted_bag)
        candidate_lengths = torch.bincount(bag, minlength=b * g_c).view(b, g_c)
        length = max(inputs.user_seq_ids.shape[2], int(candidate_lengths.max()) if bag.numel() else 0, 1)
        seq_ids = torch.zeros(b, len(gsu_names), length, inputs.user_seq_ids.shape[-1], dtype=torch.long)
        seq_side = torch.zeros(b, len(gsu_names), length, inputs.user_seq_side.shape[-1], dtype=torch.long)
        lengths = torch.zeros(b, len(gsu_names), dtype=torch.long)
        user_g = [gsu_names.index(name) for name in self.user_gsus]
        user_length = inputs.user_seq_ids.shape[2]
        seq_ids[:, user_g, :user_length] = inputs.user_seq_ids[u]
        seq_side[:, user_g, :user_length] = inputs.user_seq_side[u]
        lengths[:, user_g] = inputs.user_seq_lengths[u]
        cand_g = torch.tensor([gsu_names.index(name) for name in self.candidate_gsus], dtype=torch.long)
        model_g = cand_g[inputs.seq_owner[:, 1]]  # each element's GSU in the model's order
        seq_ids[inputs.seq_owner[:, 0], model_g, position] = inputs.seq_ids
        seq_side[inputs.seq_owner[:, 0], model_g, position] = inputs.seq_side
        lengths[:, cand_g] = candidate_lengths
        return CandidateInputs(ids=ids, dense=dense, seq_ids=seq_ids, seq_side=seq_side, seq_lengths=lengths)


def _spans(starts: List[int], width: int) -> List[int]:
    return [s + k for s in starts for k in range(width)]


class RequestScorer(nn.Module):
    def __init__(self, model: MomentCrossModel, layout: RequestLayout):
        super().__init__()
        self.model = model.eval()
        head, lookup = model.head, model.lookup
        d = head.embedding_dim
        self.embedding_dim = d
        pooled = list(model.pooled_features)
        table_of = {f: c.name for c in lookup.pooled_ebc.embedding_bag_configs() for f in c.feature_names}
        # (id column, table) of each pooled feature, per owner, in the pooled order the first layer reads.
        self.user_pooled = [(layout.user_ids.index(f), table_of[f]) for f in pooled if f in layout.user_ids]
        self.candidate_pooled = [(layout.candidate_ids.index(f), table_of[f]) for f in pooled
                                 if f in layout.candidate_ids]
        self.target_columns = [layout.candidate_ids.index(f) for f in TARGET_FEATURES]
        self.target_biases = [(self.target_columns[SEQUENCE_ID_FIELDS.index(f)], f) for f in lookup.bias_fields]
        # The ESU query: the target, then each query feature from whichever side sends it.
        self.query_parts = [("user", [f for f in pooled if f in layout.user_ids].index(f)) if f in layout.user_ids
                            else ("candidate", [f for f in pooled if f in layout.candidate_ids].index(f))
                            for f in QUERY_POOLED_FEATURES]
        dense = list(DENSE_FEATURES)
        self.register_buffer("user_dense_columns", torch.tensor([dense.index(f) for f in layout.user_dense],
                                                                dtype=torch.long), persistent=False)
        self.register_buffer("candidate_dense_columns", torch.tensor(
            [dense.index(f) for f in layout.candidate_dense], dtype=torch.long), persistent=False)
        gsus = list(model.gsu_names)
        self.register_buffer("user_gsus", torch.tensor([gsus.index(g) for g in layout.user_gsus], dtype=torch.long),
                             persistent=False)
        self.register_buffer("candidate_gsus", torch.tensor([gsus.index(g) for g in layout.candidate_gsus],
                                                            dtype=torch.long), persistent=False)
        self.has_user_gsus, self.has_candidate_gsus = bool(layout.user_gsus), bool(layout.candidate_gsus)

        # Columns of the first level's input [pooled | target | dense | attended] that each side
        # fills, in the order the forward builds x_u and x_c.
        n_pooled, a = len(pooled), head.esu.w_v.shape[1] if head.esu is not None else 0
        target_at, dense_at = n_pooled * d, n_pooled * d + len(TARGET_FEATURES) * d
        attended_at = dense_at + len(dense)
        user_columns = _spans([pooled.index(f) * d for f in pooled if f in layout.user_ids], d) \
            + [dense_at + dense.index(f) for f in layout.user_dense]
        candidate_columns = _spans([pooled.index(f) * d for f in pooled if f in layout.candidate_ids], d) \
            + list(range(target_at, dense_at)) + [dense_at + dense.index(f) for f in layout.candidate_dense] \
            + _spans([attended_at + gsus.index(g) * a for g in [*layout.user_gsus, *layout.candidate_gsus]], a)
        self.first_level_columns = (user_columns, candidate_columns)
        level = head.multitask.levels[0]
        self.first_layers = [*(expert[0] for experts in level.task_experts for expert in experts),
                             *(expert[0] for expert in level.shared_experts), *level.task_gates,
                             *([level.shared_gate] if level.shared_gate is not None else [])]
        self.first_layer_sizes = [layer.out_features for layer in self.first_layers]
        for name, value in self.derived_buffers().items():
            self.register_buffer(name, value)

    @torch.no_grad()
    def derived_buffers(self) -> Dict[str, torch.Tensor]:
        """The first level's weights and biases side by side, split by the columns each side fills."""
        weight = torch.cat([layer.weight for layer in self.first_layers])  # [H, first level input]
        user_columns, candidate_columns = self.first_level_columns
        return {"first_layer_user_weight": weight[:, user_columns].contiguous(),
                "first_layer_candidate_weight": weight[:, candidate_columns].contiguous(),
                "first_layer_bias": torch.cat([layer.bias for layer in self.first_layers])}

    def serving_tensors(self) -> Dict[str, torch.Tensor]:
        """Name -> tensor of everything trained that the forward reads: the embedding tables, the
        dense parameters and statistics, the derived first-layer buffers (and not the first-layer
        weights they are derived from). What an export must hold by name and a push may replace."""
        replaced = {id(t) for layer in self.first_layers for t in (layer.weight, layer.bias)}
        return {name: t for name, t in self.state_dict(keep_vars=True).items()
                if t.is_floating_point() and id(t) not in replaced}

    def _table(self, name: str) -> torch.Tensor:
        return self.model.lookup.pooled_ebc.embedding_bags[name].weight

    def _sequence_table(self, field: str) -> torch.Tensor:
        return self.model.lookup.sequence_ebc.embedding_bags[field].weight

    def _elements(self, seq_ids: torch.Tensor) -> torch.Tensor:
        """[..., 2] item and author rows -> [..., 2 * d] their embeddings side by side."""
        return torch.cat([F.embedding(seq_ids[..., f], self._sequence_table(field))
                          for f, field in enumerate(SEQUENCE_ID_FIELDS)], dim=-1)

    def _dense_norm(self, dense: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """BatchNorm (inference) of one side's dense columns. The statistics are read whole, never
        sliced: a buffer sliced here would be sliced once while tracing and kept as a nameless
        constant in the TorchScript file, out of reach of a push (export/push.py)."""
        norm = self.model.head.dense_norm
        full = dense.new_zeros(dense.shape[0], norm.num_features).index_copy(1, columns, dense)
        return F.batch_norm(full, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0,
                            norm.eps).index_select(1, columns)

    def _query(self, query: torch.Tensor, gsus: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each GSU's query in element space, split: embedding part [B, G, 2d], side scores against
        every side table [B, G, sum of side rows], and the stacked side tables [R, s]."""
        esu = self.model.head.esu
        q = torch.einsum("bq,gaq->bga", query, esu.w_q.index_select(0, gsus))
        q = torch.einsum("bga,gae->bge", q, esu.w_k.index_select(0, gsus))
        b, g = q.shape[0], q.shape[1]
        width = len(SEQUENCE_ID_FIELDS) * self.embedding_dim
        q_side = q[..., width:].reshape(b, g, len(esu.side_rows), esu.side_dim)
        table = esu.side_table()
        tables = torch.split(table, esu.side_rows)
        side_scores = torch.cat([q_side[:, :, j] @ tables[j].T for j in range(len(esu.side_rows))], dim=-1)
        return q[..., :width], side_scores, table

    def _values(self, summed: torch.Tensor, mass: torch.Tensor, table: torch.Tensor, gsus: torch.Tensor) -> torch.Tensor:
        """Attended embeddings [B, G, 2d] and attention mass per side bucket [B, G, R] -> [B, G, A]."""
        esu = self.model.head.esu
        tables = torch.split(table, esu.side_rows)
        masses = torch.split(mass, esu.side_rows, dim=-1)
        values = torch.cat([summed, *[masses[j] @ tables[j] for j in range(len(esu.side_rows))]], dim=-1)
        return torch.einsum("bge,gae->bga", values, esu.w_v.index_select(0, gsus))

    def _attend_user(self, query: torch.Tensor, candidate_user: torch.Tensor, seq_ids: torch.Tensor,
                     seq_side: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Target attention over the user GSUs, each user's sequences held once: [B, G_u, A]."""
        esu = self.model.head.esu
        q, side_scores, table = self._query(query, self.user_gsus)
        b, g = q.shape[0], q.shape[1]
        u, length = seq_ids.shape[0], seq_ids.shape[2]
        elements = self._elements(seq_ids)  # [U, G, L, 2d]
        scores = torch.einsum("bgk,uglk->bgul", q, elements)  # [B, G, U, L]
        side_index = (seq_side + esu.side_offsets).permute(1, 0, 2, 3).reshape(1, g, -1).expand(b, g, -1)
        scores = scores + side_scores.gather(2, side_index).view(b, g, u, length, -1).sum(-1)
        mine = candidate_user.unsqueeze(1) == torch.arange(u, device=query.device).unsqueeze(0)  # [B, U]
        present = torch.arange(length, device=query.device).view(1, 1, length) < lengths.unsqueeze(-1)  # [U, G, L]
        mask = mine.view(b, 1, u, 1) & present.permute(1, 0, 2).unsqueeze(0)  # [B, G, U, L]
        weights = self._softmax(scores, mask, esu.scale)
        summed = torch.einsum("bgul,uglk->bgk", weights, elements)
        mass = torch.zeros_like(side_scores).scatter_add(
            2, side_index, weights.unsqueeze(-1).expand(b, g, u, length, seq_side.shape[-1]).reshape(b, g, -1))
        return self._values(summed, mass, table, self.user_gsus)

    def _attend_candidates(self, query: torch.Tensor, seq_ids: torch.Tensor, seq_side: torch.Tensor,
                           seq_owner: torch.Tensor) -> torch.Tensor:
        """Target attention over each candidate's own GSUs, on their real elements: [B, G_c, A]."""
        esu = self.model.head.esu
        q, side_scores, table = self._query(query, self.candidate_gsus)
        b, g, rows = q.shape[0], q.shape[1], side_scores.shape[-1]
        bags = b * g  # one softmax per (candidate, GSU)
        bag = seq_owner[:, 0] * g + seq_owner[:, 1]  # [E]
        elements = self._elements(seq_ids)  # [E, 2d]
        side_index = bag.unsqueeze(1) * rows + seq_side + esu.side_offsets  # [E, J] into side_scores' rows
        scores = ((elements * q.reshape(bags, -1).index_select(0, bag)).sum(-1)
                  + side_scores.reshape(-1)[side_index].sum(-1)) * esu.scale
        top = scores.new_full((bags,), float("-inf")).scatter_reduce(0, bag, scores, "amax")
        exp = torch.exp(scores - top.index_select(0, bag))
        weights = exp / scores.new_zeros(bags).index_add(0, bag, exp).index_select(0, bag)  # [E]
        summed = q.new_zeros(bags, q.shape[-1]).index_add(0, bag, elements * weights.unsqueeze(1))
        mass = side_scores.new_zeros(bags * rows).index_add(
            0, side_index.reshape(-1), weights.unsqueeze(1).expand(-1, side_index.shape[1]).reshape(-1))
        return self._values(summed.view(b, g, -1), mass.view(b, g, rows), table, self.candidate_gsus)

    @staticmethod
    def _softmax(scores: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        """Masked softmax over the last axes after the batch and GSU ones; padding (and, for user
        GSUs, other users' positions) gets no weight, an empty sequence zeros (as in training)."""
        shape = scores.shape
        flat, flat_mask = scores.reshape(shape[0], shape[1], -1), mask.reshape(shape[0], shape[1], -1)
        probabilities = torch.softmax((flat * scale).masked_fill(~flat_mask, MASKED_SCORE), dim=-1)
        return (probabilities * flat_mask).view(shape)

    def forward(self, user_ids: torch.Tensor, user_dense: torch.Tensor, user_seq_ids: torch.Tensor,
                user_seq_side: torch.Tensor, user_seq_lengths: torch.Tensor, candidate_user: torch.Tensor,
                ids: torch.Tensor, dense: torch.Tensor, seq_ids: torch.Tensor, seq_side: torch.Tensor,
                seq_owner: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        head = self.model.head
        user_pooled = [F.embedding(user_ids[:, c], self._table(t)) for c, t in self.user_pooled]  # each [U, d]
        candidate_pooled = [F.embedding(ids[:, c], self._table(t)) for c, t in self.candidate_pooled]  # [B, d]
        target = torch.cat([F.embedding(ids[:, c], self._sequence_table(field))
                            for c, field in zip(self.target_columns, SEQUENCE_ID_FIELDS)], dim=-1)  # [B, 2d]
        attended: List[torch.Tensor] = []
        if head.esu is not None:
            query = torch.cat([target, *[user_pooled[i].index_select(0, candidate_user) if side == "user"
                                         else candidate_pooled[i] for side, i in self.query_parts]], dim=-1)
            if self.has_user_gsus:
                attended.append(self._attend_user(query, candidate_user, user_seq_ids, user_seq_side,
                                                  user_seq_lengths))
            if self.has_candidate_gsus:
                attended.append(self._attend_candidates(query, seq_ids, seq_side, seq_owner))
        b = ids.shape[0]
        x_user = torch.cat([*user_pooled, self._dense_norm(user_dense, self.user_dense_columns)], dim=-1)
        x_candidate = torch.cat([*candidate_pooled, target, self._dense_norm(dense, self.candidate_dense_columns),
                                 *[a.reshape(b, -1) for a in attended]], dim=-1)
        # F.linear, not `@ W.T`: a buffer transposed here would be traced into an unnamed constant.
        first = F.linear(x_user, self.first_layer_user_weight).index_select(0, candidate_user) \
            + F.linear(x_candidate, self.first_layer_candidate_weight, self.first_layer_bias)  # [B, H]
        per_task = self._multitask(torch.split(first, self.first_layer_sizes, dim=-1))
        logits = torch.cat([tower(h) for tower, h in zip(head.towers, per_task)], dim=-1)
        for c, field in self.target_biases:  # the wide part, if the model has one
            table = self.model.lookup.bias_ebc.embedding_bags[f"{field}_bias"].weight
            logits = logits + F.embedding(ids[:, c], table)[:, : logits.shape[1]]
        probabilities = torch.sigmoid(logits)
        return probabilities, head.score(probabilities)

    def _multitask(self, first: List[torch.Tensor]) -> List[torch.Tensor]:
        """CGC / PLE from the first level's first-layer outputs (experts' in task order, then the
        shared experts', then the gates' logits)."""
        levels = self.model.head.multitask.levels
        level = levels[0]
        n_tasks = level.n_tasks
        outputs, k = [], 0
        experts: List[List[torch.Tensor]] = []
        for task_experts in level.task_experts:
            experts.append([])
            for expert in task_experts:
                h = first[k]
                for layer in list(expert)[1:]:  # after its first Linear: ReLU, (Dropout), deeper layers
                    h = layer(h)
                experts[-1].append(h)
                k += 1
        shared = []
        for expert in level.shared_experts:
            h = first[k]
            for layer in list(expert)[1:]:
                h = layer(h)
            shared.append(h)
            k += 1
        weights = [torch.softmax(first[k + t], dim=-1) for t in range(n_tasks)]
        if level.shared_gate is not None:
            weights.append(torch.softmax(first[k + n_tasks], dim=-1))
        outputs = level.mix(experts, shared, weights)
        for deeper in list(levels)[1:]:
            outputs = deeper(outputs)
        return outputs[:n_tasks]
