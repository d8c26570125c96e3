"""The on-disk encoding of a micro-batch: named numpy arrays in one msgpack message, with a checksum.

Only dtype strings, shapes and raw bytes are stored, so decoding never runs code from the file
(no pickle). The arrays are packed first and the message carries their CRC-32, so a flipped byte
anywhere in them is refused before any array is built. Shared by the shard writer and the
training loader."""

from __future__ import annotations

import zlib

import msgpack
import numpy as np

from data_pipelines.contract import SCHEMA_VERSION

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
    packed = msgpack.packb(payload, use_bin_type=True)
    return msgpack.packb({"v": SCHEMA_VERSION, "crc32": zlib.crc32(packed), "a": packed}, use_bin_type=True)


def decode(data: bytes) -> dict[str, np.ndarray]:
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage input
        raise CodecError(f"not a msgpack micro-batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(message, dict) or message.get("v") != SCHEMA_VERSION or not isinstance(message.get("a"), bytes):
        raise CodecError(f"unexpected micro-batch layout or schema version (this code reads v{SCHEMA_VERSION})")
    if zlib.crc32(message["a"]) != message.get("crc32"):
        raise CodecError("checksum mismatch: the micro-batch's bytes changed since it was written")
    try:
        payload = msgpack.unpackb(message["a"], raw=False, strict_map_key=True)
    except Exception as exc:
        raise CodecError(f"not a msgpack payload ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict):
        raise CodecError("unexpected micro-batch payload")
    out = {}
    for name, entry in payload.items():
        try:
            dtype_str, shape, raw = entry
            dtype = np.dtype(dtype_str)
            if dtype.kind not in _ALLOWED_KINDS:
                raise CodecError(f"{name}: dtype {dtype} not allowed")
            out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
        except (TypeError, ValueError) as exc:
            raise CodecError(f"{name}: malformed array entry ({exc})") from exc
    return out
