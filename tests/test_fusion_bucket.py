"""The tail kept as one "rest" class (``tail="bucket"``) against a dense statement of the same objective."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hypothesis")
from dense_fusion import CE_VALUES, dense_loss, densify, shared_strategies
from fusellm_fast.errors import InvalidInputError
from fusellm_fast.fusion import FusedDistribution, _sparse_ce, fuse, fusion_loss
from hypothesis import given, settings
from hypothesis import strategies as st

BUCKET = {"tail": "bucket", "values_are": "log_probs"}


def calibrated_dists(rng, batch, length, slots_per_model, vocab, *, empty_share=0.3, sharpness=2.0):
    """Per model, its full softmax over ``vocab`` of which distinct ids are listed with their
    log-probabilities: ragged empty slots, empty positions."""
    dists = []
    for slots in slots_per_model:
        log_probs = torch.log_softmax(torch.tensor(rng.normal(size=(batch, length, vocab)) * sharpness), -1)
        ids = np.stack([rng.permutation(vocab)[:slots] for _ in range(batch * length)]).reshape(batch, length, slots)
        ids = np.where(rng.random(ids.shape) < 0.2, -1, ids)
        ids = np.where(rng.random((batch, length, 1)) < empty_share, -1, ids)
        values = log_probs.gather(-1, torch.tensor(ids).clamp(min=0)).where(torch.tensor(ids) >= 0, 0.0)
        dists.append((torch.tensor(ids), values.float()))
    return dists


def dense_bucket_fused(dists, ce, *, method, level, ce_temperature, vocab):
    """Step 4 with a rest class, position by position (float64): the fused listed probabilities
    ``[B, L, V]``, the rest ``[B, L]`` and the listed ids ``[B, L, V]`` (bool)."""
    models = len(dists)
    batch, length = dists[0][0].shape[:2]
    ce = ce.double().numpy()
    fused, listed = np.zeros((batch, length, vocab)), np.zeros((batch, length, vocab), bool)
    rest = np.zeros((batch, length))
    for b, t in np.ndindex(batch, length):
        lists = []  # per model: {id: probability}
        for n in range(models):
            ids, values = dists[n][0][b, t].numpy(), dists[n][1][b, t].double().numpy()
            if n > 0 and (ids < 0).all():  # the target's own list where a source lists nothing
                ids, values = dists[0][0][b, t].numpy(), dists[0][1][b, t].double().numpy()
            probs = {}
            for i, v in zip(ids, values, strict=True):
                if i >= 0:
                    probs[int(i)] = probs.get(int(i), 0.0) + math.exp(v)
            lists.append(probs)
        column = ce[:, b, t] if level == "token" else ce[:, b]
        if method == "min_ce":
            weights = np.eye(models)[int(np.flatnonzero(column == column.min())[0])]
        else:
            scores = np.exp(-column) if ce_temperature is None else -column / ce_temperature
            weights = np.exp(scores) / np.exp(scores).sum()
        weights = np.where([len(probs) > 0 for probs in lists], weights, 0.0)
        if weights.sum() == 0:
            continue
        weights = weights / weights.sum()
        for weight, probs in zip(weights, lists, strict=True):
            for i, p in probs.items():
                fused[b, t, i] += weight * p
                listed[b, t, i] |= weight > 0
            if probs:
                rest[b, t] += weight * max(1.0 - sum(probs.values()), 0.0)
    return fused, rest, listed


@settings(max_examples=60, deadline=None)
@given(**shared_strategies(), level=st.sampled_from(["sequence", "token"]), lm_weight=st.sampled_from([0.0, 0.5]))
def test_bucket_fusion_and_loss_match_the_dense_objective(
    batch, length, slots_per_model, extra_vocab, method, level, ce_temperature, kind, lm_weight, seed,
):  # fmt: skip
    ce_temperature = ce_temperature if method == "avg_ce" else None
    rng = np.random.default_rng(seed)
    vocab = max(slots_per_model) + extra_vocab  # extra_vocab 0: some lists cover the whole vocabulary
    dists = calibrated_dists(rng, batch, length, slots_per_model, vocab)
    ce_shape = (len(dists), batch) if level == "sequence" else (len(dists), batch, length)
    ce = torch.tensor(rng.choice(CE_VALUES, size=ce_shape), dtype=torch.float32)
    fused = fuse(dists, ce, method=method, level=level, ce_temperature=ce_temperature, **BUCKET)
    expected, expected_rest, listed = dense_bucket_fused(dists, ce, method=method, level=level,
                                                         ce_temperature=ce_temperature, vocab=vocab)
    np.testing.assert_allclose(densify(fused, vocab), expected, atol=1e-6)
    np.testing.assert_allclose(fused.rest.numpy(), expected_rest, atol=1e-6)

    student_logits = torch.tensor(rng.normal(size=(batch, length, vocab)) * 3.0, dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, vocab, size=(batch, length)))
    mask = torch.tensor(rng.random((batch, length)) < 0.8)
    student = student_logits.clone().requires_grad_()
    loss = fusion_loss(student, labels, fused, lm_weight=lm_weight, kind=kind, mask=mask)
    loss.total.backward()
    dense_student = student_logits.double().requires_grad_()
    total, clm, fusion_term = dense_loss(dense_student, labels, mask, expected, kind=kind, lm_weight=lm_weight,
                                         rest=expected_rest, listed=listed)
    total.backward()
    assert loss.clm.item() == pytest.approx(clm.item(), rel=1e-5, abs=1e-5)
    assert loss.fusion.item() == pytest.approx(fusion_term.item(), rel=1e-5, abs=1e-5)
    assert loss.total.item() == pytest.approx(total.item(), rel=1e-5, abs=1e-5)
    np.testing.assert_allclose(student.grad.numpy(), dense_student.grad.numpy(), atol=1e-6)


def test_renormalize_is_the_default_and_has_no_rest():
    rng = np.random.default_rng(30)
    dists = calibrated_dists(rng, 2, 4, [3, 2], 9)
    ce = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    for method in ("min_ce", "avg_ce"):
        default, renormalized = fuse(dists, ce, method=method), fuse(dists, ce, method=method, tail="renormalize")
        assert default.rest is None and renormalized.rest is None
        assert torch.equal(default.ids, renormalized.ids) and torch.equal(default.probs, renormalized.probs)
        # Log-probabilities renormalize like the logits they differ from by a constant.
        logits = [(ids, values + 3.0) for ids, values in dists]
        torch.testing.assert_close(fuse(logits, ce, method=method).probs, default.probs)
        bucket = fuse(dists, ce, method=method, **BUCKET)
        assert ((bucket.probs.sum(-1) + bucket.rest) <= 1 + 1e-6).all()
        has_list = (bucket.ids >= 0).any(-1)
        torch.testing.assert_close((bucket.probs.sum(-1) + bucket.rest)[has_list], torch.ones(int(has_list.sum())))


@pytest.mark.parametrize("method", ["min_ce", "avg_ce"])
@pytest.mark.parametrize("kind", ["ce", "kl"])
def test_gradcheck_of_the_bucket_loss(method, kind):
    rng = np.random.default_rng(31)
    dists = calibrated_dists(rng, 2, 3, [3, 2, 4], 7, empty_share=0.2)
    fused = fuse(dists, torch.tensor(rng.choice(CE_VALUES, size=(3, 2)), dtype=torch.float32), method=method,
                 **BUCKET)
    assert (fused.rest > 0.05).any()
    labels = torch.tensor([[1, 4, -100], [0, 6, 2]])
    student = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda logits: fusion_loss(logits, labels, fused, lm_weight=0.3, kind=kind).total, (student,)
    )


def one_position(*lists):
    """Calibrated distributions for B=1, L=1 from one ``(ids, probabilities)`` pair per model."""
    return [(torch.tensor([[ids]]), torch.log(torch.tensor([[probs]], dtype=torch.float64)).float())
            for ids, probs in lists]


def dense_position_loss(logits, fused_probs, rest):
    """``-sum q log s - r log(mass outside)`` of one position, ``fused_probs`` a dict id -> q, float64."""
    log_p = torch.log_softmax(logits.double(), -1)
    outside = torch.ones(logits.shape[-1], dtype=torch.bool)
    outside[list(fused_probs)] = False
    listed_term = -sum(q * log_p[i] for i, q in fused_probs.items())
    return listed_term - rest * torch.logsumexp(log_p[outside], 0)


def test_repeated_ids_padding_and_stand_ins():
    # A repeated id's probabilities add up (as prefix mapping sums candidates that land on one id);
    # a candidate that was dropped leaves its mass in the rest with the tail.
    repeated = one_position(([3, 3, 5, -1], [0.2, 0.1, 0.3, 1.0]))
    fused = fuse(repeated, torch.tensor([[1.0]]), **BUCKET)
    assert fused.rest.item() == pytest.approx(0.4, abs=1e-6)
    logits = torch.randn(1, 1, 8, dtype=torch.float64)
    loss = fusion_loss(logits, torch.tensor([[0]]), fused, lm_weight=0.0)
    assert loss.fusion.item() == pytest.approx(dense_position_loss(logits[0, 0], {3: 0.3, 5: 0.3}, 0.4).item(),
                                               rel=1e-6)

    # A one-hot stand-in (log-probability 0) has no rest: its loss is the plain cross-entropy.
    stand_in = fuse(one_position(([6, -1], [1.0, 1.0])), torch.tensor([[1.0]]), **BUCKET)
    assert stand_in.rest.item() == 0.0
    loss = fusion_loss(logits, torch.tensor([[0]]), stand_in, lm_weight=0.0)
    assert loss.fusion.item() == pytest.approx(-torch.log_softmax(logits[0, 0], -1)[6].item(), rel=1e-9)

    # A source position without a list takes the target's list and its rest; an empty one has none.
    target, empty = ([2, 4], [0.5, 0.25]), ([-1, -1], [1.0, 1.0])
    fallback = fuse(one_position(target, empty), torch.tensor([[2.0], [1.0]]), **BUCKET)
    assert fallback.ids.tolist() == [[[2, 4]]] and fallback.rest.item() == pytest.approx(0.25, abs=1e-6)
    nothing = fuse(one_position(empty, empty), torch.tensor([[1.0], [1.0]]), **BUCKET)
    assert nothing.rest.item() == 0.0
    assert fusion_loss(logits, torch.tensor([[0]]), nothing, lm_weight=0.0).fusion.item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tails_near_zero_and_near_one_stay_exact(dtype):
    # Near 0: one id holds all but 1e-6 of the teacher's mass, and the student puts all but about
    # 1e-30 of its own there, far below what 1 - sum(listed) could resolve.
    almost_all = fuse([(torch.tensor([[[4]]]), torch.tensor([[[math.log1p(-1e-6)]]]))], torch.ones(1, 1), **BUCKET)
    assert almost_all.rest.item() == pytest.approx(1e-6, rel=1e-4)
    # Near 1: the listed ids hold 2e-13 of the teacher's mass.
    almost_none = fuse([(torch.tensor([[[1, 2]]]), torch.full((1, 1, 2), math.log(1e-13)))], torch.ones(1, 1),
                       **BUCKET)
    assert almost_none.rest.item() == 1.0 and almost_none.probs.sum().item() == pytest.approx(2e-13, rel=1e-5)

    for fused, listed, student_row in (
        (almost_all, {4: 1 - 1e-6}, [0.0] * 4 + [70.0] + [0.0] * 3),
        (almost_all, {4: 1 - 1e-6}, [0.0] * 4 + [-70.0] + [0.0] * 3),
        (almost_none, {1: 1e-13, 2: 1e-13}, [0.0, 80.0, 80.0] + [-80.0] * 5),
        (almost_none, {1: 1e-13, 2: 1e-13}, [0.0, -80.0, -80.0] + [0.0] * 5),
    ):
        student = torch.tensor([[student_row]], dtype=dtype, requires_grad=True)
        loss = fusion_loss(student, torch.tensor([[0]]), fused, lm_weight=0.0)
        loss.total.backward()
        dense_student = torch.tensor(student_row, dtype=torch.float64, requires_grad=True)
        expected = dense_position_loss(dense_student, listed, float(fused.rest))
        expected.backward()
        assert math.isfinite(loss.total.item()) and torch.isfinite(student.grad).all()
        assert loss.fusion.item() == pytest.approx(expected.item(), rel=1e-5)
        np.testing.assert_allclose(student.grad[0, 0].double().numpy(), dense_student.grad.numpy(), atol=1e-6)


def test_chunked_and_bfloat16_bucket_losses_agree(monkeypatch):
    rng = np.random.default_rng(32)
    fused = fuse(calibrated_dists(rng, 2, 9, [4, 4], 50), torch.tensor([[1.0, 2.0], [1.5, 0.5]]), **BUCKET)
    labels = torch.tensor(rng.integers(0, 50, size=(2, 9)))
    logits = torch.randn(2, 9, 50)

    def loss_and_grad(student_logits):
        student = student_logits.clone().requires_grad_()
        total = fusion_loss(student, labels, fused).total
        total.backward()
        return total.detach(), student.grad.float()

    whole = loss_and_grad(logits)
    half = loss_and_grad(logits.bfloat16())
    monkeypatch.setattr(_sparse_ce, "_CHUNK_ELEMENTS", 3 * 50)  # 3 positions per chunk, 6 chunks
    chunked = loss_and_grad(logits)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-6, atol=1e-7)
    assert half[0].item() == pytest.approx(fusion_loss(logits.bfloat16().float(), labels, fused).total.item(), rel=1e-6)
    torch.testing.assert_close(half[1], whole[1], rtol=1e-2, atol=1e-3)


def test_bucket_needs_calibrated_lists_and_temperature_one():
    lists = one_position(([1, 2], [0.5, 0.25]))
    ce = torch.ones(1, 1)
    with pytest.raises(InvalidInputError, match="tail: 'bucket' needs calibrated top-k lists"):
        fuse(lists, ce, tail="bucket")
    with pytest.raises(InvalidInputError, match="temperature: tail='bucket' takes 1.0 only"):
        fuse(lists, ce, temperature=2.0, **BUCKET)
    raw_logits = [(torch.tensor([[[1, 2]]]), torch.tensor([[[5.0, 3.0]]]))]
    with pytest.raises(InvalidInputError, match=r"dists\[0\] logits: .* at \[b=0, t=0\] add up to 168.5"):
        fuse(raw_logits, ce, **BUCKET)
    aligned = type("Aligned", (), {"ids": lists[0][0], "logits": lists[0][1], "values_are": "logits"})()
    with pytest.raises(InvalidInputError, match=r"dists\[1\]: holds logits, not log-probabilities"):
        fuse([lists[0], aligned], torch.ones(2, 1), **BUCKET)
    with pytest.raises(InvalidInputError, match="tail: must be one of"):
        fuse(lists, ce, tail="drop")
    with pytest.raises(InvalidInputError, match="values_are: must be one of"):
        fuse(lists, ce, values_are="probs")
    # Log-probabilities rounded to 16 bits may add up to a little more than 1: scaled, no rest.
    rounded = fuse([(torch.tensor([[[1, 2]]]), torch.log(torch.tensor([[[0.7, 0.305]]])))], ce, **BUCKET)
    assert rounded.rest.item() == 0.0 and rounded.probs.sum().item() == pytest.approx(1.0)
    bad_rest = FusedDistribution(ids=torch.tensor([[[1]]]), probs=torch.ones(1, 1, 1), weights=torch.ones(1, 1),
                                 rest=torch.zeros(1, 2))
    with pytest.raises(InvalidInputError, match=r"fused.rest: must have shape \[1, 1\]"):
        fusion_loss(torch.zeros(1, 1, 4), torch.tensor([[0]]), bad_rest)


def test_the_trainer_trains_on_the_bucket_objective(tmp_path):
    pytest.importorskip("transformers")
    import tiny_models
    from fusion_data import VOCAB
    from fusellm_fast.trainer import FusionCollator, FusionTrainer, FusionTrainingArguments

    settings = {"output_dir": str(tmp_path), "report_to": "none", "use_cpu": True, "disable_tqdm": True,
                "save_strategy": "no", "logging_steps": 1, "per_device_train_batch_size": 2, "max_steps": 3}
    with pytest.raises(InvalidInputError, match="tail: 'bucket' needs calibrated top-k lists"):
        FusionTrainingArguments(**settings, tail="bucket")
    with pytest.raises(InvalidInputError, match="temperature: tail='bucket' takes 1.0 only"):
        FusionTrainingArguments(**settings, tail="bucket", values_are="log_probs", temperature=2.0)

    rng = np.random.default_rng(33)
    examples = []
    for length in (7, 5, 9, 6):
        dists = calibrated_dists(rng, 1, length, [4, 4, 4], VOCAB, sharpness=1.0)
        examples.append({"input_ids": rng.integers(0, VOCAB, size=length),
                         "teacher_ids": torch.cat([ids for ids, _ in dists]).numpy(),
                         "teacher_logits": torch.cat([values for _, values in dists]).numpy(),
                         "teacher_ce": rng.choice(CE_VALUES, size=3).astype(np.float32)})
    batch = FusionCollator()(examples[:2])
    model = tiny_models.tiny_llama(VOCAB)
    args = FusionTrainingArguments(**settings, tail="bucket", values_are="log_probs", method="avg_ce")
    loss = FusionTrainer(model=model, args=args).compute_loss(model, dict(batch))
    lists = [(batch["teacher_ids"][:, n], batch["teacher_logits"][:, n]) for n in range(3)]
    fused = fuse(lists, batch["teacher_ce"].movedim(1, 0), method="avg_ce", **BUCKET)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = fusion_loss(logits, batch["labels"], fused, mask=batch["attention_mask"])
    assert loss.item() == expected.total.item()
    renormalized = fusion_loss(logits, batch["labels"], fuse(lists, batch["teacher_ce"].movedim(1, 0), method="avg_ce"),
                               mask=batch["attention_mask"])
    assert renormalized.fusion.item() != pytest.approx(expected.fusion.item(), rel=1e-3)

    trainer = FusionTrainer(model=model, args=args, train_dataset=examples, data_collator=FusionCollator())
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3 and all(math.isfinite(entry["loss"]) and math.isfinite(entry["loss_fusion"])
                                    for entry in logged)
