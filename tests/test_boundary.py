"""The Python boundary of fusellm_fast: which inputs align_batch, Aligner, VocabMap and
edit_distance accept, what they reject and how, and that they behave under threads,
fork and file round trips."""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import re
import select
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
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


def test_example_batch_reaches_every_status(expected):
    # The equivalence tests below compare against this result; it must not be trivial.
    counts = expected.counts
    assert min(counts.matched, counts.onehot, counts.empty, counts.dropped_candidates) > 0
    assert (expected.status == PositionStatus.PADDING).any()
    assert_matches_reference(expected, BATCH)


# --- dtypes ---------------------------------------------------------------------------

ID_FORMS = {
    "int32": lambda r: np.asarray(r, dtype=np.int32),
    "int64": lambda r: np.asarray(r, dtype=np.int64),
    "uint16": lambda r: np.asarray(r, dtype=np.uint16),
    "list": lambda r: np.asarray(r).tolist(),
}


@pytest.mark.parametrize("form", ID_FORMS.values(), ids=ID_FORMS.keys())
def test_token_id_forms_give_same_result(form, expected):
    batch = BATCH._replace(target_ids=[form(r) for r in BATCH.target_ids],
                           source_ids=[form(r) for r in BATCH.source_ids])
    assert_same_result(align(batch), expected)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16])
def test_padded_token_id_dtypes_give_same_result(dtype, expected):
    assert_same_result(padded_call(BATCH, id_dtype=dtype), expected)


# A nested list is always read as ragged, so the padded layout takes arrays only.
TOPK_ID_FORMS = [("ragged", "int32"), ("ragged", "int64"), ("ragged", "list"), ("padded", "int32"), ("padded", "int64")]


@pytest.mark.parametrize("layout, form", TOPK_ID_FORMS, ids=["-".join(f) for f in TOPK_ID_FORMS])
def test_topk_id_forms_give_same_result(layout, form, expected):
    if layout == "padded":
        topk, logits = ID_FORMS[form](pad(BATCH.topk_ids, -1)), pad(BATCH.topk_logits, np.nan)
    else:
        topk, logits = [ID_FORMS[form](r) for r in BATCH.topk_ids], BATCH.topk_logits
    out = ff.align_batch(ALIGNER, BATCH.target_ids, BATCH.source_ids, topk, logits)
    assert_same_result(out, expected)


def test_topk_rows_of_mixed_integer_dtypes_give_same_result(expected):
    forms = [ID_FORMS["int32"], ID_FORMS["int64"], lambda r: np.asarray(r, dtype=np.int16)]
    topk = [forms[b % len(forms)](r) for b, r in enumerate(BATCH.topk_ids)]
    out = ff.align_batch(ALIGNER, BATCH.target_ids, BATCH.source_ids, topk, BATCH.topk_logits)
    assert_same_result(out, expected)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("layout", ["ragged", "padded"])
def test_logit_dtypes_give_same_result(dtype, layout, expected):
    logits = [r.astype(dtype) for r in BATCH.topk_logits]
    topk = BATCH.topk_ids
    if layout == "padded":
        topk, logits = pad(topk, -1), pad(logits, np.nan)
    out = ff.align_batch(ALIGNER, BATCH.target_ids, BATCH.source_ids, topk, logits)
    assert_same_result(out, expected)


def as_dtype(value, dtype):
    """An array, or each row of a sequence of arrays, converted to ``dtype`` (NaN read as 0)."""
    if isinstance(value, np.ndarray):
        return np.nan_to_num(value).astype(dtype)
    return [np.nan_to_num(np.asarray(r)).astype(dtype) for r in value]


@pytest.mark.parametrize("layout", ["ragged", "padded"])
@pytest.mark.parametrize("arg", ["target_ids", "source_ids", "source_topk_ids"])
def test_float_ids_raise_input_type_error(arg, layout):
    args = padded_small() if layout == "padded" else small_args()
    args[arg] = as_dtype(args[arg], np.float64)
    with pytest.raises(ff.InputTypeError) as info:
        ff.align_batch(ALIGNER, **args)
    assert_names_argument(info.value, arg)


@pytest.mark.parametrize("layout", ["ragged", "padded"])
def test_integer_logits_raise_input_type_error(layout):
    args = padded_small() if layout == "padded" else small_args()
    args["source_topk_logits"] = as_dtype(args["source_topk_logits"], np.int64)
    with pytest.raises(ff.InputTypeError) as info:
        ff.align_batch(ALIGNER, **args)
    assert_names_argument(info.value, "source_topk_logits")


def test_input_type_error_is_a_type_error():
    assert issubclass(ff.InputTypeError, TypeError) and issubclass(ff.InputTypeError, ff.FuseLLMError)
    for cls in (ff.InvalidInputError, ff.MarkerDetectionError, ff.VocabMapError):
        assert issubclass(cls, ValueError) and issubclass(cls, ff.FuseLLMError)


# --- memory layout ----------------------------------------------------------------------

def strided(a: np.ndarray) -> np.ndarray:
    """The same values as a non-contiguous view (every other element of a doubled array)."""
    return np.repeat(a, 2, axis=-1)[..., ::2]


def transposed(a: np.ndarray) -> np.ndarray:
    """The same values as a view with reversed axis order in memory (Fortran order for 2-D)."""
    return np.ascontiguousarray(a.T).T


def test_non_contiguous_ragged_rows_give_same_result(expected):
    batch = Batch([strided(r) for r in BATCH.target_ids], [strided(r) for r in BATCH.source_ids],
                  [transposed(r) for r in BATCH.topk_ids], [strided(r) for r in BATCH.topk_logits])
    # Rows with a dimension of 1 are contiguous whatever their strides; every other row is not.
    assert not any(r.flags.c_contiguous for rows in batch for r in rows if min(r.shape) > 1)
    assert_same_result(align(batch), expected)


def test_non_contiguous_padded_arrays_give_same_result(expected):
    target, source = transposed(pad(BATCH.target_ids, -1)), strided(pad(BATCH.source_ids, -1))
    topk, logits = transposed(pad(BATCH.topk_ids, -1)), strided(pad(BATCH.topk_logits, np.nan))
    assert target.flags.f_contiguous and not any(a.flags.c_contiguous for a in (target, source, topk, logits))
    out = ff.align_batch(ALIGNER, target, source, topk, logits,
                         target_lengths=lengths_of(BATCH.target_ids), source_lengths=lengths_of(BATCH.source_ids))
    assert_same_result(out, expected)


# --- padded and ragged layouts ---------------------------------------------------------

@pytest.mark.parametrize("padded_topk", [False, True], ids=["ragged topk", "padded topk"])
@pytest.mark.parametrize("padded_source", [False, True], ids=["ragged source", "padded source"])
@pytest.mark.parametrize("padded_target", [False, True], ids=["ragged target", "padded target"])
def test_padded_layouts_give_same_result_as_ragged(padded_target, padded_source, padded_topk, expected):
    options = {}
    target, source, topk, logits = BATCH.target_ids, BATCH.source_ids, BATCH.topk_ids, BATCH.topk_logits
    if padded_target:
        target, options["target_lengths"] = pad(target, -1), lengths_of(target).tolist()
    if padded_source:
        source, options["source_lengths"] = pad(source, -1), lengths_of(source)
    if padded_topk:
        topk, logits = pad(topk, len(SOURCE_TOKENS)), pad(logits, np.inf)
    assert_same_result(ff.align_batch(ALIGNER, target, source, topk, logits, **options), expected)


def test_padded_arrays_without_lengths_use_every_column():
    batch = make_batch(["the cat sat", "sat the cat"], k=3, seed=2)  # equal lengths on each side
    assert len({len(r) for r in batch.target_ids}) == 1 and len({len(r) for r in batch.source_ids}) == 1
    out = ff.align_batch(ALIGNER, np.stack(batch.target_ids), np.stack(batch.source_ids),
                         np.stack(batch.topk_ids), np.stack(batch.topk_logits))
    assert_same_result(out, align(batch))


# --- small and empty inputs --------------------------------------------------------------

@pytest.mark.parametrize("layout", ["ragged", "padded"])
def test_empty_batch(layout):
    if layout == "padded":
        out = ff.align_batch(ALIGNER, np.zeros((0, 3), np.int64), np.zeros((0, 4), np.int32),
                             np.zeros((0, 4, 2), np.int64), np.zeros((0, 4, 2), np.float32),
                             target_lengths=np.zeros(0, np.int64), source_lengths=[])
    else:
        out = ff.align_batch(ALIGNER, [], [], [], [])
    assert len(out) == 0
    assert out.ids.ndim == 3 and out.ids.shape[:2] == (0, 0) and out.ids.dtype == np.int32
    assert out.logits.shape == out.ids.shape and out.logits.dtype == np.float32
    assert out.status.shape == (0, 0) and out.lengths.shape == (0,)
    assert out.counts == ff.AlignmentCounts(0, 0, 0, 0, 0)


def with_text(batch: Batch, target: list[int], source: list[int]) -> Batch:
    """``batch`` with one more text given by its ids; the top-1 of each source row is its own id."""
    k = batch.topk_ids[0].shape[1]
    topk = np.full((len(source), k), -1, np.int64)
    topk[:, 0] = source
    return Batch(batch.target_ids + [np.array(target, np.int64)], batch.source_ids + [np.array(source, np.int64)],
                 batch.topk_ids + [topk], batch.topk_logits + [np.full((len(source), k), 0.5, np.float32)])


def text_ids(text: str) -> tuple[list[int], list[int]]:
    return tokenize(text, TARGET_TOKENS, SP).tolist(), tokenize(text, SOURCE_TOKENS, G).tolist()


EMPTY_TEXTS = {
    "empty target": ([], text_ids("the cat")[1]),
    "empty source": (text_ids("the cat")[0], []),
    "both empty": ([], []),
}


@pytest.mark.parametrize("layout", ["ragged", "padded"])
@pytest.mark.parametrize("target, source", EMPTY_TEXTS.values(), ids=EMPTY_TEXTS.keys())
def test_empty_texts_match_reference(target, source, layout):
    batch = with_text(SMALL, target, source)
    out = padded_call(batch) if layout == "padded" else align(batch)
    assert out.lengths[-1] == len(target)
    assert_matches_reference(out, batch)


@pytest.mark.parametrize("target, source", EMPTY_TEXTS.values(), ids=EMPTY_TEXTS.keys())
def test_empty_rows_may_be_plain_empty_lists(target, source):
    arrays = with_text(SMALL, target, source)
    as_lists = Batch(*([r.tolist() for r in rows] for rows in arrays))
    assert_same_result(align(as_lists), align(arrays))


ONE_TOKEN_OPTIONS = [{"vocab_align": "soft", "onehot": "next"}, {"vocab_align": "hard", "onehot": "current"}]


@pytest.mark.parametrize("options", ONE_TOKEN_OPTIONS, ids=["soft-next", "hard-current"])
def test_one_token_texts_match_reference(options):
    batch = make_batch(["a", "the", "dog"], k=3, seed=3)
    assert all(len(r) == 1 for r in batch.target_ids[:2] + batch.source_ids[:2])
    assert_matches_reference(align(batch, **options), batch, **options)


@pytest.mark.parametrize("options", ONE_TOKEN_OPTIONS, ids=["soft-next", "hard-current"])
def test_single_candidate_matches_reference(options):
    batch = make_batch(TEXTS, k=1, seed=4)
    out = align(batch, **options)
    assert out.ids.shape[2] == 1
    assert_matches_reference(out, batch, **options)
    assert_same_result(padded_call(batch, **options), out)


def test_zero_candidates_give_same_result_in_both_layouts():
    # K = 0: a matched position keeps no candidate and is empty, whichever layout carries the top-k.
    batch = BATCH._replace(topk_ids=[r[:, :0] for r in BATCH.topk_ids],
                           topk_logits=[r[:, :0] for r in BATCH.topk_logits])
    ragged = align(batch)
    assert ragged.counts.matched == 0 and ragged.counts.empty > 0
    assert_same_result(padded_call(batch), ragged)


def test_nan_logit_in_empty_slot_is_ignored(expected):
    assert any(np.isnan(r).any() for r in BATCH.topk_logits)  # the example batch has some
    zeroed = BATCH._replace(topk_logits=[np.nan_to_num(r, nan=0.0) for r in BATCH.topk_logits])
    assert_same_result(align(zeroed), expected)


# --- argument errors ----------------------------------------------------------------------

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
# (changes to the valid arguments, the argument the error must name, a part of its message)
INVALID_ARGUMENTS = {
    "fewer target texts": (
        lambda: {"target_ids": SMALL.target_ids[:1]}, "source_ids", "has 2 texts but target_ids has 1"),
    "fewer topk texts": (
        lambda: {"source_topk_ids": SMALL.topk_ids[:1]}, "source_topk_ids", "has 1 texts but source_ids has 2"),
    "fewer logit texts": (
        lambda: {"source_topk_logits": SMALL.topk_logits[:1]}, "source_topk_logits", "has 1 texts"),
    "topk rows short of source length": (
        lambda: {"source_topk_ids": [SMALL.topk_ids[0][:-1], SMALL.topk_ids[1]],
                 "source_topk_logits": [SMALL.topk_logits[0][:-1], SMALL.topk_logits[1]]},
        "source_topk_ids", "rows but source_ids"),
    "topk rows beyond source length": (
        lambda: {"source_topk_ids": [np.vstack([SMALL.topk_ids[0], [[0, 1]]]), SMALL.topk_ids[1]],
                 "source_topk_logits": [np.vstack([SMALL.topk_logits[0], [[0, 1]]]), SMALL.topk_logits[1]]},
        "source_topk_ids", "rows but source_ids"),
    "padded topk with too few positions": (
        lambda: padded_small(source_topk_ids=pad(SMALL.topk_ids, -1)[:, :1],
                             source_topk_logits=pad(SMALL.topk_logits, 0.0)[:, :1]),
        "source_topk_ids", "rows but source_ids"),
    "padded logits of another shape": (
        lambda: padded_small(source_topk_logits=pad(SMALL.topk_logits, 0.0)[:, :, :1]),
        "source_topk_logits", "differs from source_topk_ids"),
    "padded ids with ragged logits": (
        lambda: {"source_topk_ids": pad(SMALL.topk_ids, -1)}, "source_topk_logits", "same layout"),
    "negative target id": (
        lambda: {"target_ids": replaced(SMALL.target_ids, 1, 0, -1)}, "target_ids", "outside the"),
    "target id past vocabulary": (
        lambda: {"target_ids": replaced(SMALL.target_ids, 1, -1, N_TARGET)}, "target_ids", "outside the"),
    "negative source id": (
        lambda: {"source_ids": replaced(SMALL.source_ids, 0, -1, -3)}, "source_ids", "outside the"),
    "source id past vocabulary": (
        lambda: {"source_ids": replaced(SMALL.source_ids, 1, 0, N_SOURCE)}, "source_ids", "outside the"),
    "padded source id past vocabulary": (
        lambda: padded_small(source_ids=replaced(pad(SMALL.source_ids, -1), 0, 0, N_SOURCE)),
        "source_ids", "outside the"),
    "topk id past vocabulary": (
        lambda: {"source_topk_ids": replaced(SMALL.topk_ids, 1, (0, 1), N_SOURCE)},
        "source_topk_ids", "outside the source vocabulary"),
    "NaN logit": (
        lambda: {"source_topk_logits": replaced(SMALL.topk_logits, 0, (0, 0), np.nan)},
        "source_topk_logits", "not finite"),
    "infinite logit": (
        lambda: {"source_topk_logits": replaced(SMALL.topk_logits, 0, (0, 0), np.inf)},
        "source_topk_logits", "not finite"),
    "negative infinite padded logit": (
        lambda: padded_small(source_topk_ids=pad(small_args()["source_topk_ids"], -1),
                             source_topk_logits=replaced(pad(SMALL.topk_logits, 0.0), 0, (0, 0), -np.inf)),
        "source_topk_logits", "not finite"),
    "2-D target row": (
        lambda: {"target_ids": [SMALL.target_ids[0][None, :], SMALL.target_ids[1]]}, "target_ids", "must be 1-D"),
    "scalar source rows": (lambda: {"source_ids": np.array([3, 4])}, "source_ids", "must be 1-D"),
    "3-D padded target": (
        lambda: {"target_ids": pad(SMALL.target_ids, -1)[:, :, None]}, "target_ids", "must be 2-D"),
    "1-D topk row": (
        lambda: {"source_topk_ids": [SMALL.topk_ids[0][:, 0], SMALL.topk_ids[1]]}, "source_topk_ids", "must be 2-D"),
    "4-D padded topk": (
        lambda: padded_small(source_topk_ids=pad(SMALL.topk_ids, -1)[..., None],
                             source_topk_logits=pad(SMALL.topk_logits, 0.0)[..., None]),
        "source_topk_ids", "must be 3-D"),
    "unknown vocab_align": (lambda: {"vocab_align": "fuzzy"}, "vocab_align", "must be one of"),
    "unknown onehot": (lambda: {"onehot": "previous"}, "onehot", "must be one of"),
    "zero workers": (lambda: {"workers": 0}, "workers", "must be -1"),
    "workers -2": (lambda: {"workers": -2}, "workers", "must be -1"),
    "target length past width": (
        lambda: padded_small(target_lengths=lengths_of(SMALL.target_ids) + 3), "target_lengths", "must lie in"),
    "source length past width": (
        lambda: padded_small(source_lengths=lengths_of(SMALL.source_ids) + 3), "source_lengths", "must lie in"),
    "negative length": (lambda: padded_small(target_lengths=[-1, 1]), "target_lengths", "must lie in"),
    "one length per text": (lambda: padded_small(source_lengths=[1, 1, 1]), "source_lengths", "must have shape"),
    "lengths with ragged ids": (
        lambda: {"target_lengths": lengths_of(SMALL.target_ids)}, "target_lengths", "only valid with a padded"),
}


@pytest.mark.parametrize("changes, arg, message", INVALID_ARGUMENTS.values(), ids=INVALID_ARGUMENTS.keys())
def test_invalid_arguments_raise_invalid_input_error(changes, arg, message):
    valid = small_args()
    ff.align_batch(ALIGNER, **valid)  # the unchanged arguments are accepted
    with pytest.raises(ff.InvalidInputError) as info:
        ff.align_batch(ALIGNER, **{**valid, **changes()})
    assert type(info.value) is ff.InvalidInputError
    assert_names_argument(info.value, arg)
    assert message in str(info.value)


WRONG_TYPES = {
    "aligner not an Aligner": (lambda: {"aligner": ALIGNER._core}, "aligner"),
    "float workers": (lambda: {"workers": 2.0}, "workers"),
    "bool workers": (lambda: {"workers": True}, "workers"),
    "float lengths": (
        lambda: padded_small(target_lengths=lengths_of(SMALL.target_ids).astype(float)), "target_lengths"),
    "string ids": (lambda: {"source_ids": "the cat"}, "source_ids"),
}


@pytest.mark.parametrize("changes, arg", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_wrong_types_raise_input_type_error(changes, arg):
    args = {"aligner": ALIGNER, **small_args(), **changes()}
    with pytest.raises(ff.InputTypeError) as info:
        ff.align_batch(**args)
    assert_names_argument(info.value, arg)


INVALID_WHEN_TARGETS_EMPTY = {
    "source id past vocabulary": ({"source_ids": [[N_SOURCE]]}, "source_ids"),
    "NaN logit": ({"source_topk_logits": [[[np.nan]]]}, "source_topk_logits"),
}


@pytest.mark.parametrize("changes, arg", INVALID_WHEN_TARGETS_EMPTY.values(), ids=INVALID_WHEN_TARGETS_EMPTY.keys())
@pytest.mark.parametrize("other_text", [True, False], ids=["beside a non-empty target", "every target empty"])
def test_source_checks_do_not_depend_on_other_texts(changes, arg, other_text):
    # Text 0 has an empty target side; its source side must be checked all the same.
    args = {"target_ids": [[]], "source_ids": [[0]], "source_topk_ids": [[[0]]], "source_topk_logits": [[[1.0]]]}
    args.update(changes)
    if other_text:
        valid = {"target_ids": [0], "source_ids": [0], "source_topk_ids": [[0]], "source_topk_logits": [[1.0]]}
        args = {name: rows + [valid[name]] for name, rows in args.items()}
    with pytest.raises(ff.InvalidInputError) as info:
        ff.align_batch(ALIGNER, **args)
    assert_names_argument(info.value, arg)


# (a call building vocabularies or a map, the argument its error must name)
CONSTRUCTOR_TYPE_ERRORS = {
    "string as vocabulary": (lambda: ff.Aligner(G + "the", TARGET_TOKENS), "source_tokens"),
    "non-string token": (lambda: ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS[:-1] + [7]), "target_tokens"),
    "marker not a string": (lambda: ff.VocabMap.build(SOURCE_TOKENS, TARGET_TOKENS, source_marker=1), "source_marker"),
    "vocab_map not a VocabMap": (lambda: ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS, vocab_map={}), "vocab_map"),
    "not a tokenizer": (lambda: ff.Aligner.from_tokenizers(SOURCE_TOKENS, TARGET_TOKENS), "source_tokenizer"),
    "workers not an int": (lambda: ff.VocabMap.build(SOURCE_TOKENS, TARGET_TOKENS, workers="2"), "workers"),
}
CONSTRUCTOR_VALUE_ERRORS = {
    "empty marker": (lambda: ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS, target_marker=""), "target_marker"),
    "empty source vocabulary": (lambda: ff.Aligner([], TARGET_TOKENS, source_marker=G), "source_tokens"),
    "empty target vocabulary": (
        lambda: ff.VocabMap.build(SOURCE_TOKENS, [], target_marker=SP), "target_tokens"),
    "zero workers": (lambda: ff.VocabMap.build(SOURCE_TOKENS, TARGET_TOKENS, workers=0), "workers"),
    "workers -3": (lambda: ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS).build_vocab_map(workers=-3), "workers"),
}


@pytest.mark.parametrize("build, arg", CONSTRUCTOR_TYPE_ERRORS.values(), ids=CONSTRUCTOR_TYPE_ERRORS.keys())
def test_constructor_type_errors_name_the_argument(build, arg):
    with pytest.raises(ff.InputTypeError) as info:
        build()
    assert_names_argument(info.value, arg)


@pytest.mark.parametrize("build, arg", CONSTRUCTOR_VALUE_ERRORS.values(), ids=CONSTRUCTOR_VALUE_ERRORS.keys())
def test_constructor_value_errors_name_the_argument(build, arg):
    with pytest.raises(ff.InvalidInputError) as info:
        build()
    assert type(info.value) is ff.InvalidInputError
    assert_names_argument(info.value, arg)


MARKERLESS = ["the", "cat", "s"]


@pytest.mark.parametrize("build", [ff.Aligner, ff.VocabMap.build], ids=["Aligner", "VocabMap.build"])
@pytest.mark.parametrize("side", ["source", "target"])
def test_undetectable_marker_raises_marker_detection_error(build, side):
    vocabularies = {"source_tokens": SOURCE_TOKENS, "target_tokens": TARGET_TOKENS, f"{side}_tokens": MARKERLESS}
    with pytest.raises(ff.MarkerDetectionError) as info:
        build(**vocabularies)
    assert_names_argument(info.value, f"{side}_tokens")
    # Given explicitly, the marker needs no detection.
    explicit = build(**vocabularies, **{f"{side}_marker": "_"})
    assert getattr(explicit, f"{side}_marker") == "_"


def test_vocabulary_with_both_markers_equally_often_is_ambiguous():
    with pytest.raises(ff.MarkerDetectionError, match="^target_tokens: "):
        ff.Aligner(SOURCE_TOKENS, [SP + "a", G + "b", "c"])


def test_edit_distance_counts_code_points():
    assert ff.edit_distance("\u2581the", "\u0120the") == 1
    assert ff.edit_distance("", "") == 0
    assert ff.edit_distance("caf\u00e9", "cafe") == 1
    assert ff.edit_distance("\U0001F600a", "a") == 1  # one astral code point, two UTF-16 units
    assert ff.edit_distance("kitten", "sitting") == 3


@pytest.mark.parametrize("a, b, arg", [("a", 1, "b"), (None, "a", "a")])
def test_edit_distance_rejects_non_strings(a, b, arg):
    # errors.py: every exception of the package is a FuseLLMError and names its argument.
    with pytest.raises(ff.InputTypeError, match=rf"\b{arg}\b"):
        ff.edit_distance(a, b)


# --- inputs untouched, outputs fresh ------------------------------------------------

def all_arrays(value) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in all_arrays(v)]
    if isinstance(value, dict):
        return [a for v in value.values() for a in all_arrays(v)]
    return []


def ragged_args() -> dict:
    return {"target_ids": [r.copy() for r in BATCH.target_ids], "source_ids": [r.copy() for r in BATCH.source_ids],
            "source_topk_ids": [r.copy() for r in BATCH.topk_ids],
            "source_topk_logits": [r.copy() for r in BATCH.topk_logits]}


def padded_args() -> dict:
    return {"target_ids": pad(BATCH.target_ids, -1), "source_ids": pad(BATCH.source_ids, -1),
            "source_topk_ids": pad(BATCH.topk_ids, -1), "source_topk_logits": pad(BATCH.topk_logits, np.nan),
            "target_lengths": lengths_of(BATCH.target_ids), "source_lengths": lengths_of(BATCH.source_ids)}


def empty_rows_args() -> dict:
    # Empty 1-D rows are reshaped to [0, K] internally; the caller's arrays must keep their shape.
    args = ragged_args()
    args["source_ids"][3] = np.zeros(0, np.int64)
    args["source_topk_ids"][3], args["source_topk_logits"][3] = np.zeros(0, np.int64), np.zeros(0, np.float32)
    return args


ARGUMENT_SETS = {"ragged": ragged_args, "padded": padded_args, "empty rows": empty_rows_args}


@pytest.mark.parametrize("make_args", ARGUMENT_SETS.values(), ids=ARGUMENT_SETS.keys())
def test_inputs_are_never_modified(make_args):
    args = make_args()
    before = copy.deepcopy(args)
    out = ff.align_batch(ALIGNER, **args)
    for name in args:
        for a, b in zip(all_arrays(args[name]), all_arrays(before[name]), strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype, name
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert len(out) == len(BATCH.target_ids)


@pytest.mark.parametrize("make_args", ARGUMENT_SETS.values(), ids=ARGUMENT_SETS.keys())
def test_read_only_inputs_are_accepted(make_args):
    args = make_args()
    for a in all_arrays(args):
        a.flags.writeable = False
    assert_same_result(ff.align_batch(ALIGNER, **args), ff.align_batch(ALIGNER, **make_args()))


@pytest.mark.parametrize("make_args", ARGUMENT_SETS.values(), ids=ARGUMENT_SETS.keys())
def test_outputs_are_fresh_writable_arrays(make_args):
    args = make_args()
    first = ff.align_batch(ALIGNER, **args)
    second = ff.align_batch(ALIGNER, **args)
    outputs = [first.ids, first.logits, first.lengths, first.status]
    for out in outputs:
        assert out.flags.writeable
        for a in all_arrays(args) + [second.ids, second.logits, second.lengths, second.status]:
            assert not np.shares_memory(out, a)
    for out in outputs:
        out[...] = 0  # writing must be possible and must not reach the next call's result
    assert_same_result(ff.align_batch(ALIGNER, **args), second)


# --- threads and processes ------------------------------------------------------------------

@pytest.mark.parametrize("workers", [2, -1])
def test_worker_counts_give_same_result(workers, expected):
    assert_same_result(align(BATCH, workers=workers), expected)
    assert_same_result(align(BATCH, workers=workers, vocab_align="hard", onehot="current"),
                       align(BATCH, workers=1, vocab_align="hard", onehot="current"))


def test_one_aligner_shared_by_threads_gives_serial_results():
    options = [{"vocab_align": mode, "workers": workers} for mode in ("soft", "hard") for workers in (1, 2)]
    serial = [align(BATCH, **o) for o in options]
    shared = ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS)  # its map is built lazily, by whichever thread comes first
    start = threading.Barrier(4)

    def run_all(first: int) -> list[tuple[int, ff.AlignedBatch]]:
        start.wait()
        order = [(first + i) % len(options) for i in range(len(options))] * 2  # threads start on different options
        return [(i, align(BATCH, aligner=shared, **options[i])) for i in order]

    with ThreadPoolExecutor(4) as pool:
        per_thread = list(pool.map(run_all, range(4)))
    for results in per_thread:
        assert len(results) == 2 * len(options)
        for i, result in results:
            assert_same_result(result, serial[i])
    assert shared.vocab_map == ALIGNER.vocab_map


@contextlib.contextmanager
def deadline(seconds: float):
    """Raises TimeoutError in the main thread if the block runs longer than ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_forked_child_can_align(expected):
    align(BATCH, workers=2)  # thread pools have run in this process before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            out = align(BATCH, workers=2)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump((out.ids, out.logits, out.status), pipe)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        ready = select.select([pipe], [], [], 60)[0]
        if not ready:
            os.kill(pid, signal.SIGKILL)
        data = pipe.read() if ready else b""
    exit_status = os.waitpid(pid, 0)[1]
    assert ready, "the forked child did not finish within 60 s"
    assert os.waitstatus_to_exitcode(exit_status) == 0
    ids, logits, status = pickle.loads(data)
    np.testing.assert_array_equal(ids, expected.ids)
    np.testing.assert_array_equal(logits, expected.logits)
    np.testing.assert_array_equal(status, expected.status)


def align_rows(rows: dict) -> dict:
    """A batched ``datasets.map`` function; module level so worker processes find it by name."""
    out = ff.align_batch(ALIGNER, rows["target_ids"], rows["source_ids"], rows["topk_ids"], rows["topk_logits"],
                         workers=2)
    return {
        "aligned_ids": [out.ids[b, :n].tolist() for b, n in enumerate(out.lengths)],
        "aligned_status": [out.status[b, :n].tolist() for b, n in enumerate(out.lengths)],
        "process": [os.getpid()] * len(out),
    }


def test_dataset_map_in_two_processes_matches_in_process(expected, tmp_path):
    datasets = pytest.importorskip("datasets")
    align(BATCH, workers=2)  # thread pools have run in this process before datasets forks
    table = datasets.Dataset.from_dict({
        "target_ids": [r.tolist() for r in BATCH.target_ids], "source_ids": [r.tolist() for r in BATCH.source_ids],
        "topk_ids": [r.tolist() for r in BATCH.topk_ids], "topk_logits": [r.tolist() for r in BATCH.topk_logits],
    })
    with deadline(120):
        mapped = table.map(align_rows, batched=True, num_proc=2, new_fingerprint="aligned",
                           cache_file_name=str(tmp_path / "aligned.arrow"))
    assert os.getpid() not in mapped["process"]  # the rows were aligned in worker processes
    assert mapped["aligned_ids"] == [expected.ids[b, :n].tolist() for b, n in enumerate(expected.lengths)]
    assert mapped["aligned_status"] == [expected.status[b, :n].tolist() for b, n in enumerate(expected.lengths)]


# --- vocabulary map files ------------------------------------------------------------------

@pytest.fixture(scope="module")
def vocab_map() -> ff.VocabMap:
    return ff.VocabMap.build(SOURCE_TOKENS, TARGET_TOKENS, workers=1)


@pytest.mark.parametrize("as_str", [False, True], ids=["Path", "str"])
def test_vocab_map_round_trip(vocab_map, tmp_path, as_str, expected):
    path = tmp_path / "map.npz"
    vocab_map.save(str(path) if as_str else path)
    loaded = ff.VocabMap.load(str(path) if as_str else path)
    assert loaded == vocab_map
    assert loaded.target_ids.dtype == np.int32 and loaded.distances.dtype == np.int32
    aligner = ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS, vocab_map=loaded)
    assert aligner.vocab_map is loaded
    assert_same_result(align(BATCH, aligner=aligner), expected)
    lazy = ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS)
    assert lazy.vocab_map is None
    assert_same_result(align(BATCH, aligner=lazy), expected)
    assert lazy.vocab_map == vocab_map


def map_fields(vocab_map: ff.VocabMap) -> dict:
    return {"format_version": np.int64(1), "target_ids": vocab_map.target_ids, "distances": vocab_map.distances,
            "source_marker": np.str_(vocab_map.source_marker), "target_marker": np.str_(vocab_map.target_marker),
            "source_fingerprint": np.str_(vocab_map.source_fingerprint),
            "target_fingerprint": np.str_(vocab_map.target_fingerprint)}


def write_npz(path, **fields) -> None:
    with open(path, "wb") as f:
        np.savez(f, **fields)


def write_npy(path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # through a file, as np.save would add ".npy" to the name
        np.save(f, array)


def write_valid_then(damage):
    def write(path, vocab_map):
        vocab_map.save(path)
        data = bytearray(path.read_bytes())
        path.write_bytes(bytes(damage(data)))
    return write


def write_with(**changes):
    def write(path, vocab_map):
        fields = {**map_fields(vocab_map), **changes}
        write_npz(path, **{k: v for k, v in fields.items() if v is not None})
    return write


CORRUPT_FILES = {
    "random bytes": lambda path, _: path.write_bytes(np.random.default_rng(5).bytes(300)),
    "empty file": lambda path, _: path.write_bytes(b""),
    "truncated": write_valid_then(lambda data: data[: len(data) // 2]),
    "flipped bytes": write_valid_then(lambda data: data[:100] + bytes(b ^ 0xFF for b in data[100:160]) + data[160:]),
    "missing distances": write_with(distances=None),
    "missing fingerprint": write_with(source_fingerprint=None),
    "other format version": write_with(format_version=np.int64(2)),
    "format version not a number": write_with(format_version=np.str_("one")),
    "float target ids": write_with(target_ids=np.zeros(N_SOURCE, np.float64)),
    "2-D distances": write_with(distances=np.zeros((N_SOURCE, 1), np.int32)),
    "fewer distances": write_with(distances=np.zeros(N_SOURCE - 1, np.int32)),
    "negative target id": write_with(target_ids=np.full(N_SOURCE, -1, np.int32)),
    "a single .npy array": lambda path, vocab_map: write_npy(path, vocab_map.target_ids),
}


@pytest.mark.parametrize("write", CORRUPT_FILES.values(), ids=CORRUPT_FILES.keys())
def test_corrupt_vocab_map_file_raises_vocab_map_error(write, vocab_map, tmp_path):
    path = tmp_path / "map.npz"
    write(path, vocab_map)
    with pytest.raises(ff.VocabMapError, match="^path: "):
        ff.VocabMap.load(path)


def test_missing_vocab_map_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        ff.VocabMap.load(tmp_path / "absent.npz")


OTHER_MAPS = {
    "other source vocabulary": lambda: ff.VocabMap.build(SOURCE_TOKENS[:-1] + ["zz"], TARGET_TOKENS),
    "other target vocabulary": lambda: ff.VocabMap.build(SOURCE_TOKENS, TARGET_TOKENS + ["zz"]),
    "other marker": lambda: ff.VocabMap.build(SOURCE_TOKENS, TARGET_TOKENS, source_marker="Z"),
}


@pytest.mark.parametrize("make_map", OTHER_MAPS.values(), ids=OTHER_MAPS.keys())
def test_map_of_other_vocabularies_raises_vocab_map_error(make_map, tmp_path):
    path = tmp_path / "map.npz"
    make_map().save(path)
    with pytest.raises(ff.VocabMapError, match="^vocab_map: "):
        ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS, vocab_map=ff.VocabMap.load(path))


def test_map_with_ids_outside_target_vocabulary_raises_vocab_map_error(vocab_map, tmp_path):
    # The fingerprints fit, so only the check of the ids themselves can catch this.
    path = tmp_path / "map.npz"
    write_with(target_ids=np.full(N_SOURCE, N_TARGET, np.int32))(path, vocab_map)
    tampered = ff.VocabMap.load(path)
    with pytest.raises(ff.VocabMapError, match="vocab_map"):
        ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS, vocab_map=tampered)


# --- Hugging Face tokenizers ----------------------------------------------------------

CORPUS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "hello there cat",
          "the cats and the dogs sat there"]


def train_tokenizer(marker: str, directory):
    """A small BPE tokenizer with one added token, saved and reloaded from ``directory``."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    model = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    if marker == G:
        model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=True)
        model.decoder = tokenizers.decoders.ByteLevel()
    else:
        model.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
        model.decoder = tokenizers.decoders.Metaspace()
    model.train_from_iterator(CORPUS, tokenizers.trainers.BpeTrainer(vocab_size=70, special_tokens=["[UNK]"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]")
    fast.add_tokens(["<extra>"])
    fast.save_pretrained(directory)
    return transformers.AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def tokenizer_pair(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizers")
    return train_tokenizer(G, directory / "source"), train_tokenizer(SP, directory / "target")


def vocabulary(tokenizer) -> list[str]:
    return tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


def test_from_tokenizers_reads_whole_vocabularies(tokenizer_pair):
    source, target = tokenizer_pair
    aligner = ff.Aligner.from_tokenizers(source, target)
    assert (aligner.source_marker, aligner.target_marker) == (G, SP)
    assert (aligner.source_size, aligner.target_size) == (len(source), len(target))
    assert vocabulary(source)[-1] == vocabulary(target)[-1] == "<extra>"  # added tokens are counted


def test_from_tokenizers_aligns_like_the_reference(tokenizer_pair):
    source, target = tokenizer_pair
    texts = ["the cat sat on the mat", "hello there dogs", "a cat"]
    rng = np.random.default_rng(6)
    target_ids = [np.array(target(t, add_special_tokens=False)["input_ids"]) for t in texts]
    source_ids = [np.array(source(t, add_special_tokens=False)["input_ids"]) for t in texts]
    topk_ids = []
    for s in source_ids:
        ids = rng.integers(0, len(source), (len(s), 3))
        ids[:-1, 0] = s[1:]
        topk_ids.append(ids)
    logits = [(rng.integers(-8, 8, ids.shape) / 2).astype(np.float32) for ids in topk_ids]
    batch = Batch(target_ids, source_ids, topk_ids, logits)
    out = align(batch, aligner=ff.Aligner.from_tokenizers(source, target))
    assert out.counts.matched > 0
    assert_matches_reference(out, batch, vocabulary(source), vocabulary(target))
    from_lists = ff.Aligner(vocabulary(source), vocabulary(target))
    assert_same_result(align(batch, aligner=from_lists), out)
