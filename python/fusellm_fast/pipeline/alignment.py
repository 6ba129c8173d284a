"""Stage 3 of the pipeline: every source's teacher records carried over to the target's
tokenization and vocabulary, written as fusion examples.

Each batch of texts is aligned with :func:`fusellm_fast.align_batch` on all cores (Rust threads)
and saved as ``output/data/part-PPPPPP/``, a ``datasets`` directory with one row per text
(:func:`load_aligned` joins them):

- ``text_index`` int64; ``input_ids`` int32 ``[L]``: the target tokenization;
- ``teacher_ids`` int32 ``[M, L, K]`` and ``teacher_logits`` float32 ``[M, L, K]``: model 0 is
  the target's own top-k, models 1..M-1 the sources in the order given, aligned onto the target
  vocabulary; ``-1`` marks an empty slot. The values are log-probabilities under each model's
  full softmax (``values_are: "log_probs"`` in the summary), 0.0 for a one-hot stand-in;
- ``teacher_ce`` float32 ``[M]`` (``[M, L]`` at ``ce_level="token"``): each model's CE on the
  text, in the unit ``ce_unit``.

These are the fusion examples of :mod:`fusellm_fast.fusion_examples`; ``output/summary.json`` is an
:class:`AlignSummary`. ``train`` computes the same examples on the fly from the teacher passes, so
this stage is optional: a precompute, and a way to inspect the alignment.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from .._choices import CeLevel, CeUnit
from ..alignment import Aligner
from ..vocab_map import Normalize
from .errors import PipelineError
from .progress import progress_bar, show_token_rate
from .storage import PathLike, nested_array, save_atomically
from .summaries import AlignSummary, read_summary, write_summary
from .teacher_passes import AlignmentOptions, TeacherPasses, open_teacher_passes

__all__ = ["align", "load_aligned"]

_EXAMPLE_COLUMNS = ("input_ids", "teacher_ids", "teacher_logits", "teacher_ce")


def align(
    target: PathLike,
    sources: Sequence[PathLike],
    output: PathLike,
    *,
    vocab_maps: Sequence[PathLike | None] | None = None,
    vocab_align: Literal["soft", "hard"] = "soft",
    onehot: Literal["next", "current"] = "next",
    ce_unit: CeUnit = "token",
    ce_level: CeLevel = "sequence",
    method: Literal["dtw", "offsets", "boundary"] = "dtw",
    candidates: Literal["mined", "prefix"] = "mined",
    normalize: Normalize = "marker",
    batch_texts: int = 256,
    workers: int = -1,
    show_progress: bool = True,
) -> AlignSummary:
    """Aligns every source's teacher records to the target's and writes fusion examples, in the
    format described in :mod:`fusellm_fast.pipeline.alignment`.

    Args:
        target: the target model's teacher directory (from :func:`extract`).
        sources: the source models' teacher directories.
        output: the directory to write; ``output/summary.json`` is an :class:`AlignSummary`.
        vocab_maps: per source, a map file from :func:`build_vocab_map` or ``None`` to use the
            one cached in the source's directory, or build and cache it there.
        vocab_align: ``"soft"`` (MinED map, the paper's default) or ``"hard"``.
        onehot: where a one-hot stand-in puts its mass: ``"next"`` target token (correct) or
            ``"current"`` (the published code's off-by-one).
        ce_unit: ``"token"``: each model's mean NLL per token of its own tokenization (the
            paper's CE); ``"byte"``: its summed NLL per byte of text, which ranks models with
            different tokenizers fairly.
        ce_level: ``"sequence"``: one CE per text and model (the paper); ``"token"``: one per
            target position, carried over from each source through the alignment (see
            :func:`~fusellm_fast.fusion_examples.build_fusion_examples`); train it with ``level="token"``.
        method, candidates: as in :func:`~fusellm_fast.align_batch`.
        normalize: the token normalization of the MinED map and of ``dtw``'s costs, as in
            :class:`~fusellm_fast.Aligner`.
        batch_texts: texts per :func:`~fusellm_fast.align_batch` call.
        workers: threads; -1 uses every core.
        show_progress: draw a progress bar.

    Returns:
        The summary, with each source's match rate.

    Raises:
        PipelineError: a directory is missing, unfinished or of an older format, or the passes
            were made over different corpora.

    >>> align("teacher/target", ["teacher/a", "teacher/b"], "aligned")  # doctest: +SKIP
    AlignSummary(texts=..., sources=[{'directory': 'teacher/a', 'matched_rate': 0.58, ...}, ...])
    """
    started = time.perf_counter()
    options = AlignmentOptions(vocab_align=vocab_align, onehot=onehot, ce_unit=ce_unit, ce_level=ce_level,
                               method=method, candidates=candidates, normalize=normalize)
    passes = open_teacher_passes(target, sources, options, vocab_maps=vocab_maps)
    counts, target_tokens = _write_parts(Path(output), passes, batch_texts=batch_texts, workers=workers,
                                         show_progress=show_progress)
    seconds = time.perf_counter() - started
    summary = AlignSummary(
        texts=len(passes),
        target_tokens=target_tokens,
        sources=[_source_report(source, c, aligner) for source, c, aligner in zip(sources, counts, passes.aligners)],
        **asdict(options),
        values_are=passes.values_are,
        target_tokenizer_fingerprint=passes.target.identity["tokenizer_fingerprint"],
        corpus_fingerprint=passes.target.identity["corpus_fingerprint"],
        seconds=seconds,
        tokens_per_second=target_tokens / seconds if seconds else 0.0,
    )
    write_summary(output, summary)
    return summary


def _write_parts(output: Path, passes: TeacherPasses, *, batch_texts: int, workers: int,
                 show_progress: bool) -> tuple[list[dict[str, Any]], int]:
    """Aligns and saves the texts batch by batch; per source its summed counts, and the target tokens."""
    import pyarrow as pa

    total = len(passes)
    counts = [_zero_counts() for _ in passes.sources]
    output.mkdir(parents=True, exist_ok=True)
    # Each batch goes to disk as its own part, so that memory holds one batch whatever the corpus size.
    parts = output / "data"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir()
    target_tokens = 0
    text_index = passes.target.records.column("text_index")
    with progress_bar(total, "align", "text", show=show_progress) as bar:
        for start in range(0, total, batch_texts):
            rows, batches = passes.aligned(start, start + batch_texts, workers=workers)
            for source_counts, aligned in zip(counts, batches):
                for key in source_counts:
                    source_counts[key] += getattr(aligned.counts, key)
            table = {"text_index": pa.array(text_index[start : start + len(rows)], pa.int64())}
            table.update({key: nested_array([row[key] for row in rows]) for key in _EXAMPLE_COLUMNS})
            save_atomically(pa.table(table), parts / f"part-{start // batch_texts:06d}")
            target_tokens += int(sum(len(row["input_ids"]) for row in rows))
            bar.update(len(rows))
            show_token_rate(bar, target_tokens)
    return counts, target_tokens


def _zero_counts() -> dict[str, Any]:
    return {"matched": 0, "onehot": 0, "empty": 0, "dropped_candidates": 0, "positions": 0, "fallback_texts": 0,
            "kept_mass": 0.0}


def _source_report(source: PathLike, counts: dict[str, Any], aligner: Aligner) -> dict[str, Any]:
    """One source's entry of :attr:`AlignSummary.sources`."""
    return {
        "directory": str(source),
        "matched_rate": counts["matched"] / counts["positions"] if counts["positions"] else 0.0,
        "kept_mass_rate": counts["kept_mass"] / counts["matched"] if counts["matched"] else 0.0,
        **counts,
        "vocab_map_exact_share": aligner.vocab_map.exact_share if aligner.vocab_map else None,
    }


def load_aligned(directory: PathLike, *, arg: str) -> tuple[Any, dict[str, Any]]:
    """The fusion examples written by :func:`align` (all parts, memory-mapped) and their summary."""
    import datasets

    directory = Path(directory)
    if not directory.is_dir():
        raise PipelineError(f"{arg}: {str(directory)!r} is not a directory")
    summary = read_summary(directory, arg=arg)
    if "target_tokenizer_fingerprint" not in summary or not (directory / "data").is_dir():
        raise PipelineError(f"{arg}: {str(directory)!r} is not the output of `fusellm-fast align`")
    parts = sorted((directory / "data").glob("part-*"))
    if not parts:
        raise PipelineError(f"{arg}: {str(directory)!r} holds no aligned texts")
    return datasets.concatenate_datasets([_load_part(part, arg) for part in parts]), summary


def _load_part(part: Path, arg: str) -> Any:
    """One saved part of aligned rows, or an error naming it when it cannot be read."""
    import datasets

    try:
        return datasets.load_from_disk(str(part))
    except Exception as error:  # a truncated or altered file fails in pyarrow, json or datasets
        first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise PipelineError(f"{arg}: {str(part)!r} cannot be read ({first}); run `fusellm-fast align` "
                            "again") from None
