"""Step 3 of FuseLLM: one text's source top-k lists moved onto its target tokenization.

:func:`align_text` aligns the two tokenizations with :func:`~fusellm_fast.reference.token_alignment.dtw`
(Step 2), then takes each target position in turn: the match test (with the published quirk at the
first position), the mapping of the matched position's candidates into the target vocabulary, or a
one-hot stand-in. :func:`align_batch` does the same for every text of a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ._checks import VOCAB_ALIGN_CHOICES, check_choice, checked_text
from .levenshtein import Distance, edit_distance

# SENTENCEPIECE_MARKER: the docstring examples name it.
from .markers import BYTE_LEVEL_MARKER, SENTENCEPIECE_MARKER  # noqa: F401
from .token_alignment import dtw
from .vocab_mapping import _lowest_id_of_each_string, mined_map

__all__ = ["STATUS_EMPTY", "STATUS_MATCHED", "STATUS_ONEHOT", "AlignedPosition", "align_batch", "align_text"]

STATUS_EMPTY = 0
"""The position has no entries (every candidate dropped, or no next token for the stand-in)."""

STATUS_MATCHED = 1
"""The position carries the aligned source position's top-k list, remapped to target ids."""

STATUS_ONEHOT = 2
"""The position carries a one-hot stand-in on a target token with logit 1.0."""

AlignedPosition = tuple[int, list[tuple[int, float]]]
"""One target position: ``(status, entries)``, the entries ``(target_id, logit)`` pairs."""


def align_text(
    source_tokens: Sequence[str], target_tokens: Sequence[str], target_ids: Sequence[int], source_ids: Sequence[int],
    topk_ids: Sequence[Sequence[int]], topk_logits: Sequence[Sequence[float]], *, source_marker: str,
    target_marker: str, vocab_align: Literal["soft", "hard"] = "soft", onehot: Literal["next", "current"] = "next",
    vocab_map: Sequence[int] | None = None, distance: Distance = edit_distance,
) -> list[AlignedPosition]:
    """Moves one text's source top-k lists onto the target tokenization (Steps 2 and 3).

    The two tokenizations are aligned with :func:`dtw`. A target position aligned with exactly one
    source position whose token matches its own takes that position's top-k list, each candidate
    mapped to a target id; repeats of a target id are dropped, the first one kept. Every other
    target position gets a one-hot stand-in.

    A source token matches the target token ``t`` if, with its space marker replaced by the
    target's, it equals ``t`` or (``"soft"`` only) its MinED image is ``t``. As published, a
    byte-level source token at the first position gains the target marker if ``t`` starts with it.
    Candidates map to the target token with the identical string, or are dropped if there is none
    (``"hard"``), or map to their MinED image (``"soft"``).

    Args:
        source_tokens: The token string of every source id.
        target_tokens: The token string of every target id.
        target_ids: The text tokenized by the target.
        source_ids: The text tokenized by the source.
        topk_ids: For each source position, the source's candidate token ids; an id below 0 is an
            empty slot and is skipped.
        topk_logits: For each source position, the logits of those candidates.
        source_marker: The source vocabulary's leading-space marker.
        target_marker: The target vocabulary's leading-space marker.
        vocab_align: ``"soft"`` (MinED, the paper's default) or ``"hard"`` (identical strings).
        onehot: Where the stand-in puts its mass: ``"next"``, the next target token (none at the
            last position), or ``"current"``, the target token itself (the published
            implementation's off-by-one behaviour).
        vocab_map: The MinED image of every source id, as the first list returned by
            :func:`mined_map`. Computed when needed and not given.
        distance: The string distance for DTW and MinED; Levenshtein distance by default.

    Returns:
        For each target position, ``(status, entries)``: the status is :data:`STATUS_MATCHED`,
        :data:`STATUS_ONEHOT` or :data:`STATUS_EMPTY` (no entries), and the entries are
        ``(target_id, logit)`` pairs with the logits unchanged.

    Raises:
        ValueError: If ``vocab_align`` or ``onehot`` is not one of its choices, an id is outside
            its vocabulary, ``topk_ids`` or ``topk_logits`` does not have one row per source
            position of matching lengths, ``vocab_map`` does not have one entry per source id, or
            a marker is empty.
        TypeError: If an id is not an integer, a logit is not a real number, or a marker is not a
            ``str``.

    >>> source = ["\u2581the", "\u2581cat", "\u2581dog"]
    >>> target = ["\u0120the", "\u0120cat", "\u0120c", "at"]
    >>> align_text(source, target, [0, 1], [0, 1], [[1, 2], [0, 1]], [[2.0, 1.0], [0.5, 0.25]],
    ...            source_marker=SENTENCEPIECE_MARKER, target_marker=BYTE_LEVEL_MARKER,
    ...            vocab_align="hard")
    [(1, [(1, 2.0)]), (1, [(0, 0.5), (1, 0.25)])]
    >>> align_text(source, target, [0, 2, 3], [0, 1], [[1, 2], [0, 1]], [[2.0, 1.0], [0.5, 0.25]],
    ...            source_marker=SENTENCEPIECE_MARKER, target_marker=BYTE_LEVEL_MARKER,
    ...            vocab_align="hard")
    [(1, [(1, 2.0)]), (2, [(3, 1.0)]), (0, [])]
    """
    target_ids, source_ids, candidates_by_position, vocab_map = checked_text(
        source_tokens, target_tokens, target_ids, source_ids, topk_ids, topk_logits, vocab_map,
        vocab_align=vocab_align, onehot=onehot, source_marker=source_marker, target_marker=target_marker,
    )
    if vocab_align == "soft":
        if vocab_map is None:
            vocab_map = _mined_images(source_tokens, target_tokens, source_marker, target_marker, distance)
        vocabularies = _soft_vocabularies(source_tokens, target_tokens, vocab_map, source_marker, target_marker)
    else:
        vocabularies = _hard_vocabularies(source_tokens, target_tokens, source_marker, target_marker)
    aligned = dtw([source_tokens[s] for s in source_ids], [target_tokens[t] for t in target_ids],
                  source_marker=source_marker, target_marker=target_marker, distance=distance)
    result: list[AlignedPosition] = []
    for j, (target_id, sources) in enumerate(zip(target_ids, aligned)):
        if len(sources) == 1 and vocabularies.matches(source_ids[sources[0]], target_id, first=j == 0):
            result.append(vocabularies.remapped(candidates_by_position[sources[0]]))
        else:
            result.append(_stand_in(target_ids, j, onehot))
    return result


def align_batch(
    source_tokens: Sequence[str], target_tokens: Sequence[str], target_ids: Sequence[Sequence[int]],
    source_ids: Sequence[Sequence[int]], topk_ids: Sequence[Sequence[Sequence[int]]],
    topk_logits: Sequence[Sequence[Sequence[float]]], *, source_marker: str, target_marker: str,
    vocab_align: Literal["soft", "hard"] = "soft", onehot: Literal["next", "current"] = "next",
    vocab_map: Sequence[int] | None = None, distance: Distance = edit_distance,
) -> list[list[AlignedPosition]]:
    """Runs :func:`align_text` on every text of a batch, computing the MinED map at most once.

    Args:
        source_tokens: The token string of every source id.
        target_tokens: The token string of every target id.
        target_ids: For each text, its target tokenization.
        source_ids: For each text, its source tokenization.
        topk_ids: For each text, its source candidate ids, one row per source position.
        topk_logits: For each text, the logits of those candidates.
        source_marker: The source vocabulary's leading-space marker.
        target_marker: The target vocabulary's leading-space marker.
        vocab_align: ``"soft"`` or ``"hard"``, as in :func:`align_text`.
        onehot: ``"next"`` or ``"current"``, as in :func:`align_text`.
        vocab_map: The MinED image of every source id; computed when needed and not given.
        distance: The string distance for DTW and MinED; Levenshtein distance by default.

    Returns:
        For each text, what :func:`align_text` returns for it.

    Raises:
        ValueError: If the per-text arguments differ in length, or for any reason
            :func:`align_text` gives (the message then names the text's index).
        TypeError: For any reason :func:`align_text` gives (the message names the text's index).

    >>> align_batch(["a", "b"], ["a", "b"], [[0, 1], [1]], [[0, 1], [1]],
    ...             [[[1], [0]], [[0]]], [[[0.5], [0.25]], [[2.0]]],
    ...             source_marker=SENTENCEPIECE_MARKER, target_marker=SENTENCEPIECE_MARKER)
    [[(1, [(1, 0.5)]), (1, [(0, 0.25)])], [(1, [(0, 2.0)])]]
    """
    check_choice("vocab_align", vocab_align, VOCAB_ALIGN_CHOICES)
    text_count = len(target_ids)
    for name, per_text in (
        ("source_ids", source_ids),
        ("topk_ids", topk_ids),
        ("topk_logits", topk_logits),
    ):
        if len(per_text) != text_count:
            raise ValueError(f"{name} has {len(per_text)} texts but target_ids has {text_count}")
    if vocab_align == "soft" and vocab_map is None and text_count > 0:
        vocab_map = _mined_images(source_tokens, target_tokens, source_marker, target_marker, distance)
    options = {"source_marker": source_marker, "target_marker": target_marker, "vocab_align": vocab_align,
               "onehot": onehot, "vocab_map": vocab_map, "distance": distance}
    results = []
    for text_index in range(text_count):
        try:
            text = (target_ids[text_index], source_ids[text_index], topk_ids[text_index], topk_logits[text_index])
            results.append(align_text(source_tokens, target_tokens, *text, **options))
        except (TypeError, ValueError) as error:
            raise type(error)(f"text {text_index}: {error}") from error
    return results


@dataclass(frozen=True)
class _Vocabularies:
    """The two vocabularies as Step 3 compares them, under one ``vocab_align`` choice."""

    source_tokens: Sequence[str]
    target_tokens: Sequence[str]
    source_marker: str
    target_marker: str
    is_match: Callable[[str, str], bool]
    """Whether a source token, its marker replaced by the target's, matches a target token."""
    candidate_image: Callable[[int], int | None]
    """The target id a source candidate maps to; ``None`` drops it."""

    def matches(self, source_id: int, target_id: int, *, first: bool) -> bool:
        """The match test of the only source token aligned with a target token (``first``: at position 0)."""
        target = self.target_tokens[target_id]
        renamed = self.source_tokens[source_id].replace(self.source_marker, self.target_marker)
        # Byte-level tokenizers give the first word of a text no space marker; SentencePiece
        # ones do. The published code patches this at the first position only.
        if (
            self.source_marker == BYTE_LEVEL_MARKER
            and first
            and target.startswith(self.target_marker)
            and not renamed.startswith(self.target_marker)
        ):
            renamed = self.target_marker + renamed
        return self.is_match(renamed, target)

    def remapped(self, candidates: Iterable[tuple[int, float]]) -> AlignedPosition:
        """A matched position: its candidates mapped to target ids, repeats of an id dropped."""
        entries = _first_of_each_id((self.candidate_image(candidate), logit) for candidate, logit in candidates)
        return (STATUS_MATCHED if entries else STATUS_EMPTY, entries)


def _soft_vocabularies(
    source_tokens: Sequence[str], target_tokens: Sequence[str], vocab_map: list[int], source_marker: str,
    target_marker: str,
) -> _Vocabularies:
    """MinED: a match is the identical string or the MinED image; every candidate maps to its image."""
    # Keyed by renamed string as published: a later source id overwrites an earlier one.
    image_of_renamed = {
        token.replace(source_marker, target_marker): target_tokens[vocab_map[source_id]]
        for source_id, token in enumerate(source_tokens)
    }

    def is_match(renamed: str, target: str) -> bool:
        return renamed == target or image_of_renamed.get(renamed) == target

    def candidate_image(candidate: int) -> int | None:
        return vocab_map[candidate]

    return _Vocabularies(source_tokens, target_tokens, source_marker, target_marker, is_match, candidate_image)


def _hard_vocabularies(
    source_tokens: Sequence[str], target_tokens: Sequence[str], source_marker: str, target_marker: str
) -> _Vocabularies:
    """Identical strings: a match is the identical string; a candidate maps to the lowest target id
    of its string, marker replaced, or is dropped if there is none."""
    lowest_target_id = _lowest_id_of_each_string(target_tokens)

    def is_match(renamed: str, target: str) -> bool:
        return renamed == target

    def candidate_image(candidate: int) -> int | None:
        return lowest_target_id.get(source_tokens[candidate].replace(source_marker, target_marker))

    return _Vocabularies(source_tokens, target_tokens, source_marker, target_marker, is_match, candidate_image)


def _stand_in(target_ids: list[int], j: int, onehot: str) -> AlignedPosition:
    """An unmatched target position: a one-hot on the next target token (none after the last one),
    or with ``onehot="current"`` on the position's own token, as published."""
    if onehot == "current":
        return (STATUS_ONEHOT, [(target_ids[j], 1.0)])
    if j + 1 < len(target_ids):
        return (STATUS_ONEHOT, [(target_ids[j + 1], 1.0)])
    return (STATUS_EMPTY, [])


def _first_of_each_id(entries: Iterable[tuple[int | None, float]]) -> list[tuple[int, float]]:
    """Keeps the first entry for each target id, dropping entries without one."""
    kept: list[tuple[int, float]] = []
    seen: set[int] = set()
    for target_id, logit in entries:
        if target_id is None or target_id in seen:
            continue
        seen.add(target_id)
        kept.append((target_id, logit))
    return kept


def _mined_images(
    source_tokens: Sequence[str], target_tokens: Sequence[str], source_marker: str, target_marker: str,
    distance: Distance,
) -> list[int]:
    """The MinED image of every source id (the first list of :func:`mined_map`)."""
    return mined_map(source_tokens, target_tokens, source_marker=source_marker, target_marker=target_marker,
                     distance=distance)[0]

