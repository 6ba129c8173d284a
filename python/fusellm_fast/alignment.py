"""Steps 2 and 3 of FuseLLM: align two tokenizations of the same texts and carry
the source model's top-k distributions over to the target vocabulary."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from . import _core
from ._checks import checked_ids, checked_pairs, sequences, topk_rows
from .errors import InputTypeError, VocabMapError
from .hf import special_ids, special_role_pairs, tokenizer_vocabulary
from .vocab_map import Family, Normalize, VocabMap, read_vocabularies

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
    """A one-hot stand-in: one target token, with logit 1.0 (log-probability 0.0
    when ``AlignedBatch.values_are == "log_probs"``)."""


@dataclass(frozen=True)
class AlignmentCounts:
    """Position counts over a batch, to see whether alignment works."""

    positions: int
    matched: int
    onehot: int
    empty: int
    dropped_candidates: int
    """Matched positions that lost at least one top-k candidate (without an
    image, or, with ``candidates="mined"``, a repeat of a target id already taken)."""
    fallback_texts: int = 0
    """Texts that ``method="offsets"`` or ``"boundary"`` aligned by DTW because
    their two tokenizations spell different bytes."""
    kept_mass: float = 0.0
    """Sum over matched positions of the share of the source's top-k probability
    mass that reached the target vocabulary."""

    @property
    def matched_rate(self) -> float:
        """Share of target positions that received a real source distribution."""
        return self.matched / self.positions if self.positions else 0.0

    @property
    def kept_mass_rate(self) -> float:
        """Mean share of top-k probability mass that survived the candidate
        mapping, over matched positions."""
        return self.kept_mass / self.matched if self.matched else 0.0


@dataclass(frozen=True)
class AlignedBatch:
    """Source distributions aligned to the target tokenization.

    Attributes:
        ids: int32 ``[batch, max target length, K]`` target-vocabulary ids, -1 in empty slots.
        logits: float32, same shape: what :attr:`values_are` says, 0.0 in empty slots.
        lengths: int64 ``[batch]`` target lengths.
        status: int8 ``[batch, max target length]``, a :class:`PositionStatus` per position.
        counts: totals of the statuses.
        source_positions: int32 ``[batch, max target length]``: the source position
            whose top-k list a position received (its token's index in the source
            tokenization), -1 where none (stand-ins, padding).
        values_are: ``"logits"`` (``candidates="mined"`` on logits): the source
            logits of the ids, and 1.0 for a one-hot stand-in. ``"log_probs"``
            (``candidates="prefix"``, or ``values="log_probs"``): the natural log of
            each id's probability, summed over the candidates that map onto it, and
            0.0 (probability 1) for a one-hot stand-in; the probability is the one
            the inputs give with ``values="log_probs"`` (under the model's full
            softmax, so the tail is ``1 - sum(exp)``), otherwise the softmax over
            the source's top-k list (the exponentials add up to the kept mass).
            Either way a softmax over a position's filled slots gives its
            distribution over the listed ids.
    """

    ids: np.ndarray
    logits: np.ndarray
    lengths: np.ndarray
    status: np.ndarray
    counts: AlignmentCounts
    source_positions: np.ndarray
    values_are: Literal["logits", "log_probs"] = "logits"

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


def _vocabularies_attribute(name: str) -> Any:
    """A read-only attribute of an :class:`Aligner`: the one of that name of the vocabularies the
    Rust core read."""
    return property(lambda aligner: getattr(aligner._vocabularies.core, name))


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
        normalize: what the DTW cost, the match test and the MinED map compare:
            ``"marker"`` the marker-swapped strings (the published behaviour),
            ``"bytes"`` the exact bytes of the tokens (:func:`token_bytes`).
        source_family: the source's spelling (:data:`Family`); ``None`` tells it
            from the space marker. Byte spans (``method="offsets"``,
            ``"boundary"``, ``candidates="prefix"``) always use it.
        target_family: the same for the target.
        source_special_ids: ids of source tokens that stand for no text (BOS,
            EOS, chat-template tokens): no bytes, never matched by position.
        target_special_ids: the same for the target.
        special_token_map: source id -> target id of special tokens with the
            same role; those map onto each other, never by edit distance.

    Raises:
        InputTypeError: a vocabulary is not a sequence of strings, an id is not an int.
        InvalidInputError: an unknown option value, a special id outside its vocabulary.
        MarkerDetectionError: a marker is ``None`` and cannot be detected.
        VocabMapError: ``vocab_map`` belongs to other vocabularies, markers or normalization.

    Attributes:
        source_marker: the source's space marker, as given or detected.
        target_marker: the same for the target.
        normalize: what token strings are compared as.
        source_size: number of source tokens.
        target_size: number of target tokens.

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
        normalize: Normalize = "marker",
        source_family: Family | None = None,
        target_family: Family | None = None,
        source_special_ids: Sequence[int] | None = None,
        target_special_ids: Sequence[int] | None = None,
        special_token_map: Mapping[int, int] | None = None,
    ) -> None:
        self._vocabularies = read_vocabularies(
            source_tokens, target_tokens, source_marker, target_marker, normalize,
            (source_family, target_family), (source_special_ids, target_special_ids), special_token_map)
        self._core = _core.Aligner(self._vocabularies.core)
        # The map lives in the core; this is a given map, or the view of the core's once asked for.
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
        normalize: Normalize = "marker",
        source_family: Family | None = None,
        target_family: Family | None = None,
        special_token_map: Mapping[int, int] | None = None,
    ) -> Aligner:
        """An Aligner for two Hugging Face tokenizers (anything with
        ``convert_ids_to_tokens`` and ``len()``), added tokens included.

        Ids the tokenizer has no string for become unique placeholders that match
        nothing. The tokenizers' special tokens and added special tokens are
        passed as special ids, and tokens with the same role (BOS, EOS, PAD, UNK)
        are paired; ``special_token_map`` adds pairs or overrides them (source
        id -> target id). The other options are those of :class:`Aligner`.

        >>> class Toy:
        ...     def __init__(self, tokens): self.tokens = tokens
        ...     def __len__(self): return len(self.tokens)
        ...     def convert_ids_to_tokens(self, ids): return [self.tokens[i] for i in ids]
        >>> aligner = Aligner.from_tokenizers(Toy(["Ġa", "Ġb"]), Toy(["▁a", "▁b"]), normalize="bytes")
        >>> aligner.normalize
        'bytes'
        """
        roles = {**special_role_pairs(source_tokenizer, target_tokenizer),
                 **dict(checked_pairs(special_token_map, "special_token_map"))}
        return cls(
            tokenizer_vocabulary(source_tokenizer, "source_tokenizer"),
            tokenizer_vocabulary(target_tokenizer, "target_tokenizer"),
            source_marker=source_marker,
            target_marker=target_marker,
            vocab_map=vocab_map,
            normalize=normalize,
            source_family=source_family,
            target_family=target_family,
            source_special_ids=special_ids(source_tokenizer),
            target_special_ids=special_ids(target_tokenizer),
            special_token_map=roles,
        )

    source_marker: str = _vocabularies_attribute("source_marker")
    target_marker: str = _vocabularies_attribute("target_marker")
    normalize: Normalize = _vocabularies_attribute("normalize")
    source_size: int = _vocabularies_attribute("source_size")
    target_size: int = _vocabularies_attribute("target_size")

    @property
    def vocab_map(self) -> VocabMap | None:
        """The MinED map, or ``None`` until built or given. Its arrays are read-only views of the
        map the Rust core holds (a given map is returned as it was given)."""
        if self._vocab_map is None:
            arrays = self._core.vocab_map()
            if arrays is not None:
                self._vocab_map = self._view(*arrays)
        return self._vocab_map

    def build_vocab_map(self, *, workers: int = -1) -> VocabMap:
        """Builds the MinED map unless present, and returns it."""
        vocab_map = self.vocab_map
        if vocab_map is None:
            vocab_map = self._vocab_map = self._view(*self._core.ensure_vocab_map(workers=workers))
        return vocab_map

    def prefix_map(self, *, workers: int = -1) -> np.ndarray:
        """int32 ``[source_size]``: for every source id, the longest ordinary
        target token whose bytes start the source token's bytes (a special token:
        its counterpart by role), -1 where there is none. Built once.

        >>> Aligner(["Ġthere", "Ġx"], ["▁the", "▁th"]).prefix_map().tolist()
        [0, -1]
        """
        return self._core.prefix_map(workers=workers)

    def text_bytes(self, ids: Sequence[int], *, side: Literal["source", "target"]) -> bytes:
        """The bytes a sequence of token ids of one side stands for (special tokens: none).

        Raises:
            InvalidInputError: an id outside the vocabulary, or an unknown ``side``.

        >>> Aligner(["Ġcaf", "Ã", "©"], ["▁café"]).text_bytes([0, 1, 2], side="source").decode()
        ' café'
        """
        return self._vocabularies.core.text_bytes(checked_ids(ids, "ids"), side=side)

    def _view(self, target_ids: np.ndarray, distances: np.ndarray) -> VocabMap:
        return VocabMap(target_ids, distances, self.source_marker, self.target_marker,
                        self._vocabularies.source_fingerprint, self._vocabularies.target_fingerprint, self.normalize)

    def _use_vocab_map(self, vocab_map: VocabMap) -> None:
        if not isinstance(vocab_map, VocabMap):
            raise InputTypeError(f"vocab_map: must be a VocabMap or None, got {type(vocab_map).__name__}")
        mine = (self._vocabularies.source_fingerprint, self._vocabularies.target_fingerprint, self.source_marker,
                self.target_marker, self.normalize)
        theirs = (vocab_map.source_fingerprint, vocab_map.target_fingerprint,
                  vocab_map.source_marker, vocab_map.target_marker, vocab_map.normalize)
        if mine != theirs:
            what = [name for name, a, b in zip(("source vocabulary", "target vocabulary", "source marker",
                                                "target marker", "normalization"), mine, theirs) if a != b]
            raise VocabMapError(f"vocab_map: built for another {', '.join(what)} than this aligner's")
        self._core.set_vocab_map(vocab_map.target_ids, vocab_map.distances)
        self._vocab_map = vocab_map


def align_batch(
    aligner: Aligner, target_ids: Any, source_ids: Any, source_topk_ids: Any, source_topk_logits: Any, *,
    vocab_align: Literal["soft", "hard"] = "soft", onehot: Literal["next", "current"] = "next", workers: int = -1,
    target_lengths: Any = None, source_lengths: Any = None, method: Literal["dtw", "offsets", "boundary"] = "dtw",
    candidates: Literal["mined", "prefix"] = "mined", values: Literal["logits", "log_probs"] = "logits",
) -> AlignedBatch:
    """Aligns the source model's top-k distributions to the target tokenization.

    Per text, the two tokenizations are aligned by dynamic time warping over token strings (edit-distance
    costs, space markers removed); a target position aligned to exactly one source position whose token matches
    (equal after the marker swap, or, in soft mode, equal through the MinED map) takes that position's top-k
    list, mapped into the target vocabulary; every other position gets a one-hot stand-in. This reproduces
    FuseLLM (Wan et al., ICLR 2024) exactly, with ``onehot="current"`` reproducing its off-by-one stand-in.

    ``method="offsets"`` and ``method="boundary"`` instead give every token the byte span it covers, from the
    cumulative lengths of its exact bytes (O(n + m) per text, no edit distances): ``offsets`` pairs a target
    position with the source position of identical span, ``boundary`` with the source position whose token
    ends at the same byte, because the distribution stored there predicts the token that starts at that byte.
    Special tokens cover no bytes and are never paired. When one side spells one leading space more (the
    SentencePiece dummy prefix) that side is shifted by one byte; a text whose two spellings differ otherwise
    is aligned by ``dtw`` and counted in ``counts.fallback_texts``.

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
        method: ``"dtw"`` (the published alignment), ``"offsets"`` or ``"boundary"``.
        candidates: ``"mined"`` maps each candidate on its own (``vocab_align``)
            and keeps its logit; ``"prefix"`` maps it to the longest target token
            whose bytes start its bytes (:meth:`Aligner.prefix_map`), sums the
            probabilities of candidates with the same image and writes
            log-probabilities (see :attr:`AlignedBatch.values_are`). The MinED
            map is built (in soft mode) only for ``dtw`` or ``mined``.
        values: what ``source_topk_logits`` hold: ``"logits"``, or ``"log_probs"`` under the model's full softmax
            (a teacher pass's); the output then stays so, one-hot stand-ins 0.0 (:attr:`AlignedBatch.values_are`).

    Returns:
        The aligned batch. Inputs are never modified.

    Raises:
        InvalidInputError: mismatched batch sizes or shapes, ids outside a vocabulary, non-finite logits,
            unknown option values.
        InputTypeError: non-integer ids, non-float logits, a wrong argument type.

    >>> aligner = Aligner(["Ġthe", "Ġcat", "Ġc", "at"], ["▁the", "▁cat", "▁c", "at"])
    >>> out = align_batch(aligner, [[0, 2, 3]], [[0, 2, 3]], [[[1, 0], [3, 1], [0, 2]]],
    ...                   [[[2.0, 1.0], [1.5, 0.5], [0.3, 0.2]]])
    >>> out.ids[0].tolist()
    [[1, 0], [3, 1], [0, 2]]
    >>> out.counts.matched_rate
    1.0
    >>> out = align_batch(aligner, [[1]], [[2, 3]], [[[0, 1], [2, 3]]], [[[0.0, 0.0], [0.0, 0.0]]],
    ...                   method="boundary", candidates="prefix")
    >>> out.ids[0].tolist(), out.values_are
    ([[2, 3]], 'log_probs')
    """
    if not isinstance(aligner, Aligner):
        raise InputTypeError(f"aligner: must be an Aligner, got {type(aligner).__name__}")
    t_flat, t_starts, t_lengths = sequences(target_ids, target_lengths, "target_ids", "target_lengths")
    s_flat, s_starts, s_lengths = sequences(source_ids, source_lengths, "source_ids", "source_lengths")
    k_ids, k_logits, k = topk_rows(source_topk_ids, source_topk_logits, s_lengths)
    ids, logits, status, source_positions, counts, values_are = aligner._core.align(
        t_flat, t_starts, t_lengths, s_flat, s_starts, s_lengths, k_ids, k_logits, k=k, vocab_align=vocab_align,
        onehot=onehot, workers=workers, method=method, candidates=candidates, values=values,
    )
    return AlignedBatch(ids=ids, logits=logits, lengths=t_lengths, status=status, counts=AlignmentCounts(**counts),
                        source_positions=source_positions, values_are=values_are)
