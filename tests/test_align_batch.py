"""align_batch: every accepted form of a batch (dtypes, memory layouts, padded and ragged, empty
and tiny texts) gives the same result as the reference."""

from __future__ import annotations

import numpy as np
import pytest

import fusellm_fast as ff
from fusellm_fast.alignment import PositionStatus

from boundary import (
    ALIGNER, BATCH, Batch, G, SMALL, SOURCE_TOKENS, SP, TARGET_TOKENS, TEXTS, align,
    assert_matches_reference, assert_names_argument, assert_same_result, expected, lengths_of, make_batch,
    pad, padded_call, padded_small, small_args, tokenize,
)


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
