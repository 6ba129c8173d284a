"""``align_batch`` and ``VocabMap.build`` on real tokenizers and real text, against the published
implementation (``published_dtw.py``), the plain-Python reference and a rapidfuzz brute force.

Run: ``python -m pytest benches/bench_alignment.py --benchmark-only``.
The workloads are those of ``alignment_report.py`` (see ``alignment_workload.py``): target Llama-2
<- source GPT-NeoX, K = 10, blocks of help text and standard-library source. Each benchmark group
puts the fast path beside its baselines; ``extra_info`` holds the token counts (and, for the memory
benchmark, the peak-memory figures of a fresh process). The assertions check results only: the
reference and the published implementation give identical output, the brute force gives the same
map. The reference takes tens of seconds per 2,048-token block, so it runs one round on one block
per domain; the published implementation takes seconds, so it runs two.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment_workload import (  # noqa: E402
    DOMAINS,
    TOP_K,
    AlignmentWorkload,
    alignment_peak_memory,
    differing_positions,
    target_tokens,
)
from realtok import RealTokenizerUnavailable  # noqa: E402

LENGTH = 2048
BATCH_BLOCKS = 16
LENGTHS = (512, 1024, 2048, 4096, 8192)
LENGTH_TOKENS = 16384  # target tokens per block-length benchmark
MEMORY_BLOCKS = 64
VOCAB_SAMPLE = 2000


@pytest.fixture(scope="module")
def workload():
    try:
        workload = AlignmentWorkload()
    except RealTokenizerUnavailable as exc:
        pytest.skip(f"real tokenizers unavailable: {exc}")
    workload.use_vocab_map(workload.build_vocab_map())
    return workload


@pytest.fixture(scope="module")
def one_block_per_domain(workload):
    return dict(zip(DOMAINS, workload.blocks(LENGTH, len(DOMAINS)), strict=True))


def record_tokens(benchmark, blocks) -> None:
    benchmark.extra_info["blocks"] = len(blocks)
    benchmark.extra_info["target_tokens"] = target_tokens(blocks)
    benchmark.extra_info["source_tokens"] = sum(len(block.source_ids) for block in blocks)


@pytest.mark.parametrize("domain", DOMAINS)
def test_align_batch_one_block(benchmark, workload, one_block_per_domain, domain):
    benchmark.group = f"one {LENGTH}-token block, {domain}"
    block = one_block_per_domain[domain]
    record_tokens(benchmark, [block])
    batch = benchmark(workload.align, [block], workers=1)
    assert batch.lengths.tolist() == [LENGTH]


@pytest.mark.parametrize("domain", DOMAINS)
def test_reference_one_block(benchmark, workload, one_block_per_domain, domain):
    benchmark.group = f"one {LENGTH}-token block, {domain}"
    block = one_block_per_domain[domain]
    record_tokens(benchmark, [block])
    expected = benchmark.pedantic(workload.align_reference, args=(block,), rounds=1, iterations=1)
    assert differing_positions(workload.align([block], workers=1), 0, expected) == 0


@pytest.mark.parametrize("domain", DOMAINS)
def test_published_one_block(benchmark, workload, one_block_per_domain, domain):
    """The published implementation as its users run it (``published_dtw.py``: one ``editdistance``
    call per cell), on the blocks of ``test_align_batch_one_block``."""
    benchmark.group = f"one {LENGTH}-token block, {domain}"
    block = one_block_per_domain[domain]
    record_tokens(benchmark, [block])
    published = workload.published_aligner()
    expected = benchmark.pedantic(published.align_text, args=(block.target_ids, block.source_ids, block.topk_ids,
                                                               block.topk_logits), rounds=2, iterations=1)
    assert differing_positions(workload.align([block], workers=1), 0, expected) == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_align_batch_workers(benchmark, workload, workers):
    benchmark.group = f"{BATCH_BLOCKS} blocks of {LENGTH} tokens, by workers"
    blocks = workload.blocks(LENGTH, BATCH_BLOCKS)
    record_tokens(benchmark, blocks)
    batch = benchmark.pedantic(workload.align, args=(blocks,), kwargs={"workers": workers}, rounds=5,
                               warmup_rounds=1)
    assert len(batch) == BATCH_BLOCKS


@pytest.mark.parametrize("length", LENGTHS)
def test_align_batch_block_length(benchmark, workload, length):
    benchmark.group = f"about {LENGTH_TOKENS} target tokens, by block length, workers=1"
    blocks = workload.blocks(length, max(len(DOMAINS), LENGTH_TOKENS // length))
    record_tokens(benchmark, blocks)
    batch = benchmark.pedantic(workload.align, args=(blocks,), kwargs={"workers": 1}, rounds=5, warmup_rounds=1)
    assert batch.ids.shape[1] == length


def test_vocab_map_build(benchmark, workload):
    benchmark.group = "vocabulary map, gpt-neox -> llama2"
    benchmark.extra_info["source_rows"] = len(workload.source_tokens)
    vocab_map = benchmark.pedantic(workload.build_vocab_map, kwargs={"workers": -1}, rounds=3)
    assert vocab_map == workload.aligner.vocab_map


def test_rapidfuzz_brute_force_sample(benchmark, workload):
    """The brute force on a fixed sample of source rows; ``extra_info`` extrapolates it linearly to the
    whole source vocabulary."""
    benchmark.group = "vocabulary map, gpt-neox -> llama2"
    source_size = len(workload.source_tokens)
    sample = np.sort(np.random.default_rng(0).choice(source_size, size=VOCAB_SAMPLE, replace=False))
    benchmark.extra_info["source_rows"] = len(sample)
    target_ids, distances = benchmark.pedantic(workload.brute_force_vocab_map, args=(sample,), rounds=1)
    if benchmark.stats is not None:
        benchmark.extra_info["extrapolated_all_rows_s"] = benchmark.stats.stats.min * source_size / len(sample)
    vocab_map = workload.aligner.vocab_map
    assert target_ids.tolist() == vocab_map.target_ids[sample].tolist()
    assert distances.tolist() == vocab_map.distances[sample].tolist()


def test_align_batch_memory(benchmark, workload):
    """Times ``align_batch`` on the memory workload and records, in ``extra_info``, its peak memory in
    a fresh process (see ``alignment_workload.measure_alignment_memory``)."""
    benchmark.group = f"{MEMORY_BLOCKS} blocks of {LENGTH} tokens"
    blocks = workload.blocks(LENGTH, MEMORY_BLOCKS)
    record_tokens(benchmark, blocks)
    figures = alignment_peak_memory(length=LENGTH, count=MEMORY_BLOCKS, workers=1)
    benchmark.extra_info.update({key: value for key, value in figures.items() if key.endswith("_mib")})
    batch = benchmark.pedantic(workload.align, args=(blocks,), kwargs={"workers": 1}, rounds=3)
    assert batch.ids.shape == (MEMORY_BLOCKS, LENGTH, TOP_K)
    # The outputs take O(batch * length * K); nothing like one dense n x m matrix per block is kept.
    assert figures["extra_mib"] < figures["dense_matrix_mib"] / 10
