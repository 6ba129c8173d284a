"""Step 1 of FuseLLM: the minimum-edit-distance (MinED) vocabulary map."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import _core
from ._checks import check_token_strings, checked_workers, resolve_markers
from .errors import InputTypeError, VocabMapError

__all__ = ["VocabMap", "edit_distance", "vocabulary_fingerprint"]


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

_FORMAT_VERSION = 1


def vocabulary_fingerprint(tokens: Sequence[str]) -> str:
    """A SHA-256 digest of a vocabulary's token strings in id order.

    >>> vocabulary_fingerprint(["a", "b"]) == vocabulary_fingerprint(["a", "b"])
    True
    """
    digest = hashlib.sha256()
    for token in tokens:
        digest.update(token.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


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
        source_fingerprint: :func:`vocabulary_fingerprint` of the source tokens.
        target_fingerprint: the same for the target tokens.
    """

    target_ids: np.ndarray
    distances: np.ndarray
    source_marker: str
    target_marker: str
    source_fingerprint: str
    target_fingerprint: str

    @classmethod
    def build(
        cls,
        source_tokens: Sequence[str],
        target_tokens: Sequence[str],
        *,
        source_marker: str | None = None,
        target_marker: str | None = None,
        workers: int = -1,
    ) -> VocabMap:
        """Builds the map; the result equals the brute-force search exactly.

        Args:
            source_tokens: token string of every source id, in id order.
            target_tokens: token string of every target id, in id order.
            source_marker: the source's space marker; ``None`` detects ``▁`` or ``Ġ``.
            target_marker: the target's space marker; ``None`` detects it.
            workers: threads to use; 1 runs serially, -1 uses every core.

        Returns:
            The map.

        Raises:
            InputTypeError: a vocabulary is not a sequence of strings.
            MarkerDetectionError: a marker is ``None`` and cannot be detected.
            InvalidInputError: an empty target vocabulary or a bad ``workers``.

        >>> vm = VocabMap.build(["Ġthe", "Ġcats"], ["▁the", "▁cat"])
        >>> vm.target_ids.tolist(), vm.distances.tolist()
        ([0, 1], [0, 1])
        """
        source_tokens = check_token_strings(source_tokens, "source_tokens")
        target_tokens = check_token_strings(target_tokens, "target_tokens")
        source_marker, target_marker = resolve_markers(source_tokens, target_tokens, source_marker, target_marker)
        target_ids, distances = _core.build_vocab_map(
            source_tokens, target_tokens, source_marker, target_marker, workers=checked_workers(workers)
        )
        return cls(
            target_ids=_readonly(target_ids),
            distances=_readonly(distances),
            source_marker=source_marker,
            target_marker=target_marker,
            source_fingerprint=vocabulary_fingerprint(source_tokens),
            target_fingerprint=vocabulary_fingerprint(target_tokens),
        )

    @property
    def source_size(self) -> int:
        """Number of source tokens covered."""
        return int(self.target_ids.shape[0])

    @property
    def exact_share(self) -> float:
        """Share of source tokens whose marker-swapped string is a target token."""
        return float(np.mean(self.distances == 0)) if self.source_size else 0.0

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the map to ``path`` as an ``.npz`` archive (no pickled objects).

        >>> import tempfile, pathlib
        >>> vm = VocabMap.build(["Ġa"], ["▁a"])
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "map.npz"
        >>> vm.save(p); VocabMap.load(p) == vm
        True
        """
        with open(path, "wb") as f:
            np.savez(
                f,
                format_version=np.int64(_FORMAT_VERSION),
                target_ids=self.target_ids,
                distances=self.distances,
                source_marker=np.str_(self.source_marker),
                target_marker=np.str_(self.target_marker),
                source_fingerprint=np.str_(self.source_fingerprint),
                target_fingerprint=np.str_(self.target_fingerprint),
            )

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
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VocabMap):
            return NotImplemented
        return (
            np.array_equal(self.target_ids, other.target_ids)
            and np.array_equal(self.distances, other.distances)
            and (self.source_marker, self.target_marker, self.source_fingerprint, self.target_fingerprint)
            == (other.source_marker, other.target_marker, other.source_fingerprint, other.target_fingerprint)
        )

    __hash__ = None  # type: ignore[assignment]  # arrays are not hashable


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array

