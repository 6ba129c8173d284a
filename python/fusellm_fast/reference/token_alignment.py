"""Step 2 of FuseLLM: the two tokenizations of one text aligned by dynamic time warping.

The matrix is the published dense one, with one distance call per cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ._checks import check_marker
from .levenshtein import Distance, edit_distance

# The docstring examples name the markers.
from .markers import BYTE_LEVEL_MARKER, SENTENCEPIECE_MARKER  # noqa: F401

__all__ = ["dtw"]


def dtw(
    source_strs: Sequence[str],
    target_strs: Sequence[str],
    *,
    source_marker: str,
    target_marker: str,
    distance: Distance = edit_distance,
) -> list[list[int]]:
    """Aligns two tokenizations of one text by dynamic time warping (Step 2).

    The cost of pairing source token ``i`` with target token ``j`` is the distance between the two
    strings, each with its own space marker deleted. The accumulated cost matrix is filled
    densely; the path is then traced back from the last pair of tokens to the first, moving to the
    cheapest of the diagonal, upper and left neighbours (in that order on ties).

    Args:
        source_strs: The source token strings of the text, in order.
        target_strs: The target token strings of the same text, in order.
        source_marker: The source vocabulary's leading-space marker.
        target_marker: The target vocabulary's leading-space marker.
        distance: The string distance; Levenshtein distance by default.

    Returns:
        For each target position, the sorted source positions aligned with it. Every target
        position gets at least one, unless ``source_strs`` is empty (then every list is empty).

    Raises:
        ValueError: If a marker is empty.
        TypeError: If a marker is not a ``str``.

    >>> dtw(["\u2581a", "b"], ["\u0120ab"],
    ...     source_marker=SENTENCEPIECE_MARKER, target_marker=BYTE_LEVEL_MARKER)
    [[0, 1]]
    """
    check_marker("source_marker", source_marker)
    check_marker("target_marker", target_marker)
    n, m = len(source_strs), len(target_strs)
    if n == 0 or m == 0:
        return [[] for _ in range(m)]
    sources = [token.replace(source_marker, "") for token in source_strs]
    targets = [token.replace(target_marker, "") for token in target_strs]

    accumulated = [[math.inf] * (m + 1) for _ in range(n + 1)]
    accumulated[0][0] = 0.0
    for i in range(n):
        for j in range(m):
            accumulated[i + 1][j + 1] = distance(sources[i], targets[j]) + min(
                accumulated[i][j + 1], accumulated[i + 1][j], accumulated[i][j]
            )
    # The backtrace indexes the matrix without its border row and column.
    inner = [row[1:] for row in accumulated[1:]]

    path = []
    i, j = n - 1, m - 1
    while i > 0 or j > 0:
        path.append((i, j))
        diagonal = inner[i - 1][j - 1] if i > 0 and j > 0 else math.inf
        up = inner[i - 1][j] if i > 0 else math.inf
        left = inner[i][j - 1] if j > 0 else math.inf
        cheapest = min(diagonal, up, left)
        if diagonal == cheapest:
            i, j = i - 1, j - 1
        elif up == cheapest:
            i -= 1
        else:
            j -= 1
    path.append((0, 0))

    sources_of_target: list[list[int]] = [[] for _ in range(m)]
    for i, j in path:
        sources_of_target[j].append(i)
    return [sorted(positions) for positions in sources_of_target]
