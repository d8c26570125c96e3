"""The on-disk encoding of a micro-batch: named numpy arrays in one msgpack message.

Only dtype strings, shapes and raw bytes are stored, so decoding never runs code from the file
(no pickle). Shared by the shard writer and the training loader."""

from __future__ import annotations

import msgpack
import numpy as np

SCHEMA_VERSION = 2  # 2: sequence fields in contract order, domains 1 and 2, side_rows in the manifest
_ALLOWED_KINDS = set("biuf")  # bool, signed, unsigned, float


class CodecError(ValueError):
    pass


def encode(arrays: dict[str, np.ndarray]) -> bytes:
    payload = {}
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.kind not in _ALLOWED_KINDS:
            raise CodecError(f"{name}: dtype {array.dtype} cannot be stored (numbers and booleans only)")
        payload[name] = [array.dtype.str, list(array.shape), array.tobytes()]
    return msgpack.packb({"v": SCHEMA_VERSION, "a": payload}, use_bin_type=True)


def decode(data: bytes) -> dict[str, np.ndarray]:
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage input
        raise CodecError(f"not a msgpack micro-batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(message, dict) or message.get("v") != SCHEMA_VERSION or not isinstance(message.get("a"), dict):
        raise CodecError(f"unexpected micro-batch layout or schema version (this code reads v{SCHEMA_VERSION})")
    out = {}
    for name, entry in message["a"].items():
        try:
            dtype_str, shape, raw = entry
            dtype = np.dtype(dtype_str)
            if dtype.kind not in _ALLOWED_KINDS:
                raise CodecError(f"{name}: dtype {dtype} not allowed")
            out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
        except (TypeError, ValueError) as exc:
            raise CodecError(f"{name}: malformed array entry ({exc})") from exc
    return out
