"""Sparse fusion vs the reference code's dense targets, at the paper's list size on a 32k vocabulary.

Run: ``python -m pytest benches/bench_fusion.py --benchmark-only``.
Shapes: 2 blocks of 2,048 tokens, 3 models (target + 2 sources), top-10 lists, vocabulary 32,000
(Llama-2), student logits in float32 on the CPU. The targets checked here: the sparse loss step needs
at most 1/10 of the dense path's extra memory, and the collator is at least 100x faster than the
reference-style per-position loop.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fusellm_fast.trainer import FusionCollator
from fusion_workload import dense_reference_loss, random_fusion_examples, reference_collate, sparse_loss

BATCH, LENGTH, MODELS, SLOTS, VOCAB = 2, 2048, 3, 10, 32000
SHAPES = {"batch": BATCH, "length": LENGTH, "models": MODELS, "slots": SLOTS, "vocab-size": VOCAB}


@pytest.fixture(scope="module")
def examples():
    return random_fusion_examples(
        np.random.default_rng(0), count=BATCH, length=LENGTH, models=MODELS, slots=SLOTS, vocab_size=VOCAB
    )


@pytest.fixture(scope="module")
def batch(examples):
    return FusionCollator()(examples)


@pytest.fixture(scope="module")
def dense(examples):
    return reference_collate(examples, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def student_logits():
    return torch.randn(BATCH, LENGTH, VOCAB, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def extra_memory():
    """Extra memory of one loss step per path, each measured in a fresh process (peak resident set)."""
    workload = Path(__file__).resolve().parent / "fusion_workload.py"
    options = [f"--{name}={value}" for name, value in SHAPES.items()]
    reports = {}
    for path in ("sparse", "dense"):
        completed = subprocess.run(
            [sys.executable, str(workload), path, *options], capture_output=True, text=True, check=True, timeout=600
        )
        reports[path] = json.loads(completed.stdout)
    return reports


def sparse_step(batch, logits, **fuse_options):
    loss = sparse_loss(batch, logits, **fuse_options)
    loss.backward()
    return loss


def calibrated(batch, listed_mass=0.7):
    """The batch with its teacher lists as the log-probabilities of teachers that put ``listed_mass``
    on each list."""
    listed = batch["teacher_ids"] >= 0
    values = batch["teacher_logits"].masked_fill(~listed, float("-inf")).log_softmax(-1) + math.log(listed_mass)
    return batch | {"teacher_logits": values.where(listed, 0.0)}


def dense_step(batch, dense, logits):
    loss = dense_reference_loss(logits, batch["labels"], batch["attention_mask"], dense, batch["teacher_ce"])
    loss.backward()
    return loss


def test_collate_sparse(benchmark, examples, batch):
    benchmark.extra_info["teacher_mib"] = sum(batch[key].nbytes for key in ("teacher_ids", "teacher_logits")) / 2**20
    collated = benchmark(FusionCollator(), examples)
    assert collated["teacher_ids"].shape == (BATCH, MODELS, LENGTH, SLOTS)


def test_collate_reference_loop(benchmark, examples):
    dense = benchmark.pedantic(reference_collate, args=(examples,), kwargs={"vocab_size": VOCAB}, rounds=3)
    benchmark.extra_info["teacher_mib"] = dense.nbytes / 2**20
    assert dense.shape == (MODELS, BATCH, LENGTH, VOCAB)


def test_loss_sparse(benchmark, batch, dense, student_logits, extra_memory):
    benchmark.extra_info.update(extra_memory["sparse"])
    logits = student_logits.clone().requires_grad_()
    loss = benchmark.pedantic(sparse_step, args=(batch, logits), rounds=5, warmup_rounds=1)
    # The same objective as the dense baseline, up to its bfloat16 probabilities.
    baseline = dense_step(batch, dense, student_logits.clone().requires_grad_())
    assert loss.item() == pytest.approx(baseline.item(), rel=1e-3)


def test_loss_sparse_bucket(benchmark, batch, student_logits):
    """The loss step with the tail as one rest class, on the same shapes as ``test_loss_sparse``."""
    logits = student_logits.clone().requires_grad_()
    options = {"tail": "bucket", "values_are": "log_probs"}
    loss = benchmark.pedantic(sparse_step, args=(calibrated(batch), logits), kwargs=options, rounds=5, warmup_rounds=1)
    assert torch.isfinite(loss)


def test_loss_dense_reference(benchmark, batch, dense, student_logits, extra_memory):
    benchmark.extra_info.update(extra_memory["dense"])
    logits = student_logits.clone().requires_grad_()
    loss = benchmark.pedantic(dense_step, args=(batch, dense, logits), rounds=5, warmup_rounds=1)
    assert torch.isfinite(loss)


def test_sparse_loss_needs_a_tenth_of_the_dense_extra_memory(extra_memory):
    sparse, dense = extra_memory["sparse"], extra_memory["dense"]
    assert sparse["loss"] == pytest.approx(dense["loss"], rel=1e-3)
    assert sparse["extra_mib"] <= dense["extra_mib"] / 10


def test_collator_is_100x_faster_than_the_reference_loop(examples):
    def best_of(rounds, action):
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            action()
            times.append(time.perf_counter() - start)
        return min(times)

    sparse = best_of(20, lambda: FusionCollator()(examples))
    reference = best_of(2, lambda: reference_collate(examples, vocab_size=VOCAB))
    assert reference / sparse >= 100
