"""Synthetic fusion workload, the dense baseline as the FuseLLM reference code builds it, and a memory meter.

The published training code of FuseLLM (Wan et al., ICLR 2024, arXiv:2401.10491) materializes, in
its data collator, one dense ``[batch, length, vocab]`` bfloat16 distribution per model, filling it
one position at a time in a Python loop, and trains with a soft-target cross-entropy against the
chosen one. This module restates that data flow on fusion examples (see ``fusellm_fast.trainer``)
as the baseline of ``bench_fusion.py`` and ``gpu_check.py``; it is not part of the package.

Run as a script, it measures one loss step in a fresh process (see :func:`loss_step`) and prints
the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from fusellm_fast.fusion import fuse, fusion_loss
from fusellm_fast.trainer import FusionCollator

LossPath = Literal["sparse", "dense"]


def random_fusion_examples(
    rng: np.random.Generator,
    *,
    count: int,
    length: int,
    models: int,
    slots: int,
    vocab_size: int,
    unaligned_share: float = 0.4,
) -> list[dict[str, np.ndarray]]:
    """Fusion examples with distinct random ids per list; a share of source positions list nothing."""
    shape = (count, models, length, slots)
    # Strictly increasing offsets below vocab_size keep the ids of one list distinct.
    steps = rng.integers(1, max(2, vocab_size // slots), size=shape)
    ids = (rng.integers(0, vocab_size, size=(*shape[:-1], 1)) + steps.cumsum(-1)) % vocab_size
    unaligned = rng.random((count, models, length, 1)) < unaligned_share
    unaligned[:, 0] = False  # the target's own lists are always there
    ids = np.where(unaligned, -1, ids).astype(np.int32)
    logits = np.sort(rng.normal(size=shape).astype(np.float32) * 3.0, axis=-1)[..., ::-1]
    return [
        {
            "input_ids": rng.integers(0, vocab_size, size=length).astype(np.int32),
            "teacher_ids": ids[b],
            "teacher_logits": np.ascontiguousarray(logits[b]),
            "teacher_ce": rng.uniform(1.0, 3.0, size=models).astype(np.float32),
        }
        for b in range(count)
    ]


def reference_collate(
    examples: Sequence[Mapping[str, np.ndarray]],
    *,
    vocab_size: int,
    pad_token_id: int = 0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``bfloat16 [N, B, L, V]``, built one position at a time as the reference collator does.

    Each model's softmax over its list is scattered into a dense vocabulary vector; a source
    position without a list takes the target's; padding gets a one-hot on the pad id.
    """
    models = len(examples[0]["teacher_ce"])
    length = max(len(example["input_ids"]) for example in examples)
    dense = torch.zeros(models, len(examples), length, vocab_size, dtype=torch.bfloat16)
    for n in range(models):
        for b, example in enumerate(examples):
            for t in range(length):
                if t >= len(example["input_ids"]):
                    dense[n, b, t, pad_token_id] = 1.0
                    continue
                ids, logits = example["teacher_ids"][n, t], example["teacher_logits"][n, t]
                if n > 0 and (ids < 0).all():
                    ids, logits = example["teacher_ids"][0, t], example["teacher_logits"][0, t]
                listed = ids >= 0
                probs = torch.softmax(torch.tensor(logits[listed], dtype=torch.bfloat16) / temperature, dim=-1)
                dense[n, b, t].scatter_(-1, torch.tensor(ids[listed], dtype=torch.long), probs)
    return dense


def dense_reference_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor,
    dense: torch.Tensor,
    teacher_ce: torch.Tensor,
    *,
    lm_weight: float = 0.9,
) -> torch.Tensor:
    """``lm_weight * L_clm + (1 - lm_weight) * L_fusion`` with MinCE over dense targets ``[N, B, L, V]``."""
    vocab = student_logits.shape[-1]
    clm = F.cross_entropy(student_logits[:, :-1].reshape(-1, vocab).float(), labels[:, 1:].reshape(-1))
    chosen = teacher_ce.float().argmin(-1)  # [B]; the random CEs of the workload do not tie
    target = dense[chosen, torch.arange(len(chosen), device=chosen.device)]
    per_position = F.cross_entropy(
        student_logits.reshape(-1, vocab).float(), target.reshape(-1, vocab).float(), reduction="none"
    ).view(attention_mask.shape)
    fusion = (per_position * attention_mask).sum() / attention_mask.sum()
    return lm_weight * clm + (1.0 - lm_weight) * fusion


def sparse_loss(
    batch: Mapping[str, torch.Tensor], student_logits: torch.Tensor, *, lm_weight: float = 0.9, **fuse_options: Any
) -> torch.Tensor:
    """The same objective with ``fusellm_fast``: MinCE on the teacher lists (with ``fuse_options``,
    such as ``tail="bucket"``), then the sparse loss."""
    ids, logits = batch["teacher_ids"], batch["teacher_logits"]
    fused = fuse([(ids[:, n], logits[:, n]) for n in range(ids.shape[1])], batch["teacher_ce"].movedim(1, 0),
                 **fuse_options)
    return fusion_loss(student_logits, batch["labels"], fused, lm_weight=lm_weight, mask=batch["attention_mask"]).total


class PeakMemory:
    """Peak memory of a ``with`` block above the memory in use when it starts.

    On CUDA it reads the caching allocator's statistics; on the CPU the process's peak resident set
    (``VmHWM``, reset through ``/proc/self/clear_refs``), so it is meant for a fresh process.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.extra_bytes = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")
            self._start = _proc_status_bytes("VmRSS")
        return self

    def __exit__(self, *_: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _proc_status_bytes("VmHWM")
        self.extra_bytes = peak - self._start


def _proc_status_bytes(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE).group(1)) * 1024


def loss_step(
    path: LossPath,
    *,
    device: torch.device,
    batch: int,
    length: int,
    models: int,
    slots: int,
    vocab_size: int,
    repeats: int = 1,
) -> dict[str, Any]:
    """Time and extra memory of one loss step (teacher targets, forward, backward) on ``device``.

    The step starts from the examples and the student logits: it builds the batch's teacher targets
    (the sparse collator's lists, or the reference collator's dense distributions, moved to
    ``device``), then computes the loss and its gradient. ``extra_mib`` is the peak memory above the
    start minus the logits' gradient, which every training step allocates; ``teacher_mib`` is the
    part held by the teacher targets. Times are the fastest of ``repeats`` runs, the memory that of
    the last.
    """
    examples = random_fusion_examples(
        np.random.default_rng(0), count=batch, length=length, models=models, slots=slots, vocab_size=vocab_size
    )
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    generator = torch.Generator(device=device).manual_seed(1)
    student = torch.randn(batch, length, vocab_size, generator=generator, device=device, dtype=dtype)
    student.requires_grad_()
    collate_times, loss_times = [], []
    for _ in range(repeats):
        student.grad = None
        with PeakMemory(device) as meter:
            start = time.perf_counter()
            collated = {key: value.to(device) for key, value in FusionCollator()(examples).items()}
            if path == "dense":
                dense = reference_collate(examples, vocab_size=vocab_size).to(device)
            _synchronize(device)
            collated_at = time.perf_counter()
            if path == "sparse":
                teacher_bytes = collated["teacher_ids"].nbytes + collated["teacher_logits"].nbytes
                loss = sparse_loss(collated, student)
            else:
                teacher_bytes = dense.nbytes
                loss = dense_reference_loss(
                    student, collated["labels"], collated["attention_mask"], dense, collated["teacher_ce"]
                )
            loss.backward()
            _synchronize(device)
            collate_times.append(collated_at - start)
            loss_times.append(time.perf_counter() - collated_at)
            del collated
            if path == "dense":
                del dense
    return {
        "path": path,
        "vocab_size": vocab_size,
        "loss": loss.item(),
        "collate_s": round(min(collate_times), 5),
        "loss_s": round(min(loss_times), 5),
        "extra_mib": round((meter.extra_bytes - student.grad.nbytes) / 2**20, 1),
        "teacher_mib": round(teacher_bytes / 2**20, 2),
        "gradient_mib": round(student.grad.nbytes / 2**20, 1),
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time and extra memory of one loss step, sparse or dense, as JSON.")
    parser.add_argument("path", choices=["sparse", "dense"])
    parser.add_argument("--device", default="cpu")
    for name, default in (("batch", 2), ("length", 2048), ("models", 3), ("slots", 10), ("vocab-size", 32000)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--repeats", type=int, default=1)
    options = parser.parse_args(argv)
    report = loss_step(
        options.path,
        device=torch.device(options.device),
        batch=options.batch,
        length=options.length,
        models=options.models,
        slots=options.slots,
        vocab_size=options.vocab_size,
        repeats=options.repeats,
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
