"""Shards of a corpus: ``(index, count)`` splits it into ``count`` contiguous ranges of texts."""

from __future__ import annotations

from .errors import FuseLLMError, InvalidInputError


def checked_shard(shard: object, arg: str = "shard", error: type[FuseLLMError] = InvalidInputError) -> tuple[int, int]:
    """``shard`` if it is a tuple of two ints with ``0 <= index < count``, else ``error`` naming ``arg``.

    >>> checked_shard((1, 4))
    (1, 4)
    """
    if (
        not isinstance(shard, tuple)
        or len(shard) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in shard)
        or not 0 <= shard[0] < shard[1]
    ):
        raise error(f"{arg}: must be (index, count) with 0 <= index < count, got {shard!r}")
    return shard


def shard_range(num_texts: int, index: int, count: int) -> tuple[int, int]:
    """The ``index``-th of ``count`` contiguous ranges; the first ``num_texts % count`` are one longer.

    >>> [shard_range(5, i, 2) for i in range(2)]
    [(0, 3), (3, 5)]
    """
    size, extra = divmod(num_texts, count)
    start = index * size + min(index, extra)
    return start, start + size + (index < extra)
