"""How the stages store their data: Arrow tables of nested arrays, saved so that a part appears
whole or not at all (every file and directory of a stage's output is written by
:func:`replace_atomically`)."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PathLike",
    "nested_array",
    "rectangular_array",
    "replace_atomically",
    "save_atomically",
    "write_arrow_file",
    "write_text_atomically",
]

PathLike = str | os.PathLike[str]


def nested_array(arrays: Sequence[np.ndarray]) -> Any:
    """A pyarrow list array with one row per numpy array (nested lists for 2-D and 3-D arrays,
    whose dimensions may differ from row to row), built from the flat values in one go.

    >>> nested_array([np.zeros((2, 1), np.int32), np.ones((1, 3), np.int32)]).to_pylist()
    [[[0], [0]], [[1, 1, 1]]]
    """
    import pyarrow as pa

    ndim = arrays[0].ndim if arrays else 1
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.float32)
    values: Any = pa.array(flat)
    for depth in reversed(range(ndim)):
        # Every array holds prod(shape[:depth]) lists of shape[depth] items at this depth.
        sizes = np.concatenate([np.full(int(np.prod(a.shape[:depth])), a.shape[depth], np.int64) for a in arrays]) \
            if arrays else np.zeros(0, np.int64)
        offsets = np.zeros(len(sizes) + 1, dtype=np.int32)
        np.cumsum(sizes, out=offsets[1:])
        values = pa.ListArray.from_arrays(pa.array(offsets), values)
    return values


def rectangular_array(value: Any) -> Any:
    """One cell of an Arrow table as numpy: nested lists of equal lengths become an n-d array.

    >>> import pyarrow as pa
    >>> rectangular_array(pa.array([[[1, 2], [3, 4]]])[0]).shape
    (2, 2)
    """
    import pyarrow as pa

    if not isinstance(value, pa.ListScalar):
        return value.as_py()
    values = value.values
    shape = [len(values)]
    while pa.types.is_list(values.type):
        inner = values.flatten()
        shape.append(len(inner) // math.prod(shape) if math.prod(shape) else 0)
        values = inner
    return values.to_numpy(zero_copy_only=False).reshape(shape)


def replace_atomically(destination: Path, write: Callable[[Path], None]) -> None:
    """Has ``write`` create a file or directory under a private name next to ``destination``, then
    renames it to ``destination`` (replacing what was there): readers, and processes starting
    together, see the old unit or the whole new one, never a part; an interrupted ``write`` leaves
    only its private name behind, which the next call clears.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "note.txt"
    >>> replace_atomically(path, lambda staging: staging.write_text("done"))
    >>> path.read_text()
    'done'
    """
    staging = destination.with_name(f".{destination.name}.{os.getpid()}")
    _remove(staging)
    try:
        write(staging)
    except BaseException:
        _remove(staging)
        raise
    if destination.is_dir():
        shutil.rmtree(destination)  # a rename replaces files and empty directories only
    os.replace(staging, destination)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def write_arrow_file(path: Path, table: Any, *, batch_rows: int) -> None:
    """Writes ``table`` as an Arrow IPC file of zstd-compressed record batches of ``batch_rows``
    rows, so that a reader memory-maps it and decompresses only the batches it reads."""
    import pyarrow as pa

    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema, options=options) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)


def save_atomically(table: Any, destination: Path) -> None:
    """Saves an Arrow table as a ``datasets`` directory, replacing ``destination`` in one rename."""
    import datasets

    replace_atomically(destination, lambda staging: datasets.Dataset(table).save_to_disk(str(staging)))


def write_text_atomically(path: Path, text: str) -> None:
    """Writes ``text`` under a private name and renames it: processes starting together all see a whole file."""
    replace_atomically(path, lambda staging: staging.write_text(text, encoding="utf-8"))
