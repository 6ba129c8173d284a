"""Teachers chosen per text inside packed blocks (``level="text"``): packing, collation, fusion, training."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_models
from dense_fusion import dense_model_distributions, densify
from fusion_data import BLOCK, MODELS, VOCAB, random_example
from fusellm_fast.errors import InvalidInputError
from fusellm_fast.fusion import fuse
from fusellm_fast.trainer import FusionCollator, FusionTrainer, FusionTrainingArguments, pack_examples


def marked_document(length, ce):
    """A document in which model ``n`` lists only id ``10 * n + t % 10`` at position ``t``, so that a
    fused id says which model was chosen."""
    positions = np.arange(length)
    ids = np.stack([(10 * n + positions % 10)[:, None] for n in range(len(ce))]).astype(np.int32)
    return {"input_ids": (positions % VOCAB).astype(np.int32), "teacher_ids": ids,
            "teacher_logits": np.zeros(ids.shape, np.float32), "teacher_ce": np.array(ce, np.float32)}


# The best model is 1 for the first document, 2 for the second and 0 for the third.
MARKED = [([3.0, 1.0, 2.0], 5), ([1.0, 2.0, 0.5], 4), ([0.5, 2.0, 3.0], 6)]


def marked_blocks(level="text"):
    documents = [marked_document(length, ce) for ce, length in MARKED]
    return pack_examples(documents, block_size=8, level=level, drop_remainder=False)


def teacher_lists(batch):
    return [(batch["teacher_ids"][:, n], batch["teacher_logits"][:, n]) for n in range(batch["teacher_ids"].shape[1])]


def fused_of(batch, **options):
    segment_ids = batch["segment_ids"] if options.get("level") == "text" else None
    return fuse(teacher_lists(batch), batch["teacher_ce"].movedim(1, 0), segment_ids=segment_ids, **options)


def test_per_text_choice_picks_the_lowest_ce_teacher_of_each_segment():
    blocks = marked_blocks()
    assert [block["segment_ids"].tolist() for block in blocks] == [[0] * 5 + [1] * 3, [0] + [1] * 6]
    np.testing.assert_array_equal(blocks[0]["teacher_ce"], [[3.0, 1.0], [1.0, 2.0], [2.0, 0.5]])
    np.testing.assert_array_equal(blocks[1]["teacher_ce"], [[1.0, 0.5], [2.0, 2.0], [0.5, 3.0]])
    batch = FusionCollator()(blocks)
    assert batch["segment_ids"].tolist() == [[0] * 5 + [1] * 3, [0] + [1] * 6 + [-1]]

    fused = fused_of(batch, level="text")
    chosen = [[1] * 5 + [2] * 3, [2] + [0] * 6]
    for row, models in enumerate(chosen):
        expected = [int(batch["teacher_ids"][row, model, t, 0]) for t, model in enumerate(models)]
        assert fused.ids[row, : len(models), 0].tolist() == expected
    assert (fused.ids[1, 7] == -1).all() and (fused.probs[1, 7] == 0).all()  # padding: no distribution
    assert fused.weights.shape == (MODELS, 2, 2)
    assert fused.weights.argmax(0).tolist() == [[1, 2], [2, 0]]
    # Per block, the first block's mean CE picks model 1 for the second document's positions too.
    per_block = fused_of(FusionCollator()(marked_blocks("sequence")), level="sequence")
    assert per_block.ids[0, 5:, 0].tolist() == [int(i) for i in batch["teacher_ids"][0, 1, 5:, 0]]


def test_one_text_per_block_equals_sequence_level(tmp_path):
    rng = np.random.default_rng(21)
    documents = [random_example(rng, 2 * BLOCK), random_example(rng, BLOCK)]
    per_text = pack_examples(documents, block_size=BLOCK, level="text")
    per_block = pack_examples(documents, block_size=BLOCK)
    assert len(per_text) == len(per_block) == 3
    for text_block, block in zip(per_text, per_block, strict=True):
        assert (text_block["segment_ids"] == 0).all()
        np.testing.assert_array_equal(text_block["teacher_ce"][:, 0], block["teacher_ce"])
    text_batch, block_batch = FusionCollator()(per_text), FusionCollator()(per_block)

    model = tiny_models.tiny_llama(VOCAB)
    for method in ("min_ce", "avg_ce"):
        by_text = fused_of(text_batch, level="text", method=method)
        by_block = fused_of(block_batch, level="sequence", method=method)
        assert torch.equal(by_text.ids, by_block.ids) and torch.equal(by_text.probs, by_block.probs)
        assert torch.equal(by_text.weights[:, :, 0], by_block.weights)
        losses = []
        for level, batch in (("text", text_batch), ("sequence", block_batch)):
            args = FusionTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, method=method,
                                           level=level)
            losses.append(FusionTrainer(model=model, args=args).compute_loss(model, dict(batch)).item())
        assert losses[0] == losses[1]


@pytest.mark.parametrize("ce_temperature", [None, 0.5])
def test_avg_ce_weights_each_segment_by_a_dense_computation(ce_temperature):
    rng = np.random.default_rng(22)
    lengths = [5, 9, 3, 7, 11, 4]
    documents = [random_example(rng, n) | {"teacher_ce": rng.uniform(0.5, 3.0, MODELS).astype(np.float32)}
                 for n in lengths]
    batch = FusionCollator()(pack_examples(documents, block_size=BLOCK, level="text"))
    fused = fused_of(batch, level="text", method="avg_ce", ce_temperature=ce_temperature)

    # Position by position: the weights of the document the position comes from, over its models' lists.
    per_model = dense_model_distributions(teacher_lists(batch), VOCAB, 1.0)
    document_of = np.repeat(np.arange(len(lengths)), lengths)[: batch["input_ids"].numel()].reshape(-1, BLOCK)
    expected = np.zeros((*document_of.shape, VOCAB))
    for b, t in np.ndindex(*document_of.shape):
        ce = documents[document_of[b, t]]["teacher_ce"].astype(np.float64)
        scores = np.exp(-ce) if ce_temperature is None else -ce / ce_temperature
        weights = np.exp(scores) / np.exp(scores).sum()
        np.testing.assert_allclose(fused.weights[:, b, int(batch["segment_ids"][b, t])].numpy(), weights, rtol=1e-6)
        mixed = np.einsum("n,nv->v", weights, per_model[:, b, t])
        expected[b, t] = mixed / mixed.sum()
    np.testing.assert_allclose(densify(fused, VOCAB), expected, atol=1e-6)


def test_token_level_examples_rank_each_segment_by_its_mean_position_ce():
    rng = np.random.default_rng(23)
    documents = [random_example(rng, n) | {"teacher_ce": rng.random((MODELS, n)).astype(np.float32)} for n in (7, 9)]
    block = pack_examples(documents, block_size=BLOCK, level="text")[0]
    assert block["segment_ids"].tolist() == [0] * 7 + [1] * 5
    expected = np.stack([documents[0]["teacher_ce"].mean(1), documents[1]["teacher_ce"][:, :5].mean(1)], axis=1)
    np.testing.assert_allclose(block["teacher_ce"], expected, rtol=1e-6)


def test_packed_text_blocks_pack_again_with_their_segments_apart():
    rng = np.random.default_rng(24)
    documents = [random_example(rng, n) for n in (5, 9, 3, 7, 11, 4)]
    repacked = pack_examples(pack_examples(documents, block_size=BLOCK, level="text"), block_size=6, level="text")
    direct = pack_examples(documents, block_size=6, level="text")
    assert len(repacked) == len(direct) == 6
    for again, once in zip(repacked, direct, strict=True):
        for key, value in once.items():
            np.testing.assert_array_equal(again[key], value)


def test_training_per_text_logs_the_share_of_texts_each_teacher_taught(tmp_path):
    args = FusionTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, level="text",
                                   per_device_train_batch_size=2, max_steps=1, logging_steps=1, save_strategy="no",
                                   disable_tqdm=True, learning_rate=0.1)
    trainer = FusionTrainer(model=tiny_models.tiny_llama(VOCAB), args=args, train_dataset=marked_blocks(),
                            data_collator=FusionCollator())
    trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    # The four texts of the two blocks chose models 1, 2 | 2, 0.
    assert [logged[f"teacher_weight_{n}"] for n in range(MODELS)] == pytest.approx([0.25, 0.25, 0.5])
    assert np.isfinite(logged["loss"])


def test_text_level_needs_segments_everywhere(tmp_path):
    rng = np.random.default_rng(25)
    plain = FusionCollator()([random_example(rng, 4)])
    model = tiny_models.tiny_llama(VOCAB)
    args = FusionTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, level="text")
    with pytest.raises(InvalidInputError, match=r"lack \['segment_ids'\].*level='text'"):
        FusionTrainer(model=model, args=args).compute_loss(model, plain)

    lists = teacher_lists(plain)
    with pytest.raises(InvalidInputError, match="segment_ids: level='text' needs"):
        fuse(lists, torch.ones(MODELS, 1, 1), level="text")
    with pytest.raises(InvalidInputError, match="segment_ids: apply to level='text' only"):
        fuse(lists, torch.ones(MODELS, 1), segment_ids=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(InvalidInputError, match=r"segment_ids: must be segments in \[0, 2\)"):
        fuse(lists, torch.ones(MODELS, 1, 2), level="text", segment_ids=torch.tensor([[0, 1, 2, 2]]))
    with pytest.raises(InvalidInputError, match=r"segment_ids: must have shape \[1, 4\]"):
        fuse(lists, torch.ones(MODELS, 1, 2), level="text", segment_ids=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(InvalidInputError, match=r"ce: must have shape \[3, 1, S >= 1\]"):
        fuse(lists, torch.ones(MODELS, 1, 0), level="text", segment_ids=torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"segment_ids": [0, 1, 2]}, r"segment_ids must be segments in \[0, 2\)"),
        ({"segment_ids": [0, 1]}, r"segment_ids must be 3 integers, one per input id"),
        ({"segment_ids": [0.0, 1.0, 1.0]}, r"segment_ids must be 3 integers"),
        ({"teacher_ce": np.ones(MODELS)}, r"with segment_ids, teacher_ce must have shape \[3, S\]"),
    ],
)
def test_collator_rejects_bad_segments(changes, pattern):
    block = pack_examples([random_example(np.random.default_rng(26), n) for n in (1, 2)], block_size=3,
                          level="text")[0]
    with pytest.raises(InvalidInputError, match=pattern):
        FusionCollator()([block | changes])
    with pytest.raises(InvalidInputError, match=r"mix CE layouts \['sequence', 'text'\]"):
        FusionCollator()([block, random_example(np.random.default_rng(27), 3)])
