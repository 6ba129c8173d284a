"""Collation and FusionTrainer, single-process and 2-process data-parallel, and the path from texts to training.

Run as a script (under ``torch.distributed.run``) this file is also the data-parallel worker.
"""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tiny_models
from fusion_data import BLOCK, MODELS, VOCAB, random_example
from fusellm_fast import trainer as trainer_module
from fusellm_fast.checkpoints import missing_part
from fusellm_fast.errors import InputTypeError, InvalidInputError
from fusellm_fast.fusion import fuse, fusion_loss
from fusellm_fast.trainer import (
    FusionCollator,
    FusionTrainer,
    FusionTrainingArguments,
    build_fusion_examples,
    pack_examples,
)

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
    target = extract_topk(target_model, target_tokenizer, PIPELINE_CORPUS, k=4)
    source = extract_topk(source_model, source_tokenizer, PIPELINE_CORPUS, k=4)

    aligner = Aligner.from_tokenizers(source_tokenizer, target_tokenizer, source_marker="Ġ", target_marker="▁")
    aligned = align_batch(aligner, [r["input_ids"] for r in target], [r["input_ids"] for r in source],
                          [r["topk_ids"] for r in source], [r["topk_log_probs"] for r in source], values="log_probs")
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
    # Both processes wrote their part of every checkpoint before it was renamed into place; the
    # older one was rotated away.
    assert sorted(p.name for p in (tmp_path / "parallel").iterdir()) == ["checkpoint-2"]
    checkpoint = tmp_path / "parallel" / "checkpoint-2"
    assert {"rng_state_0.pth", "rng_state_1.pth", "optimizer.pt", "trainer_state.json"} <= {
        p.name for p in checkpoint.iterdir()}
    assert missing_part(checkpoint) is None


def test_docstring_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples create an output directory
    results = doctest.testmod(trainer_module)
    assert results.attempted > 0 and results.failed == 0


def data_parallel_worker(output_dir: str, result_path: str) -> None:
    """Train on `data_parallel_examples` with 2 processes of batch 2 each; rank 0 saves the outcome."""
    trainer = train(
        data_parallel_examples(), output_dir, per_device_train_batch_size=2, num_train_epochs=2, ddp_backend="gloo",
        save_strategy="steps", save_steps=1, save_total_limit=1,
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
