"""Steps 2 and 3 of FuseLLM: align two tokenizations of the same texts and carry
the source model's top-k distributions over to the target vocabulary."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from . import _core
from ._checks import (
    check_token_strings,
    checked_choice,
    checked_workers,
    resolve_markers,
    sequences,
    topk_rows,
)
from .errors import InputTypeError, VocabMapError
from .vocab_map import VocabMap, vocabulary_fingerprint

__all__ = ["Aligner", "AlignedBatch", "AlignmentCounts", "PositionStatus", "align_batch"]


class PositionStatus(enum.IntEnum):
    """What :func:`align_batch` put at a target position (``AlignedBatch.status``)."""

    PADDING = _core.STATUS_PADDING
    """Beyond the text's length."""
    EMPTY = _core.STATUS_EMPTY
    """No distribution: the trainer falls back to the target model's own."""
    MATCHED = _core.STATUS_MATCHED
    """The aligned source position's top-k distribution."""
    ONEHOT = _core.STATUS_ONEHOT
    """A one-hot stand-in (logit 1.0 on one target token)."""


@dataclass(frozen=True)
class AlignmentCounts:
    """Position counts over a batch, to see whether alignment works."""

    positions: int
    matched: int
    onehot: int
    empty: int
    dropped_candidates: int
    """Matched positions that lost at least one top-k candidate (unmappable in
    hard mode, or a repeat of a target id already taken)."""

    @property
    def matched_rate(self) -> float:
        """Share of target positions that received a real source distribution."""
        return self.matched / self.positions if self.positions else 0.0


@dataclass(frozen=True)
class AlignedBatch:
    """Source distributions aligned to the target tokenization.

    Attributes:
        ids: int32 ``[batch, max target length, K]`` target-vocabulary ids, -1 in empty slots.
        logits: float32, same shape: the source logits of those ids (1.0 for a
            one-hot stand-in, 0.0 in empty slots).
        lengths: int64 ``[batch]`` target lengths.
        status: int8 ``[batch, max target length]``, a :class:`PositionStatus` per position.
        counts: totals of the statuses.
    """

    ids: np.ndarray
    logits: np.ndarray
    lengths: np.ndarray
    status: np.ndarray
    counts: AlignmentCounts

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


class Aligner:
    """Two vocabularies prepared for aligning any number of batches.

    Args:
        source_tokens: token string of every source id, in id order (what
            ``tokenizer.convert_ids_to_tokens(range(len(tokenizer)))`` gives).
        target_tokens: the same for the target vocabulary.
        source_marker: the source's space marker (``"▁"`` for SentencePiece, ``"Ġ"``
            for byte-level BPE); ``None`` detects it.
        target_marker: the same for the target.
        vocab_map: a MinED map of these two vocabularies; ``None`` builds it on
            first use in soft mode and keeps it.

    Raises:
        InputTypeError: a vocabulary is not a sequence of strings.
        MarkerDetectionError: a marker is ``None`` and cannot be detected.
        VocabMapError: ``vocab_map`` belongs to other vocabularies or markers.

    An Aligner is immutable apart from its lazily built map, and safe to share
    between threads.

    >>> aligner = Aligner(["Ġthe", "Ġcat", "Ġc", "at"], ["▁the", "▁cat", "▁c", "at"])
    >>> aligner.source_marker, aligner.target_marker
    ('Ġ', '▁')
    """

    def __init__(
        self,
        source_tokens: Sequence[str],
        target_tokens: Sequence[str],
        *,
        source_marker: str | None = None,
        target_marker: str | None = None,
        vocab_map: VocabMap | None = None,
    ) -> None:
        source_tokens = check_token_strings(source_tokens, "source_tokens")
        target_tokens = check_token_strings(target_tokens, "target_tokens")
        source_marker, target_marker = resolve_markers(source_tokens, target_tokens, source_marker, target_marker)
        self._source_fingerprint = vocabulary_fingerprint(source_tokens)
        self._target_fingerprint = vocabulary_fingerprint(target_tokens)
        self._core = _core.Aligner(source_tokens, target_tokens, source_marker, target_marker)
        self._vocab_map: VocabMap | None = None
        if vocab_map is not None:
            self._use_vocab_map(vocab_map)

    @classmethod
    def from_tokenizers(
        cls,
        source_tokenizer: Any,
        target_tokenizer: Any,
        *,
        source_marker: str | None = None,
        target_marker: str | None = None,
        vocab_map: VocabMap | None = None,
    ) -> Aligner:
        """An Aligner for two Hugging Face tokenizers (anything with
        ``convert_ids_to_tokens`` and ``len()``), added tokens included.

        Ids the tokenizer has no string for become unique placeholders that match nothing.
        """
        return cls(
            tokenizer_vocabulary(source_tokenizer, "source_tokenizer"),
            tokenizer_vocabulary(target_tokenizer, "target_tokenizer"),
            source_marker=source_marker,
            target_marker=target_marker,
            vocab_map=vocab_map,
        )

    @property
    def source_marker(self) -> str:
        return self._core.source_marker

    @property
    def target_marker(self) -> str:
        return self._core.target_marker

    @property
    def source_size(self) -> int:
        return self._core.source_size

    @property
    def target_size(self) -> int:
        return self._core.target_size

    @property
    def vocab_map(self) -> VocabMap | None:
        """The MinED map, or ``None`` until built or given."""
        return self._vocab_map

    def build_vocab_map(self, *, workers: int = -1) -> VocabMap:
        """Builds the MinED map unless present, and returns it."""
        if self._vocab_map is None:
            target_ids, distances = self._core.ensure_vocab_map(workers=checked_workers(workers))
            self._vocab_map = self._wrap_map(target_ids, distances)
        return self._vocab_map

    def _wrap_map(self, target_ids: np.ndarray, distances: np.ndarray) -> VocabMap:
        target_ids.flags.writeable = False
        distances.flags.writeable = False
        return VocabMap(target_ids, distances, self.source_marker, self.target_marker,
                        self._source_fingerprint, self._target_fingerprint)

    def _use_vocab_map(self, vocab_map: VocabMap) -> None:
        if not isinstance(vocab_map, VocabMap):
            raise InputTypeError(f"vocab_map: must be a VocabMap or None, got {type(vocab_map).__name__}")
        mine = (self._source_fingerprint, self._target_fingerprint, self.source_marker, self.target_marker)
        theirs = (vocab_map.source_fingerprint, vocab_map.target_fingerprint,
                  vocab_map.source_marker, vocab_map.target_marker)
        if mine != theirs:
            what = [name for name, a, b in zip(("source vocabulary", "target vocabulary", "source marker",
                                                "target marker"), mine, theirs) if a != b]
            raise VocabMapError(f"vocab_map: built for another {', '.join(what)} than this aligner's")
        self._core.set_vocab_map(vocab_map.target_ids, vocab_map.distances)
        self._vocab_map = vocab_map


def tokenizer_vocabulary(tokenizer: Any, arg: str) -> list[str]:
    """Token strings of every id of a Hugging Face tokenizer, added tokens included."""
    if not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise InputTypeError(f"{arg}: must be a tokenizer with convert_ids_to_tokens, got {type(tokenizer).__name__}")
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [t if isinstance(t, str) else f"\x00<no token for id {i}>" for i, t in enumerate(tokens)]


def align_batch(
    aligner: Aligner,
    target_ids: Any,
    source_ids: Any,
    source_topk_ids: Any,
    source_topk_logits: Any,
    *,
    vocab_align: Literal["soft", "hard"] = "soft",
    onehot: Literal["next", "current"] = "next",
    workers: int = -1,
    target_lengths: Any = None,
    source_lengths: Any = None,
) -> AlignedBatch:
    """Aligns the source model's top-k distributions to the target tokenization.

    Per text, the two tokenizations are aligned by dynamic time warping over
    token strings (edit-distance costs, space markers removed); a target position
    aligned to exactly one source position whose token matches (equal after the
    marker swap, or, in soft mode, equal through the MinED map) takes that
    position's top-k list, mapped into the target vocabulary; every other
    position gets a one-hot stand-in. This reproduces FuseLLM (Wan et al.,
    ICLR 2024) exactly, with ``onehot="current"`` reproducing its off-by-one
    stand-in.

    Args:
        aligner: the two vocabularies.
        target_ids: the target tokenization of each text: a sequence of 1-D integer
            arrays or lists, or a padded 2-D array (see ``target_lengths``).
        source_ids: the source tokenization of each text, in the same layouts.
        source_topk_ids: per text ``[len(source_ids[b]), K]`` source ids of the
            top-k next-token candidates (a negative id is an empty slot), or a
            padded ``[B, N, K]`` array.
        source_topk_logits: their logits, in the same layout as ``source_topk_ids``.
        vocab_align: ``"soft"`` maps candidates through the MinED map (the paper's
            default); ``"hard"`` keeps only candidates that are target tokens.
        onehot: ``"next"`` puts a stand-in's mass on the next target token (the
            stored distributions predict the next token; the last position gets
            none); ``"current"`` on the current one, as the published code does.
        workers: threads; 1 runs serially, -1 uses every core.
        target_lengths: with a padded ``target_ids``, the length of each row.
        source_lengths: with a padded ``source_ids``, the length of each row.

    Returns:
        The aligned batch. Inputs are never modified.

    Raises:
        InvalidInputError: mismatched batch sizes or shapes, ids outside a
            vocabulary, non-finite logits, unknown option values.
        InputTypeError: non-integer ids, non-float logits, a wrong argument type.

    >>> aligner = Aligner(["Ġthe", "Ġcat", "Ġc", "at"], ["▁the", "▁cat", "▁c", "at"])
    >>> out = align_batch(aligner, [[0, 2, 3]], [[0, 2, 3]], [[[1, 0], [3, 1], [0, 2]]],
    ...                   [[[2.0, 1.0], [1.5, 0.5], [0.3, 0.2]]])
    >>> out.ids[0].tolist()
    [[1, 0], [3, 1], [0, 2]]
    >>> out.counts.matched_rate
    1.0
    """
    if not isinstance(aligner, Aligner):
        raise InputTypeError(f"aligner: must be an Aligner, got {type(aligner).__name__}")
    vocab_align = checked_choice(vocab_align, "vocab_align", ("soft", "hard"))
    onehot = checked_choice(onehot, "onehot", ("next", "current"))
    workers = checked_workers(workers)
    t_flat, t_starts, t_lengths = sequences(target_ids, target_lengths, "target_ids", "target_lengths")
    s_flat, s_starts, s_lengths = sequences(source_ids, source_lengths, "source_ids", "source_lengths")
    if len(s_lengths) != len(t_lengths):
        from .errors import InvalidInputError

        raise InvalidInputError(f"source_ids: has {len(s_lengths)} texts but target_ids has {len(t_lengths)}")
    k_ids, k_logits, k_starts = topk_rows(source_topk_ids, source_topk_logits, s_lengths)
    if vocab_align == "soft" and aligner.vocab_map is None:
        aligner.build_vocab_map(workers=workers)
    ids, logits, status, counts = aligner._core.align(
        t_flat, t_starts, t_lengths, s_flat, s_starts, s_lengths, k_ids, k_logits, k_starts,
        vocab_align=vocab_align, onehot=onehot, workers=workers,
    )
    return AlignedBatch(ids=ids, logits=logits, lengths=t_lengths, status=status, counts=AlignmentCounts(**counts))
