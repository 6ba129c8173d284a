"""Fusion examples, packing, collation and FusionTrainer, single-process and 2-process data-parallel.

Run as a script (under ``torch.distributed.run``) this file is also the data-parallel worker.
"""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tiny_models
from fusellm_fast import trainer as trainer_module
from fusellm_fast.errors import InputTypeError, InvalidInputError
from fusellm_fast.fusion import fuse, fusion_loss
from fusellm_fast.trainer import (
    FusionCollator,
    FusionTrainer,
    FusionTrainingArguments,
    build_fusion_examples,
    pack_examples,
)

VOCAB = 40
BLOCK = 12
MODELS = 3


def random_example(rng, length, *, models=MODELS, slots=4):
    ids = np.stack([rng.permutation(VOCAB)[:slots] for _ in range(models * length)]).reshape(models, length, slots)
    ids[1:][rng.random((models - 1, length)) < 0.3] = -1  # source positions without a distribution
    return {
        "input_ids": rng.integers(0, VOCAB, size=length).astype(np.int32),
        "teacher_ids": ids.astype(np.int32),
        "teacher_logits": rng.normal(size=ids.shape).astype(np.float32) * 3.0,
        "teacher_ce": rng.choice([1.0, 1.5, 2.5], size=models).astype(np.float32),
    }


def teacher_row(rng, length, *, slots, num_bytes=10):
    """A row as ``extract_topk`` writes it."""
    token_ce = rng.random(length - 1) * 4
    return {
        "input_ids": rng.integers(0, VOCAB, size=length).astype(np.int32),
        "topk_ids": rng.integers(0, VOCAB, size=(length, slots)).astype(np.int32),
        "topk_logits": rng.normal(size=(length, slots)).astype(np.float32),
        "token_ce": token_ce.astype(np.float32),
        "ce": float(token_ce.mean()),
        "total_ce": float(token_ce.sum()),
        "num_bytes": num_bytes,
    }


def aligned_batch(rng, lengths, *, slots):
    width = max(lengths)
    ids = rng.integers(-1, VOCAB, size=(len(lengths), width, slots)).astype(np.int32)
    logits = rng.normal(size=ids.shape).astype(np.float32)
    return SimpleNamespace(ids=ids, logits=logits, lengths=np.array(lengths, dtype=np.int64))


def tiny_llama(seed=0):
    return tiny_models.tiny_llama(VOCAB, seed=seed)


def training_arguments(output_dir, **overrides):
    settings = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 2,
        "learning_rate": 0.5,
        "optim": "sgd",
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "max_grad_norm": 0.0,
        "num_train_epochs": 1,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "seed": 0,
    }
    return FusionTrainingArguments(**(settings | overrides))


def train(examples, output_dir, **overrides):
    model = tiny_llama()
    trainer = FusionTrainer(
        model=model,
        args=training_arguments(output_dir, **overrides),
        train_dataset=examples,
        data_collator=FusionCollator(),
    )
    trainer.train()
    return trainer


def flat_parameters(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# ---------------------------------------------------------------------------------------- examples


def test_build_fusion_examples_stacks_target_and_aligned_sources():
    rng = np.random.default_rng(0)
    lengths = [5, 3]
    target = [teacher_row(rng, n, slots=2, num_bytes=8 * n) for n in lengths]
    sources = [aligned_batch(rng, lengths, slots=3), aligned_batch(rng, lengths, slots=1)]
    source_rows = [[teacher_row(rng, n + 1, slots=3) for n in lengths] for _ in sources]
    copies = [{key: np.copy(value) for key, value in row.items()} for row in target]
    examples = build_fusion_examples(target, sources, source_rows)
    by_byte = build_fusion_examples(target, sources, source_rows, ce_unit="byte")
    for b, (example, length) in enumerate(zip(examples, lengths, strict=True)):
        assert example["input_ids"].tolist() == target[b]["input_ids"].tolist()
        assert example["teacher_ids"].shape == (3, length, 3) and example["teacher_ids"].dtype == np.int32
        np.testing.assert_array_equal(example["teacher_ids"][0, :, :2], target[b]["topk_ids"])
        np.testing.assert_array_equal(example["teacher_ids"][0, :, 2], -1)
        np.testing.assert_array_equal(example["teacher_logits"][1], sources[0].logits[b, :length])
        np.testing.assert_array_equal(example["teacher_ids"][2, :, :1], sources[1].ids[b, :length])
        np.testing.assert_array_equal(example["teacher_ids"][2, :, 1:], -1)
        rows = [target[b]] + [per_source[b] for per_source in source_rows]
        np.testing.assert_allclose(example["teacher_ce"], [row["ce"] for row in rows], rtol=1e-6)
        per_byte = [row["total_ce"] / row["num_bytes"] for row in rows]
        np.testing.assert_allclose(by_byte[b]["teacher_ce"], per_byte, rtol=1e-6)
    for row, copy in zip(target, copies, strict=True):
        assert all(np.array_equal(row[key], copy[key]) for key in copy)


def test_build_fusion_examples_reads_a_datasets_dataset():
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(10)
    rows = [teacher_row(rng, 4, slots=2), teacher_row(rng, 6, slots=2)]
    as_dataset = datasets.Dataset.from_list(rows)
    sources = [aligned_batch(rng, [4, 6], slots=2)]
    from_lists = build_fusion_examples(rows, sources, [rows])
    from_dataset = build_fusion_examples(as_dataset, sources, [as_dataset])
    for expected, example in zip(from_lists, from_dataset, strict=True):
        for key in expected:
            np.testing.assert_allclose(example[key], expected[key], rtol=1e-6)


def test_build_fusion_examples_rejects_mismatches():
    rng = np.random.default_rng(1)
    target = [teacher_row(rng, 4, slots=2)]
    good = aligned_batch(rng, [4], slots=2)
    source_rows = [[teacher_row(rng, 4, slots=2)]]
    with pytest.raises(InvalidInputError, match=r"aligned_sources\[0\]: row 0 has length 3"):
        build_fusion_examples(target, [aligned_batch(rng, [3], slots=2)], source_rows)
    with pytest.raises(InvalidInputError, match="one entry per source"):
        build_fusion_examples(target, [good], [])
    with pytest.raises(InvalidInputError, match=r"source_rows\[0\]: has 2 texts"):
        build_fusion_examples(target, [good], [source_rows[0] * 2])
    with pytest.raises(InvalidInputError, match=r"aligned_sources\[0\]: has 2 texts"):
        build_fusion_examples(target, [aligned_batch(rng, [4, 4], slots=2)], source_rows)
    with pytest.raises(InvalidInputError, match=r"target_rows\[0\]: lacks \['total_ce', 'num_bytes'\]"):
        build_fusion_examples(
            [{"input_ids": [1], "topk_ids": [[1]], "topk_logits": [[0.0]], "ce": 1.0}], [good], source_rows
        )
    with pytest.raises(InvalidInputError, match="ce_unit"):
        build_fusion_examples(target, [good], source_rows, ce_unit="char")


@pytest.mark.parametrize("drop_remainder", [True, False])
@pytest.mark.parametrize("level", ["sequence", "token"])
def test_pack_examples_concatenates_with_block_or_document_ce(drop_remainder, level):
    rng = np.random.default_rng(2)
    lengths = [5, 9, 3, 7, 2]
    examples = [random_example(rng, n, slots=3 if i % 2 else 2) for i, n in enumerate(lengths)]
    copies = [{key: value.copy() for key, value in example.items()} for example in examples]
    blocks = pack_examples(examples, block_size=BLOCK, level=level, drop_remainder=drop_remainder)

    total = sum(lengths)
    assert len(blocks) == (total // BLOCK if drop_remainder else -(-total // BLOCK))
    document = np.repeat(np.arange(len(lengths)), lengths)
    all_ids = np.concatenate([example["input_ids"] for example in examples])
    for index, block in enumerate(blocks):
        start = index * BLOCK
        span = slice(start, min(start + BLOCK, total))
        np.testing.assert_array_equal(block["input_ids"], all_ids[span])
        assert block["teacher_ids"].shape == (MODELS, len(all_ids[span]), 3)
        if level == "sequence":  # the reference: the token-weighted mean of the documents' CEs
            documents, counts = np.unique(document[span], return_counts=True)
            weighted = sum(c * examples[d]["teacher_ce"] for d, c in zip(documents, counts, strict=True))
            np.testing.assert_allclose(block["teacher_ce"], weighted / counts.sum(), rtol=1e-6)
        else:  # every position keeps its own document's CE
            expected_ce = np.stack([examples[d]["teacher_ce"] for d in document[span]], axis=1)
            np.testing.assert_array_equal(block["teacher_ce"], expected_ce)
        # Token positions keep their own teacher lists; narrower lists are widened with empty slots.
        position = start
        doc, offset = document[position], position - sum(lengths[: document[position]])
        own = examples[doc]["teacher_ids"][:, offset]
        np.testing.assert_array_equal(block["teacher_ids"][:, 0, : own.shape[-1]], own)
        np.testing.assert_array_equal(block["teacher_ids"][:, 0, own.shape[-1] :], -1)
    for example, copy in zip(examples, copies, strict=True):
        assert all(np.array_equal(example[key], copy[key]) for key in copy)


def test_pack_examples_rejects_bad_input():
    rng = np.random.default_rng(3)
    with pytest.raises(InvalidInputError, match="block_size"):
        pack_examples([random_example(rng, 4)], block_size=0)
    with pytest.raises(InvalidInputError, match="disagree on the number of models"):
        pack_examples([random_example(rng, 4), random_example(rng, 4, models=2)], block_size=4)
    with pytest.raises(InvalidInputError, match=r"examples\[0\]: lacks \['teacher_ce'\]"):
        without_ce = {key: value for key, value in random_example(rng, 4).items() if key != "teacher_ce"}
        pack_examples([without_ce], block_size=4)
    with pytest.raises(InvalidInputError, match="level: must be one of"):
        pack_examples([random_example(rng, 4)], block_size=4, level="document")
    with pytest.raises(InvalidInputError, match="mix sequence-level teacher_ce"):
        token_level = random_example(rng, 4) | {"teacher_ce": np.ones((MODELS, 4), np.float32)}
        pack_examples([random_example(rng, 4), token_level], block_size=4)
    assert pack_examples([], block_size=4) == []


def test_pack_examples_averages_token_level_ce_over_a_block():
    rng = np.random.default_rng(13)
    token_ce = rng.random((MODELS, 8)).astype(np.float32)
    example = random_example(rng, 8) | {"teacher_ce": token_ce}
    blocks = pack_examples([example], block_size=4)
    np.testing.assert_allclose(blocks[1]["teacher_ce"], token_ce[:, 4:].mean(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(
        pack_examples([example], block_size=4, level="token")[1]["teacher_ce"], token_ce[:, 4:]
    )


# ---------------------------------------------------------------------------------------- collator


def test_collator_pads_sparse_teacher_lists():
    rng = np.random.default_rng(4)
    examples = [random_example(rng, 5, slots=2), random_example(rng, 3, slots=4)]
    as_lists = [{key: value.tolist() for key, value in example.items()} for example in examples]
    batch = FusionCollator(pad_token_id=7, pad_to_multiple_of=4)(as_lists)
    assert batch["input_ids"].shape == (2, 8) and batch["teacher_ids"].shape == (2, MODELS, 8, 4)
    assert batch["teacher_ids"].dtype == torch.int32 and batch["teacher_logits"].dtype == torch.float32
    for row, example in enumerate(examples):
        n, k = example["teacher_ids"].shape[1:]
        assert batch["input_ids"][row, :n].tolist() == example["input_ids"].tolist()
        assert (batch["input_ids"][row, n:] == 7).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (8 - n)
        assert batch["labels"][row].tolist() == example["input_ids"].tolist() + [-100] * (8 - n)
        np.testing.assert_array_equal(batch["teacher_ids"][row, :, :n, :k].numpy(), example["teacher_ids"])
        assert (batch["teacher_ids"][row, :, :, k:] == -1).all() and (batch["teacher_ids"][row, :, n:] == -1).all()
        np.testing.assert_array_equal(batch["teacher_logits"][row, :, :n, :k].numpy(), example["teacher_logits"])
        np.testing.assert_array_equal(batch["teacher_ce"][row].numpy(), example["teacher_ce"])


def test_collator_pads_token_level_ce():
    rng = np.random.default_rng(14)
    examples = [random_example(rng, n) | {"teacher_ce": rng.random((MODELS, n)).astype(np.float32)} for n in (4, 2)]
    batch = FusionCollator()(examples)
    assert batch["teacher_ce"].shape == (2, MODELS, 4)
    np.testing.assert_array_equal(batch["teacher_ce"][1, :, :2].numpy(), examples[1]["teacher_ce"])
    assert (batch["teacher_ce"][1, :, 2:] == 0.0).all()


@pytest.mark.parametrize(
    ("features", "error", "pattern"),
    [
        ([], InvalidInputError, "features: must not be empty"),
        ([[1, 2]], InputTypeError, r"features\[0\]: must be a mapping"),
        ([{"input_ids": [1]}], InvalidInputError, r"features\[0\]: lacks"),
        (
            [{"input_ids": [1.5], "teacher_ids": [[[1]]], "teacher_logits": [[[0.0]]], "teacher_ce": [1.0]}],
            InputTypeError,
            r"features\[0\]: input_ids must hold integers",
        ),
        (
            [{"input_ids": [[1]], "teacher_ids": [[[1]]], "teacher_logits": [[[0.0]]], "teacher_ce": [1.0]}],
            InvalidInputError,
            r"features\[0\]: input_ids must be 1-D",
        ),
        (
            [{"input_ids": [1], "teacher_ids": [[[1], [2]]], "teacher_logits": [[[0.0], [0.0]]], "teacher_ce": [1.0]}],
            InvalidInputError,
            r"features\[0\]: teacher_ids must have shape \[N >= 1, 1, K\]",
        ),
        (
            [{"input_ids": [1], "teacher_ids": [[[1]]], "teacher_logits": [[[0.0], [1.0, 2.0]]], "teacher_ce": [1.0]}],
            InvalidInputError,
            r"features\[0\]: teacher_logits cannot be read as an array",
        ),
        (
            [{"input_ids": [1], "teacher_ids": [[[1]]], "teacher_logits": [[[0.0, 1.0]]], "teacher_ce": [1.0]}],
            InvalidInputError,
            r"features\[0\]: teacher_logits must have the shape of teacher_ids",
        ),
        (
            [{"input_ids": [1], "teacher_ids": [[[1]]], "teacher_logits": [[[0.0]]], "teacher_ce": [1.0, 2.0]}],
            InvalidInputError,
            r"features\[0\]: teacher_ce must have shape \[1\] or \[1, 1\]",
        ),
        (
            [{"input_ids": [1], "teacher_ids": [[[1]]], "teacher_logits": [[[0.0]]], "teacher_ce": [float("nan")]}],
            InvalidInputError,
            r"features\[0\]: teacher_ce must be finite",
        ),
    ],
)
def test_collator_rejects_bad_features(features, error, pattern):
    with pytest.raises(error, match=pattern):
        FusionCollator()(features)


def test_collator_rejects_bad_options_and_mixed_model_counts():
    rng = np.random.default_rng(5)
    with pytest.raises(InvalidInputError, match="pad_token_id"):
        FusionCollator(pad_token_id=-1)
    with pytest.raises(InvalidInputError, match="pad_to_multiple_of"):
        FusionCollator(pad_to_multiple_of=0)
    with pytest.raises(InvalidInputError, match="disagree on the number of models"):
        FusionCollator()([random_example(rng, 3), random_example(rng, 3, models=2)])


# ---------------------------------------------------------------------------------------- trainer


def batch_objective(model, batch, *, method="min_ce", level="sequence", lm_weight=0.9, kind="ce"):
    """The objective of a collated batch, computed with the public functions."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    dists = [(batch["teacher_ids"][:, n], batch["teacher_logits"][:, n]) for n in range(batch["teacher_ids"].shape[1])]
    fused = fuse(dists, batch["teacher_ce"].movedim(1, 0), method=method, level=level)
    return fusion_loss(logits, batch["labels"], fused, lm_weight=lm_weight, kind=kind, mask=batch["attention_mask"])


@pytest.mark.parametrize(
    ("option", "value", "pattern"),
    [
        ("method", "max_ce", "method: must be one of"),
        ("kind", "mse", "kind: must be one of"),
        ("level", "block", "level: must be one of"),
        ("lm_weight", -0.1, "lm_weight"),
        ("temperature", 0.0, "temperature"),
        ("ce_temperature", 0.5, "ce_temperature: must be positive and finite, with method='avg_ce'"),
    ],
)
def test_training_arguments_reject_bad_options(tmp_path, option, value, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        training_arguments(tmp_path, **{option: value})


def test_trainer_loss_is_the_fusion_loss_and_reduces_to_clm(tmp_path):
    rng = np.random.default_rng(6)
    batch = FusionCollator()([random_example(rng, 9), random_example(rng, 6)])
    model = tiny_llama()
    for method, lm_weight in [("avg_ce", 0.5), ("min_ce", 1.0)]:
        args = training_arguments(tmp_path, method=method, lm_weight=lm_weight, kind="kl")
        trainer = FusionTrainer(model=model, args=args)
        loss = trainer.compute_loss(model, dict(batch))
        expected = batch_objective(model, batch, method=method, lm_weight=lm_weight, kind="kl")
        assert loss.item() == pytest.approx(expected.total.item(), rel=1e-5)
    own_clm = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert loss.item() == pytest.approx(own_clm.item(), rel=1e-5)


def test_trainer_rejects_plain_arguments_batches_without_teachers_and_a_wrong_level(tmp_path):
    with pytest.raises(InputTypeError, match="FusionTrainingArguments"):
        FusionTrainer(model=tiny_llama(), args=transformers.TrainingArguments(output_dir=str(tmp_path)))
    model = tiny_llama()
    trainer = FusionTrainer(model=model, args=training_arguments(tmp_path))
    batch = {"input_ids": torch.zeros(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    with pytest.raises(InvalidInputError, match="FusionCollator"):
        trainer.compute_loss(model, batch)
    rng = np.random.default_rng(15)
    token_level = FusionCollator()([random_example(rng, 4) | {"teacher_ce": np.ones((MODELS, 4), np.float32)}])
    with pytest.raises(InvalidInputError, match=r"ce: must have shape \[3, 1\]"):
        trainer.compute_loss(model, token_level)


def test_training_lowers_the_loss_logs_its_terms_and_saves_a_checkpoint(tmp_path):
    rng = np.random.default_rng(7)
    examples = pack_examples([random_example(rng, n) for n in (20, 15, 25, 12)], block_size=BLOCK)
    batch = FusionCollator()(examples)
    with torch.no_grad():
        before = batch_objective(tiny_llama(), batch).total.item()
    trainer = train(examples, tmp_path, num_train_epochs=8, per_device_eval_batch_size=len(examples))
    with torch.no_grad():
        after = batch_objective(trainer.model, batch).total.item()
    assert after < 0.8 * before
    assert trainer.evaluate(eval_dataset=examples)["eval_loss"] == pytest.approx(after, rel=1e-5)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == trainer.state.global_step == 8 * -(-len(examples) // 2)
    for entry in logged:
        assert entry["loss"] == pytest.approx(0.9 * entry["loss_clm"] + 0.1 * entry["loss_fusion"], rel=1e-4)
        weights = [entry[f"teacher_weight_{n}"] for n in range(MODELS)]
        assert sum(weights) == pytest.approx(1.0) and all(w in (0.0, 0.5, 1.0) for w in weights)

    trainer.save_model(str(tmp_path / "checkpoint"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "checkpoint"))
    torch.testing.assert_close(flat_parameters(reloaded), flat_parameters(trainer.model), rtol=0, atol=0)
    with torch.no_grad():
        assert batch_objective(reloaded, batch).total.item() == pytest.approx(after, rel=1e-6)


def test_per_document_ce_trains_at_token_level(tmp_path):
    rng = np.random.default_rng(16)
    documents = [random_example(rng, n) for n in (7, 10, 5, 14)]
    blocks = pack_examples(documents, block_size=BLOCK, level="token")
    batch = FusionCollator()(blocks)
    trainer = train(blocks, tmp_path, level="token", method="min_ce", max_steps=2)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and all(np.isfinite(entry["loss"]) for entry in logged)
    # A block that holds two documents takes each document's chosen teacher at its own positions.
    with torch.no_grad():
        sequence_level = batch_objective(trainer.model, FusionCollator()(pack_examples(documents, block_size=BLOCK)))
        token_level = batch_objective(trainer.model, batch, level="token")
    assert sequence_level.fusion.item() != pytest.approx(token_level.fusion.item(), rel=1e-3)


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    rng = np.random.default_rng(8)
    examples = pack_examples([random_example(rng, 24)], block_size=BLOCK)
    assert len(examples) == 2
    large_batch = train(examples, tmp_path / "large", per_device_train_batch_size=2)
    accumulated = train(
        examples, tmp_path / "accumulated", per_device_train_batch_size=1, gradient_accumulation_steps=2
    )
    assert large_batch.state.global_step == accumulated.state.global_step == 1
    assert not torch.equal(flat_parameters(large_batch.model), flat_parameters(tiny_llama()))
    torch.testing.assert_close(flat_parameters(accumulated.model), flat_parameters(large_batch.model))


PIPELINE_CORPUS = [
    "the cat sat on the mat and the dog sat on the log",
    "a quick brown fox jumps over the lazy dog",
    "the dog ran after the cat until the cat ran away",
    "every fox and every dog likes to sit on a warm mat",
]


def trained_bpe(pre_tokenizer, decoder, *, vocab_size, eos):
    tokenizers = pytest.importorskip("tokenizers")
    backend = tokenizers.Tokenizer(tokenizers.models.BPE())
    backend.pre_tokenizer, backend.decoder = pre_tokenizer, decoder
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[eos], show_progress=False)
    backend.train_from_iterator(PIPELINE_CORPUS, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos)


def test_pipeline_from_texts_through_alignment_to_training(tmp_path):
    from fusellm_fast import Aligner, PositionStatus, align_batch
    from fusellm_fast.teacher import extract_topk
    from tokenizers import decoders, pre_tokenizers

    # The target uses a SentencePiece-style marker, the source byte-level BPE: alignment is needed.
    target_tokenizer = trained_bpe(pre_tokenizers.Metaspace(), decoders.Metaspace(), vocab_size=60, eos="</s>")
    source_tokenizer = trained_bpe(
        pre_tokenizers.ByteLevel(add_prefix_space=True), decoders.ByteLevel(), vocab_size=70, eos="<|endoftext|>"
    )
    target_model, source_model = tiny_llama(), tiny_llama(seed=1)
    target_model.resize_token_embeddings(len(target_tokenizer))
    source_model.resize_token_embeddings(len(source_tokenizer))
    target = extract_topk(target_model, target_tokenizer, PIPELINE_CORPUS, k=4).with_format("numpy")
    source = extract_topk(source_model, source_tokenizer, PIPELINE_CORPUS, k=4).with_format("numpy")

    aligner = Aligner.from_tokenizers(source_tokenizer, target_tokenizer, source_marker="Ġ", target_marker="▁")
    aligned = align_batch(aligner, target["input_ids"], source["input_ids"], source["topk_ids"], source["topk_logits"])
    assert aligned.counts.matched > 0
    examples = build_fusion_examples(target, [aligned], [source], ce_unit="byte")
    for b, example in enumerate(examples):
        length = len(target[b]["input_ids"])
        status = aligned.status[b, :length]
        source_lists = example["teacher_ids"][1]
        assert ((source_lists >= 0).any(-1) == (status != PositionStatus.EMPTY)).all()
        np.testing.assert_array_equal(
            source_lists[status == PositionStatus.MATCHED], aligned.ids[b, :length][status == PositionStatus.MATCHED]
        )

    # Stored as a `datasets.Dataset`, as a corpus of blocks would be: rows come back as nested lists.
    datasets = pytest.importorskip("datasets")
    blocks = datasets.Dataset.from_list(pack_examples(examples, block_size=BLOCK))
    trainer = FusionTrainer(
        model=target_model,
        args=training_arguments(tmp_path, per_device_train_batch_size=2, max_steps=2),
        train_dataset=blocks,
        data_collator=FusionCollator(),
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and all(np.isfinite(entry["loss"]) for entry in logged)


# ---------------------------------------------------------------------------------------- data parallel


def data_parallel_examples():
    rng = np.random.default_rng(9)
    return pack_examples([random_example(rng, 30), random_example(rng, 20)], block_size=BLOCK)[:4]


def test_two_process_gloo_data_parallel_matches_single_process(tmp_path):
    examples = data_parallel_examples()
    single = train(examples, tmp_path / "single", per_device_train_batch_size=4, num_train_epochs=2)

    result = tmp_path / "parallel.pt"
    package_root = str(Path(trainer_module.__file__).parents[1])
    environment = os.environ | {
        "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        __file__, str(tmp_path / "parallel"), str(result),
    ]  # fmt: skip
    completed = subprocess.run(command, check=False, env=environment, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-4000:]

    parallel = torch.load(result)
    assert parallel["world_size"] == 2 and parallel["global_step"] == single.state.global_step == 2
    torch.testing.assert_close(parallel["parameters"][0], parallel["parameters"][1], rtol=0, atol=0)
    torch.testing.assert_close(parallel["parameters"][0], flat_parameters(single.model), rtol=1e-5, atol=1e-6)
    single_losses = [entry["loss"] for entry in single.state.log_history if "loss" in entry]
    assert parallel["losses"] == pytest.approx(single_losses, rel=1e-5)


def test_min_ce_per_byte_picks_the_model_with_the_lowest_ce_per_byte():
    # The target splits 12 bytes into 6 tokens with total CE 6.0 (1.0 per token, 0.5 per byte);
    # the source splits them into 3 tokens with total CE 4.5 (1.5 per token, 0.375 per byte).
    # Per token the target wins; per byte the source does.
    rng = np.random.default_rng(3)
    target = teacher_row(rng, 4, slots=2, num_bytes=12) | {"ce": 1.0, "total_ce": 6.0}
    source = teacher_row(rng, 3, slots=2, num_bytes=12) | {"ce": 1.5, "total_ce": 4.5}
    aligned = aligned_batch(rng, [4], slots=2)
    for ce_unit, expected_ce, chosen in (("token", [1.0, 1.5], 0), ("byte", [0.5, 0.375], 1)):
        example = build_fusion_examples([target], [aligned], [[source]], ce_unit=ce_unit)[0]
        np.testing.assert_allclose(example["teacher_ce"], expected_ce, rtol=1e-6)
        fused = fuse([(example["teacher_ids"][m][None], example["teacher_logits"][m][None]) for m in range(2)],
                     torch.as_tensor(example["teacher_ce"])[:, None], method="min_ce")
        assert fused.weights[:, 0].tolist() == [float(m == chosen) for m in range(2)]


def test_token_level_ce_is_carried_over_through_the_alignment():
    # Source position i holds the CE of source token i + 1; the alignment pairs target positions
    # 1 and 2 with source positions 0 and 1 (source_positions). Target positions without a pair,
    # and positions that predict nothing (the last), take the text's CE.
    target = {"input_ids": np.array([1, 2, 3], np.int32), "topk_ids": np.zeros((3, 1), np.int32),
              "topk_logits": np.zeros((3, 1), np.float32), "token_ce": np.array([0.8, 1.2], np.float32),
              "ce": 1.0, "total_ce": 2.0, "num_bytes": 5}
    source = {"input_ids": np.array([4, 5], np.int32), "topk_ids": np.zeros((2, 1), np.int32),
              "topk_logits": np.zeros((2, 1), np.float32), "token_ce": np.array([0.6], np.float32),
              "ce": 0.6, "total_ce": 0.6, "num_bytes": 5}
    aligned = SimpleNamespace(ids=np.zeros((1, 3, 1), np.int32), logits=np.zeros((1, 3, 1), np.float32),
                              lengths=np.array([3]), source_positions=np.array([[-1, 0, 1]], np.int32))
    by_token = build_fusion_examples([target], [aligned], [[source]], ce_level="token")[0]["teacher_ce"]
    # Source position 1 is the last: it predicts nothing, so the text's CE stands in.
    np.testing.assert_allclose(by_token, [[0.8, 1.2, 1.0], [0.6, 0.6, 0.6]], rtol=1e-6)
    # Per byte: each token's CE over the bytes of the token it predicts (ids 2, 3: 2 and 1 bytes;
    # id 5: 2 bytes); texts' CE per byte where there is no token.
    lengths = [np.array([0, 0, 2, 1, 3, 2]), np.array([0, 0, 2, 1, 3, 2])]
    by_byte = build_fusion_examples([target], [aligned], [[source]], ce_level="token", ce_unit="byte",
                                    byte_lengths=lengths)[0]["teacher_ce"]
    np.testing.assert_allclose(by_byte, [[0.4, 1.2, 0.4], [0.12, 0.3, 0.12]], rtol=1e-6)
    with pytest.raises(InvalidInputError, match="byte_lengths"):
        build_fusion_examples([target], [aligned], [[source]], ce_level="token", ce_unit="byte")
    with pytest.raises(InvalidInputError, match="ce_level"):
        build_fusion_examples([target], [aligned], [[source]], ce_level="word")


def test_docstring_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples create an output directory
    results = doctest.testmod(trainer_module)
    assert results.attempted > 0 and results.failed == 0


def data_parallel_worker(output_dir: str, result_path: str) -> None:
    """Train on `data_parallel_examples` with 2 processes of batch 2 each; rank 0 saves the outcome."""
    trainer = train(
        data_parallel_examples(), output_dir, per_device_train_batch_size=2, num_train_epochs=2, ddp_backend="gloo"
    )
    parameters = flat_parameters(trainer.model)
    gathered = [torch.empty_like(parameters) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, parameters)
    if torch.distributed.get_rank() == 0:
        outcome = {
            "world_size": torch.distributed.get_world_size(),
            "global_step": trainer.state.global_step,
            "parameters": gathered,
            "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        }
        torch.save(outcome, result_path)


if __name__ == "__main__":
    data_parallel_worker(*sys.argv[1:3])
