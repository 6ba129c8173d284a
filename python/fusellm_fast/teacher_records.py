"""The records of a teacher pass, as :func:`~fusellm_fast.teacher.extract_topk` stores them and
reads them back.

One record per text: the model's tokenization, at every position its top-k next-token ids with
their **log-probabilities under the model's full softmax** (so a position's listed mass, and its
tail ``1 - sum(exp(values))``, are known), and the model's cross-entropy. On disk the records are
compact:

- ids (``input_ids``, ``topk_ids``) in the smallest unsigned integer type that holds the
  vocabulary (uint16 up to 65,536 tokens);
- log-probabilities and per-token CE in float16: over the range a top-k list spans (about -30
  to 0) it keeps 10 mantissa bits where bfloat16 keeps 7;
- Arrow IPC files of zstd-compressed batches of texts, memory-mapped, so that reading a text
  decompresses only its batch.

Rows come back as numpy arrays in the types the rest of the package computes with (int32 ids,
float32 values). Nothing here needs torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["COLUMNS", "VALUES_ARE", "TeacherRecords", "ValuesDtype", "id_dtype", "records_table"]

ValuesDtype = Literal["float16", "float32"]

VALUES_ARE = "log_probs"
"""What the stored top-k values are: log-probabilities under the model's full softmax."""

COLUMNS = ("text_index", "input_ids", "topk_ids", "topk_log_probs", "token_ce", "ce", "total_ce", "num_bytes")

_SCALARS = {"text_index": "int64", "ce": "float32", "total_ce": "float64", "num_bytes": "int64"}
_BATCH_ROWS_KEY = b"batch_rows"


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id of a vocabulary.

    >>> id_dtype(32000), id_dtype(151646)
    (dtype('uint16'), dtype('uint32'))
    """
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def records_table(columns: Mapping[str, Sequence[Any]], *, k: int, vocab_size: int,
                  values_dtype: ValuesDtype = "float16") -> Any:
    """The records of some texts as an Arrow table in the stored types.

    Args:
        columns: every name of :data:`COLUMNS`, each with one value per text: numpy arrays
            ``[L]`` (``input_ids``), ``[L, k]`` (``topk_ids``, ``topk_log_probs``) and ``[L - 1]``
            (``token_ce``), scalars for the rest.
        k: top-k list length.
        vocab_size: ids are below it; they are stored in :func:`id_dtype` of it.
        values_dtype: how ``topk_log_probs`` are stored.

    >>> table = records_table({"text_index": [0], "input_ids": [np.array([3, 1])],
    ...     "topk_ids": [np.array([[1], [2]])], "topk_log_probs": [np.array([[-0.5], [-0.1]])],
    ...     "token_ce": [np.array([0.5])], "ce": [0.5], "total_ce": [0.5], "num_bytes": [2]}, k=1, vocab_size=4)
    >>> str(table.schema.field("topk_ids").type)
    'list<item: fixed_size_list<item: uint8>[1]>'
    """
    import pyarrow as pa

    ids = id_dtype(vocab_size)
    arrays = {name: pa.array(np.asarray(columns[name], dtype=kind), pa.from_numpy_dtype(np.dtype(kind)))
              for name, kind in _SCALARS.items()}
    arrays["input_ids"] = _lists(columns["input_ids"], ids)
    arrays["topk_ids"] = _lists(columns["topk_ids"], ids, k)
    arrays["topk_log_probs"] = _lists(columns["topk_log_probs"], np.dtype(values_dtype), k)
    arrays["token_ce"] = _lists(columns["token_ce"], np.dtype(np.float16))
    return pa.table({name: arrays[name] for name in COLUMNS})


def _lists(rows: Sequence[np.ndarray], dtype: np.dtype, k: int | None = None) -> Any:
    """One Arrow list per row: of ``dtype`` values, or of fixed-size lists of ``k`` of them."""
    import pyarrow as pa

    sizes = np.array([len(row) for row in rows], dtype=np.int64)
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    flat = np.concatenate([np.asarray(row).reshape(-1) for row in rows]) if rows else np.zeros(0)
    values: Any = pa.array(flat.astype(dtype, copy=False))
    if k is not None:
        values = pa.FixedSizeListArray.from_arrays(values, k)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def write_records(path: Path, table: Any, *, batch_rows: int) -> None:
    """Writes a :func:`records_table` as an Arrow IPC file of compressed batches of ``batch_rows``
    texts, their sizes in the schema's metadata so that a reader finds a text's batch at once."""
    from .pipeline.storage import write_arrow_file

    table = table.combine_chunks()
    sizes = [len(batch) for batch in table.to_batches(max_chunksize=batch_rows)]
    table = table.replace_schema_metadata({_BATCH_ROWS_KEY: json.dumps(sizes).encode()})
    write_arrow_file(path, table, batch_rows=batch_rows)


class TeacherRecords(Sequence[dict[str, Any]]):
    """The records of a teacher pass, in text order, read on demand.

    ``records[i]`` is the row of text ``i``: ``text_index``, ``input_ids`` int32 ``[L]``,
    ``topk_ids`` int32 ``[L, k]``, ``topk_log_probs`` float32 ``[L, k]``, ``token_ce`` float32
    ``[L - 1]``, ``ce``, ``total_ce``, ``num_bytes``.

    Args:
        parts: in-memory :func:`records_table` tables, or paths of files :func:`write_records` wrote,
            in text order.
        k: top-k list length.

    >>> table = records_table({"text_index": [0], "input_ids": [np.array([3, 1])],
    ...     "topk_ids": [np.array([[1], [2]])], "topk_log_probs": [np.array([[-0.5], [-0.1]])],
    ...     "token_ce": [np.array([0.5])], "ce": [0.5], "total_ce": [0.5], "num_bytes": [2]}, k=1, vocab_size=4)
    >>> records = TeacherRecords([table], k=1)
    >>> records[0]["topk_ids"].tolist(), records.values_are, records.lengths().tolist()
    ([[1], [2]], 'log_probs', [2])
    """

    values_are = VALUES_ARE

    def __init__(self, parts: Sequence[Any], *, k: int) -> None:
        self.k = k
        self._parts = [_Part(part) for part in parts]
        self._starts = np.concatenate([[0], np.cumsum([len(part) for part in self._parts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.rows(*index.indices(len(self))[:2])
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: text {index} of {len(self)}")
        index %= len(self)
        part = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self._parts[part].row(index - int(self._starts[part]))

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """The rows of texts ``start`` to ``stop`` (exclusive)."""
        return [self[index] for index in range(start, min(stop, len(self)))]

    def column(self, name: str) -> np.ndarray:
        """A per-text column (``text_index``, ``ce``, ``total_ce``, ``num_bytes``) of every text."""
        if name not in _SCALARS:
            raise KeyError(f"name: {name!r} is not a per-text column ({sorted(_SCALARS)})")
        return np.concatenate([[], *(part.column(name) for part in self._parts)]).astype(_SCALARS[name])

    def lengths(self) -> np.ndarray:
        """int64 ``[texts]``: the number of tokens of every text."""
        return np.concatenate([np.zeros(0, np.int64), *(part.lengths() for part in self._parts)])


class _Part:
    """One stored part: an in-memory table or a memory-mapped file, decoded one batch at a time."""

    def __init__(self, source: Any) -> None:
        import pyarrow as pa

        if isinstance(source, pa.Table):
            self._path, batches = None, source.combine_chunks().to_batches()
            self._batches: list[Any] | None = batches
            sizes = [len(batch) for batch in batches]
        else:
            self._path, self._batches = Path(source), None
            sizes = json.loads(self._reader().schema.metadata[_BATCH_ROWS_KEY])
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._decoded: tuple[int, list[dict[str, Any]]] | None = None
        self._file: Any = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _reader(self, fields: list[int] | None = None) -> Any:
        import pyarrow as pa

        options = pa.ipc.IpcReadOptions(included_fields=fields) if fields is not None else None
        return pa.ipc.open_file(pa.memory_map(str(self._path)), options=options)

    def _batch(self, number: int) -> Any:
        if self._batches is not None:
            return self._batches[number]
        if self._file is None:
            self._file = self._reader()  # one memory map per part, opened on first use
        return self._file.get_batch(number)

    def row(self, index: int) -> dict[str, Any]:
        number = int(np.searchsorted(self._starts, index, side="right")) - 1
        if self._decoded is None or self._decoded[0] != number:
            self._decoded = (number, _decoded_rows(self._batch(number)))
        return self._decoded[1][index - int(self._starts[number])]

    def _table(self, names: list[str]) -> Any:
        import pyarrow as pa

        if self._batches is not None:
            return pa.Table.from_batches(self._batches).select(names)
        return self._reader([COLUMNS.index(name) for name in names]).read_all()

    def column(self, name: str) -> np.ndarray:
        return self._table([name])[name].to_numpy()

    def lengths(self) -> np.ndarray:
        import pyarrow.compute as pc

        return pc.list_value_length(self._table(["input_ids"])["input_ids"]).to_numpy().astype(np.int64)


def _decoded_rows(batch: Any) -> list[dict[str, Any]]:
    """The rows of a record batch as numpy arrays in the computing types, each list column
    converted in one go and cut into its rows."""
    offsets = batch["input_ids"].offsets.to_numpy()
    ce_offsets = batch["token_ce"].offsets.to_numpy()
    k = batch["topk_ids"].type.value_type.list_size
    input_ids = batch["input_ids"].values.to_numpy().astype(np.int32)
    topk_ids = batch["topk_ids"].values.flatten().to_numpy().astype(np.int32).reshape(-1, k)
    log_probs = batch["topk_log_probs"].values.flatten().to_numpy().astype(np.float32).reshape(-1, k)
    token_ce = batch["token_ce"].values.to_numpy().astype(np.float32)
    scalars = {name: batch[name].to_pylist() for name in _SCALARS}
    rows = []
    for r in range(len(batch)):
        span = slice(int(offsets[r]), int(offsets[r + 1]))
        rows.append({
            "text_index": scalars["text_index"][r],
            "input_ids": input_ids[span],
            "topk_ids": topk_ids[span],
            "topk_log_probs": log_probs[span],
            "token_ce": token_ce[int(ce_offsets[r]) : int(ce_offsets[r + 1])],
            "ce": scalars["ce"][r],
            "total_ce": scalars["total_ce"][r],
            "num_bytes": scalars["num_bytes"][r],
        })
    return rows
