"""The alignment methods side by side: speed (pytest-benchmark) and quality (run as a script).

Speed: ``python -m pytest benches/bench_methods.py --benchmark-only``. The workload is
``alignment_workload.py``'s (target Llama-2, source GPT-NeoX, real text, synthetic top-10 lists), 8
blocks of 2,048 target tokens, one worker. Each method is timed through the public ``align_batch``
and through the compiled call alone (inputs already converted), and reports target tokens per second
in ``extra_info``. The goal for ``offsets`` and ``boundary``: at least 10 million target tokens/s per
core and at least 10x ``dtw``.

Quality: ``python benches/bench_methods.py`` prints the quality tables of ``BENCHMARKS.md``: per
tokenizer pair and method, the share of target positions matched to one source position, the share
of those whose next tokens also agree (the true next source token, given as the only candidate,
lands on the true next target token), and the mean share of top-k probability mass kept; then the
exact-match share of the vocabulary maps and the time of the Llama-3 <- Qwen2 byte map.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fusellm_fast as ff  # noqa: E402
from alignment_workload import AlignmentWorkload, target_tokens  # noqa: E402
from fusellm_fast._checks import sequences, topk_rows  # noqa: E402
from realtok import RealTokenizerUnavailable, load_tokenizer  # noqa: E402

LENGTH, BLOCKS = 2048, 8
# (method, candidates, normalize) of each timed configuration.
CONFIGURATIONS = [
    ("dtw", "mined", "marker"),
    ("offsets", "mined", "bytes"),
    ("offsets", "prefix", "bytes"),
    ("boundary", "prefix", "bytes"),
    ("boundary", "mined", "bytes"),
]


def configuration_id(configuration: tuple[str, str, str]) -> str:
    return "{}+{}+{}".format(*configuration)


@pytest.fixture(scope="module")
def workload():
    try:
        return AlignmentWorkload()
    except RealTokenizerUnavailable as exc:
        pytest.skip(f"real tokenizers unavailable: {exc}")


@pytest.fixture(scope="module")
def blocks(workload):
    return workload.blocks(LENGTH, BLOCKS)


@pytest.fixture(scope="module")
def aligners(workload):
    """One aligner per normalization, with its MinED map and byte-prefix map built."""
    made = {}
    for normalize in ("marker", "bytes"):
        aligner = ff.Aligner.from_tokenizers(workload.source, workload.target, normalize=normalize)
        aligner.build_vocab_map()
        aligner.prefix_map()
        made[normalize] = aligner
    return made


def _align(aligner, blocks, method, candidates):
    return ff.align_batch(aligner, [b.target_ids for b in blocks], [b.source_ids for b in blocks],
                          [b.topk_ids for b in blocks], [b.topk_logits for b in blocks],
                          method=method, candidates=candidates, workers=1)


def _record(benchmark, blocks):
    tokens = target_tokens(blocks)
    benchmark.extra_info["target_tokens"] = tokens
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["target_tokens_per_s"] = tokens / benchmark.stats.stats.min


@pytest.mark.parametrize("configuration", CONFIGURATIONS, ids=configuration_id)
def test_align_batch(benchmark, aligners, blocks, configuration):
    method, candidates, normalize = configuration
    benchmark.group = f"align_batch, {BLOCKS} x {LENGTH} target tokens, K=10, 1 worker"
    out = benchmark(_align, aligners[normalize], blocks, method, candidates)
    _record(benchmark, blocks)
    assert out.counts.positions == target_tokens(blocks)


@pytest.mark.parametrize("configuration", CONFIGURATIONS, ids=configuration_id)
def test_compiled_call(benchmark, aligners, blocks, configuration):
    method, candidates, normalize = configuration
    benchmark.group = f"compiled call alone, {BLOCKS} x {LENGTH} target tokens, K=10, 1 worker"
    t_flat, t_starts, t_lengths = sequences([b.target_ids for b in blocks], None, "target_ids", "target_lengths")
    s_flat, s_starts, s_lengths = sequences([b.source_ids for b in blocks], None, "source_ids", "source_lengths")
    k_ids, k_logits, k = topk_rows([b.topk_ids for b in blocks], [b.topk_logits for b in blocks], s_lengths)
    core = aligners[normalize]._core
    benchmark(core.align, t_flat, t_starts, t_lengths, s_flat, s_starts, s_lengths, k_ids, k_logits, k=k,
              vocab_align="soft", onehot="next", workers=1, method=method, candidates=candidates, values="logits")
    _record(benchmark, blocks)


def test_linear_methods_beat_dtw_tenfold(aligners, blocks):
    def best(method, candidates, normalize):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            _align(aligners[normalize], blocks, method, candidates)
            times.append(time.perf_counter() - start)
        return min(times)

    dtw = best("dtw", "mined", "marker")
    for method in ("offsets", "boundary"):
        assert best(method, "prefix", "bytes") * 10 <= dtw


# --- quality tables -------------------------------------------------------------------------------

# (target, source) pairs of the quality table.
PAIRS = [("llama2", "gpt-neox"), ("llama3", "mistral-tekken"), ("qwen2", "llama2"), ("llama2", "llama2")]
# (label, method, candidates, normalize) rows of the quality table.
ROWS = [
    ("dtw + marker (published)", "dtw", "mined", "marker"),
    ("dtw + bytes", "dtw", "mined", "bytes"),
    ("offsets + mined", "offsets", "mined", "bytes"),
    ("offsets + prefix", "offsets", "prefix", "bytes"),
    ("boundary + prefix", "boundary", "prefix", "bytes"),
    ("boundary + mined", "boundary", "mined", "bytes"),
]


def _quality_inputs(source, target, texts):
    t_ids = [np.array(target(t, add_special_tokens=False).input_ids, dtype=np.int64) for t in texts]
    s_ids = [np.array(source(t, add_special_tokens=False).input_ids, dtype=np.int64) for t in texts]
    # The true next source token as the only candidate (none at the last position).
    topk = [np.append(s[1:], -1).reshape(-1, 1) for s in s_ids]
    logits = [np.zeros((len(s), 1), np.float32) for s in s_ids]
    return t_ids, s_ids, topk, logits


def quality_table(texts, *, workers: int = 2) -> str:
    lines = ["| target <- source | method | matched 1:1 | next tokens agree | top-k mass kept | DTW fallbacks |",
             "|---|---|---:|---:|---:|---:|"]
    for target_name, source_name in PAIRS:
        source, target = load_tokenizer(source_name), load_tokenizer(target_name)
        t_ids, s_ids, topk, logits = _quality_inputs(source, target, texts)
        aligners = {n: ff.Aligner.from_tokenizers(source, target, normalize=n) for n in ("marker", "bytes")}
        for label, method, candidates, normalize in ROWS:
            out = ff.align_batch(aligners[normalize], t_ids, s_ids, topk, logits, method=method,
                                 candidates=candidates, workers=workers)
            matched = agree = 0
            for b, t in enumerate(t_ids):
                hits = np.flatnonzero(out.status[b, : len(t) - 1] == ff.PositionStatus.MATCHED)
                matched += len(hits)
                agree += int(np.sum(out.ids[b, hits, 0] == t[hits + 1]))
            positions = sum(len(t) - 1 for t in t_ids)
            lines.append(f"| {target_name} <- {source_name} | {label} | {matched / positions:.1%} | "
                         f"{agree / max(matched, 1):.1%} | {out.counts.kept_mass_rate:.1%} | "
                         f"{out.counts.fallback_texts}/{len(texts)} |")
    return "\n".join(lines)


def vocab_map_table(*, workers: int = 2) -> str:
    lines = ["| target <- source | exact share, marker | exact share, bytes | bytes map build (s) |",
             "|---|---:|---:|---:|"]
    for target_name, source_name in [*PAIRS, ("llama3", "qwen2")]:
        source, target = load_tokenizer(source_name), load_tokenizer(target_name)
        shares = []
        for normalize in ("marker", "bytes"):
            aligner = ff.Aligner.from_tokenizers(source, target, normalize=normalize)
            start = time.perf_counter()
            shares.append(aligner.build_vocab_map(workers=workers).exact_share)
            elapsed = time.perf_counter() - start
        lines.append(f"| {target_name} <- {source_name} | {shares[0]:.1%} | {shares[1]:.1%} | {elapsed:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    from realtok import sample_texts

    texts = sample_texts(max_chars=2000)
    print(f"{len(texts)} texts, {sum(map(len, texts))} characters\n")
    print(quality_table(texts))
    print()
    print(vocab_map_table())
