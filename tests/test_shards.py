"""Shards of a corpus: the one check and the contiguous ranges."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fusellm_fast import _shards
from fusellm_fast._shards import checked_shard, shard_range
from fusellm_fast.errors import InvalidInputError
from fusellm_fast.pipeline import PipelineError


@given(st.integers(0, 500), st.integers(1, 40))
def test_shard_ranges_cover_the_texts_in_order_and_differ_by_at_most_one(num_texts, count):
    ranges = [shard_range(num_texts, index, count) for index in range(count)]
    assert ranges[0][0] == 0 and ranges[-1][1] == num_texts
    assert all(stop == start for (_, stop), (start, _) in zip(ranges, ranges[1:]))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("shard", [(2, 2), (-1, 2), (0, 0), [0, 1], (0, 1, 2), (True, 2), (0.0, 1), "0/1"])
def test_checked_shard_rejects_what_is_no_shard(shard):
    with pytest.raises(InvalidInputError, match=r"shard: must be \(index, count\) with 0 <= index < count"):
        checked_shard(shard)
    with pytest.raises(PipelineError, match=r"^--shard: must be \(index, count\)"):
        checked_shard(shard, "--shard", PipelineError)


def test_checked_shard_returns_a_shard():
    assert checked_shard((0, 1)) == (0, 1) and checked_shard((3, 4)) == (3, 4)


def test_docstring_examples_run():
    results = doctest.testmod(_shards)
    assert results.attempted > 0 and results.failed == 0
