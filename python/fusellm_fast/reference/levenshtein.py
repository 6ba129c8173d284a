"""The string distance of Steps 1 and 2: Levenshtein distance with unit costs, over code points."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Distance", "edit_distance"]

Distance = Callable[[str, str], int]
"""A string distance, as :func:`edit_distance`; MinED and DTW take another one through ``distance``."""


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance with unit costs, over Unicode code points.

    Args:
        a: First string.
        b: Second string.

    Returns:
        The least number of single code point insertions, deletions and substitutions that turn
        ``a`` into ``b``.

    Raises:
        TypeError: If ``a`` or ``b`` is not a ``str``.

    >>> edit_distance("kitten", "sitting")
    3
    >>> edit_distance("\u2581the", "the")
    1
    """
    if not isinstance(a, str):
        raise TypeError(f"a must be a str, got {type(a).__name__}")
    if not isinstance(b, str):
        raise TypeError(f"b must be a str, got {type(b).__name__}")
    # The distance is symmetric; iterating over the longer string keeps the rows short.
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for row, char_a in enumerate(a, start=1):
        current = [row]
        for column, char_b in enumerate(b, start=1):
            current.append(
                min(
                    previous[column] + 1,
                    current[column - 1] + 1,
                    previous[column - 1] + (char_a != char_b),
                )
            )
        previous = current
    return previous[-1]
