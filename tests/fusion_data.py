"""Random fusion examples, teacher rows and aligned batches for the tests of the fusion layer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

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
        "topk_log_probs": rng.normal(size=(length, slots)).astype(np.float32),
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
