"""Step 1 of FuseLLM: the minimum-edit-distance (MinED) vocabulary map."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from . import _core
from ._fingerprint import strings_fingerprint
from ._checks import check_token_strings, checked_ids, checked_marker, checked_pairs
from .errors import InputTypeError, VocabMapError

__all__ = ["Family", "Normalize", "VocabMap", "edit_distance", "token_bytes"]

Normalize = Literal["marker", "bytes"]
"""What token strings are compared as: ``"marker"`` swaps the space marker (the
published behaviour), ``"bytes"`` compares the exact bytes each token stands for."""

Family = Literal["byte_level", "sentencepiece"]
"""How a vocabulary spells text: byte-level BPE (GPT-2, GPT-NeoX, Llama-3, Qwen2,
Tekken) writes each byte as a stand-in character; SentencePiece (Llama-2, Mistral,
Gemma) writes UTF-8 with ``▁`` for a space and ``<0xNN>`` for single bytes."""


def token_bytes(
    tokens: Sequence[str], *, family: Family | None = None, special_ids: Sequence[int] | None = None
) -> list[bytes]:
    """The exact bytes of text each token stands for.

    Byte-level stand-in characters become their bytes, ``▁`` becomes a space and
    ``<0xNN>`` the byte NN; special tokens (BOS, EOS, chat-template tokens) stand
    for no text and get ``b""``.

    Args:
        tokens: token strings in id order.
        family: the vocabulary's spelling; ``None`` tells it from the space marker.
        special_ids: ids of special tokens.

    Returns:
        One ``bytes`` per token.

    Raises:
        InputTypeError: ``tokens`` is not a sequence of strings, or an id is not an int.
        InvalidInputError: an unknown family or a special id outside the vocabulary.
        MarkerDetectionError: ``family`` is ``None`` and cannot be told.

    >>> token_bytes(["ĠcafÃ©"], family="byte_level")[0].decode()
    ' café'
    >>> token_bytes(["▁a", "<0x41>", "<s>"], family="sentencepiece", special_ids=[2])
    [b' a', b'A', b'']
    """
    tokens = check_token_strings(tokens, "tokens")
    return _core.token_bytes(tokens, family=family, special_ids=checked_ids(special_ids, "special_ids"))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (unit-cost insert, delete, substitute) over Unicode code points.

    Raises:
        InputTypeError: an argument is not a str.

    >>> edit_distance("kitten", "sitting")
    3
    """
    for arg, value in (("a", a), ("b", b)):
        if not isinstance(value, str):
            raise InputTypeError(f"{arg}: must be a str, got {type(value).__name__}")
    return _core.edit_distance(a, b)


@dataclass(frozen=True)
class Vocabularies:
    """Two vocabularies as the Rust core read them, with the fingerprints of their tokens."""

    core: _core.Vocabularies
    source_fingerprint: str
    target_fingerprint: str


def read_vocabularies(
    source_tokens: Any,
    target_tokens: Any,
    source_marker: Any,
    target_marker: Any,
    normalize: Any,
    families: tuple[Any, Any],
    special_ids: tuple[Any, Any],
    special_token_map: Any,
) -> Vocabularies:
    """The vocabularies and options that :class:`VocabMap` and :class:`~fusellm_fast.Aligner` take,
    their types checked here and their values (markers, families, ids) by the core."""
    source_tokens = check_token_strings(source_tokens, "source_tokens")
    target_tokens = check_token_strings(target_tokens, "target_tokens")
    markers = (checked_marker(source_marker, "source_marker"), checked_marker(target_marker, "target_marker"))
    ids = (checked_ids(special_ids[0], "source_special_ids"), checked_ids(special_ids[1], "target_special_ids"))
    core = _core.Vocabularies(source_tokens, target_tokens, markers, normalize, families, ids,
                              checked_pairs(special_token_map, "special_token_map"))
    return Vocabularies(core, strings_fingerprint(source_tokens), strings_fingerprint(target_tokens))


_FORMAT_VERSION = 1


@dataclass(frozen=True)
class VocabMap:
    """The MinED image of every source token in the target vocabulary.

    FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024)
    maps each source token, with its space marker swapped for the target's, to
    itself when it is a target token and otherwise to the target token at minimum
    Levenshtein distance, ties going to the lowest target id.

    Attributes:
        target_ids: int32 ``[len(source_tokens)]``, the image of every source id.
        distances: int32, same shape; 0 where the marker-swapped string is a target token.
        source_marker: the source vocabulary's space marker.
        target_marker: the target vocabulary's space marker.
        source_fingerprint: :func:`strings_fingerprint` of the source tokens.
        target_fingerprint: the same for the target tokens.
        normalize: what the strings were compared as (:data:`Normalize`); with
            ``"bytes"`` the distances count bytes.
    """

    target_ids: np.ndarray
    distances: np.ndarray
    source_marker: str
    target_marker: str
    source_fingerprint: str
    target_fingerprint: str
    normalize: Normalize = "marker"

    @classmethod
    def build(
        cls,
        source_tokens: Sequence[str],
        target_tokens: Sequence[str],
        *,
        source_marker: str | None = None,
        target_marker: str | None = None,
        workers: int = -1,
        normalize: Normalize = "marker",
        source_family: Family | None = None,
        target_family: Family | None = None,
        source_special_ids: Sequence[int] | None = None,
        target_special_ids: Sequence[int] | None = None,
        special_token_map: Mapping[int, int] | None = None,
    ) -> VocabMap:
        """Builds the map; the result equals the brute-force search exactly.

        With ``normalize="bytes"`` the distance is the edit distance between the
        exact bytes of the tokens (:func:`token_bytes`), so ``ĠcafÃ©`` and
        ``▁café`` are equal; ordinary tokens map among ordinary target tokens, a
        special token maps through ``special_token_map`` or else by edit distance
        of its literal string among the special target tokens.

        Args:
            source_tokens: token string of every source id, in id order.
            target_tokens: token string of every target id, in id order.
            source_marker: the source's space marker; ``None`` detects ``▁`` or ``Ġ``.
            target_marker: the target's space marker; ``None`` detects it.
            workers: threads to use; 1 runs serially, -1 uses every core.
            normalize: ``"marker"`` (the published behaviour) or ``"bytes"``.
            source_family: with ``"bytes"``, the source's spelling; ``None`` tells
                it from the space marker.
            target_family: the same for the target.
            source_special_ids: with ``"bytes"``, ids of special source tokens.
            target_special_ids: the same for the target.
            special_token_map: with ``"bytes"``, source id -> target id of
                special tokens with the same role (BOS, EOS, ...).

        Returns:
            The map.

        Raises:
            InputTypeError: a vocabulary is not a sequence of strings.
            MarkerDetectionError: a marker is ``None`` and cannot be detected.
            InvalidInputError: an empty target vocabulary, a bad ``workers``, an
                unknown option value or a special id outside its vocabulary.

        >>> vm = VocabMap.build(["Ġthe", "Ġcats"], ["▁the", "▁cat"])
        >>> vm.target_ids.tolist(), vm.distances.tolist()
        ([0, 1], [0, 1])
        >>> VocabMap.build(["ĠcafÃ©"], ["▁caf", "▁café"], normalize="bytes").distances.tolist()
        [0]
        """
        vocabularies = read_vocabularies(source_tokens, target_tokens, source_marker, target_marker, normalize,
                                         (source_family, target_family), (source_special_ids, target_special_ids),
                                         special_token_map)
        target_ids, distances = vocabularies.core.build_vocab_map(workers=workers)
        return cls(target_ids=_readonly(target_ids), distances=_readonly(distances),
                   source_marker=vocabularies.core.source_marker, target_marker=vocabularies.core.target_marker,
                   source_fingerprint=vocabularies.source_fingerprint,
                   target_fingerprint=vocabularies.target_fingerprint, normalize=normalize)

    @property
    def source_size(self) -> int:
        """Number of source tokens covered."""
        return int(self.target_ids.shape[0])

    @property
    def exact_share(self) -> float:
        """Share of source tokens whose marker-swapped string (or, normalized to
        bytes, whose bytes) is a target token."""
        return float(np.mean(self.distances == 0)) if self.source_size else 0.0

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the map to ``path`` as an ``.npz`` archive (no pickled objects), whole or not at all.

        >>> import tempfile, pathlib
        >>> vm = VocabMap.build(["Ġa"], ["▁a"])
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "map.npz"
        >>> vm.save(p); VocabMap.load(p) == vm
        True
        """
        # Written under a private name and renamed: a reader never sees a part of a map.
        path = os.fspath(path)
        scratch = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.partial")
        try:
            with open(scratch, "wb") as f:
                np.savez(
                    f,
                    format_version=np.int64(_FORMAT_VERSION),
                    target_ids=self.target_ids,
                    distances=self.distances,
                    source_marker=np.str_(self.source_marker),
                    target_marker=np.str_(self.target_marker),
                    source_fingerprint=np.str_(self.source_fingerprint),
                    target_fingerprint=np.str_(self.target_fingerprint),
                    normalize=np.str_(self.normalize),
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(scratch, path)
        finally:
            if os.path.exists(scratch):
                os.remove(scratch)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VocabMap:
        """Reads a map written by :meth:`save`.

        Raises:
            VocabMapError: the file is not such a map, or is damaged.
            FileNotFoundError: there is no file at ``path``.
        """
        origin = os.fspath(path)
        with open(path, "rb") as f:
            try:
                archive = np.load(f, allow_pickle=False)
                if not isinstance(archive, np.lib.npyio.NpzFile):
                    raise VocabMapError(f"path: {origin!r} holds a single array, not a vocabulary map archive")
                with archive:
                    fields = {name: archive[name] for name in archive.files}
                return cls._from_fields(fields, origin)
            except VocabMapError:
                raise
            except (OSError, ValueError, TypeError, zipfile.BadZipFile, EOFError) as e:
                raise VocabMapError(f"path: {origin!r} is not a readable vocabulary map ({e})") from e

    @classmethod
    def _from_fields(cls, fields: dict[str, np.ndarray], origin: str) -> VocabMap:
        required = ("format_version", "target_ids", "distances", "source_marker", "target_marker",
                    "source_fingerprint", "target_fingerprint")
        missing = [name for name in required if name not in fields]
        if missing:
            raise VocabMapError(f"path: {origin!r} lacks {', '.join(missing)}; it is not a vocabulary map")
        if int(fields["format_version"]) != _FORMAT_VERSION:
            raise VocabMapError(f"path: {origin!r} has format version {int(fields['format_version'])}, "
                                f"expected {_FORMAT_VERSION}")
        target_ids, distances = fields["target_ids"], fields["distances"]
        for name, array in (("target_ids", target_ids), ("distances", distances)):
            if array.dtype != np.int32 or array.ndim != 1:
                raise VocabMapError(f"path: {origin!r} has {name} of dtype {array.dtype} and shape {array.shape}, "
                                    "expected 1-D int32")
        if target_ids.shape != distances.shape:
            raise VocabMapError(f"path: {origin!r} has {target_ids.shape[0]} target ids but "
                                f"{distances.shape[0]} distances")
        if target_ids.size and (target_ids.min() < 0 or distances.min() < 0):
            raise VocabMapError(f"path: {origin!r} holds negative ids or distances")
        return cls(
            target_ids=_readonly(target_ids.copy()),
            distances=_readonly(distances.copy()),
            source_marker=str(fields["source_marker"]),
            target_marker=str(fields["target_marker"]),
            source_fingerprint=str(fields["source_fingerprint"]),
            target_fingerprint=str(fields["target_fingerprint"]),
            # Maps saved before byte normalization existed compared marker-swapped strings.
            normalize=str(fields.get("normalize", "marker")),  # type: ignore[arg-type]
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VocabMap):
            return NotImplemented
        return (
            np.array_equal(self.target_ids, other.target_ids)
            and np.array_equal(self.distances, other.distances)
            and (self.source_marker, self.target_marker, self.source_fingerprint, self.target_fingerprint,
                 self.normalize)
            == (other.source_marker, other.target_marker, other.source_fingerprint, other.target_fingerprint,
                other.normalize)
        )

    __hash__ = None  # type: ignore[assignment]  # arrays are not hashable


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array

