"""The extract stage's own rules: the --shard value and the one shard check, before any work."""

from __future__ import annotations

import doctest

import pytest

from fusellm_fast.pipeline import PipelineError, extract, extraction, parse_shard


def test_parse_shard_reads_i_of_n():
    assert parse_shard("0/1") == (0, 1) and parse_shard("3/8") == (3, 8)
    for value in ("two", "1/2/3", "1", "a/b"):
        with pytest.raises(PipelineError, match=r"--shard: must look like I/N \(for example 0/8\)"):
            parse_shard(value)


@pytest.mark.parametrize("shard", [(2, 2), (0, 0), [0, 1]])
def test_a_bad_shard_stops_extract_before_it_reads_or_writes(tmp_path, shard):
    with pytest.raises(PipelineError, match=r"--shard: must be \(index, count\) with 0 <= index < count"):
        extract(tmp_path / "no-model", [tmp_path / "no-corpus.jsonl"], tmp_path / "out", shard=shard)
    assert not (tmp_path / "out").exists()


def test_docstring_examples_run():
    results = doctest.testmod(extraction)
    assert results.attempted > 0 and results.failed == 0
