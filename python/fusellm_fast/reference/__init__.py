"""Plain-Python reference implementation of FuseLLM token alignment (Steps 1-3).

FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv:2401.10491)
trains a target language model on the next-token distributions of source models that use other
tokenizers. Before a source distribution can be used, it is moved onto the target vocabulary:

1. :func:`mined_map` maps every source token to the target token at minimum edit distance (MinED).
2. :func:`dtw` aligns the source and target tokenizations of one text by dynamic time warping.
3. :func:`align_text` turns the source's top-k lists into lists over target ids, position by
   position, with a one-hot stand-in where no source position matches.

This package reproduces the published behaviour exactly, quirks included, and keeps the published
cost structure: a dense DTW matrix with one edit-distance call per cell, and a brute-force MinED
search over the whole target vocabulary. It uses only the standard library. It is deliberately
slow: it is the oracle that the fast implementation is checked against and the baseline it is
timed against.

One module per step: :mod:`.vocab_mapping` (Step 1), :mod:`.token_alignment` (Step 2) and
:mod:`.remapping` (Step 3), over :mod:`.levenshtein` (the string distance) and :mod:`.markers`.

>>> dtw(["\u2581the", "\u2581cat"], ["\u0120the", "\u0120c", "at"],
...     source_marker=SENTENCEPIECE_MARKER, target_marker=BYTE_LEVEL_MARKER)
[[0], [1], [1]]
"""

from __future__ import annotations

# Distance and AlignedPosition: the types that the signatures name.
from .levenshtein import Distance, edit_distance  # noqa: F401
from .markers import BYTE_LEVEL_MARKER, SENTENCEPIECE_MARKER
from .remapping import STATUS_EMPTY, STATUS_MATCHED, STATUS_ONEHOT, AlignedPosition, align_batch, align_text  # noqa: F401
from .token_alignment import dtw
from .vocab_mapping import mined_map

__all__ = [
    "BYTE_LEVEL_MARKER",
    "SENTENCEPIECE_MARKER",
    "STATUS_EMPTY",
    "STATUS_MATCHED",
    "STATUS_ONEHOT",
    "align_batch",
    "align_text",
    "dtw",
    "edit_distance",
    "mined_map",
]
