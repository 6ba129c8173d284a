"""Type stub of the compiled extension ``fusellm_fast._core`` (rust/src/py/mod.rs).

Arrays are borrowed without conversion, so array arguments must already have the
stated dtype and number of dimensions; the public API in ``fusellm_fast`` converts
and checks its inputs before calling in here.
"""

from collections.abc import Sequence
from typing import Final, Literal, TypeAlias, final

import numpy as np
from numpy.typing import NDArray

_MapArrays: TypeAlias = tuple[NDArray[np.int32], NDArray[np.int32]]
_Family: TypeAlias = Literal["byte_level", "sentencepiece"]

STATUS_PADDING: Final = -1
STATUS_EMPTY: Final = 0
STATUS_MATCHED: Final = 1
STATUS_ONEHOT: Final = 2

def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings over Unicode code points."""

def detect_space_marker(tokens: Sequence[str], *, argument: str = "tokens") -> Literal["\u2581", "\u0120"]:
    """The space marker of a vocabulary (``▁`` or ``Ġ``).

    ``argument`` names the vocabulary in the error raised when no marker can be told
    (``"source_tokens"``, ``"target_tokens"``; anything else reads ``"tokens"``).
    """

def build_vocab_map(
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    source_marker: str,
    target_marker: str,
    *,
    workers: int = -1,
) -> _MapArrays:
    """MinED map between two vocabularies: ``(target_ids, distances)``, both int32 ``[len(source_tokens)]``."""

def build_byte_vocab_map(
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    *,
    source_family: _Family | None = None,
    target_family: _Family | None = None,
    source_special_ids: Sequence[int] = ...,
    target_special_ids: Sequence[int] = ...,
    special_pairs: Sequence[tuple[int, int]] = ...,
    workers: int = -1,
) -> _MapArrays:
    """MinED map over the exact bytes of the tokens: ``(target_ids, distances)``.

    A family of None is told from the vocabulary's space marker; each pair of
    ``special_pairs`` is (source id, target id) of special tokens with one role.
    """

def token_bytes(
    tokens: Sequence[str], *, family: _Family | None = None, special_ids: Sequence[int] = ...
) -> list[bytes]:
    """The exact bytes every token stands for (special ids: none)."""

@final
class Aligner:
    """Both vocabularies prepared for alignment; immutable and safe to share between threads."""

    def __new__(
        cls,
        source_tokens: Sequence[str],
        target_tokens: Sequence[str],
        source_marker: str | None = None,
        target_marker: str | None = None,
        *,
        normalize: Literal["marker", "bytes"] = "marker",
        source_family: _Family | None = None,
        target_family: _Family | None = None,
        source_special_ids: Sequence[int] = ...,
        target_special_ids: Sequence[int] = ...,
        special_pairs: Sequence[tuple[int, int]] = ...,
    ) -> Aligner: ...
    @property
    def normalize(self) -> Literal["marker", "bytes"]: ...
    def text_bytes(self, ids: Sequence[int], *, side: Literal["source", "target"]) -> bytes:
        """The concatenated bytes of a sequence of token ids of one side."""

    def prefix_map(self, *, workers: int = -1) -> NDArray[np.int32]:
        """The byte-prefix image of every source id (-1: none)."""

    @property
    def source_marker(self) -> str: ...
    @property
    def target_marker(self) -> str: ...
    @property
    def source_size(self) -> int: ...
    @property
    def target_size(self) -> int: ...
    def vocab_map(self) -> _MapArrays | None:
        """``(target_ids, distances)`` of the MinED map, or None before it is built."""

    def set_vocab_map(self, target_ids: NDArray[np.int32], distances: NDArray[np.int32]) -> None:
        """Uses a MinED map built elsewhere; raises ``VocabMapError`` if it does not fit the vocabularies."""

    def ensure_vocab_map(self, *, workers: int = -1) -> _MapArrays:
        """Builds the MinED map unless present and returns it."""

    def align(
        self,
        target_ids: NDArray[np.int64],
        target_starts: NDArray[np.int64],
        target_lengths: NDArray[np.int64],
        source_ids: NDArray[np.int64],
        source_starts: NDArray[np.int64],
        source_lengths: NDArray[np.int64],
        topk_ids: Sequence[NDArray[np.int32]] | Sequence[NDArray[np.int64]],
        topk_logits: Sequence[NDArray[np.float32]],
        *,
        k: int,
        vocab_align: Literal["soft", "hard"],
        onehot: Literal["next", "current"],
        workers: int,
        method: Literal["dtw", "offsets", "boundary"] = "dtw",
        candidates: Literal["mined", "prefix"] = "mined",
    ) -> tuple[NDArray[np.int32], NDArray[np.float32], NDArray[np.int8], NDArray[np.int32], dict[str, int]]:
        """Aligns a batch given as flat 1-D id buffers plus per-text starts and lengths.

        ``topk_ids`` and ``topk_logits`` hold one C-contiguous ``[rows, k]`` array per
        text (at least as many rows as its source tokens; int32 or int64 ids, the
        same for every text), borrowed without copying. Returns ids
        ``[B, max target length, max(K, 1)]``, logits of the same shape, the status of
        every position ``[B, max target length]``, the source position paired with
        each (-1: none) and the counts (``positions``,
        ``matched``, ``onehot``, ``empty``, ``dropped_candidates``, ``fallback_texts``,
        ``kept_mass``).
        """
