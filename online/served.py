"""The served-features log as the label joiner reads it: what the ranker answered each ids-only
request with, one entry of `served.<user % partitions>` per answer (serving/ranker/src/features/
served_log.hpp writes them).

| field       | what                                                                      |
|-------------|---------------------------------------------------------------------------|
| request     | the request's id; the live loop's driver names an impression's `imp-<impression_id>` |
| user        | the user id                                                               |
| request_ts  | the time the features are of (data ms)                                    |
| export, push| the model version that answered                                           |
| state_clock | the feature state's clock then: its newest event's time                   |
| features    | JSON: `user` {ids, dense, sequences}, `candidates` [{ids, dense, sequences}] (features_json.cpp) |

`request_arrays_of` turns a one-candidate record into the shard layout's request arrays
(shards.request_arrays: what a training sample carries), refusing anything that is not exactly the
contract's features with `MalformedEvent` and the reason; `features_digests` is a 64-bit
digest of a request's integer features, the same for a record and for `make streams`' features of
the impression when they agree (the report's feature-skew check, the joiner's ledger).
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from data_pipelines.contract import (DENSE_DTYPE, DENSE_FEATURES, GSU_NAMES, LENGTHS_DTYPE, ROOM_STATE_FEATURES,
                                     SEQUENCE_DTYPES,
                                     SEQUENCE_FIELDS, SPARSE_DTYPE, SPARSE_FEATURES, lengths_key, sequence_key,
                                     sparse_key)
from online.events import MalformedEvent

# The arrays a request carries into its samples: the shard layout's request arrays (shards.request_arrays).
REQUEST_KEYS = frozenset(["impression_id", "request_ts", "dense", *(sparse_key(f) for f in SPARSE_FEATURES),
                          *(lengths_key(g) for g in GSU_NAMES),
                          *(sequence_key(g, f) for g in GSU_NAMES for f in SEQUENCE_FIELDS)])
REQUEST_ID = re.compile(r"imp-(-?[0-9]{1,18})")


def impression_of(request_id: str) -> int:
    """The impression a live-loop request id names (`imp-<impression_id>`)."""
    match = REQUEST_ID.fullmatch(request_id)
    if match is None:
        raise MalformedEvent(f"served request id {request_id[:40]!r} names no impression (imp-<id>)")
    return int(match.group(1))


def _field(fields: dict[bytes, bytes], key: str) -> bytes:
    raw = fields.get(key.encode())
    if raw is None:
        raise MalformedEvent(f"served record without '{key}'")
    return raw


def parse_served(fields: dict[bytes, bytes]) -> tuple[int, dict[str, np.ndarray]]:
    """(impression id, its request arrays in the shard layout) of one served-log entry."""
    impression = impression_of(_field(fields, "request").decode("utf-8", "replace"))
    try:
        request_ts = int(_field(fields, "request_ts"))
        features = json.loads(_field(fields, "features"))
        return impression, request_arrays_of(features, impression, request_ts)
    except (ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        raise MalformedEvent(f"served features of impression {impression}: {type(exc).__name__}: {exc}"[:300]) from None


def request_arrays_of(features: dict, impression: int, request_ts: int) -> dict[str, np.ndarray]:
    """A one-candidate record's features as the shard layout's request arrays (one row)."""
    candidates = features["candidates"]
    if len(candidates) != 1:
        raise MalformedEvent(f"served features of impression {impression}: {len(candidates)} candidates, a live-loop "
                             f"request has one")
    user, [candidate] = features["user"], candidates
    ids = {**user["ids"], **candidate["ids"]}
    dense = {**user["dense"], **candidate["dense"]}
    sequences = {**user["sequences"], **candidate["sequences"]}
    arrays = {"impression_id": np.array([impression], np.int64), "request_ts": np.array([request_ts], np.int64),
              "dense": np.array([[float(dense[f]) for f in DENSE_FEATURES]], DENSE_DTYPE)}
    if not np.isfinite(arrays["dense"]).all():
        raise MalformedEvent(f"served features of impression {impression}: a dense feature is not finite")
    for name in SPARSE_FEATURES:
        arrays[sparse_key(name)] = np.array([int(ids[name])], SPARSE_DTYPE)
    for gsu in GSU_NAMES:
        columns = [sequences[gsu][f] for f in SEQUENCE_FIELDS]
        n = len(columns[0])
        if any(len(c) != n for c in columns):
            raise MalformedEvent(f"served features of impression {impression}: the {gsu} sequence's fields differ in "
                                 f"length")
        arrays[lengths_key(gsu)] = np.array([n], LENGTHS_DTYPE)
        for field, values in zip(SEQUENCE_FIELDS, columns):
            column = np.array(values, np.int64)
            kind = np.iinfo(SEQUENCE_DTYPES[field])
            if n and (column.min() < kind.min or column.max() > kind.max):
                raise MalformedEvent(f"served features of impression {impression}: {gsu}.{field} out of range")
            arrays[sequence_key(gsu, field)] = column.astype(SEQUENCE_DTYPES[field])
    return arrays


def features_digests(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """[rows] uint64: a digest of each request's integer features (ids, sequences) in the shard
    layout, equal for equal features whatever their dtypes. Dense features are compared apart,
    within a tolerance (the ranker computes them in double precision, the streams in numpy)."""
    rows = len(arrays["impression_id"])
    offsets = {g: np.concatenate([[0], np.cumsum(arrays[lengths_key(g)], dtype=np.int64)]) for g in GSU_NAMES}
    sparse = np.stack([arrays[sparse_key(f)].astype(np.int64) for f in SPARSE_FEATURES], axis=1)
    columns = {(g, f): arrays[sequence_key(g, f)].astype(np.int64) for g in GSU_NAMES for f in SEQUENCE_FIELDS}
    out = np.zeros(rows, np.uint64)
    for row in range(rows):
        h = hashlib.blake2b(sparse[row].tobytes(), digest_size=8)
        for g in GSU_NAMES:
            a, b = offsets[g][row], offsets[g][row + 1]
            h.update(np.int64(b - a).tobytes())
            for f in SEQUENCE_FIELDS:
                h.update(columns[(g, f)][a:b].tobytes())
        out[row] = int.from_bytes(h.digest(), "little")
    return out


def features_json_of(arrays: dict[str, np.ndarray], request_id: str) -> str:
    """A one-row request's features as the ranker's served log writes them (features_json.cpp), for
    tests and drills that publish served records without a ranker."""
    user_ids = ("user_id", "hour", "user_history_bucket", "user_live_bucket")
    user_dense = tuple(f for f in DENSE_FEATURES if f not in ROOM_STATE_FEATURES)
    user_gsus = ("short", "mixed")

    def sequence(gsu: str) -> dict:
        n = int(arrays[lengths_key(gsu)][0])
        return {f: arrays[sequence_key(gsu, f)][:n].astype(np.int64).tolist() for f in SEQUENCE_FIELDS}

    def part(ids, dense, gsus) -> dict:
        return {"ids": {f: int(arrays[sparse_key(f)][0]) for f in ids},
                "dense": {f: float(arrays["dense"][0, DENSE_FEATURES.index(f)]) for f in dense},
                "sequences": {g: sequence(g) for g in gsus}}

    return json.dumps({"request_id": request_id,
                       "user": part(user_ids, user_dense, user_gsus),
                       "candidates": [part([f for f in SPARSE_FEATURES if f not in user_ids], ROOM_STATE_FEATURES,
                                           [g for g in GSU_NAMES if g not in user_gsus])]})


def served_fields(arrays: dict[str, np.ndarray], user: int, export: str = "", push: int = 0) -> dict[bytes, bytes]:
    """A one-row request's served-log entry as the ranker writes it (served_log.cpp), for tests and
    benches that feed the joiner without a ranker."""
    impression, request_ts = int(arrays["impression_id"][0]), int(arrays["request_ts"][0])
    request_id = f"imp-{impression}"
    return {b"request": request_id.encode(), b"user": str(int(user)).encode(), b"request_ts": str(request_ts).encode(),
            b"export": export.encode(), b"push": str(int(push)).encode(), b"state_clock": str(request_ts).encode(),
            b"features": features_json_of(arrays, request_id).encode()}
