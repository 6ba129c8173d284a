"""The training blocks: aligned rows cut into fixed-length blocks, read from disk on demand."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._choices import FusionLevel
from ..fusion_examples import pack_examples
from .errors import PipelineError
from .storage import rectangular_array

__all__ = ["PackedBlocks"]


class PackedBlocks:
    """Aligned rows cut into ``block_size``-token training blocks, read from disk on demand.

    Block ``i`` holds tokens ``[i * block_size, (i + 1) * block_size)`` of all rows concatenated,
    as :func:`fusellm_fast.fusion_examples.pack_examples` would cut them (the remainder is dropped), but
    only the rows it overlaps are read, so that a corpus far larger than memory trains as well.

    >>> blocks = PackedBlocks(load_aligned("aligned", arg="ALIGNED_DIR")[0], block_size=2048)  # doctest: +SKIP
    >>> blocks[0]["input_ids"].shape  # doctest: +SKIP
    (2048,)
    """

    def __init__(self, rows: Any, *, block_size: int, level: FusionLevel = "sequence") -> None:
        if not (isinstance(block_size, int) and block_size >= 1):
            raise PipelineError(f"--block-size: must be a positive int, got {block_size!r}")
        self._level = level
        import pyarrow.compute as pc

        # Rows are read as Arrow and turned into arrays by hand: the numpy formatter of ``datasets``
        # walks nested lists element by element, which costs more than a training step.
        self._rows = rows.with_format("arrow")
        self._block_size = block_size
        # Row lengths straight from the Arrow offsets: the token ids themselves stay on disk.
        lengths = pc.list_value_length(self._rows[:]["input_ids"]).to_numpy().astype(np.int64)
        self._row_starts = np.concatenate([[0], np.cumsum(lengths)])

    def __len__(self) -> int:
        return int(self._row_starts[-1] // self._block_size)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"index: block {index} of {len(self)}")
        start = index * self._block_size
        first = int(np.searchsorted(self._row_starts, start, side="right")) - 1
        last = int(np.searchsorted(self._row_starts, start + self._block_size, side="left"))
        table = self._rows[first:last]
        rows = [{name: rectangular_array(table[name][r]) for name in table.column_names} for r in range(last - first)]
        offset = start - int(self._row_starts[first])
        # A text's CE is one value for all its tokens, so trimming the first row keeps the block's mean
        # right; token-level CE is trimmed with the tokens.
        ce = rows[0]["teacher_ce"]
        rows[0] = {**rows[0], "input_ids": rows[0]["input_ids"][offset:],
                   "teacher_ids": rows[0]["teacher_ids"][:, offset:],
                   "teacher_logits": rows[0]["teacher_logits"][:, offset:],
                   "teacher_ce": ce[:, offset:] if ce.ndim == 2 else ce}
        return pack_examples(rows, block_size=self._block_size, level=self._level)[0]
