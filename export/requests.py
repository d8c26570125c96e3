"""The ranker's request format, read in Python: the reference the C++ ranker (serving/ranker/src/
request.cpp) is tested against, and how tests and benchmarks turn requests into the request
scorer's inputs (export/request_scorer.py).

One request is one JSON object on one line: a user and the candidate lives to rank for them.

    {"request_id": "r-17",
     "user": {"ids": {"user_id": 812, "hour": 21, ...}, "dense": {"user_history_len": 3.2, ...},
              "sequences": {"short": {"item": [...], "author": [...], "gap": [...], "watch": [...],
                                      "domain": [...]}, "mixed": {...}}},
     "candidates": [{"ids": {"live_item": 40, "author_id": 7, ...}, "dense": {"room_viewers_now": 2.1, ...},
                     "sequences": {"long": {...}, "aidhard": {...}, "livelong": {...}}}, ...]}

Which id, dense feature and GSU belongs to the user and which to each candidate is fixed by
`model.json` "request_layout" (target-dependent GSUs travel with their candidate). Every feature
must appear exactly where the layout puts it; ids are table rows in [0, rows), sequences have at
most `seq_len` elements and equal-length fields. Anything else is a RequestError naming the field.
Like the C++ ranker, this reads every name, order and bound from model.json, none from the code.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import numpy as np
import torch

from export.request_scorer import RequestInputs
from export.scorer import CandidateInputs


class RequestError(ValueError):
    """A request that cannot be scored; the message names the offending field."""


class RequestSchema:
    """What a valid request looks like, from model.json."""

    def __init__(self, meta: dict[str, Any]):
        self.id_features = [f["name"] for f in meta["id_features"]]
        self.id_rows = {f["name"]: f["rows"] for f in meta["id_features"]}
        self.dense_features = list(meta["dense_features"])
        gsus = meta["gsus"]
        self.gsu_names = list(gsus["names"])
        self.seq_len = int(gsus["length"])
        # An element's fields: the first n_id_fields are seq_ids' last axis, the rest seq_side's.
        self.sequence_fields = [*gsus["id_fields"], *gsus["side_fields"]]
        self.n_id_fields = len(gsus["id_fields"])
        self.sequence_rows = {f: int(gsus["rows"][f]) for f in self.sequence_fields}
        self.max_candidates = int(meta["max_candidates"])
        user = meta["request_layout"]["user"]
        self.owner = {("ids", f): "user" if f in user["ids"] else "candidate" for f in self.id_features}
        self.owner |= {("dense", f): "user" if f in user["dense"] else "candidate" for f in self.dense_features}
        self.owner |= {("sequences", g): "user" if g in user["sequences"] else "candidate" for g in self.gsu_names}

    def names(self, section: str) -> list[str]:
        return {"ids": self.id_features, "dense": self.dense_features, "sequences": self.gsu_names}[section]

    def fields_of(self, owner: str, section: str) -> list[str]:
        return [n for n in self.names(section) if self.owner[(section, n)] == owner]


class _Float(float):
    """A JSON number with a fraction or an exponent, remembering how it was written."""

    literal: str


class _Int(int):
    """A JSON integer, remembering how it was written."""

    literal: str


def _number(kind: type, literal: str):
    value = kind(literal)
    value.literal = literal
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise RequestError(f"bad JSON: duplicate key '{repeated}'")
    return dict(pairs)


def _check_text(value: Any) -> None:
    """Every string of the document must be valid UTF-8 when written back: json accepts a lone
    surrogate escape (\\ud800), the answer could then not be encoded."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError("bad JSON: lone surrogate in \\u escape") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def _no_constant(name: str):
    raise RequestError(f"bad JSON: {name} is not a JSON value")


def _literal(value: Any) -> str:
    """A value as the request wrote it, for error messages (2.0 stays 2.0, 1e400 stays 1e400;
    containers abridged), worded as the C++ ranker words it."""
    if isinstance(value, (dict, list)):
        return "{...}" if isinstance(value, dict) else "[...]"
    return getattr(value, "literal", None) or json.dumps(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float32(value: Any) -> bool:
    """A number that stays finite as the model's float32 reads it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        as_double = float(value)
    except OverflowError:  # an integer beyond any double
        return False
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.float32(as_double)))


def _fields(values: Any, where: str, expected: list[str]) -> dict:
    """An object holding exactly the fields `expected`."""
    if not isinstance(values, dict):
        raise RequestError(f"{where} must be an object")
    unknown = sorted(set(values) - set(expected))
    if unknown:
        raise RequestError(f"{where}: unexpected field '{unknown[0]}' (expected here: {expected})")
    missing = [n for n in expected if n not in values]
    if missing:
        raise RequestError(f"{where}: missing field '{missing[0]}'")
    return values


def _check_id(value: Any, rows: int, where: str) -> int:
    if not _is_int(value):
        raise RequestError(f"{where} must be an integer, got {_literal(value)}")
    if not 0 <= value < rows:
        raise RequestError(f"{where}={_literal(value)} out of range [0, {rows})")
    return value


def _sequence(value: Any, schema: RequestSchema, where: str) -> dict[str, list[int]]:
    fields = _fields(value, where, schema.sequence_fields)
    n = None
    for field in schema.sequence_fields:
        items = fields[field]
        if not isinstance(items, list):
            raise RequestError(f"{where}.{field} must be an array")
        if n is None:
            n = len(items)
            if n > schema.seq_len:
                raise RequestError(f"{where}.{field} has {n} elements, more than the model's {schema.seq_len}")
        elif len(items) != n:
            raise RequestError(f"{where}.{field} has {len(items)} elements, {schema.sequence_fields[0]} has {n}")
        for i, v in enumerate(items):
            _check_id(v, schema.sequence_rows[field], f"{where}.{field}[{i}]")
    return fields


def _check_part(obj: Any, owner: str, where: str, schema: RequestSchema) -> dict[str, dict]:
    if not isinstance(obj, dict):
        raise RequestError(f"{where} must be an object")
    unknown = sorted(set(obj) - {"ids", "dense", "sequences"})
    if unknown:
        raise RequestError(f"{where}: unexpected field '{unknown[0]}'")
    part = {s: _fields(obj.get(s, {}), f"{where}.{s}", schema.fields_of(owner, s)) for s in ("ids", "dense", "sequences")}
    for name, value in part["ids"].items():
        _check_id(value, schema.id_rows[name], f"{where}.ids.{name}")
    for name, value in part["dense"].items():
        if not _is_float32(value):
            raise RequestError(f"{where}.dense.{name} must be a finite float32 number, got {_literal(value)}")
    part["sequences"] = {g: _sequence(v, schema, f"{where}.sequences.{g}") for g, v in part["sequences"].items()}
    return part


def parse_request(line: str | dict, schema: RequestSchema) -> tuple[str | None, RequestInputs]:
    """One request -> (request_id, the request scorer's inputs: one user, the candidates in request order)."""
    if isinstance(line, str):
        try:
            obj = json.loads(line, object_pairs_hook=_unique_keys, parse_float=partial(_number, _Float),
                             parse_int=partial(_number, _Int), parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            raise RequestError(f"bad JSON: {e.msg} at column {e.colno}") from None
        _check_text(obj)
    else:
        obj = line
    if not isinstance(obj, dict):
        raise RequestError("a request must be a JSON object")
    request_id = obj.get("request_id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError("request_id must be a string")
    unknown = sorted(set(obj) - {"request_id", "user", "candidates"})
    if unknown:
        raise RequestError(f"unexpected field '{unknown[0]}'")
    if "user" not in obj:
        raise RequestError("missing field 'user'")
    user = _check_part(obj["user"], "user", "user", schema)
    candidates = obj.get("candidates")
    if not isinstance(candidates, list):
        raise RequestError("missing or non-array field 'candidates'")
    if not candidates:
        raise RequestError("candidates is empty")
    if len(candidates) > schema.max_candidates:
        raise RequestError(f"{len(candidates)} candidates, more than the limit of {schema.max_candidates}")
    parts = [_check_part(c, "candidate", f"candidates[{i}]", schema) for i, c in enumerate(candidates)]
    return request_id, _request_inputs(user, parts, schema)


def _request_inputs(user: dict[str, dict], candidates: list[dict[str, dict]], schema: RequestSchema) -> RequestInputs:
    """Checked request parts as the request scorer's tensors: the user's part once (one user row, its
    sequences padded to the model's length), each candidate's in its row, the candidates' sequence
    elements jagged; each sequence field at its model.json position."""
    p = schema.n_id_fields

    def named(parts: list[dict[str, dict]], owner: str, section: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([[part[section][f] for f in schema.fields_of(owner, section)] for part in parts],
                            dtype=dtype).view(len(parts), -1)

    def elements(fields: dict[str, list[int]]) -> np.ndarray:  # [n, P + S]
        return np.array([fields[f] for f in schema.sequence_fields], dtype=np.int64).T.reshape(-1, len(schema.sequence_fields))

    user_gsus = schema.fields_of("user", "sequences")
    padded = np.zeros((1, len(user_gsus), schema.seq_len, len(schema.sequence_fields)), dtype=np.int64)
    user_lengths = np.zeros((1, len(user_gsus)), dtype=np.int64)
    for g, name in enumerate(user_gsus):
        values = elements(user["sequences"][name])
        user_lengths[0, g] = len(values)
        padded[0, g, :len(values)] = values
    candidate_gsus = schema.fields_of("candidate", "sequences")
    chunks = [elements(c["sequences"][name]) for c in candidates for name in candidate_gsus]
    owners = [(i, g) for i in range(len(candidates)) for g in range(len(candidate_gsus))]
    values = np.concatenate([np.zeros((0, len(schema.sequence_fields)), dtype=np.int64), *chunks])
    owner = np.array([o for o, chunk in zip(owners, chunks) for _ in range(len(chunk))], dtype=np.int64).reshape(-1, 2)
    padded_t, values_t = torch.from_numpy(padded), torch.from_numpy(values)
    return RequestInputs(named([user], "user", "ids", torch.int64), named([user], "user", "dense", torch.float32),
                         padded_t[..., :p].contiguous(), padded_t[..., p:].contiguous(), torch.from_numpy(user_lengths),
                         torch.zeros(len(candidates), dtype=torch.int64),
                         named(candidates, "candidate", "ids", torch.int64),
                         named(candidates, "candidate", "dense", torch.float32),
                         values_t[:, :p].contiguous(), values_t[:, p:].contiguous(), torch.from_numpy(owner))


def requests_from_inputs(inputs: CandidateInputs, schema: RequestSchema, n_candidates: int,
                         prefix: str = "req") -> list[dict]:
    """Requests built from real samples: each takes the user part of its first sample and the candidate
    part of `n_candidates` consecutive samples (wrapping around), so every value is one the data holds."""
    total = len(inputs)
    requests = []
    for r, start in enumerate(range(0, total, n_candidates)):
        rows = [(start + k) % total for k in range(n_candidates)]

        def part(row: int, owner: str) -> dict:
            out = {"ids": {f: int(inputs.ids[row, j]) for j, f in enumerate(schema.id_features)
                           if schema.owner[("ids", f)] == owner},
                   "dense": {f: float(inputs.dense[row, j]) for j, f in enumerate(schema.dense_features)
                             if schema.owner[("dense", f)] == owner},
                   "sequences": {}}
            for g, name in enumerate(schema.gsu_names):
                if schema.owner[("sequences", name)] != owner:
                    continue
                k = int(inputs.seq_lengths[row, g])
                both = torch.cat([inputs.seq_ids[row, g, :k], inputs.seq_side[row, g, :k]], -1)
                out["sequences"][name] = {f: both[:, j].tolist() for j, f in enumerate(schema.sequence_fields)}
            return out

        requests.append({"request_id": f"{prefix}-{n_candidates}-{r}", "user": part(rows[0], "user"),
                         "candidates": [part(row, "candidate") for row in rows]})
    return requests


def random_request(meta: dict[str, Any], candidates: int, user_length: int, seed: int = 0,
                   candidate_length: int | None = None) -> dict:
    """A valid request of `candidates` random candidates for the model of `meta`: every id within its
    table, each user sequence `user_length` elements long, each candidate sequence `candidate_length`
    (None: a random length from 0 to the model's). For tests and benchmarks that need sequences of
    chosen lengths, which real samples of a small world do not have."""
    rng = np.random.default_rng(seed)
    schema = RequestSchema(meta)

    def part(owner: str) -> dict:
        lengths = {g: user_length if owner == "user" else
                   candidate_length if candidate_length is not None else int(rng.integers(0, schema.seq_len + 1))
                   for g in schema.fields_of(owner, "sequences")}
        return {"ids": {f: int(rng.integers(0, schema.id_rows[f])) for f in schema.fields_of(owner, "ids")},
                "dense": {f: float(rng.normal()) for f in schema.fields_of(owner, "dense")},
                "sequences": {g: {f: rng.integers(0, schema.sequence_rows[f], n).tolist() for f in schema.sequence_fields}
                              for g, n in lengths.items()}}

    return {"request_id": f"random-{candidates}-{user_length}-{seed}", "user": part("user"),
            "candidates": [part("candidate") for _ in range(candidates)]}


def rank(request_id: str | None, probabilities: torch.Tensor, score: torch.Tensor, tasks: list[str]) -> dict:
    """The response the ranker writes: candidates by descending score (ties by request order). A
    score or probability that is not finite is an error, as in the ranker: it cannot be ordered."""
    finite = torch.isfinite(score) & torch.isfinite(probabilities).all(1)
    if not bool(finite.all()):
        raise ValueError(f"model error: non-finite score or probability for candidate "
                         f"{int((~finite).nonzero()[0, 0])}")
    order = sorted(range(len(score)), key=lambda i: (-float(score[i]), i))
    return {"request_id": request_id,
            "ranked": [{"candidate": i, "score": float(score[i]),
                        "probabilities": {t: float(probabilities[i, k]) for k, t in enumerate(tasks)}}
                       for i in order]}
