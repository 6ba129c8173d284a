"""The teacher passes of a target and its sources, opened together, and the alignment of any range
of their texts into fusion examples: what ``align`` writes to disk and what ``train`` computes on
the fly in its data-loader workers.

A source's MinED map to the target is built once and cached next to the source's teacher pass
(``vocab-maps/``), keyed by the fingerprints of both tokenizers and the normalization, so that
adding a source or changing the target writes nothing into any other directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .. import _core
from .._choices import CeLevel, CeUnit
from ..alignment import AlignedBatch, Aligner, align_batch
from ..errors import MarkerDetectionError, VocabMapError
from ..fusion_examples import build_fusion_examples
from ..hf import token_byte_lengths
from ..teacher_records import VALUES_ARE
from ..vocab_map import Normalize, VocabMap
from .errors import PipelineError
from .extraction import ExtractedPass, load_extracted
from .storage import PathLike, replace_atomically

__all__ = ["AlignmentOptions", "TeacherPasses", "open_teacher_passes"]

_MAPS_DIR = "vocab-maps"


@dataclass(frozen=True)
class AlignmentOptions:
    """How sources are aligned to the target and what the fusion examples hold; the options of
    :func:`~fusellm_fast.pipeline.align` (see there) and of ``train`` on teacher passes.

    >>> AlignmentOptions(method="boundary").pairing()["method"]
    'boundary'
    """

    vocab_align: Literal["soft", "hard"] = "soft"
    onehot: Literal["next", "current"] = "next"
    ce_unit: CeUnit = "token"
    ce_level: CeLevel = "sequence"
    method: Literal["dtw", "offsets", "boundary"] = "dtw"
    candidates: Literal["mined", "prefix"] = "mined"
    normalize: Normalize = "marker"

    def pairing(self) -> dict[str, str]:
        """The keyword options of :func:`~fusellm_fast.align_batch`."""
        return {"vocab_align": self.vocab_align, "onehot": self.onehot, "method": self.method,
                "candidates": self.candidates}

    def examples(self) -> dict[str, str]:
        """The keyword options of :func:`~fusellm_fast.fusion_examples.build_fusion_examples`."""
        return {"ce_unit": self.ce_unit, "ce_level": self.ce_level}


class TeacherPasses:
    """The target's and the sources' teacher passes with an aligner per source (see
    :func:`open_teacher_passes`). Read-only, so that forked data-loader workers share it."""

    values_are = VALUES_ARE

    def __init__(self, target: ExtractedPass, sources: Sequence[ExtractedPass], aligners: Sequence[Aligner],
                 options: AlignmentOptions) -> None:
        self.target, self.sources, self.aligners, self.options = target, list(sources), list(aligners), options
        self.byte_lengths = None
        if options.ce_level == "token" and options.ce_unit == "byte":
            self.byte_lengths = [token_byte_lengths(p.tokenizer) for p in (target, *sources)]
        self.lengths = target.records.lengths()
        """int64 ``[texts]``: the target tokens of every text."""

    def __len__(self) -> int:
        return len(self.target.records)

    def aligned(self, start: int, stop: int, *, workers: int = 1) -> tuple[list[dict[str, np.ndarray]],
                                                                          list[AlignedBatch]]:
        """The fusion examples of texts ``start`` to ``stop`` and each source's aligned batch."""
        own = self.target.records.rows(start, stop)
        theirs = [source.records.rows(start, stop) for source in self.sources]
        batches = [
            align_batch(aligner, [r["input_ids"] for r in own], [r["input_ids"] for r in rows],
                        [r["topk_ids"] for r in rows], [r["topk_log_probs"] for r in rows], workers=workers,
                        values=VALUES_ARE, **self.options.pairing())
            for aligner, rows in zip(self.aligners, theirs)
        ]
        examples = build_fusion_examples(own, batches, theirs, byte_lengths=self.byte_lengths,
                                         **self.options.examples())
        return examples, batches

    def examples(self, first: int, last: int) -> list[dict[str, np.ndarray]]:
        """The fusion examples of texts ``first`` to ``last``, aligned on the calling thread."""
        return self.aligned(first, last)[0]


def open_teacher_passes(target: PathLike, sources: Sequence[PathLike], options: AlignmentOptions, *,
                        vocab_maps: Sequence[PathLike | None] | None = None, arg: str = "--source",
                        target_arg: str = "--target") -> TeacherPasses:
    """Loads the teacher passes, checks that they cover the same corpus, and prepares an aligner per
    source with what ``options`` need (the MinED map, from ``vocab_maps``, the source's cache or
    built and cached; the prefix map), so that later alignments, in any process, only align.

    Raises:
        PipelineError: a directory is missing, unfinished or of an older format, the passes were
            made over different corpora, or a map file does not fit.
    """
    if not sources:
        raise PipelineError(f"{arg}: give at least one source model's teacher directory")
    vocab_maps = list(vocab_maps) if vocab_maps else [None] * len(sources)
    if len(vocab_maps) != len(sources):
        raise PipelineError(f"--vocab-map: got {len(vocab_maps)} maps for {len(sources)} sources; give one per source")
    target_pass = load_extracted(target, arg=target_arg)
    source_passes = [load_extracted(s, arg=arg) for s in sources]
    for source_pass in source_passes:
        if source_pass.identity["corpus_fingerprint"] != target_pass.identity["corpus_fingerprint"]:
            raise PipelineError(
                f"{arg}: {str(source_pass.directory)!r} was extracted from another corpus than the target "
                f"{str(target_pass.directory)!r}; run every model over the same corpus"
            )
    aligners = [_aligner(source_pass, target_pass, map_path, options, arg)
                for source_pass, map_path in zip(source_passes, vocab_maps)]
    return TeacherPasses(target_pass, source_passes, aligners, options)


def _aligner(source_pass: ExtractedPass, target_pass: ExtractedPass, map_path: PathLike | None,
             options: AlignmentOptions, arg: str) -> Aligner:
    """The aligner of one source, with everything the options need already built."""
    cache = _cached_map_path(source_pass, target_pass, options.normalize)
    # A cached map only where the options use one: in soft mode a map that is there is used by
    # every method (for texts that fall back to dtw), which would make results depend on the cache.
    use_cache = map_path is None and _core.needs_vocab_map(vocab_align=options.vocab_align, method=options.method,
                                                           candidates=options.candidates)
    vocab_map = None
    try:
        if map_path is not None:
            if not Path(map_path).is_file():
                raise PipelineError(f"--vocab-map: {str(map_path)!r} does not exist")
            vocab_map = VocabMap.load(map_path)
        elif use_cache and cache.is_file():
            vocab_map = VocabMap.load(cache)
        aligner = Aligner.from_tokenizers(source_pass.tokenizer, target_pass.tokenizer, vocab_map=vocab_map,
                                          normalize=options.normalize)
    except VocabMapError as error:
        raise PipelineError(f"--vocab-map: {str(map_path or cache)!r} {error}") from None
    except MarkerDetectionError as error:
        raise PipelineError(f"{arg}: {str(source_pass.directory)!r}: {error}") from None
    # Aligning one text builds whatever maps the options use; those built stay in the aligner.
    if len(target_pass.records):
        own, theirs = target_pass.records[0], source_pass.records[0]
        align_batch(aligner, [own["input_ids"]], [theirs["input_ids"]], [theirs["topk_ids"]],
                    [theirs["topk_log_probs"]], workers=-1, values=VALUES_ARE, **options.pairing())
    if use_cache and vocab_map is None and aligner.vocab_map is not None:
        cache.parent.mkdir(exist_ok=True)
        built = aligner.vocab_map
        replace_atomically(cache, built.save)
    return aligner


def _cached_map_path(source_pass: ExtractedPass, target_pass: ExtractedPass, normalize: str) -> Path:
    """Where a source's map to a target is cached: in the source's directory, named by both
    tokenizers' fingerprints."""
    source_print = source_pass.identity["tokenizer_fingerprint"][:16]
    target_print = target_pass.identity["tokenizer_fingerprint"][:16]
    return source_pass.directory / _MAPS_DIR / f"{source_print}-to-{target_print}-{normalize}.npz"

