"""Step 1 of FuseLLM: every source token's image in the target vocabulary by minimum edit distance.

The search is the published brute force: every source token without an exact match is compared with
every target token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ._checks import check_marker
from .levenshtein import Distance, edit_distance

# The docstring examples name the markers.
from .markers import BYTE_LEVEL_MARKER, SENTENCEPIECE_MARKER  # noqa: F401

__all__ = ["mined_map"]


def mined_map(
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    *,
    source_marker: str,
    target_marker: str,
    distance: Distance = edit_distance,
) -> tuple[list[int], list[int]]:
    """Maps every source token to the target token at minimum edit distance (Step 1, MinED).

    Each source token has its space marker replaced by the target's. If the result is a target
    token, it maps there (the lowest id, if the string occurs more than once) at distance 0.
    Otherwise every target token is tried in id order, markers kept, and the first one at the
    smallest distance wins, so ties go to the lowest target id.

    Args:
        source_tokens: The token string of every source id.
        target_tokens: The token string of every target id.
        source_marker: The source vocabulary's leading-space marker.
        target_marker: The target vocabulary's leading-space marker.
        distance: The string distance; Levenshtein distance by default.

    Returns:
        ``(target_ids, distances)``: for each source id, its image in the target vocabulary and
        the distance to that image.

    Raises:
        ValueError: If ``target_tokens`` is empty, or a marker is empty.
        TypeError: If a marker is not a ``str``.

    >>> mined_map(["\u0120cat", "\u0120cut"], ["\u2581cot", "\u2581cat"],
    ...           source_marker=BYTE_LEVEL_MARKER, target_marker=SENTENCEPIECE_MARKER)
    ([1, 0], [0, 1])
    """
    check_marker("source_marker", source_marker)
    check_marker("target_marker", target_marker)
    if len(target_tokens) == 0:
        raise ValueError("target_tokens must not be empty: every source token needs an image")
    lowest_target_id = _lowest_id_of_each_string(target_tokens)
    images: list[int] = []
    distances: list[int] = []
    for source_token in source_tokens:
        renamed = source_token.replace(source_marker, target_marker)
        exact_id = lowest_target_id.get(renamed)
        if exact_id is not None:
            images.append(exact_id)
            distances.append(0)
            continue
        best_id, best_distance = -1, math.inf
        for target_id, target_token in enumerate(target_tokens):
            candidate_distance = distance(renamed, target_token)
            if candidate_distance < best_distance:
                best_id, best_distance = target_id, candidate_distance
        images.append(best_id)
        distances.append(best_distance)
    return images, distances


def _lowest_id_of_each_string(tokens: Sequence[str]) -> dict[str, int]:
    """The lowest id of each token string (the exact match of Step 1, and hard mode's image)."""
    lowest_id: dict[str, int] = {}
    for token_id, token in enumerate(tokens):
        lowest_id.setdefault(token, token_id)
    return lowest_id
