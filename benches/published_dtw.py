"""The published FuseLLM token alignment as its users run it: the honest baseline of the benchmarks.

FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv:2401.10491)
aligns a source model's top-k lists to the target tokenization in two steps, restated in
``/work/shared/fusellm-method.md`` (Steps 2 and 3) and in ``fusellm_fast.reference``:

- :func:`dtw`: dynamic time warping over the two token-string sequences. The published code fills
  a dense ``(n + 1) x (m + 1)`` numpy matrix in a Python double loop, one call of the C++
  ``editdistance`` package (PyPI ``editdistance``) per cell, then traces the path back in Python.
- :meth:`PublishedAligner.remap`: per target position, the aligned source position's top-k list
  mapped to target ids (MinED images in soft mode, identical strings in hard mode), or a one-hot
  stand-in, with dictionaries and lists as the published code does.

This module keeps that cost structure on purpose: it is what the fast path is timed against. It
is not an oracle; ``tests/test_published_baseline.py`` checks that it gives the same output as
``fusellm_fast.reference``, which remains the oracle of the test suite. ``editdistance`` compares
strings through per-character hashes, so a hash collision between two different characters would
make it count them equal; with Python's 64-bit string hashes this does not happen in practice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import editdistance
import numpy as np

from fusellm_fast.reference import BYTE_LEVEL_MARKER, STATUS_EMPTY, STATUS_MATCHED, STATUS_ONEHOT

AlignedPosition = tuple[int, list[tuple[int, float]]]


def dtw(source_strs: Sequence[str], target_strs: Sequence[str], *, source_marker: str,
        target_marker: str) -> list[list[int]]:
    """For each target position, the sorted source positions that DTW aligns with it.

    Costs: ``editdistance.eval`` of the two tokens, each with its own space marker deleted.
    Backtrace from the last pair of tokens on the matrix without its border; on a tie the
    diagonal wins, then up, then left; a move off the matrix costs +inf.
    """
    n, m = len(source_strs), len(target_strs)
    if n == 0 or m == 0:
        return [[] for _ in range(m)]
    sources = [token.replace(source_marker, "") for token in source_strs]
    targets = [token.replace(target_marker, "") for token in target_strs]
    matrix = np.full((n + 1, m + 1), np.inf)
    matrix[0, 0] = 0.0
    for i in range(1, n + 1):
        source = sources[i - 1]
        for j in range(1, m + 1):
            cost = editdistance.eval(source, targets[j - 1])
            matrix[i, j] = cost + min(matrix[i - 1, j], matrix[i, j - 1], matrix[i - 1, j - 1])
    path = _backtrace(matrix[1:, 1:])
    sources_of_target: list[list[int]] = [[] for _ in range(m)]
    for i, j in path:
        sources_of_target[j].append(i)
    return [sorted(positions) for positions in sources_of_target]


def _backtrace(inner: np.ndarray) -> list[tuple[int, int]]:
    def cost(cell: tuple[int, int]) -> float:
        return inner[cell] if cell[0] >= 0 and cell[1] >= 0 else math.inf

    cell = (inner.shape[0] - 1, inner.shape[1] - 1)
    path = []
    while cell != (0, 0):
        path.append(cell)
        i, j = cell
        # min keeps the first of equal costs: the diagonal, then up, then left, as published.
        cell = min([(i - 1, j - 1), (i - 1, j), (i, j - 1)], key=cost)
    path.append((0, 0))
    return path


class PublishedAligner:
    """Steps 2 and 3 for one pair of vocabularies, with the lookup tables built once.

    Args:
        source_tokens: the token string of every source id.
        target_tokens: the token string of every target id.
        source_marker: the source vocabulary's leading-space marker.
        target_marker: the target vocabulary's leading-space marker.
        vocab_map: the MinED image (a target id) of every source id; needed in soft mode.
        vocab_align: ``"soft"`` (MinED, the paper's default) or ``"hard"`` (identical strings).

    >>> aligner = PublishedAligner(["\\u0120a", "b"], ["\\u2581a", "b"], source_marker="\\u0120",
    ...                            target_marker="\\u2581", vocab_map=[0, 1])
    >>> aligner.align_text([0, 1], [0, 1], [[1, 0], [0, 1]], [[2.0, 1.0], [0.5, 0.25]])
    [(1, [(1, 2.0), (0, 1.0)]), (1, [(0, 0.5), (1, 0.25)])]
    """

    def __init__(self, source_tokens: Sequence[str], target_tokens: Sequence[str], *, source_marker: str,
                 target_marker: str, vocab_map: Sequence[int] | None = None,
                 vocab_align: Literal["soft", "hard"] = "soft") -> None:
        if vocab_align not in ("soft", "hard"):
            raise ValueError(f"vocab_align must be 'soft' or 'hard', got {vocab_align!r}")
        if vocab_align == "soft" and vocab_map is None:
            raise ValueError("vocab_map is needed in soft mode: the published code loads a MinED map built beforehand")
        self.source_tokens = list(source_tokens)
        self.target_tokens = list(target_tokens)
        self.source_marker, self.target_marker = source_marker, target_marker
        self.vocab_align = vocab_align
        renamed = [token.replace(source_marker, target_marker) for token in self.source_tokens]
        lowest_target_id: dict[str, int] = {}
        for target_id, token in enumerate(self.target_tokens):
            lowest_target_id.setdefault(token, target_id)
        if vocab_align == "soft":
            images = list(vocab_map)
            self._candidate_image = images
            # Keyed by the renamed string, as published: a later source id overwrites an earlier one.
            self._image_of_renamed = {swapped: self.target_tokens[image] for swapped, image in zip(renamed, images)}
        else:
            self._candidate_image = [lowest_target_id.get(swapped) for swapped in renamed]
            self._image_of_renamed = {}

    def align_text(self, target_ids: Sequence[int], source_ids: Sequence[int], topk_ids: Sequence[Sequence[int]],
                   topk_logits: Sequence[Sequence[float]], *,
                   onehot: Literal["next", "current"] = "next") -> list[AlignedPosition]:
        """DTW of one text, then :meth:`remap`; same arguments and result as ``reference.align_text``."""
        target_ids, source_ids = _as_list(target_ids), _as_list(source_ids)
        aligned = dtw([self.source_tokens[i] for i in source_ids], [self.target_tokens[j] for j in target_ids],
                      source_marker=self.source_marker, target_marker=self.target_marker)
        return self.remap(aligned, target_ids, source_ids, topk_ids, topk_logits, onehot=onehot)

    def remap(self, aligned: Sequence[Sequence[int]], target_ids: Sequence[int], source_ids: Sequence[int],
              topk_ids: Sequence[Sequence[int]], topk_logits: Sequence[Sequence[float]], *,
              onehot: Literal["next", "current"] = "next") -> list[AlignedPosition]:
        """Step 3 on a given alignment: ``aligned[j]`` lists the source positions of target position ``j``.

        A target position with exactly one source position whose token matches (equal after the
        marker swap or, in soft mode, through the MinED map) takes that position's candidates,
        mapped to target ids, the first of each id kept; every other one gets a one-hot stand-in
        on the next target token (``"next"``, none at the last position) or on itself (``"current"``,
        the published code's off-by-one).
        """
        if onehot not in ("next", "current"):
            raise ValueError(f"onehot must be 'next' or 'current', got {onehot!r}")
        target_ids, source_ids = _as_list(target_ids), _as_list(source_ids)
        topk_ids, topk_logits = _as_list(topk_ids), _as_list(topk_logits)
        stand_in_tokens = target_ids if onehot == "current" else target_ids[1:]
        stand_ins = [(STATUS_ONEHOT, [(token, 1.0)]) for token in stand_in_tokens]
        stand_ins += [(STATUS_EMPTY, [])] * (len(target_ids) - len(stand_ins))
        result: list[AlignedPosition] = []
        for j, target_id in enumerate(target_ids):
            position = self._matching_source(aligned[j], j, self.target_tokens[target_id], source_ids)
            if position is None:
                result.append(stand_ins[j])
            else:
                entries = self._mapped_candidates(topk_ids[position], topk_logits[position])
                result.append((STATUS_MATCHED if entries else STATUS_EMPTY, entries))
        return result

    def _matching_source(self, sources: Sequence[int], j: int, target: str, source_ids: list[int]) -> int | None:
        """The one source position aligned with target position ``j`` if its token matches ``target``."""
        if len(sources) != 1:
            return None
        renamed = self.source_tokens[source_ids[sources[0]]].replace(self.source_marker, self.target_marker)
        # The published patch for byte-level sources, whose first word has no space marker.
        marker = self.target_marker
        if self.source_marker == BYTE_LEVEL_MARKER and j == 0 and target.startswith(marker) \
                and not renamed.startswith(marker):
            renamed = marker + renamed
        matches = renamed == target or self._image_of_renamed.get(renamed) == target
        return sources[0] if matches else None

    def _mapped_candidates(self, candidates: Sequence[int], logits: Sequence[float]) -> list[tuple[int, float]]:
        entries: list[tuple[int, float]] = []
        taken: set[int] = set()
        for candidate, logit in zip(candidates, logits):
            if candidate < 0:
                continue
            image = self._candidate_image[candidate]
            if image is None or image in taken:
                continue
            taken.add(image)
            entries.append((image, float(logit)))
        return entries


def matched_share(aligned_positions: Sequence[AlignedPosition]) -> float:
    """Share of target positions that received a source list (``STATUS_MATCHED``), as
    ``AlignmentCounts.matched_rate`` counts them."""
    if not aligned_positions:
        return 0.0
    return sum(status == STATUS_MATCHED for status, _ in aligned_positions) / len(aligned_positions)


def _as_list(values):
    return values.tolist() if isinstance(values, np.ndarray) else list(values)
