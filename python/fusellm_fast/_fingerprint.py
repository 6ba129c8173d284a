"""The one digest that tells whether two runs saw the same strings (vocabularies, corpora)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def strings_fingerprint(strings: Iterable[str]) -> str:
    """A SHA-256 digest of strings in order, each ended by a NUL byte.

    >>> strings_fingerprint(["a", "b"]) == strings_fingerprint(["a", "b"]) != strings_fingerprint(["ab"])
    True
    """
    digest = hashlib.sha256()
    for string in strings:
        digest.update(string.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()
