"""A data set on any pyarrow filesystem: a local folder, or a URI such as s3://bucket/data/large or
gs://bucket/data/large. File names come from `DataSet`, so both engines agree on the layout."""

from __future__ import annotations

import io
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from data_pipelines.dataset import DataSet


def is_uri(location: str | Path) -> bool:
    """Whether a data set's location names a filesystem (s3://, gs://, file://, ...) rather than a local path."""
    return "://" in str(location)


class Storage:
    def __init__(self, uri: str | Path):
        uri = str(uri)
        if is_uri(uri):
            self.fs, base = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, base = pafs.LocalFileSystem(), os.path.abspath(uri)
        self.base = base.rstrip("/")
        self.uri = uri
        self.layout = DataSet(Path(posixpath.basename(self.base)))  # names relative to the root only

    def path(self, local: Path) -> str:
        """This storage's path of a `DataSet` path (`self.layout.<...>`)."""
        return posixpath.join(self.base, Path(local).relative_to(self.layout.root).as_posix())

    def under(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts)

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    @contextmanager
    def open_output(self, path: str) -> Iterator[pa.NativeFile]:
        """A stream to `path`, written aside and moved into place when the block ends without an
        error, so that a reader never sees a part-written file."""
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp")
        with self.fs.open_output_stream(tmp) as f:
            yield f
        self.fs.move(tmp, path)

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.open_output(path) as f:
            f.write(data)

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pd.DataFrame:
        return pq.read_table(path, columns=columns, filesystem=self.fs).to_pandas()

    def read_parquet_optional(self, path: str, columns: list[str] | None = None) -> pd.DataFrame | None:
        return self.read_parquet(path, columns) if self.exists(path) else None

    def load_npy(self, path: str) -> np.ndarray:
        return np.load(io.BytesIO(self.read_bytes(path)), allow_pickle=False)  # never decode pickles

    def remove_dir(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_dir(path)
