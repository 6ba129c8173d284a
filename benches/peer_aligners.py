"""Token aligners from other packages that a user would try instead of FuseLLM's DTW, called as
their own documentation and source show, for the side-by-side rows of ``baseline_report.py``.

Every peer gets the same input as the published DTW's costs: the target and the source token
strings of one text, each with its own space marker deleted (``Ġthe`` and ``▁the`` both become
``the``). Every peer answers, for each target position, the source positions it pairs with it
(:data:`Alignment`). No peer remaps top-k lists, so its match rate is read by putting its
alignment through the published Step 3 (``PublishedAligner.remap``, the same MinED map and rule):
a target position counts as matched when exactly one source position is paired with it and that
source token matches the target token, as ``AlignmentCounts.matched_rate`` counts it.

- ``pytokenizations`` (PyPI, Rust): ``tokenizations.get_alignments(a, b)`` lower-cases and
  NFKD-normalizes every token, diffs the two concatenations character by character (Myers'
  algorithm) and returns ``(a2b, b2a)``: for each token of ``a``, the tokens of ``b`` that hold the
  characters the diff pairs with its own. ``a2b`` with ``a`` = target is the alignment; a target
  token none of whose characters is paired (``<0x0A>`` against ``Ċ``) gets no source position.
- ``merge-tokenizers`` (PyPI): an aligner's ``align_pair(TokenizedPair(tokens_a=target,
  tokens_b=source))`` returns an ``Alignment`` whose ``(position_a, positions_b)`` pairs list, per
  target position, the source positions paired with it. Three aligners: ``DTWAligner("levenshtein")``
  (C DTW over a distance matrix that Python fills with cached ``Levenshtein.distance`` calls, no
  band), ``FastDTWAligner("levenshtein")`` (the ``fastdtw`` package on bag-of-characters vectors,
  radius 1) and ``TamuheyAligner()`` (``spacy-alignments``, the Myers-diff aligner of
  ``pytokenizations``). It lower-cases and NFKD-normalizes both sides first.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Alignment = list[list[int]]
"""For each target position, the sorted source positions paired with it."""


@dataclass(frozen=True)
class Peer:
    """One peer aligner, ready to call."""

    name: str
    package: str
    """The PyPI distribution it comes from."""
    align: Callable[[Sequence[str], Sequence[str]], Alignment]
    """``align(target_strs, source_strs)``: the alignment of one text."""
    reset: Callable[[], None] = field(default=lambda: None)
    """Empties the peer's caches, so that a timed call starts as a fresh process would."""

    @property
    def version(self) -> str:
        return importlib.metadata.version(self.package)


def available_peers() -> tuple[list[Peer], dict[str, str]]:
    """The peers that import here, and for each one that does not, the reason."""
    peers, missing = [], {}
    for package, make in (("pytokenizations", _pytokenizations), ("merge-tokenizers", _merge_tokenizers)):
        try:
            peers.extend(make())
        except ImportError as exc:
            missing[package] = f"{type(exc).__name__}: {exc}"
    return peers, missing


def _pytokenizations() -> list[Peer]:
    import tokenizations

    def align(target_strs: Sequence[str], source_strs: Sequence[str]) -> Alignment:
        target_to_source, _ = tokenizations.get_alignments(list(target_strs), list(source_strs))
        return [sorted(positions) for positions in target_to_source]

    return [Peer("pytokenizations `get_alignments`", "pytokenizations", align)]


def _merge_tokenizers() -> list[Peer]:
    from merge_tokenizers import DTWAligner, FastDTWAligner, TamuheyAligner
    from merge_tokenizers.types import TokenizedPair
    from merge_tokenizers.utils import distances

    def aligning_with(aligner) -> Callable[[Sequence[str], Sequence[str]], Alignment]:
        def align(target_strs: Sequence[str], source_strs: Sequence[str]) -> Alignment:
            pairs = aligner.align_pair(TokenizedPair(tokens_a=list(target_strs), tokens_b=list(source_strs)))
            return pairs_to_alignment(pairs, len(target_strs), len(source_strs))
        return align

    return [
        Peer("merge-tokenizers `DTWAligner` (C DTW)", "merge-tokenizers", aligning_with(DTWAligner("levenshtein")),
             reset=distances.levenshtein_distance.cache_clear),
        Peer("merge-tokenizers `FastDTWAligner`", "merge-tokenizers", aligning_with(FastDTWAligner("levenshtein"))),
        Peer("merge-tokenizers `TamuheyAligner` (Myers diff)", "merge-tokenizers", aligning_with(TamuheyAligner())),
    ]


def pairs_to_alignment(pairs, target_length: int, source_length: int) -> Alignment:
    """An iterable of ``(target position, [source positions])`` as an :data:`Alignment`.

    A target position that is absent gets no source position; a pair outside either sequence is
    an error (the peer would then not be aligning these two texts).
    """
    alignment: Alignment = [[] for _ in range(target_length)]
    for target_position, source_positions in pairs:
        if not 0 <= target_position < target_length or any(not 0 <= i < source_length for i in source_positions):
            raise ValueError(f"pair ({target_position}, {source_positions}) is outside {target_length} target "
                             f"and {source_length} source positions")
        alignment[target_position] = sorted(set(alignment[target_position]) | set(source_positions))
    return alignment
