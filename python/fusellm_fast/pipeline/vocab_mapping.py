"""Stage 1 of the pipeline: the MinED map from a source vocabulary to the target's (optional: the
align stage builds it when not given)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..hf import load_tokenizer, tokenizer_vocabulary
from ..vocab_map import VocabMap
from .storage import PathLike
from .summaries import VocabMapSummary, write_summary

__all__ = ["build_vocab_map"]


def build_vocab_map(
    source: PathLike,
    target: PathLike,
    output: PathLike,
    *,
    workers: int = -1,
) -> VocabMapSummary:
    """Builds the MinED map from a source tokenizer's vocabulary to a target's and saves it.

    Args:
        source: a directory with the source tokenizer (a model directory will do).
        target: a directory with the target tokenizer.
        output: the map file to write (``.npz``, see :meth:`VocabMap.save`); the summary goes
            next to it as ``<output>.json``.
        workers: threads; -1 uses every core.

    Returns:
        The summary, with the exact-match share and a histogram of the edit distances.

    Raises:
        PipelineError: a tokenizer cannot be loaded.

    >>> summary = build_vocab_map("source_model", "target_model", "map.npz")  # doctest: +SKIP
    >>> summary.exact_share  # doctest: +SKIP
    0.71
    """
    started = time.perf_counter()
    source_tokens = tokenizer_vocabulary(load_tokenizer(source, arg="SOURCE"), "SOURCE")
    target_tokens = tokenizer_vocabulary(load_tokenizer(target, arg="TARGET"), "TARGET")
    vocab_map = VocabMap.build(source_tokens, target_tokens, workers=workers)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    vocab_map.save(output)
    distances = np.minimum(vocab_map.distances, 8)
    counts = np.bincount(distances, minlength=9)
    summary = VocabMapSummary(
        source_size=vocab_map.source_size,
        target_size=len(target_tokens),
        source_marker=vocab_map.source_marker,
        target_marker=vocab_map.target_marker,
        exact_share=vocab_map.exact_share,
        distance_histogram={(str(d) if d < 8 else "8+"): int(c) for d, c in enumerate(counts)},
        seconds=time.perf_counter() - started,
    )
    write_summary(output.parent, summary, name=output.name + ".json")
    return summary
