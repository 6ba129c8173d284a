"""How the stages store their data: Arrow tables of nested arrays, saved so that a part appears
whole or not at all."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PathLike", "nested_array", "rectangular_array", "save_atomically", "write_text_atomically"]

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


def save_atomically(table: Any, destination: Path) -> None:
    """Saves an Arrow table as a ``datasets`` directory, replacing ``destination`` in one rename."""
    import datasets

    staging = destination.with_name(f".{destination.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    datasets.Dataset(table).save_to_disk(str(staging))
    shutil.rmtree(destination, ignore_errors=True)
    os.replace(staging, destination)


def write_text_atomically(path: Path, text: str) -> None:
    """Writes ``text`` under a private name and renames it: processes starting together all see a whole file."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)
