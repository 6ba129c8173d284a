"""Shared inputs of the boundary tests: two small vocabularies that segment the same words differently,
batches of texts in them, the ways of passing a batch, and the checks of a result."""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import pytest

import fusellm_fast as ff
from fusellm_fast import reference
from fusellm_fast.alignment import PositionStatus

G, SP = "\u0120", "\u2581"  # byte-level and SentencePiece space markers
LETTERS = "acdeghilmnorst"
# Two vocabularies that segment the same words differently, so that alignment has
# exact matches, MinED matches and positions without a single source partner.
SOURCE_TOKENS = ([G + c for c in LETTERS] + list(LETTERS)
                 + [G + w for w in ("the", "cat", "sat", "on", "mat", "dog", "hello")] + ["at", "he", "og", "ll"])
TARGET_TOKENS = ([SP + c for c in LETTERS] + list(LETTERS)
                 + [SP + w for w in ("the", "cat", "cats", "sa", "on", "ma", "do", "hell")] + ["og", "at", "tt"])
TEXTS = ["the cat sat on the mat", "hello dog", "cats sat on a hot log", "the", "dogma", "a cat"]


def tokenize(text: str, vocabulary: list[str], marker: str) -> np.ndarray:
    """Greedy longest-match tokenization; every single letter is a token, so it always succeeds."""
    index = {t: i for i, t in enumerate(vocabulary)}
    ids = []
    for word in text.split():
        rest = marker + word
        while rest:
            end = next(e for e in range(len(rest), 0, -1) if rest[:e] in index)
            ids.append(index[rest[:end]])
            rest = rest[end:]
    return np.array(ids, dtype=np.int64)


class Batch(NamedTuple):
    """A ragged batch: one array per text."""

    target_ids: list
    source_ids: list
    topk_ids: list
    topk_logits: list


def make_batch(texts: list[str], k: int, seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    target, source, topk_ids, topk_logits = [], [], [], []
    for text in texts:
        t, s = tokenize(text, TARGET_TOKENS, SP), tokenize(text, SOURCE_TOKENS, G)
        ids = np.stack([rng.permutation(len(SOURCE_TOKENS))[:k] for _ in s]) if len(s) else np.zeros((0, k), np.int64)
        ids[:-1, 0] = s[1:]  # the true next token leads, as a language model's top-1 would
        empty = rng.random(ids.shape) < 0.2
        ids[empty] = -1
        # Quarters are exact in float16, so every float dtype carries the same values.
        logits = (rng.integers(-20, 20, ids.shape) / 4).astype(np.float32)
        logits[empty] = np.nan  # an empty slot's logit is never read
        target.append(t)
        source.append(s)
        topk_ids.append(ids)
        topk_logits.append(logits)
    return Batch(target, source, topk_ids, topk_logits)


BATCH = make_batch(TEXTS, k=4, seed=0)
SMALL = make_batch(["the cat", "hello dog"], k=2, seed=1)
ALIGNER = ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS)


def align(batch: Batch, aligner: ff.Aligner = ALIGNER, **options) -> ff.AlignedBatch:
    return ff.align_batch(aligner, batch.target_ids, batch.source_ids, batch.topk_ids, batch.topk_logits, **options)


def pad(rows: list, fill, dtype=None, extra: int = 2) -> np.ndarray:
    """Rows stacked into one array padded to ``extra`` beyond the longest row."""
    rows = [np.asarray(r, dtype=dtype) for r in rows]
    width = max((len(r) for r in rows), default=0) + extra
    out = np.full((len(rows), width) + rows[0].shape[1:] if rows else (0, width), fill, dtype=dtype or rows[0].dtype)
    for b, r in enumerate(rows):
        out[b, : len(r)] = r
    return out


def lengths_of(rows: list) -> np.ndarray:
    return np.array([len(r) for r in rows], dtype=np.int64)


def padding_id(dtype) -> int:
    """An id outside every vocabulary, so that reading padding would be caught."""
    return -1 if np.dtype(dtype).kind == "i" else np.iinfo(dtype).max


def padded_call(batch: Batch, id_dtype=np.int64, **options) -> ff.AlignedBatch:
    """align_batch with every argument padded; padding holds invalid ids and NaN logits."""
    return ff.align_batch(
        ALIGNER,
        pad(batch.target_ids, padding_id(id_dtype), id_dtype),
        pad(batch.source_ids, padding_id(id_dtype), id_dtype),
        pad(batch.topk_ids, len(SOURCE_TOKENS)),
        pad(batch.topk_logits, np.nan),
        target_lengths=lengths_of(batch.target_ids),
        source_lengths=lengths_of(batch.source_ids),
        **options,
    )


def assert_same_result(actual: ff.AlignedBatch, expected: ff.AlignedBatch) -> None:
    for field in ("ids", "logits", "lengths", "status"):
        a, e = getattr(actual, field), getattr(expected, field)
        assert a.dtype == e.dtype, field
        np.testing.assert_array_equal(a, e, err_msg=field)
    assert actual.counts == expected.counts


def assert_matches_reference(out: ff.AlignedBatch, batch: Batch, source_tokens=SOURCE_TOKENS,
                             target_tokens=TARGET_TOKENS, **options) -> None:
    """``out`` holds, position by position, what the plain-Python oracle gives."""
    # The oracle takes finite logits only; empty slots' values are never read.
    logits = [np.where(ids < 0, 0.0, v).tolist() for ids, v in zip(batch.topk_ids, batch.topk_logits, strict=True)]
    expected = reference.align_batch(
        source_tokens, target_tokens, [np.asarray(r).tolist() for r in batch.target_ids],
        [np.asarray(r).tolist() for r in batch.source_ids], [np.asarray(r).tolist() for r in batch.topk_ids],
        logits, source_marker=G, target_marker=SP, **options)
    assert out.lengths.tolist() == [len(positions) for positions in expected]
    for b, positions in enumerate(expected):
        for j, (status, entries) in enumerate(positions):
            n = len(entries)
            assert out.status[b, j] == status, (b, j)
            assert out.ids[b, j, :n].tolist() == [t for t, _ in entries], (b, j)
            assert out.logits[b, j, :n].tolist() == [v for _, v in entries], (b, j)
            assert (out.ids[b, j, n:] == -1).all(), (b, j)
        assert (out.status[b, len(positions):] == PositionStatus.PADDING).all(), b


@pytest.fixture(scope="module")
def expected() -> ff.AlignedBatch:
    return align(BATCH, workers=1)


def assert_names_argument(error: Exception, arg: str) -> None:
    assert re.match(rf"{re.escape(arg)}(\[\d+\])?: ", str(error)), str(error)


def replaced(rows, b: int, index, value):
    """A copy of ``rows`` (an array or a list of arrays) with ``rows[b][index] = value``."""
    rows = rows.copy() if isinstance(rows, np.ndarray) else [np.array(r) for r in rows]
    rows[b][index] = value
    return rows


def small_args() -> dict:
    return {"target_ids": SMALL.target_ids, "source_ids": SMALL.source_ids,
            # Slot (0, 0) of text 0 holds a candidate, whatever the random draw put there.
            "source_topk_ids": replaced(SMALL.topk_ids, 0, (0, 0), 0),
            "source_topk_logits": replaced(SMALL.topk_logits, 0, (0, 0), 1.0)}


def padded_small(**changes) -> dict:
    args = {"target_ids": pad(SMALL.target_ids, -1), "source_ids": pad(SMALL.source_ids, -1),
            "source_topk_ids": pad(SMALL.topk_ids, -1), "source_topk_logits": pad(SMALL.topk_logits, np.nan),
            "target_lengths": lengths_of(SMALL.target_ids), "source_lengths": lengths_of(SMALL.source_ids)}
    return {**args, **changes}


N_SOURCE, N_TARGET = len(SOURCE_TOKENS), len(TARGET_TOKENS)
