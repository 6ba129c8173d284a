"""Alignment workloads on real tokenizers and real text, shared by ``bench_alignment.py`` and
``alignment_report.py``; not part of the package.

The pair is the paper's: target Llama-2 (SentencePiece, 32,000 tokens) and source GPT-NeoX (byte-level
BPE, 50,277 tokens), both built offline by ``tests/realtok.py``. The text comes in two domains, each
one long text tokenized once by the target:

- ``help``: every topic of ``pydoc_data.topics`` (English help text), in key order;
- ``code``: Python standard-library source files in name order, up to :data:`CODE_CHARS` characters.

A block is a run of consecutive target tokens; its source tokenization is the source tokenizer's
encoding of exactly the character span those target tokens cover. The source model's top-k lists are
synthetic (no model is run): the true next source token first, as a trained model would rank it,
then random source ids, with logits in decreasing order.

Run as a script (``python alignment_workload.py memory ...``), it measures the peak memory of one
``align_batch`` call in a fresh process and prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import re
import resource
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fusellm_fast as ff  # noqa: E402
from aligned import reference_positions  # noqa: E402
from fusellm_fast import reference  # noqa: E402
from fusellm_fast.hf import tokenizer_vocabulary  # noqa: E402
from realtok import load_tokenizer  # noqa: E402

SOURCE_NAME, TARGET_NAME = "gpt-neox", "llama2"
TOP_K = 10
DOMAINS = ("help", "code")
CODE_CHARS = 400_000
"""Characters of standard-library source in the ``code`` domain (about 120,000 Llama-2 tokens)."""

T = TypeVar("T")


@functools.cache
def corpus(domain: str) -> str:
    """The whole text of ``domain`` (see the module docstring)."""
    if domain == "help":
        from pydoc_data.topics import topics

        return "\n".join(topics[key] for key in sorted(topics))
    if domain == "code":
        parts, size = [], 0
        for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
            parts.append(path.read_text(encoding="utf-8"))
            size += len(parts[-1])
            if size >= CODE_CHARS:
                break
        return "\n".join(parts)[:CODE_CHARS]
    raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")


@dataclass(frozen=True)
class Block:
    """One text as both models tokenize it, with the source model's top-k lists."""

    domain: str
    text: str
    target_ids: np.ndarray  # int64 [m]
    source_ids: np.ndarray  # int64 [n]
    topk_ids: np.ndarray  # int32 [n, TOP_K]
    topk_logits: np.ndarray  # float32 [n, TOP_K]


def target_tokens(blocks: Sequence[Block]) -> int:
    return sum(len(block.target_ids) for block in blocks)


class AlignmentWorkload:
    """The two tokenizers, their vocabularies, an :class:`fusellm_fast.Aligner` and blocks of text."""

    def __init__(self) -> None:
        self.source = load_tokenizer(SOURCE_NAME)
        self.target = load_tokenizer(TARGET_NAME)
        self.source_tokens = tokenizer_vocabulary(self.source, "source")
        self.target_tokens = tokenizer_vocabulary(self.target, "target")
        self.aligner = ff.Aligner(self.source_tokens, self.target_tokens)
        self._tokenized: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def build_vocab_map(self, *, workers: int = -1) -> ff.VocabMap:
        """``VocabMap.build`` of the two vocabularies (the timed call of the vocabulary-map benchmark)."""
        return ff.VocabMap.build(self.source_tokens, self.target_tokens, workers=workers)

    def use_vocab_map(self, vocab_map: ff.VocabMap) -> None:
        """Gives the aligner ``vocab_map``, so that alignment timings leave the map out."""
        self.aligner = ff.Aligner(self.source_tokens, self.target_tokens, vocab_map=vocab_map)

    def _target_tokenization(self, domain: str) -> tuple[np.ndarray, np.ndarray]:
        """Target ids of the whole corpus of ``domain`` and the character span ``[start, end)`` of each."""
        if domain not in self._tokenized:
            encoding = self.target(corpus(domain), add_special_tokens=False, return_offsets_mapping=True)
            self._tokenized[domain] = (
                np.asarray(encoding.input_ids, dtype=np.int64),
                np.asarray(encoding.offset_mapping, dtype=np.int64),
            )
        return self._tokenized[domain]

    def blocks(self, length: int, count: int) -> list[Block]:
        """``count`` blocks of ``length`` target tokens, alternating between the domains (``help`` first).

        The blocks of a domain are its consecutive runs of ``length`` target tokens from the start, so
        the same ``length`` always gives the same blocks.

        Raises:
            ValueError: a domain's corpus is too short for its share of the blocks.
        """
        per_domain = {domain: (count + len(DOMAINS) - 1 - d) // len(DOMAINS) for d, domain in enumerate(DOMAINS)}
        made = {domain: iter(self._domain_blocks(domain, length, n)) for domain, n in per_domain.items()}
        return [next(made[DOMAINS[i % len(DOMAINS)]]) for i in range(count)]

    def _domain_blocks(self, domain: str, length: int, count: int) -> list[Block]:
        ids, offsets = self._target_tokenization(domain)
        if count * length > len(ids):
            raise ValueError(f"{domain}: {count} blocks of {length} tokens need {count * length} target tokens, "
                             f"the corpus has {len(ids)}")
        text = corpus(domain)
        blocks = []
        for b in range(count):
            first, end = b * length, (b + 1) * length
            span = text[offsets[first, 0]:offsets[end - 1, 1]]
            source_ids = np.asarray(self.source(span, add_special_tokens=False).input_ids, dtype=np.int64)
            topk_ids, topk_logits = synthetic_topk(source_ids, len(self.source_tokens),
                                                   seed=(DOMAINS.index(domain), length, b))
            blocks.append(Block(domain, span, ids[first:end].copy(), source_ids, topk_ids, topk_logits))
        return blocks

    def align(self, blocks: Sequence[Block], *, workers: int = 1) -> ff.AlignedBatch:
        """``fusellm_fast.align_batch`` on ``blocks`` (soft mode, next-token stand-ins)."""
        return ff.align_batch(
            self.aligner,
            [block.target_ids for block in blocks],
            [block.source_ids for block in blocks],
            [block.topk_ids for block in blocks],
            [block.topk_logits for block in blocks],
            workers=workers,
        )

    def align_reference(self, block: Block) -> list[tuple[int, list[tuple[int, float]]]]:
        """``reference.align_text`` on one block with the aligner's MinED map: per target position,
        ``(status, [(target id, logit), ...])``, the form of ``tests/aligned.reference_positions``."""
        if self.aligner.vocab_map is None:
            raise ValueError("the aligner has no vocabulary map: call use_vocab_map first")
        return reference.align_text(
            self.source_tokens,
            self.target_tokens,
            block.target_ids.tolist(),
            block.source_ids.tolist(),
            block.topk_ids.tolist(),
            block.topk_logits.tolist(),
            source_marker=self.aligner.source_marker,
            target_marker=self.aligner.target_marker,
            vocab_map=self.aligner.vocab_map.target_ids.tolist(),
        )

    def published_aligner(self):
        """The published implementation (``published_dtw.PublishedAligner``) with the aligner's markers
        and MinED map, for the same soft-mode alignment as :meth:`align` and :meth:`align_reference`."""
        from published_dtw import PublishedAligner

        if self.aligner.vocab_map is None:
            raise ValueError("the aligner has no vocabulary map: call use_vocab_map first")
        return PublishedAligner(self.source_tokens, self.target_tokens, source_marker=self.aligner.source_marker,
                                target_marker=self.aligner.target_marker,
                                vocab_map=self.aligner.vocab_map.target_ids.tolist())

    def brute_force_vocab_map(
        self, source_ids: np.ndarray, *, chunk_rows: int = 250
    ) -> tuple[np.ndarray, np.ndarray]:
        """The MinED image of ``source_ids`` the way a user would compute it with rapidfuzz today.

        ``rapidfuzz.process.cdist`` of the marker-swapped source strings against the whole target
        vocabulary (``workers=-1``, ``int32``), ``chunk_rows`` source rows at a time, then ``argmin``:
        its first minimum is the lowest target id, as MinED's tie rule says, and an exact match is
        the only way to distance 0. Returns ``(target_ids, distances)``, both int32.
        """
        from rapidfuzz.distance import Levenshtein
        from rapidfuzz.process import cdist

        swapped = [self.source_tokens[i].replace(self.aligner.source_marker, self.aligner.target_marker)
                   for i in source_ids]
        images, distances = [], []
        for start in range(0, len(swapped), chunk_rows):
            matrix = cdist(swapped[start:start + chunk_rows], self.target_tokens, scorer=Levenshtein.distance,
                           workers=-1, dtype=np.int32)
            best = matrix.argmin(axis=1)
            images.append(best.astype(np.int32))
            distances.append(matrix[np.arange(len(best)), best])
        return np.concatenate(images), np.concatenate(distances).astype(np.int32)


def synthetic_topk(source_ids: np.ndarray, vocab_size: int, *, seed: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``[n, TOP_K]`` candidate ids and logits: the next source token first (the last position has
    none), then random source ids; logits normal, sorted in decreasing order."""
    rng = np.random.default_rng(list(seed))
    n = len(source_ids)
    topk_ids = rng.integers(0, vocab_size, size=(n, TOP_K), dtype=np.int32)
    topk_ids[:-1, 0] = source_ids[1:]
    logits = np.sort(rng.normal(size=(n, TOP_K)).astype(np.float32) * 3.0, axis=1)[:, ::-1]
    return topk_ids, np.ascontiguousarray(logits)


def differing_positions(batch: ff.AlignedBatch, b: int, expected: Sequence[tuple[int, list]]) -> int:
    """Number of target positions where text ``b`` of ``batch`` differs from the reference's output
    ``expected`` (status, ids or logits); a length difference counts every missing position."""
    actual = reference_positions(batch, b)
    return sum(x != y for x, y in zip(actual, expected, strict=False)) + abs(len(actual) - len(expected))


def best_time(action: Callable[[], T], *, repeats: int) -> tuple[float, T]:
    """The fastest of ``repeats`` runs of ``action`` in seconds, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    return min(times), result


def dense_matrix_bytes(blocks: Sequence[Block]) -> int:
    """Bytes that one 4-byte dense ``n x m`` cost matrix per block would take, over all ``blocks``."""
    return sum(4 * len(block.source_ids) * len(block.target_ids) for block in blocks)


def alignment_peak_memory(*, length: int, count: int, workers: int, timeout: float = 900) -> dict[str, Any]:
    """Runs :func:`measure_alignment_memory` in a fresh Python process and returns its figures."""
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "memory", f"--length={length}", f"--count={count}",
         f"--workers={workers}"],
        capture_output=True, text=True, check=True, timeout=timeout,
    )
    return json.loads(completed.stdout)


def measure_alignment_memory(*, length: int, count: int, workers: int) -> dict[str, Any]:
    """Peak resident memory of one ``align_batch`` call above the memory in use before it.

    Meant for a fresh process. The inputs, the tokenizers and the vocabulary map are loaded first;
    then the kernel's resident-set high-water mark (``VmHWM``, what ``getrusage`` reports as
    ``ru_maxrss``) is reset through ``/proc/self/clear_refs``, so that loading does not mask the
    call's peak, and read again after the call. ``loading_peak_mib`` is ``ru_maxrss`` before the
    reset; ``extra_mib`` is the peak after the call minus the resident set before it (the output
    arrays are part of it); ``inputs_mib`` is the size of the input arrays as given;
    ``dense_matrix_mib`` that of one 4-byte ``n x m`` matrix per block.
    """
    workload = AlignmentWorkload()
    workload.use_vocab_map(workload.build_vocab_map())
    blocks = workload.blocks(length, count)
    gc.collect()
    loading_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    Path("/proc/self/clear_refs").write_text("5")
    before = _proc_status_bytes("VmRSS")
    start = time.perf_counter()
    batch = workload.align(blocks, workers=workers)
    seconds = time.perf_counter() - start
    peak = _proc_status_bytes("VmHWM")
    outputs = {name: getattr(batch, name) for name in ("ids", "logits", "status", "lengths")}
    return {
        "length": length,
        "count": count,
        "workers": workers,
        "seconds": seconds,
        "target_tokens": target_tokens(blocks),
        "source_tokens": sum(len(block.source_ids) for block in blocks),
        "loading_peak_mib": loading_peak / 2**20,
        "baseline_mib": before / 2**20,
        "peak_mib": peak / 2**20,
        "extra_mib": (peak - before) / 2**20,
        "outputs": {name: {"shape": list(array.shape), "dtype": str(array.dtype), "mib": array.nbytes / 2**20}
                    for name, array in outputs.items()},
        "outputs_mib": sum(array.nbytes for array in outputs.values()) / 2**20,
        "inputs_mib": sum(block.target_ids.nbytes + block.source_ids.nbytes + block.topk_ids.nbytes
                          + block.topk_logits.nbytes for block in blocks) / 2**20,
        "dense_matrix_mib": dense_matrix_bytes(blocks) / 2**20,
        "largest_dense_matrix_mib": max(dense_matrix_bytes([block]) for block in blocks) / 2**20,
    }


def _proc_status_bytes(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE).group(1)) * 1024


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Peak memory of one align_batch call, as JSON.")
    parser.add_argument("what", choices=["memory"])
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    options = parser.parse_args(argv)
    print(json.dumps(measure_alignment_memory(length=options.length, count=options.count, workers=options.workers)))


if __name__ == "__main__":
    main()
