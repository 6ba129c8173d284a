"""align_batch: what it rejects and how, and that it never modifies its inputs and returns fresh
arrays."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import fusellm_fast as ff

from boundary import (
    ALIGNER, BATCH, N_SOURCE, N_TARGET, SMALL, assert_names_argument, assert_same_result, lengths_of, pad,
    padded_small, replaced, small_args,
)


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


# --- inputs too large to address ------------------------------------------------------

def test_an_output_too_large_for_memory_raises_input_too_large_error():
    # Zero source rows hold no candidates, whatever their width; the output has a slot per width.
    for k in (2**40, 2**59):  # numpy allows no larger dimension
        with pytest.raises(ff.InputTooLargeError) as info:
            ff.align_batch(ALIGNER, [[0, 1]], [[]], np.zeros((1, 0, k), np.int64), np.zeros((1, 0, k), np.float32))
        assert_names_argument(info.value, "source_topk_ids")
    assert isinstance(info.value, ff.InvalidInputError)


def test_overflowing_offsets_and_lengths_are_errors():
    def core_align(target_starts, source_lengths, k):
        i64 = lambda values: np.array(values, np.int64)  # noqa: E731
        return ALIGNER._core.align(
            i64([0, 1]), i64(target_starts), i64([2]), i64([0, 0]), i64([0]), i64(source_lengths),
            [np.zeros((0, 1), np.int64)], [np.zeros((0, 1), np.float32)], k=k,
            vocab_align="soft", onehot="next", workers=1, method="dtw", candidates="mined", values="logits")

    core_align([0], [0], 1)  # the valid call
    with pytest.raises(ff.InvalidInputError, match="target_ids: text 0 reaches past the end"):
        core_align([2**63 - 1], [0], 1)
    with pytest.raises(ff.InvalidInputError, match="source_topk_ids: text 0 reaches past the end"):
        core_align([0], [2], 2**64 - 1)  # 2 rows of 2**64 - 1 candidates overflow
    with pytest.raises(ff.InputTooLargeError, match="source_ids: text 0 has 2147483648 tokens"):
        core_align([0], [2**31], 1)


@pytest.mark.parametrize("candidates", ["mined", "prefix"])
@pytest.mark.parametrize("method", ["dtw", "offsets", "boundary"])
def test_lists_of_no_candidates_leave_matched_positions_empty(method, candidates):
    aligner = ff.Aligner(["Ġthe", "Ġcat"], ["▁the", "▁cat"])
    out = ff.align_batch(aligner, [[0, 1]], [[0, 1]], [np.zeros((2, 0), np.int64)], [np.zeros((2, 0), np.float32)],
                         method=method, candidates=candidates)
    assert out.ids.tolist() == [[[-1], [-1]]]
    assert out.status.tolist() == [[ff.PositionStatus.EMPTY] * 2]
