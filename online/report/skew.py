"""Feature skew: the features the ranker served (the joiners' served ledgers) against `make streams`'
recomputation of the same impressions from the whole world, and why any differ.

A request's served features equal the recomputation when its integer features (ids, the five GSU
sequences) have the same digest and its dense features agree within 1e-6. A request that differs is
put down to one cause, the first that holds:

  late event    an event of its user or its room with ts < request_ts was published after the
                request was sent: the ranker could not have seen it;
  out of order  such an event was published after a clock mark at or past its time: the partition
                claimed to be complete without it (the ranker trusts the marks);
  other         neither: the feature stage itself disagrees with the streams (a bug to find).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_pipelines.contract import DENSE_FEATURES
from data_pipelines.dataset import DataSet
from online.record import SERVED_FIELDS, Answers, Rounds, ServedLedger
from online.world import PlayedWorld
from online.served import features_digests
from online.state_events import KINDS

DENSE_ATOL = 1e-6
CAUSES = ("late_event", "out_of_order", "other")
CLASSIFIED_AT_MOST = 2000  # skewed requests whose cause is looked for (each scans the schedule)


def first_records(served: ServedLedger) -> ServedLedger:
    """Each impression's first record (what its samples carry: the joiner keeps the first)."""
    _, first = np.unique(served.impression_id, return_index=True)
    first = np.sort(first)
    return ServedLedger(*(getattr(served, f)[first] for f in SERVED_FIELDS))


def recomputed(data: DataSet, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(digests, dense [n, D]) of `make streams`' features of impressions `rows` (canonical rows)."""
    from data_pipelines.streams.build import data_set_features
    from data_pipelines.streams.shards import request_arrays

    # A request's room state counts every earlier request of the room: the whole table, then the rows.
    arrays = request_arrays(data_set_features(data), rows)
    return features_digests(arrays), arrays["dense"].astype(np.float32)


def skewed_causes(world: PlayedWorld, answers: Answers, rounds: Rounds, rows: np.ndarray) -> dict[str, int]:
    """The cause of each skewed request (`rows`: canonical rows), counted (see the module's text)."""
    counts = dict.fromkeys(CAUSES, 0)
    if not len(rows):
        return counts
    published = rounds.published_unix_s(len(world))
    marked = rounds.marked_unix_s(world.ts)
    imp, f = world.impressions, world.is_fact
    user_of = np.full(len(world), -1, np.int64)  # the user whose history or stay an entry is of
    room_of = np.full(len(world), -1, np.int64)  # the room whose state it changes
    user_of[f] = world.timeline.user[world.index[f]]
    room_of[f] = imp["live_id"].to_numpy()[world.timeline.row[world.index[f]]]
    state = {name: column[world.index[~f]] for name, column in world.state.columns.items()}
    is_play = state["kind"] == KINDS.index("play")
    user_of[~f] = np.where(is_play, state["user"], -1)
    room_of[~f] = np.where(is_play, -1, state["live"])
    for row in rows[:CLASSIFIED_AT_MOST]:
        user, live = int(imp["user_id"].iat[row]), int(imp["live_id"].iat[row])
        t0, sent = int(imp["request_ts"].iat[row]), float(answers.sent_unix_s[row])
        mine = ((user_of == user) | (room_of == live)) & (world.ts < t0)
        if (published[mine] > sent).any():
            counts["late_event"] += 1
        elif (published[mine] > marked[mine]).any():
            counts["out_of_order"] += 1
        else:
            counts["other"] += 1
    return counts


def feature_skew(data: DataSet, world: PlayedWorld, served: ServedLedger, answers: Answers, rounds: Rounds) -> dict:
    """`feature_skew_rate` and its causes over the requests served (their first records)."""
    first = first_records(served)
    ids = pd.read_parquet(data.canonical.live_impressions, columns=["impression_id"])["impression_id"].to_numpy()
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    rows = row_of.reindex(first.impression_id).to_numpy()
    if np.isnan(rows.astype(float)).any():
        raise ValueError("the served ledger names impressions the data set does not hold")
    rows = rows.astype(np.int64)
    digests, dense = recomputed(data, rows)
    same = (digests == first.features_digest) & np.isclose(first.dense, dense, rtol=0, atol=DENSE_ATOL).all(axis=1)
    differing_fields = {name: int((~np.isclose(first.dense[:, k], dense[:, k], rtol=0, atol=DENSE_ATOL)).sum())
                        for k, name in enumerate(DENSE_FEATURES)}
    return {"requests": int(len(rows)), "skewed": int((~same).sum()),
            "rate": float((~same).mean()) if len(rows) else None,
            "causes": skewed_causes(world, answers, rounds, rows[~same]),
            "sparse_or_sequences_differ": int((digests != first.features_digest).sum()),
            "dense_differ": {k: v for k, v in differing_fields.items() if v}}


def samples_match_served(ledger: dict, served: ServedLedger) -> dict:
    """Share of the samples (every stream) whose features are their request's served features: the
    digest of what the joiner published against the digest of the first served record."""
    first = first_records(served)
    digest_of = pd.Series(first.features_digest, index=first.impression_id)
    total = matching = 0
    for part in ledger.values():
        expected = digest_of.reindex(part.impression_id).to_numpy()
        total += len(part.impression_id)
        matching += int(np.sum(expected.astype(np.uint64) == part.features_digest.astype(np.uint64)))
    return {"samples": total, "matching": matching, "share": matching / total if total else None}
