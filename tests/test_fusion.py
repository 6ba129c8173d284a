"""Sparse fusion and loss against a dense, position-by-position statement of FuseLLM Steps 4-5."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hypothesis")
from dense_fusion import CE_VALUES, dense_fused, dense_loss, densify, random_dists, shared_strategies
from fusellm_fast.errors import InputTypeError, InvalidInputError
from fusellm_fast.fusion import FusedDistribution, _fuse, _loss, _sparse_ce, fuse, fusion_loss
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=60, deadline=None)
@given(
    **shared_strategies(),
    level=st.sampled_from(["sequence", "token", "text"]),
    temperature=st.sampled_from([0.5, 1.0, 2.0]),
    lm_weight=st.sampled_from([0.0, 0.9, 1.0]),
    explicit_mask=st.booleans(),
)
def test_sparse_fusion_and_loss_match_dense_reference(
    batch, length, slots_per_model, extra_vocab, method, level, temperature, ce_temperature, kind, lm_weight,
    explicit_mask, seed,
):  # fmt: skip
    if method == "min_ce":
        ce_temperature = None
    rng = np.random.default_rng(seed)
    vocab = max(slots_per_model) + extra_vocab
    models = len(slots_per_model)
    dists = random_dists(rng, batch, length, slots_per_model, vocab)
    student_logits = torch.tensor(rng.normal(size=(batch, length, vocab)) * 3.0, dtype=torch.float32)
    lengths = rng.integers(1, length + 1, size=batch)
    real = torch.tensor(np.arange(length)[None, :] < lengths[:, None])
    labels = torch.tensor(rng.integers(0, vocab, size=(batch, length))).masked_fill(~real, -100)
    mask = torch.tensor(rng.random((batch, length)) < 0.7) if explicit_mask else None
    units = {"sequence": (), "token": (length,), "text": (int(rng.integers(1, 4)),)}[level]
    ce = torch.tensor(rng.choice(CE_VALUES, size=(models, batch, *units)), dtype=torch.float32)
    # Segments in text order, as packing numbers them; padding belongs to none.
    segment_ids = None
    if level == "text":
        segments = np.sort(rng.integers(0, units[0], size=(batch, length)), axis=1)
        segment_ids = torch.tensor(segments).masked_fill(~real, -1)

    options = {"method": method, "temperature": temperature, "level": level, "ce_temperature": ce_temperature}
    fused = fuse(dists, ce, segment_ids=segment_ids, **options)
    expected = dense_fused(dists, ce, vocab=vocab, segment_ids=segment_ids, **options)
    np.testing.assert_allclose(densify(fused, vocab), expected, atol=1e-6)

    student = student_logits.clone().requires_grad_()
    loss = fusion_loss(student, labels, fused, lm_weight=lm_weight, kind=kind, mask=mask)
    loss.total.backward()
    dense_student = student_logits.double().requires_grad_()
    total, clm, fusion_term = dense_loss(
        dense_student, labels, real if mask is None else mask, expected, kind=kind, lm_weight=lm_weight
    )
    total.backward()
    assert loss.clm.item() == pytest.approx(clm.item(), rel=1e-5, abs=1e-5)
    assert loss.fusion.item() == pytest.approx(fusion_term.item(), rel=1e-5, abs=1e-5)
    assert loss.total.item() == pytest.approx(total.item(), rel=1e-5, abs=1e-5)
    np.testing.assert_allclose(student.grad.numpy(), dense_student.grad.numpy(), atol=1e-6)


@pytest.mark.parametrize("kind", ["ce", "kl"])
def test_gradcheck_of_the_hand_written_backward(kind):
    rng = np.random.default_rng(11)
    dists = random_dists(rng, 2, 3, [3, 2, 4], 7, empty_share=0.2)
    ce = torch.tensor(rng.choice(CE_VALUES, size=(3, 2)), dtype=torch.float32)
    fused = fuse(dists, ce, method="avg_ce")
    labels = torch.tensor([[1, 4, -100], [0, 6, 2]])
    student = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda logits: fusion_loss(logits, labels, fused, lm_weight=0.3, kind=kind).total, (student,)
    )


def test_chunked_log_partition_gives_the_same_loss_and_gradient(monkeypatch):
    rng = np.random.default_rng(12)
    dists = random_dists(rng, 2, 9, [4, 4], 50)
    fused = fuse(dists, torch.tensor([[1.0, 2.0], [1.5, 0.5]]))
    labels = torch.tensor(rng.integers(0, 50, size=(2, 9)))
    logits = torch.randn(2, 9, 50)

    def loss_and_grad():
        student = logits.clone().requires_grad_()
        total = fusion_loss(student, labels, fused).total
        total.backward()
        return total.detach(), student.grad

    whole = loss_and_grad()
    monkeypatch.setattr(_sparse_ce, "_CHUNK_ELEMENTS", 3 * 50)  # 3 positions per chunk, 6 chunks
    assert len(_sparse_ce._row_chunks(logits.view(18, 50))) == 6
    chunked = loss_and_grad()
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-6, atol=1e-7)


def one_position(*lists):
    """Distributions for B=1, L=1 from one ``(ids, logits)`` list pair per model."""
    return [(torch.tensor([[ids]]), torch.tensor([[logits]], dtype=torch.float32)) for ids, logits in lists]


def test_min_ce_tie_goes_to_the_earlier_model():
    dists = one_position(([1], [0.0]), ([2], [0.0]), ([3], [0.0]))
    fused = fuse(dists, torch.tensor([[2.0], [1.0], [1.0]]))
    assert fused.ids.tolist() == [[[2]]]
    assert fused.weights.tolist() == [[0.0], [1.0], [0.0]]
    tied_everywhere = fuse(dists, torch.tensor([[[1.0]], [[1.0]], [[1.0]]]), level="token")
    assert tied_everywhere.ids.tolist() == [[[1]]]


def test_min_ce_compares_ce_where_rewards_underflow_to_zero():
    dists = one_position(([1], [0.0]), ([2], [0.0]))
    # exp(-200) and exp(-150) are both 0.0 in float32; the lower CE must still win.
    assert fuse(dists, torch.tensor([[200.0], [150.0]])).ids.tolist() == [[[2]]]


def test_token_level_chooses_per_position():
    ids = [torch.tensor([[[1], [1]]]), torch.tensor([[[2], [2]]])]
    dists = [(i, torch.zeros(1, 2, 1)) for i in ids]
    fused = fuse(dists, torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]]), level="token")
    assert fused.ids.tolist() == [[[1], [2]]]
    assert fused.weights.shape == (2, 1, 2)


def test_empty_source_position_falls_back_to_the_target():
    dists = one_position(([4, 7], [1.0, 0.0]), ([-1, -1], [0.0, 0.0]))
    fused = fuse(dists, torch.tensor([[3.0], [0.1]]))
    assert fused.weights.tolist() == [[0.0], [1.0]]
    assert fused.ids.tolist() == [[[4, 7]]]
    np.testing.assert_allclose(fused.probs.numpy()[0, 0], np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum(), rtol=1e-6)


def test_avg_ce_weights_follow_the_reference_and_the_tau_option():
    dists = one_position(([5, 6], [0.0, -50.0]), ([6, 5], [0.0, -50.0]))
    ce = torch.tensor([[1.0], [2.0]])
    rewards = np.exp(-np.array([1.0, 2.0]))
    reference = np.exp(rewards) / np.exp(rewards).sum()
    fused = fuse(dists, ce, method="avg_ce")
    np.testing.assert_allclose(fused.weights.numpy()[:, 0], reference, rtol=1e-6)
    assert fused.ids.tolist() == [[[5, 6, -1, -1]]]  # duplicates merged, merged entries first
    np.testing.assert_allclose(fused.probs.numpy()[0, 0, :2], reference, rtol=1e-5)

    sharp = fuse(dists, ce, method="avg_ce", ce_temperature=0.25)
    by_tau = np.exp(-np.array([1.0, 2.0]) / 0.25) / np.exp(-np.array([1.0, 2.0]) / 0.25).sum()
    np.testing.assert_allclose(sharp.weights.numpy()[:, 0], by_tau, rtol=1e-6)


def test_position_without_any_distribution_leaves_the_fusion_term():
    dists = one_position(([-1], [0.0]), ([-1], [0.0]))
    fused = fuse(dists, torch.tensor([[1.0], [1.0]]))
    assert fused.probs.sum().item() == 0.0
    loss = fusion_loss(torch.zeros(1, 1, 3), torch.tensor([[0]]), fused)
    assert loss.fusion.item() == 0.0


def test_accepts_numpy_arrays_and_aligned_batches():
    rng = np.random.default_rng(3)
    dists = random_dists(rng, 2, 4, [3, 2], 9)
    aligned = type("Aligned", (), {"ids": dists[1][0].numpy().astype(np.int32), "logits": dists[1][1].numpy()})()
    read_only = dists[0][0].numpy().copy()
    read_only.flags.writeable = False
    ce = np.array([[1.0, 2.0], [2.0, 1.0]], dtype=np.float32)
    from_numpy = fuse([(read_only, dists[0][1].numpy()), aligned], ce)
    from_tensors = fuse(dists, torch.from_numpy(ce))
    assert torch.equal(from_numpy.ids, from_tensors.ids) and torch.equal(from_numpy.probs, from_tensors.probs)


def test_inputs_are_not_mutated():
    rng = np.random.default_rng(0)
    dists = random_dists(rng, 2, 5, [3, 2, 3], 9, empty_share=0.5)
    ce = torch.tensor(rng.choice(CE_VALUES, size=(3, 2)), dtype=torch.float32)
    before = [t.clone() for pair in dists for t in pair] + [ce.clone()]
    fused = fuse(dists, ce, method="avg_ce")
    student, labels, mask = torch.randn(2, 5, 9), torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5)
    loss_inputs = (student, labels, mask, fused.ids, fused.probs)
    loss_before = [t.clone() for t in loss_inputs]
    fusion_loss(student, labels, fused, kind="kl", mask=mask)
    after = [t for pair in dists for t in pair] + [ce, *loss_inputs]
    for original, copy in zip(after, before + loss_before, strict=True):
        assert torch.equal(original, copy)


def test_student_vocabulary_may_exceed_the_teacher_ids_but_not_fall_short():
    fused = fuse(one_position(([9, 2], [1.0, 0.0])), torch.tensor([[1.0]]))
    labels = torch.tensor([[0]])
    assert torch.isfinite(fusion_loss(torch.zeros(1, 1, 12), labels, fused).total)
    with pytest.raises(InvalidInputError, match="fused: holds id 9, outside the student's vocabulary of 9"):
        fusion_loss(torch.zeros(1, 1, 9), labels, fused)


def test_bfloat16_student_logits_are_computed_in_float32():
    rng = np.random.default_rng(2)
    fused = fuse(random_dists(rng, 2, 3, [2, 2], 6), torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    student = torch.randn(2, 3, 6).bfloat16()
    labels = torch.randint(0, 6, (2, 3))
    full_student, half_student = student.float().requires_grad_(), student.clone().requires_grad_()
    full = fusion_loss(full_student, labels, fused)
    half = fusion_loss(half_student, labels, fused)
    (full.total + half.total).backward()
    assert half.total.dtype == torch.float32 and half_student.grad.dtype == torch.bfloat16
    assert half.total.item() == pytest.approx(full.total.item(), rel=1e-6)
    torch.testing.assert_close(half_student.grad.float(), full_student.grad, rtol=1e-2, atol=1e-3)


def good_dists(models=2):
    return [(torch.zeros(1, 2, 1, dtype=torch.long), torch.zeros(1, 2, 1)) for _ in range(models)]


@pytest.mark.parametrize(
    ("dists", "changes", "error", "pattern"),
    [
        (torch.zeros(2, 1, 2, 1), {}, InputTypeError, "dists: must be a sequence"),
        ([], {}, InvalidInputError, "dists: must hold at least the target"),
        ([torch.zeros(1, 2, 1)], {}, InputTypeError, r"dists\[0\]: must be an \(ids, logits\) pair"),
        ([([[0]], [[0.0]])], {}, InputTypeError, r"dists\[0\] ids: must be a torch.Tensor or numpy array"),
        ([(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1))], {}, InputTypeError, r"dists\[0\] ids: must have an integer"),
        (
            [(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2))],
            {},
            InvalidInputError,
            r"dists\[0\] ids: must have 3 dimensions",
        ),
        (
            [(torch.zeros(1, 2, 1, dtype=torch.long), torch.zeros(1, 2, 2))],
            {},
            InvalidInputError,
            r"dists\[0\] logits: must have shape \[1, 2, 1\]",
        ),
        (
            [*good_dists(1), (torch.zeros(2, 2, 1, dtype=torch.long), torch.zeros(2, 2, 1))],
            {},
            InvalidInputError,
            r"dists\[1\]: has \[B, L\] = \[2, 2\], the target's is \[1, 2\]",
        ),
        (
            [(torch.full((1, 2, 1), -2), torch.zeros(1, 2, 1)), *good_dists(1)],
            {},
            InvalidInputError,
            r"dists\[0\] ids: must be token ids or -1",
        ),
        (
            [(torch.zeros(0, 2, 1, dtype=torch.long), torch.zeros(0, 2, 1))] * 2,
            {"ce": torch.zeros(2, 0)},
            InvalidInputError,
            "dists: the batch is empty",
        ),
        (good_dists(), {"ce": torch.zeros(3, 1)}, InvalidInputError, r"ce: must have shape \[2, 1\]"),
        (
            good_dists(),
            {"ce": torch.zeros(2, 1), "level": "token"},
            InvalidInputError,
            r"ce: must have shape \[2, 1, 2\]",
        ),
        (good_dists(), {"ce": torch.zeros(2, 1, dtype=torch.long)}, InputTypeError, "ce: must have a floating dtype"),
        (good_dists(), {"ce": torch.tensor([[1.0], [float("nan")]])}, InvalidInputError, "ce: must be finite"),
        (good_dists(), {"method": "max_ce"}, InvalidInputError, "method: must be one of"),
        (good_dists(), {"level": "block"}, InvalidInputError, "level: must be one of"),
        (good_dists(), {"temperature": 0.0}, InvalidInputError, "temperature: must be a positive"),
        (good_dists(), {"ce_temperature": 1.0}, InvalidInputError, "ce_temperature: applies to method='avg_ce'"),
        (good_dists(), {"method": "avg_ce", "ce_temperature": -1.0}, InvalidInputError, "ce_temperature: must be"),
    ],
)
def test_fuse_rejects_bad_input(dists, changes, error, pattern):
    arguments = {"ce": torch.zeros(2, 1)} | changes
    ce = arguments.pop("ce")
    with pytest.raises(error, match=pattern):
        fuse(dists, ce, **arguments)


@pytest.mark.parametrize(
    ("changes", "error", "pattern"),
    [
        ({"student_logits": torch.zeros(1, 2)}, InvalidInputError, "student_logits: must have 3 dimensions"),
        (
            {"student_logits": torch.zeros(1, 2, 4, dtype=torch.long)},
            InputTypeError,
            "student_logits: must have a float",
        ),
        ({"student_logits": torch.zeros(0, 2, 4)}, InvalidInputError, "student_logits: the batch is empty"),
        ({"labels": torch.zeros(1, 2)}, InputTypeError, "labels: must have an integer dtype"),
        ({"labels": torch.zeros(2, 2, dtype=torch.long)}, InvalidInputError, r"labels: must have shape \[1, 2\]"),
        ({"labels": torch.tensor([[0, 4]])}, InvalidInputError, r"labels: must be ids in \[0, 4\) or -100"),
        ({"labels": torch.tensor([[0, -5]])}, InvalidInputError, r"labels: must be ids in \[0, 4\) or -100"),
        ({"fused": (torch.zeros(1, 2, 1), torch.zeros(1, 2, 1))}, InputTypeError, "fused: must be a FusedDistribution"),
        (
            {"fused": FusedDistribution(torch.zeros(1, 3, 1, dtype=torch.long), torch.ones(1, 3, 1), torch.ones(1, 1))},
            InvalidInputError,
            r"fused: ids and probs must have shape \[1, 2, K'\]",
        ),
        ({"mask": torch.ones(1, 3)}, InvalidInputError, r"mask: must have shape \[1, 2\]"),
        ({"mask": [[1, 1]]}, InputTypeError, "mask: must be a torch.Tensor"),
        ({"lm_weight": 1.5}, InvalidInputError, "lm_weight: must be a number in"),
        ({"kind": "mse"}, InvalidInputError, "kind: must be one of"),
    ],
)
def test_fusion_loss_rejects_bad_input(changes, error, pattern):
    fused = FusedDistribution(
        ids=torch.zeros(1, 2, 1, dtype=torch.long), probs=torch.ones(1, 2, 1), weights=torch.ones(1, 1)
    )
    arguments = {
        "student_logits": torch.zeros(1, 2, 4),
        "labels": torch.zeros(1, 2, dtype=torch.long),
        "fused": fused,
    } | changes
    tensors = [arguments.pop(key) for key in ("student_logits", "labels", "fused")]
    with pytest.raises(error, match=pattern):
        fusion_loss(*tensors, **arguments)


@pytest.mark.parametrize("module", [_fuse, _loss])
def test_docstring_examples_run(module):
    results = doctest.testmod(module)
    assert results.attempted > 0 and results.failed == 0
