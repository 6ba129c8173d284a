"""Exact DTW alignment against the published code as its users run it, and against peer aligners,
side by side in one run; prints a Markdown report to stdout (progress goes to stderr).

    python benches/baseline_report.py > baselines.md

Sections, all on the workload of ``alignment_workload.py`` (target Llama-2 <- source GPT-NeoX,
``pydoc_data`` help text and standard-library source, synthetic top-10 lists, soft mode with the
MinED map built beforehand, next-token stand-ins):

1. 2,048-token blocks: ``fusellm_fast.align_batch`` (``method="dtw"``, ``workers=1``), the
   published implementation (``published_dtw.py``), ``fusellm_fast.reference`` and the peers of
   ``peer_aligners.py``, each timed block by block, the methods interleaved round by round, the
   fastest round of each block kept; match rates and output checks on the same blocks.
2. ``align_batch`` on the same text cut into blocks of 512 to 32,768 tokens.
3. ``align_batch`` with ``workers=1`` and ``workers=2`` on 16 blocks.
4. Peak extra memory of one ``align_batch`` call per block length, each in a fresh process.

Smaller sizes (``--blocks 2 --lengths 256,512 --length-tokens 1024 ...``) give a quick trial run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment_report import goal, rate  # noqa: E402
from alignment_workload import (  # noqa: E402
    DOMAINS,
    SOURCE_NAME,
    TARGET_NAME,
    TOP_K,
    AlignmentWorkload,
    Block,
    alignment_peak_memory,
    best_time,
    target_tokens,
)
from aligned import reference_positions  # noqa: E402
from peer_aligners import available_peers  # noqa: E402
from published_dtw import matched_share  # noqa: E402
from report_frame import log, print_report  # noqa: E402

PUBLISHED_GOAL, PUBLISHED_MOONSHOT = 2000, 10000
LENGTH_GOAL = 1.5  # 8,192-token throughput within this factor of 512-token throughput
WORKERS_GOAL = 1.8
# (option, default, meaning) of the report's integer options.
INT_OPTIONS = [
    ("--length", 2048, "block length of sections 1 and 3"),
    ("--blocks", 8, "blocks of section 1"),
    ("--reference-blocks", 2, "blocks of section 1 that reference runs on"),
    ("--published-rounds", 2, "rounds of the published implementation"),
    ("--peer-rounds", 3, "rounds of each peer"),
    ("--repeats", 5, "rounds or runs of each align_batch timing"),
    ("--batch-blocks", 16, "blocks of the thread-scaling batch"),
    ("--length-tokens", 65536, "target tokens of sections 2 and 4"),
]


@dataclass
class Contender:
    """One aligner of section 1: ``run`` is the timed call, ``finish`` turns its result into the
    reference's per-position ``(status, [(id, logit), ...])`` form, untimed."""

    name: str
    what: str
    run: Callable[[Block], object]
    finish: Callable[[Block, object], list]
    rounds: int
    blocks: list[int]
    reset: Callable[[], None] = lambda: None
    seconds: dict[int, float] = field(default_factory=dict)
    outputs: dict[int, list] = field(default_factory=dict)

    def time_block(self, index: int, block: Block) -> None:
        self.reset()
        start = time.perf_counter()
        result = self.run(block)
        elapsed = time.perf_counter() - start
        self.seconds[index] = min(elapsed, self.seconds.get(index, float("inf")))
        self.outputs[index] = self.finish(block, result)

    def total(self, blocks: Sequence[int]) -> float:
        return sum(self.seconds[b] for b in blocks)


def contenders(workload: AlignmentWorkload, blocks: Sequence[Block],
               options: argparse.Namespace) -> tuple[list[Contender], dict[str, str]]:
    published = workload.published_aligner()
    every = list(range(len(blocks)))
    made = [
        Contender("`align_batch`", "this package, exact DTW (`method=\"dtw\"`), `workers=1`",
                  lambda block: workload.align([block], workers=1), lambda block, batch: reference_positions(batch, 0),
                  options.repeats, every),
        Contender("published", "FuseLLM's Python DTW loop, numpy matrix, one C++ `editdistance.eval` per cell",
                  lambda block: published.align_text(block.target_ids, block.source_ids, block.topk_ids,
                                                     block.topk_logits),
                  lambda block, positions: positions, options.published_rounds, every),
        Contender("`reference`", "`fusellm_fast.reference`: the same loop, edit distance in plain Python",
                  workload.align_reference, lambda block, positions: positions, 1,
                  every[:options.reference_blocks]),
    ]
    source_marker, target_marker = workload.aligner.source_marker, workload.aligner.target_marker
    # The peers' inputs are the published DTW's cost strings, prepared outside the timed call.
    strings = {id(block): ([workload.target_tokens[t].replace(target_marker, "") for t in block.target_ids],
                           [workload.source_tokens[s].replace(source_marker, "") for s in block.source_ids])
               for block in blocks}
    peers, missing = available_peers()
    for peer in peers:
        made.append(Contender(
            peer.name, f"{peer.package} {peer.version}; alignment only, remapped by the published Step 3",
            lambda block, peer=peer: peer.align(*strings[id(block)]),
            lambda block, alignment: published.remap(alignment, block.target_ids, block.source_ids, block.topk_ids,
                                                     block.topk_logits),
            options.peer_rounds, every, reset=peer.reset))
    return made, missing


def differing(outputs: dict[int, list], expected: dict[int, list], blocks: Sequence[int]) -> tuple[int, int]:
    """(differing positions, compared positions) of two contenders' outputs on ``blocks``."""
    differ = compared = 0
    for b in blocks:
        actual, wanted = outputs[b], expected[b]
        differ += sum(x != y for x, y in zip(actual, wanted, strict=False)) + abs(len(actual) - len(wanted))
        compared += max(len(actual), len(wanted))
    return differ, compared


def sameness(contender: Contender, published: Contender, reference: Contender) -> str:
    """How the contender's output compares with the published one (and the reference's)."""
    differ, compared = differing(contender.outputs, published.outputs, contender.blocks)
    if contender is published:
        differ, compared = differing(published.outputs, reference.outputs, reference.blocks)
        return "identical to `reference`" if differ == 0 else f"**{differ} positions differ from `reference`**"
    if differ == 0:
        return "identical"
    return f"{1 - differ / compared:.1%} of positions"


def side_by_side_section(workload: AlignmentWorkload, options: argparse.Namespace) -> tuple[list[str], float]:
    blocks = workload.blocks(options.length, options.blocks)
    entrants, missing = contenders(workload, blocks, options)
    for round_index in range(max(entrant.rounds for entrant in entrants)):
        for entrant in entrants:
            if round_index < entrant.rounds:
                log(f"round {round_index + 1}: {entrant.name} on {len(entrant.blocks)} blocks")
                for b in entrant.blocks:
                    entrant.time_block(b, blocks[b])
    fast, published, reference = entrants[:3]
    rows = []
    for entrant in entrants:
        tokens = target_tokens([blocks[b] for b in entrant.blocks])
        seconds = entrant.total(entrant.blocks)
        speed_up = published.total(entrant.blocks) / seconds
        matched = sum(matched_share(entrant.outputs[b]) * len(blocks[b].target_ids) for b in entrant.blocks) / tokens
        rows.append(f"| {entrant.name} | {entrant.what} | {len(entrant.blocks)} | {tokens:,} | {seconds:.3f} s "
                    f"| {rate(tokens, seconds)} | {speed_up:,.{0 if speed_up >= 10 else 2}f}x | {matched:.1%} "
                    f"| {sameness(entrant, published, reference)} |")
    ratio = published.total(fast.blocks) / fast.total(fast.blocks)
    cells = sum(len(blocks[b].source_ids) * len(blocks[b].target_ids) for b in published.blocks)
    seconds_per_cell = published.total(published.blocks) / cells
    lines = [
        f"## 1. Exact DTW on {options.length:,}-token blocks, side by side",
        "",
        f"Target {TARGET_NAME} <- source {SOURCE_NAME}, K = {TOP_K}, {len(blocks)} blocks alternating "
        f"`{DOMAINS[0]}` (`pydoc_data.topics`) and `{DOMAINS[1]}` (standard-library source). Each block "
        f"is timed alone; the aligners take turns round by round (`align_batch` {fast.rounds} rounds, "
        f"published {published.rounds}, peers {options.peer_rounds}, `reference` once on the first "
        f"{len(reference.blocks)} blocks) and the fastest round of each block is summed. \"vs published\": "
        "the published implementation's time on the same blocks divided by the row's. \"matched\": share "
        "of target positions that take a source top-k list (`AlignmentCounts.matched_rate`), on the row's "
        "own blocks. \"output\": "
        "statuses, ids and logits compared with the published implementation's, position by position. "
        "The peers are timed on their alignment call alone, with token strings prepared beforehand; "
        "merge-tokenizers' distance cache is emptied before each call.",
        "",
        "| aligner | what it is | blocks | target tokens | time | target tokens/s | vs published | matched "
        "| output |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        *domain_lines(blocks, fast, published),
        f"- `align_batch` against the published implementation: **{ratio:,.0f}x** (goal >= {PUBLISHED_GOAL:,}x: "
        f"{goal(ratio >= PUBLISHED_GOAL)}; moonshot {PUBLISHED_MOONSHOT:,}x: {goal(ratio >= PUBLISHED_MOONSHOT)}).",
        f"- Against `reference` on its {len(reference.blocks)} blocks: `align_batch` "
        f"{reference.total(reference.blocks) / fast.total(reference.blocks):,.0f}x, the published implementation "
        f"{reference.total(reference.blocks) / published.total(reference.blocks):.1f}x.",
        f"- The published implementation spends {seconds_per_cell * 1e9:,.0f} ns per DTW cell "
        f"({cells:,} cells in {published.total(published.blocks):.1f} s).",
        *(f"- {name}: not run: {reason}" for name, reason in missing.items()),
        "",
    ]
    return lines, seconds_per_cell


def domain_lines(blocks: Sequence[Block], fast: Contender, published: Contender) -> list[str]:
    lines = ["| domain | blocks | published tokens/s | `align_batch` tokens/s | ratio |", "|---|---:|---:|---:|---:|"]
    for domain in DOMAINS:
        chosen = [b for b in fast.blocks if blocks[b].domain == domain]
        if not chosen:
            continue
        tokens = target_tokens([blocks[b] for b in chosen])
        lines.append(f"| {domain} | {len(chosen)} | {rate(tokens, published.total(chosen))} "
                     f"| {rate(tokens, fast.total(chosen))} | {published.total(chosen) / fast.total(chosen):,.0f}x |")
    return [*lines, ""]


def duration(seconds: float) -> str:
    return f"{seconds:,.1f} s" if seconds < 120 else f"{seconds / 60:,.0f} min"


def size(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.1f} MiB" if nbytes < 2**30 else f"{nbytes / 2**30:,.1f} GiB"


def block_length_section(workload: AlignmentWorkload, options: argparse.Namespace,
                         seconds_per_cell: float) -> list[str]:
    rows, first_rate, rates = [], None, {}
    for length in options.lengths:
        blocks = workload.blocks(length, max(len(DOMAINS), options.length_tokens // length))
        tokens = target_tokens(blocks)
        log(f"align_batch on {len(blocks)} blocks of {length}, workers=1")
        seconds, batch = best_time(lambda blocks=blocks: workload.align(blocks, workers=1), repeats=options.repeats)
        rates[length] = tokens / seconds
        first_rate = first_rate or rates[length]
        cells = max(len(block.source_ids) * len(block.target_ids) for block in blocks)
        rows.append(f"| {length:,} | {len(blocks)} | {seconds * 1e3:,.1f} ms | {seconds / len(blocks) * 1e3:,.2f} ms "
                    f"| {rate(tokens, seconds)} | {rates[length] / first_rate:.2f} | {batch.counts.matched_rate:.1%} "
                    f"| {duration(cells * seconds_per_cell)}, {size(8 * cells)} |")
    lines = [
        "## 2. Block length, `align_batch`, `workers=1`",
        "",
        f"The same text at every length: the first {options.length_tokens // len(DOMAINS):,} target tokens of "
        f"each domain, cut into blocks; fastest of {options.repeats} runs of the whole batch. The last column "
        "is what the published implementation would need for the largest block of the row, extrapolated "
        "from its time per cell in section 1 and its float64 matrix of `(n + 1) x (m + 1)` cells; it is "
        "not run at these lengths.",
        "",
        "| block length | blocks | time | per block | target tokens/s | vs first row | matched "
        "| published, largest block (estimate) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    if 512 in rates and 8192 in rates:
        drop = rates[512] / rates[8192]
        lines += [f"Throughput at 512 over throughput at 8,192: {drop:.2f}x (goal <= {LENGTH_GOAL}x: "
                  f"{goal(drop <= LENGTH_GOAL)}).", ""]
    return lines


def workers_section(workload: AlignmentWorkload, options: argparse.Namespace) -> list[str]:
    blocks = workload.blocks(options.length, options.batch_blocks)
    tokens = target_tokens(blocks)
    fastest = {1: float("inf"), 2: float("inf")}
    for round_index in range(options.repeats):
        for workers in fastest:
            log(f"round {round_index + 1}: align_batch on {len(blocks)} blocks, workers={workers}")
            seconds, _ = best_time(lambda workers=workers: workload.align(blocks, workers=workers), repeats=1)
            fastest[workers] = min(fastest[workers], seconds)
    scaling = fastest[1] / fastest[2]
    return [
        f"## 3. Threads: {len(blocks)} blocks of {options.length:,} tokens ({tokens:,} target tokens)",
        "",
        f"Fastest of {options.repeats} runs, the two settings alternating.",
        "",
        "| workers | time | target tokens/s | speed-up over 1 |",
        "|---:|---:|---:|---:|",
        *(f"| {w} | {s * 1e3:,.1f} ms | {rate(tokens, s)} | {fastest[1] / s:.2f}x |" for w, s in fastest.items()),
        "",
        f"`workers=2` over `workers=1`: {scaling:.2f}x (goal >= {WORKERS_GOAL}x: {goal(scaling >= WORKERS_GOAL)}).",
        "",
    ]


def memory_section(options: argparse.Namespace) -> list[str]:
    rows = []
    for length in options.lengths:
        count = max(len(DOMAINS), options.length_tokens // length)
        log(f"peak memory of align_batch on {count} blocks of {length}, workers=1, in a fresh process")
        figures = alignment_peak_memory(length=length, count=count, workers=1, timeout=1800)
        rows.append(f"| {length:,} | {count} | {figures['seconds']:.2f} s | **{figures['extra_mib']:,.1f} MiB** "
                    f"| {figures['outputs_mib']:,.1f} MiB | {figures['inputs_mib']:,.1f} MiB "
                    f"| {size(2 * figures['largest_dense_matrix_mib'] * 2**20)} |")
    return [
        "## 4. Peak extra memory of `align_batch`, `workers=1`, by block length",
        "",
        "The same target tokens at every length (the text of section 2). Each row is a fresh process "
        "(`alignment_workload.py memory`): it loads the tokenizers, the map and the blocks, resets the "
        "resident-set high-water mark (`/proc/self/clear_refs`) and calls `align_batch` once. \"Extra\": the "
        "high-water mark after the call minus the resident set before it, outputs included. The last "
        "column is the float64 `n x m` matrix that the published implementation fills for the largest block.",
        "",
        "| block length | blocks | time of the call | extra at peak | outputs | inputs | published matrix |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def versions_line() -> str:
    names = ("editdistance", "merge-tokenizers", "pytokenizations", "spacy-alignments", "fastdtw", "Levenshtein")
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return f"- Baseline and peers: {', '.join(found)}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default, meaning in INT_OPTIONS:
        parser.add_argument(name, type=int, default=default, help=meaning)
    parser.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=[512, 2048, 8192, 32768],
                        help="block lengths of sections 2 and 4")
    parser.add_argument("--no-memory", action="store_true", help="skip section 4")
    options = parser.parse_args(argv)

    def sections() -> list[str]:
        log("loading the tokenizers and building the MinED map")
        workload = AlignmentWorkload()
        workload.use_vocab_map(workload.build_vocab_map())
        side_by_side, seconds_per_cell = side_by_side_section(workload, options)
        return [
            *side_by_side,
            *block_length_section(workload, options, seconds_per_cell),
            *workers_section(workload, options),
            *([] if options.no_memory else memory_section(options)),
        ]

    print_report("Exact DTW against the published implementation and peers: measured figures", "baseline_report.py",
                 sections, machine_notes=[versions_line()])


if __name__ == "__main__":
    main()
