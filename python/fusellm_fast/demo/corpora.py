"""The demo's corpora: two domains from the Python installation itself, held-out texts and mixtures."""

from __future__ import annotations

import pathlib
import random
import sysconfig
from dataclasses import dataclass

from ..pipeline import split_text

__all__ = ["DemoCorpora", "domain_texts", "mixture", "split_corpora"]


def domain_texts(chunk_chars: int) -> dict[str, list[str]]:
    """The two domains as lists of pieces of about ``chunk_chars`` characters, in a fixed order.

    >>> texts = domain_texts(400)
    >>> sorted(texts), all(len(t) <= 400 for t in texts["prose"])
    (['code', 'prose'], True)
    """
    import pydoc_data.topics

    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    code = [path.read_text(encoding="utf-8", errors="replace") for path in sorted(stdlib.glob("*.py"))]
    prose = [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]
    return {
        name: [piece for text in documents for piece in split_text(text, chunk_chars) if piece.strip()]
        for name, documents in (("code", code), ("prose", prose))
    }


@dataclass(frozen=True)
class DemoCorpora:
    """Disjoint held-out texts and a training pool per domain."""

    held_out: dict[str, list[str]]
    pool: dict[str, list[str]]


def split_corpora(texts: dict[str, list[str]], *, eval_texts: int, seed: int) -> DemoCorpora:
    """Every tenth piece may be held out; ``eval_texts`` of them per domain are, chosen at random."""
    rng = random.Random(seed)
    held_out, pool = {}, {}
    for name, pieces in texts.items():
        candidates = pieces[::10]
        held_out[name] = rng.sample(candidates, min(eval_texts, len(candidates)))
        pool[name] = [piece for i, piece in enumerate(pieces) if i % 10]
    return DemoCorpora(held_out=held_out, pool=pool)


def mixture(pool: dict[str, list[str]], shares: dict[str, float], count: int, rng: random.Random) -> list[str]:
    """``count`` pieces drawn from the domains in the given shares."""
    names = list(shares)
    weights = [shares[name] for name in names]
    return [rng.choice(pool[rng.choices(names, weights)[0]]) for _ in range(count)]

