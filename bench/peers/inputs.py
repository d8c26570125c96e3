"""A ranker.proto request as the request scorer's inputs, in Python, checked as the ranker checks it
(fields where model.json puts them, ids and buckets in range, dense values finite, sequences no
longer than the model's): what a Python server of the exported model has to do per request."""

from __future__ import annotations

import numpy as np
import torch

from serving.proto import ranker_pb2
from export.request_scorer import RequestInputs
from export.requests import RequestError, RequestSchema


def _named(values, expected: list[str], where: str) -> list:
    names = set(values.keys())
    if names != set(expected):
        unknown, missing = sorted(names - set(expected)), [n for n in expected if n not in names]
        raise RequestError(f"{where}: unexpected field '{unknown[0]}'" if unknown else f"{where}: missing field '{missing[0]}'")
    return [values[name] for name in expected]


def _in_range(values: np.ndarray, rows: np.ndarray, where: str) -> None:
    bad = (values < 0) | (values >= rows)
    if bad.any():
        raise RequestError(f"{where}: {int(values[bad].flat[0])} out of range")


def _ids_and_dense(parts: list[ranker_pb2.Part], owner: str, schema: RequestSchema, where: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    ids_names, dense_names = schema.fields_of(owner, "ids"), schema.fields_of(owner, "dense")
    ids = np.array([_named(p.ids, ids_names, where) for p in parts], dtype=np.int64).reshape(len(parts), -1)
    _in_range(ids, np.array([schema.id_rows[f] for f in ids_names]), f"{where}.ids")
    dense = np.array([_named(p.dense, dense_names, where) for p in parts], dtype=np.float64).reshape(len(parts), -1)
    if not np.isfinite(dense.astype(np.float32)).all():
        raise RequestError(f"{where}.dense: must be finite float32 numbers")
    return torch.from_numpy(ids), torch.from_numpy(dense.astype(np.float32))


def _elements(parts: list[ranker_pb2.Part], owner: str, schema: RequestSchema, where: str) -> list[list[np.ndarray]]:
    """Per part, per GSU of `owner`: the elements [n, fields], checked."""
    out = []
    for part in parts:
        out.append([])
        for name, sequence in zip(schema.fields_of(owner, "sequences"),
                                  _named(part.sequences, schema.fields_of(owner, "sequences"), where)):
            fields = [np.asarray(f.values, dtype=np.int64) for f in _named(sequence.fields, schema.sequence_fields, where)]
            if len({len(f) for f in fields}) > 1 or len(fields[0]) > schema.seq_len:
                raise RequestError(f"{where}.sequences.{name}: fields of different lengths, or longer than the "
                                   f"model's {schema.seq_len}")
            elements = np.stack(fields, axis=-1)
            _in_range(elements, np.array([schema.sequence_rows[f] for f in schema.sequence_fields]),
                      f"{where}.sequences.{name}")
            out[-1].append(elements)
    return out


def request_inputs(request: ranker_pb2.RankRequest, schema: RequestSchema) -> RequestInputs:
    if not request.HasField("user"):
        raise RequestError("missing field 'user'")
    if not 0 < len(request.candidates) <= schema.max_candidates:
        raise RequestError(f"{len(request.candidates)} candidates (1 to {schema.max_candidates})")
    p, fields = schema.n_id_fields, len(schema.sequence_fields)
    [user] = _elements([request.user], "user", schema, "user")
    used = max([1, *(len(e) for e in user)])
    padded = np.zeros((1, len(user), used, fields), dtype=np.int64)
    for g, elements in enumerate(user):
        padded[0, g, :len(elements)] = elements
    candidates = list(request.candidates)
    per_candidate = _elements(candidates, "candidate", schema, "candidates")
    chunks = [(i, g, e) for i, gsus in enumerate(per_candidate) for g, e in enumerate(gsus) if len(e)]
    values = np.concatenate([np.zeros((0, fields), dtype=np.int64), *(e for _, _, e in chunks)])
    owner = np.array([(i, g) for i, g, e in chunks for _ in range(len(e))], dtype=np.int64).reshape(-1, 2)
    padded_t, values_t = torch.from_numpy(padded), torch.from_numpy(values)
    return RequestInputs(*_ids_and_dense([request.user], "user", schema, "user"), padded_t[..., :p].contiguous(),
                         padded_t[..., p:].contiguous(), torch.tensor([[len(e) for e in user]], dtype=torch.int64),
                         torch.zeros(len(candidates), dtype=torch.int64),
                         *_ids_and_dense(candidates, "candidate", schema, "candidates"),
                         values_t[:, :p].contiguous(), values_t[:, p:].contiguous(), torch.from_numpy(owner))
