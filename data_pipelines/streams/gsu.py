"""General search units: at request time, five sequences retrieved from the user's history
strictly before the request (at most the last `max_events` interactions, DESIGN.md "Cross").

| name     | retrieves                                                             |
|----------|-----------------------------------------------------------------------|
| short    | the latest L short-video interactions                                 |
| long     | the top-L short videos by content-embedding dot product with the live |
| aidhard  | the latest L short videos by the target live's author                 |
| livelong | the top-L lives by content-embedding dot product with the live        |

The dot products are taken over content embeddings quantized to integers (`quantize_embeddings`):
integer sums are exact in any order, so the ranker's feature stage (serving/ranker/src/features),
which vectorizes them differently, selects and orders exactly the same elements — with float sums
two near-equal scores could swap between the two. The quantization step is 1/4095 of the largest
coordinate, far below the content model's own noise.
| mixed    | the latest L long-view interactions, lives and short videos mixed     |

Each sequence is ragged (no padding): per request a length, then per element the fields
contract.SEQUENCE_FIELDS: the item row, the author row, a time-gap bucket, a watch-time bucket and
the domain. "Latest" sequences are most
recent first; searched ones are best score first, ties broken by recency.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from data_pipelines.contract import GSU_NAMES, LENGTHS_DTYPE, LIVE, SEQUENCE_DTYPES, SEQUENCE_FIELDS, SHORT
from data_pipelines.history_store import HistoryStore
from data_pipelines.ragged import gather_rows, within_group
from data_pipelines.streams.features import Vocabularies, log2_bucket_row


@dataclass
class Sequences:
    """One GSU's output for N requests, ragged: element rows of request i are
    offsets[i]:offsets[i+1] of each field."""

    lengths: np.ndarray  # [N] int32
    fields: dict[str, np.ndarray]  # SEQUENCE_FIELDS -> [sum(lengths)]

    @cached_property
    def offsets(self) -> np.ndarray:
        """[N + 1]; computed once: the shard writer takes a micro-batch at a time from millions of rows."""
        return np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])

    @staticmethod
    def concat(parts: list["Sequences"]) -> "Sequences":
        return Sequences(np.concatenate([p.lengths for p in parts]),
                         {f: np.concatenate([p.fields[f] for p in parts]) for f in SEQUENCE_FIELDS})

    def take(self, rows: np.ndarray) -> "Sequences":
        """The sequences of requests `rows`, in that order."""
        lengths, positions = gather_rows(self.lengths, rows, starts=self.offsets[:-1])
        return Sequences(lengths.astype(np.int32), {f: v[positions] for f, v in self.fields.items()})


@dataclass(frozen=True)
class RowSubset:
    """Rows of the history store that satisfy a condition (e.g. short videos only), ascending.
    Because the store's rows are sorted by (user, time), a window [begin, end) of the full
    store maps onto a window of the subset with two plain searchsorted calls."""

    rows: np.ndarray

    def window(self, begin: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.searchsorted(self.rows, begin), np.searchsorted(self.rows, end)


def _latest(subset: RowSubset, begin: np.ndarray, end: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(request index, store row) of the latest `length` subset rows per request, most recent first."""
    b, e = subset.window(begin, end)
    counts = np.minimum(e - b, length)
    request = np.repeat(np.arange(len(begin)), counts)
    return request, subset.rows[np.repeat(e, counts) - 1 - within_group(counts)]


def _pairs(subset: RowSubset, begin: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (request index, store row) with the row in the request's subset window."""
    b, e = subset.window(begin, end)
    counts = e - b
    request = np.repeat(np.arange(len(begin)), counts)
    return request, subset.rows[np.repeat(b, counts) + within_group(counts)]


EMBEDDING_LEVELS = 4095  # the largest quantized coordinate: sums of 128 products stay within int32


def quantize_embeddings(photo: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both content-embedding tables as int16, one scale for the two (the largest |coordinate| becomes
    EMBEDDING_LEVELS), rounded half to even. Written once here; the ranker's feature catalog holds
    these tables as they come out (export/feature_catalog.py)."""
    if photo.shape[1] != live.shape[1] or photo.shape[1] > 128:
        raise ValueError(f"content embeddings must share one width of at most 128, got {photo.shape[1]} and "
                         f"{live.shape[1]}")
    largest = max(float(np.abs(photo).max(initial=0.0)), float(np.abs(live).max(initial=0.0)))
    scale = EMBEDDING_LEVELS / largest if largest > 0 else 0.0
    return (np.rint(photo.astype(np.float64) * scale).astype(np.int16),
            np.rint(live.astype(np.float64) * scale).astype(np.int16))


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise integer dot products of int16 rows, exact."""
    return np.einsum("ne,ne->n", a.astype(np.int32), b.astype(np.int32))


def _descending_key(score: np.ndarray) -> np.ndarray:
    """int64 in [0, 2**32) that orders like -score (an int32 score)."""
    return (2**31 - 1) - score.astype(np.int64)


def _rank_within_request(request: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal (sorted) request indices."""
    return within_group(np.bincount(request, minlength=int(request.max()) + 1 if len(request) else 0))


def _top(request: np.ndarray, row: np.ndarray, score: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per request the `length` pairs of highest score, best first (ties: the more recent row first).
    Pairs arrive grouped by request with rows ascending, as `_pairs` makes them; the composite
    (request, -score) key is then almost sorted, which a stable sort handles in near-linear time."""
    backwards = np.arange(len(score))[::-1]  # a stable sort then puts the later (more recent) row first
    key = request[backwards].astype(np.int64) * 2**32 + _descending_key(score[backwards])
    order = backwards[np.argsort(key, kind="stable")]
    request, row = request[order], row[order]
    keep = _rank_within_request(request) < length
    return request[keep], row[keep]


def _last(request: np.ndarray, row: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per request the last `length` pairs, most recent first (pairs grouped by request, rows ascending)."""
    counts = np.bincount(request, minlength=int(request.max()) + 1 if len(request) else 0)
    ends = np.cumsum(counts)
    taken = np.minimum(counts, length)
    positions = np.repeat(ends, taken) - 1 - within_group(taken)
    return request[positions], row[positions]


@dataclass(frozen=True)
class GsuRetriever:
    """Retrieves the five sequences for batches of requests from one history store.
    Build it with `GsuRetriever.build`, which derives the per-history-row arrays once."""

    store: HistoryStore
    vocab: Vocabularies
    photo_embedding: np.ndarray  # [P, E] int16 (quantize_embeddings), rows aligned with vocab.photo ids
    live_embedding: np.ndarray  # [R, E] int16, rows aligned with vocab.live ids
    subsets: dict[str, RowSubset]  # "short", "live", "long_view" rows of the store
    emb_row: np.ndarray  # [N] embedding row of every history row (-1: none)
    item_row: np.ndarray  # [N] item-table row of every history row
    author_row: np.ndarray  # [N] author-table row of every history row
    length: int = 50
    max_pairs: int = 500_000  # bound on (request, candidate) pairs scored at once

    @classmethod
    def build(cls, store: HistoryStore, vocab: Vocabularies, photo_embedding: np.ndarray,
              live_embedding: np.ndarray, length: int = 50, max_pairs: int = 500_000) -> "GsuRetriever":
        subsets = {"short": RowSubset(np.flatnonzero(store.domain == SHORT)),
                   "live": RowSubset(np.flatnonzero(store.domain == LIVE)),
                   "long_view": RowSubset(np.flatnonzero(store.long_view))}
        emb_row = np.where(store.domain == LIVE, vocab.live.index(store.item_id) - vocab.live.offset,
                           vocab.photo.index(store.item_id)) - 1
        photo_q, live_q = quantize_embeddings(photo_embedding, live_embedding)
        return cls(store, vocab, photo_q, live_q, subsets,
                   emb_row, vocab.item_index(store.item_id, store.domain), vocab.author.index(store.author_id),
                   length, max_pairs)

    def retrieve(self, user_id: np.ndarray, request_ts: np.ndarray, live_id: np.ndarray,
                 author_id: np.ndarray) -> dict[str, Sequences]:
        """All five GSUs for requests (user, t0, target live, its author); raw ids in, table rows out."""
        begin, end = self.store.query_batch(user_id, request_ts)
        # Split requests so that the scored (request, candidate) pairs stay within max_pairs.
        sizes = np.maximum(end - begin, 1)
        cuts = np.searchsorted(np.cumsum(sizes), np.arange(self.max_pairs, sizes.sum(), self.max_pairs))
        bounds = np.unique(np.concatenate([[0], cuts, [len(begin)]]))
        parts: dict[str, list[Sequences]] = {name: [] for name in GSU_NAMES}
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            chunk = slice(lo, hi)
            for name, (request, row) in self._select(begin[chunk], end[chunk], live_id[chunk],
                                                     author_id[chunk]).items():
                parts[name].append(self._sequences(request, row, request_ts[chunk], hi - lo))
        return {name: Sequences.concat(p) for name, p in parts.items()}

    def _select(self, begin, end, live_id, author_id) -> dict[str, tuple]:
        L, subsets = self.length, self.subsets
        target_emb_row = self.vocab.live.index(live_id) - self.vocab.live.offset - 1
        target = np.where((target_emb_row >= 0)[:, None], self.live_embedding[np.maximum(target_emb_row, 0)],
                          0).astype(np.int16)
        selected = {"short": _latest(subsets["short"], begin, end, L),
                    "mixed": _latest(subsets["long_view"], begin, end, L)}

        request, row = _pairs(subsets["short"], begin, end)
        emb_row = self.emb_row[row]
        score = _dot(self.photo_embedding[np.maximum(emb_row, 0)], target[request])
        has_emb = emb_row >= 0
        selected["long"] = _top(request[has_emb], row[has_emb], score[has_emb], L)
        same_author = self.store.author_id[row] == author_id[request]
        selected["aidhard"] = _last(request[same_author], row[same_author], L)

        request, row = _pairs(subsets["live"], begin, end)
        emb_row = self.emb_row[row]
        score = _dot(self.live_embedding[np.maximum(emb_row, 0)], target[request])
        has_emb = emb_row >= 0
        selected["livelong"] = _top(request[has_emb], row[has_emb], score[has_emb], L)
        return selected

    def _sequences(self, request: np.ndarray, row: np.ndarray, request_ts: np.ndarray, n: int) -> Sequences:
        s = self.store
        gap_min = (request_ts[request] - s.ts[row]) / 60_000.0
        return Sequences(
            lengths=np.bincount(request, minlength=n).astype(LENGTHS_DTYPE),
            fields={f: v.astype(SEQUENCE_DTYPES[f]) for f, v in (
                ("item", self.item_row[row]), ("author", self.author_row[row]), ("gap", log2_bucket_row(gap_min)),
                ("watch", log2_bucket_row(s.watch_ms[row] / 1000.0)), ("domain", s.domain[row]))},
        )
