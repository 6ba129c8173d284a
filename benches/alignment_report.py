"""Runs the alignment workloads once, side by side, and prints a Markdown report to stdout.

    python benches/alignment_report.py > report.md

Sections: ``align_batch`` against ``reference.align_text`` on 2,048-token blocks of real text (with a
check that both give identical output), scaling with threads and with block length,
``VocabMap.build`` against a rapidfuzz brute force, peak memory of ``align_batch`` in a fresh process,
and the summary lines of ``cargo bench --bench core``. Progress goes to stderr. The workloads are
described in ``alignment_workload.py``; ``bench_alignment.py`` runs the same ones under
pytest-benchmark. Smaller sizes (``--length 256 --batch-blocks 4 ...``) give a quick trial run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment_workload import (  # noqa: E402
    DOMAINS,
    ROOT,
    SOURCE_NAME,
    TARGET_NAME,
    TOP_K,
    AlignmentWorkload,
    alignment_peak_memory,
    best_time,
    differing_positions,
    target_tokens,
)
from report_frame import log, print_report  # noqa: E402

ALIGNMENT_GOAL = 1000
VOCAB_MAP_GOAL_SECONDS, VOCAB_MAP_GOAL_RATIO = 2.0, 20


def goal(met: bool) -> str:
    return "met" if met else "**not met**"


def rate(tokens: float, seconds: float) -> str:
    return f"{tokens / seconds:,.0f}"


# -- 1. align_batch ------------------------------------------------------------------------------

def alignment_section(workload: AlignmentWorkload, options: argparse.Namespace) -> list[str]:
    length = options.length
    blocks = workload.blocks(length, len(DOMAINS))
    rows, reference_seconds, fast_seconds, differing = [], 0.0, 0.0, 0
    for block in blocks:
        log(f"reference.align_text on one {block.domain} block of {length} tokens")
        start = time.perf_counter()
        expected = workload.align_reference(block)
        seconds_reference = time.perf_counter() - start
        seconds_fast, batch = best_time(lambda block=block: workload.align([block], workers=1), repeats=options.repeats)
        differ = differing_positions(batch, 0, expected)
        reference_seconds += seconds_reference
        fast_seconds += seconds_fast
        differing += differ
        tokens = len(block.target_ids)
        rows.append(
            f"| {block.domain} | {tokens:,} | {len(block.source_ids):,} | {seconds_reference:.1f} s "
            f"| {rate(tokens, seconds_reference)} | {seconds_fast * 1e3:.2f} ms | {rate(tokens, seconds_fast)} "
            f"| {seconds_reference / seconds_fast:,.0f}x | {batch.counts.matched_rate:.1%} "
            f"| {'yes' if differ == 0 else f'**no: {differ} positions differ**'} |"
        )
    tokens = target_tokens(blocks)
    ratio = reference_seconds / fast_seconds
    rows.append(
        f"| **both** | {tokens:,} | {sum(len(b.source_ids) for b in blocks):,} | {reference_seconds:.1f} s "
        f"| {rate(tokens, reference_seconds)} | {fast_seconds * 1e3:.2f} ms | {rate(tokens, fast_seconds)} "
        f"| **{ratio:,.0f}x** | | {'yes' if differing == 0 else '**no**'} |"
    )
    return [
        f"## 1. `align_batch` against the reference, {length}-token blocks",
        "",
        f"Target {TARGET_NAME} <- source {SOURCE_NAME}, K = {TOP_K}, soft mode (MinED map built "
        "beforehand and given to both), next-token stand-ins. One block of each domain: `help` is "
        "`pydoc_data.topics` help text, `code` is standard-library source. `reference.align_text` "
        f"(plain Python: dense DTW, one edit-distance call per cell) runs once per block; "
        f"`align_batch` with `workers=1` is the fastest of {options.repeats} runs on the same block. "
        "\"identical\": statuses, ids and logits equal at every target position.",
        "",
        "| domain | target tokens | source tokens | reference | reference tokens/s | `align_batch` "
        "| `align_batch` tokens/s | speed-up | matched positions | identical |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"Goal >= {ALIGNMENT_GOAL:,}x: {goal(ratio >= ALIGNMENT_GOAL)} ({ratio:,.0f}x).",
        "",
    ]


def workers_section(workload: AlignmentWorkload, options: argparse.Namespace) -> list[str]:
    blocks = workload.blocks(options.length, options.batch_blocks)
    tokens = target_tokens(blocks)
    rows, single = [], None
    for workers in (1, 2):
        log(f"align_batch on {len(blocks)} blocks of {options.length}, workers={workers}")
        seconds, _ = best_time(lambda workers=workers: workload.align(blocks, workers=workers), repeats=options.repeats)
        single = single or seconds
        rows.append(f"| {workers} | {seconds * 1e3:.1f} ms | {rate(tokens, seconds)} | {single / seconds:.2f}x |")
    return [
        f"### Threads: {len(blocks)} blocks of {options.length} tokens ({tokens:,} target tokens)",
        "",
        f"Fastest of {options.repeats} runs.",
        "",
        "| workers | time | target tokens/s | speed-up over 1 |",
        "|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def block_length_section(workload: AlignmentWorkload, options: argparse.Namespace) -> list[str]:
    rows = []
    for length in options.lengths:
        blocks = workload.blocks(length, max(len(DOMAINS), options.length_tokens // length))
        tokens = target_tokens(blocks)
        log(f"align_batch on {len(blocks)} blocks of {length}, workers=1")
        seconds, batch = best_time(lambda blocks=blocks: workload.align(blocks, workers=1), repeats=options.repeats)
        rows.append(f"| {length:,} | {len(blocks)} | {seconds * 1e3:.1f} ms | {seconds / len(blocks) * 1e3:.2f} ms "
                    f"| {rate(tokens, seconds)} | {batch.counts.matched_rate:.1%} |")
    return [
        "### Block length, `workers=1`",
        "",
        f"The same text at every length: the first {options.length_tokens // len(DOMAINS):,} target tokens of "
        f"each domain, cut into blocks; fastest of {options.repeats} runs.",
        "",
        "| block length | blocks | time | per block | target tokens/s | matched positions |",
        "|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


# -- 2. VocabMap.build -------------------------------------------------------------------------------

def vocab_map_section(workload: AlignmentWorkload, options: argparse.Namespace) -> tuple[list[str], object]:
    log("VocabMap.build, workers=-1")
    seconds_build, vocab_map = best_time(lambda: workload.build_vocab_map(workers=-1), repeats=options.map_repeats)
    source_size, target_size = len(workload.source_tokens), len(workload.target_tokens)
    sample = np.sort(np.random.default_rng(0).choice(source_size, size=options.vocab_sample, replace=False))
    workload.use_vocab_map(vocab_map)
    log(f"rapidfuzz brute force on {len(sample)} source rows")
    start = time.perf_counter()
    brute_ids, brute_distances = workload.brute_force_vocab_map(sample)
    seconds_sample = time.perf_counter() - start
    seconds_brute = seconds_sample * source_size / len(sample)
    same = (np.array_equal(brute_ids, vocab_map.target_ids[sample])
            and np.array_equal(brute_distances, vocab_map.distances[sample]))
    ratio = seconds_brute / seconds_build
    lines = [
        f"## 2. `VocabMap.build`, {SOURCE_NAME} ({source_size:,} tokens) -> {TARGET_NAME} ({target_size:,} tokens)",
        "",
        f"`VocabMap.build(..., workers=-1)` ({len(os.sched_getaffinity(0))} cores), fastest of "
        f"{options.map_repeats} runs, against `rapidfuzz.process.cdist(swapped_sources, targets, "
        "scorer=Levenshtein.distance, workers=-1, dtype=np.int32)` in chunks of 250 source rows plus "
        "`argmin` (first minimum = lowest target id). **The brute force is timed once on a fixed random "
        f"sample of {len(sample):,} source rows (seed 0) and extrapolated linearly to all {source_size:,}.**",
        "",
        "| method | time | source tokens/s |",
        "|---|---:|---:|",
        f"| `VocabMap.build` | {seconds_build:.2f} s | {rate(source_size, seconds_build)} |",
        f"| rapidfuzz brute force, {len(sample):,}-row sample (measured) | {seconds_sample:.2f} s "
        f"| {rate(len(sample), seconds_sample)} |",
        f"| rapidfuzz brute force, all rows (extrapolated) | {seconds_brute:.1f} s "
        f"| {rate(source_size, seconds_brute)} |",
        "",
        f"- Speed-up: **{ratio:,.1f}x** (goal >= {VOCAB_MAP_GOAL_RATIO}x: {goal(ratio >= VOCAB_MAP_GOAL_RATIO)}); "
        f"`VocabMap.build` {seconds_build:.2f} s (goal <= {VOCAB_MAP_GOAL_SECONDS:.0f} s: "
        f"{goal(seconds_build <= VOCAB_MAP_GOAL_SECONDS)}).",
        f"- The sample's images and distances equal `VocabMap`'s: {'yes' if same else '**no**'}. "
        f"Exact matches (distance 0): {vocab_map.exact_share:.1%} of the source vocabulary.",
        "",
    ]
    return lines, vocab_map


# -- 3. memory ---------------------------------------------------------------------------------------

def memory_section(options: argparse.Namespace) -> list[str]:
    rows, detail = [], None
    for workers in (1, 2):
        log(f"peak memory of align_batch on {options.memory_blocks} blocks of {options.length}, workers={workers}")
        figures = alignment_peak_memory(length=options.length, count=options.memory_blocks, workers=workers)
        detail = detail or figures
        rows.append(f"| {workers} | {figures['seconds']:.2f} s | {figures['loading_peak_mib']:,.0f} MiB "
                    f"| {figures['baseline_mib']:,.0f} MiB "
                    f"| **{figures['extra_mib']:,.1f} MiB** | {figures['outputs_mib']:,.1f} MiB "
                    f"| {figures['inputs_mib']:,.1f} MiB |")
    outputs = ", ".join(f"`{name}` {'x'.join(map(str, spec['shape']))} {spec['dtype']} ({spec['mib']:.2f} MiB)"
                        for name, spec in detail["outputs"].items())
    return [
        f"## 3. Memory of `align_batch`, {options.memory_blocks} blocks of {options.length} tokens, K = {TOP_K}",
        "",
        f"{detail['target_tokens']:,} target and {detail['source_tokens']:,} source tokens. Each row is a fresh "
        "process: it loads the tokenizers, builds the map and the inputs, then resets the kernel's "
        "resident-set high-water mark (`VmHWM`, what `getrusage` reports as `ru_maxrss`) through "
        "`/proc/self/clear_refs` and calls `align_batch` once (without that reset, `ru_maxrss` would "
        "still show the peak of loading, in the third column). \"Extra\" is the high-water mark "
        "after the call minus the resident set before it; it includes the outputs. \"Inputs\" is the size "
        "of the input arrays as passed (ids, top-k ids and logits).",
        "",
        "| workers | time of the call | peak while loading | resident before the call | extra at peak | outputs "
        "| inputs |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Outputs: {outputs}. For comparison, one dense 4-byte `n x m` cost matrix takes "
        f"{detail['largest_dense_matrix_mib']:.1f} MiB for the largest block and "
        f"{detail['dense_matrix_mib']:,.0f} MiB for all {options.memory_blocks} blocks.",
        "",
    ]


# -- criterion -------------------------------------------------------------------------------------------

def criterion_summary(output: str) -> list[str]:
    """The name, ``time:`` and ``thrpt:`` lines of criterion's output, without the change since a
    previous run (percentages)."""
    kept = []
    for line in output.splitlines():
        figures = re.search(r"\b(time|thrpt):\s+\[", line) and "%" not in line
        name = re.match(r"^[\w./-]+(\s|$)", line) and not re.match(r"^(Benchmarking|Found|Gnuplot|Warning)\b",
                                                                    line, re.IGNORECASE)
        if figures or name:
            kept.append(line.rstrip())
    return kept


def criterion_section() -> list[str]:
    log("cargo bench --bench core")
    start = time.perf_counter()
    completed = subprocess.run(["cargo", "bench", "--bench", "core"], check=False, cwd=ROOT, capture_output=True,
                               text=True)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        return ["## Criterion (`cargo bench --bench core`)", "",
                f"**Failed** (exit status {completed.returncode}):", "", "```",
                *completed.stderr.splitlines()[-20:], "```", ""]
    return [
        "## Criterion (`cargo bench --bench core`)",
        "",
        f"Synthetic tokenizations of the Rust core, default criterion settings ({seconds:.0f} s including the build).",
        "",
        "```",
        *criterion_summary(completed.stdout),
        "```",
        "",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=2048, help="block length of sections 1 and 3")
    parser.add_argument("--batch-blocks", type=int, default=16, help="blocks in the thread-scaling batch")
    parser.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")],
                        default=[512, 1024, 2048, 4096, 8192], help="block lengths of the block-length table")
    parser.add_argument("--length-tokens", type=int, default=16384, help="target tokens per block-length row")
    parser.add_argument("--memory-blocks", type=int, default=64)
    parser.add_argument("--vocab-sample", type=int, default=2000, help="source rows of the brute force")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each align_batch timing (fastest kept)")
    parser.add_argument("--map-repeats", type=int, default=3, help="runs of VocabMap.build (fastest kept)")
    parser.add_argument("--no-cargo", action="store_true", help="skip cargo bench")
    options = parser.parse_args(argv)

    def sections() -> list[str]:
        log("loading the tokenizers")
        workload = AlignmentWorkload()
        vocab_map_lines, _ = vocab_map_section(workload, options)
        return [
            *alignment_section(workload, options),
            *workers_section(workload, options),
            *block_length_section(workload, options),
            *vocab_map_lines,
            *memory_section(options),
            *([] if options.no_cargo else criterion_section()),
        ]

    print_report("Alignment benchmarks: measured figures", "alignment_report.py", sections,
                 about="Real tokenizers (`tests/realtok.py`), real text, synthetic top-k lists (see "
                       "`benches/alignment_workload.py`).")

if __name__ == "__main__":
    main()
