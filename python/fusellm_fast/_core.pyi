"""Type stub of the compiled extension ``fusellm_fast._core`` (rust/src/py/).

Arrays are borrowed without conversion, so array arguments must already have the
stated dtype and number of dimensions; the public API in ``fusellm_fast`` converts
them and checks their types and layouts before calling in here. Option values
(``normalize``, ``vocab_align``, ``workers``, ...) are checked in here, whatever
their type, and so are markers, ids against the vocabularies and batch sizes.
"""

from collections.abc import Sequence
from typing import Final, Literal, TypeAlias, final

import numpy as np
from numpy.typing import NDArray

_MapArrays: TypeAlias = tuple[NDArray[np.int32], NDArray[np.int32]]
_Family: TypeAlias = Literal["byte_level", "sentencepiece"]
_Normalize: TypeAlias = Literal["marker", "bytes"]

STATUS_PADDING: Final = -1
STATUS_EMPTY: Final = 0
STATUS_MATCHED: Final = 1
STATUS_ONEHOT: Final = 2

def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings over Unicode code points."""

def token_bytes(
    tokens: Sequence[str], *, family: _Family | None = None, special_ids: Sequence[int] = ...
) -> list[bytes]:
    """The exact bytes every token stands for (special ids: none); a family of None is told by the
    vocabulary's space marker."""

@final
def needs_vocab_map(
    *,
    vocab_align: Literal["soft", "hard"],
    method: Literal["dtw", "offsets", "boundary"],
    candidates: Literal["mined", "prefix"],
) -> bool:
    """Whether ``Aligner.align`` with these options uses the MinED map (soft mode with ``dtw`` or
    ``mined`` candidates)."""

class Vocabularies:
    """Two vocabularies read with their options; immutable.

    ``markers``, ``families`` and ``special_ids`` are (source, target) pairs. A marker of None is
    detected from its vocabulary, a family of None told by the marker; each pair of
    ``special_pairs`` is (source id, target id) of special tokens with one role.
    """

    def __new__(
        cls,
        source_tokens: Sequence[str],
        target_tokens: Sequence[str],
        markers: tuple[str | None, str | None],
        normalize: _Normalize,
        families: tuple[_Family | None, _Family | None],
        special_ids: tuple[Sequence[int], Sequence[int]],
        special_pairs: Sequence[tuple[int, int]],
    ) -> Vocabularies: ...
    @property
    def normalize(self) -> _Normalize: ...
    @property
    def source_marker(self) -> str: ...
    @property
    def target_marker(self) -> str: ...
    @property
    def source_size(self) -> int: ...
    @property
    def target_size(self) -> int: ...
    def text_bytes(self, ids: Sequence[int], *, side: Literal["source", "target"]) -> bytes:
        """The concatenated bytes of a sequence of token ids of one side."""

    def build_vocab_map(self, *, workers: int) -> _MapArrays:
        """The MinED map of the two vocabularies: ``(target_ids, distances)``, both int32
        ``[source_size]``."""

@final
class Aligner:
    """Two vocabularies prepared for alignment; immutable but for the maps built on first use, and
    safe to share between threads."""

    def __new__(cls, vocabularies: Vocabularies) -> Aligner: ...
    def prefix_map(self, *, workers: int) -> NDArray[np.int32]:
        """The byte-prefix image of every source id (-1: none)."""

    def vocab_map(self) -> _MapArrays | None:
        """``(target_ids, distances)`` of the MinED map, or None before it is built: read-only views
        of the map this object holds (they keep it alive)."""

    def set_vocab_map(self, target_ids: NDArray[np.int32], distances: NDArray[np.int32]) -> None:
        """Uses a MinED map built elsewhere (copied); raises ``VocabMapError`` if it does not fit the
        vocabularies."""

    def ensure_vocab_map(self, *, workers: int) -> _MapArrays:
        """Builds the MinED map unless present and returns it, as :meth:`vocab_map` does."""

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
        method: Literal["dtw", "offsets", "boundary"],
        candidates: Literal["mined", "prefix"],
        values: Literal["logits", "log_probs"],
    ) -> tuple[
        NDArray[np.int32], NDArray[np.float32], NDArray[np.int8], NDArray[np.int32], dict[str, int],
        Literal["logits", "log_probs"],
    ]:
        """Aligns a batch given as flat 1-D id buffers plus per-text starts and lengths.

        ``topk_ids`` and ``topk_logits`` hold one C-contiguous ``[rows, k]`` array per
        text (at least as many rows as its source tokens; int32 or int64 ids, the
        same for every text), borrowed without copying. Returns ids
        ``[B, max target length, max(K, 1)]``, logits of the same shape, the status of
        every position ``[B, max target length]``, the source position paired with
        each (-1: none), the counts (``positions``,
        ``matched``, ``onehot``, ``empty``, ``dropped_candidates``, ``fallback_texts``,
        ``kept_mass``) and what the logits hold (``"log_probs"`` for prefix candidates or log-probability
        inputs, ``values``).
        """
