"""Damage done to artifacts after they were written: what a bad disk, a cut copy or a killed
process leaves. Each function damages one file in place, the same way every time."""

from __future__ import annotations

import tarfile
from pathlib import Path


def flip_bytes(path: Path, offset: int, n: int = 16) -> None:
    """Invert `n` bytes at `offset`."""
    data = bytearray(path.read_bytes())
    data[offset:offset + n] = bytes(b ^ 0xFF for b in data[offset:offset + n])
    path.write_bytes(bytes(data))


def flip_member_payload(shard: Path, member: int) -> str:
    """Sixteen bytes inverted in the middle of a tar member's payload; returns the member's name."""
    with tarfile.open(shard) as tar:
        info = tar.getmembers()[member]
    flip_bytes(shard, info.offset_data + info.size // 2)
    return info.name


def flip_tar_padding(shard: Path) -> None:
    """Bytes inverted in a tar's end-of-archive padding, which no member reads."""
    flip_bytes(shard, shard.stat().st_size - 600)


def cut(path: Path, keep: float = 0.5) -> None:
    """The file cut short, as an interrupted copy leaves it."""
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def drop(path: Path) -> None:
    """The file gone, as a process killed before writing it leaves its directory."""
    path.unlink()
