"""Device check of the sparse FuseLLM loss and of FusionTrainer against the reference code's dense data flow.

FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv:2401.10491)
trains a target model against fused teacher distributions; its reference code materializes them as
dense ``[batch, length, vocab]`` tensors, ``fusellm_fast`` keeps them as top-k lists. On one device:

1. loss: per vocabulary size (32,000 as Llama-2, 152,064 as Qwen), one loss step (teacher targets
   built and moved to the device, MinCE, loss forward and backward) on 2 x 2,048 tokens with
   3 models and top-10 lists: time, extra device memory beyond the logits and their gradient, and
   agreement of the two losses.
2. training: a Llama-shaped target of about 100M parameters (bfloat16) trained for a few steps with
   ``FusionTrainer`` (sparse) and with a ``Trainer`` that uses the reference's dense collator and loss:
   seconds per optimizer step, collator seconds per batch, peak device memory.

Usage::

    python benches/gpu_check.py                          # CUDA, the shapes above, about 2 minutes
    python benches/gpu_check.py --device cpu --tiny      # small shapes anywhere, under a minute
    python benches/gpu_check.py --out gpu_check.json     # also write the JSON report to a file

Prints one JSON report; exits non-zero if the sparse and dense losses disagree or a loss is not finite.
Memory figures are meaningful on CUDA only: ``--device cpu`` reports the process's resident set,
which is too coarse for the tiny shapes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from fusellm_fast.trainer import FusionCollator, FusionTrainer, FusionTrainingArguments
from fusion_workload import (
    dense_reference_loss,
    loss_step,
    random_fusion_examples,
    reference_collate,
)

FULL_SHAPES = {"batch": 2, "length": 2048, "models": 3, "slots": 10, "vocab_sizes": (32000, 152064)}
TINY_SHAPES = {"batch": 2, "length": 64, "models": 3, "slots": 10, "vocab_sizes": (512,)}
# About 106M parameters with the 32,000-token vocabulary (untied embeddings: 49M of them).
FULL_MODEL = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 8, "num_attention_heads": 12}
TINY_MODEL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
# Relative loss difference allowed between sparse float32 and dense bfloat16 probabilities.
LOSS_TOLERANCE = 1e-3
# The same for the first training step, where the model's bfloat16 autocast adds its own rounding.
TRAINING_LOSS_TOLERANCE = 1e-2


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_loss(device: torch.device, shapes: dict[str, Any], *, repeats: int) -> list[dict[str, Any]]:
    reports = []
    for vocab_size in shapes["vocab_sizes"]:
        sizes = {key: shapes[key] for key in ("batch", "length", "models", "slots")}
        sparse = loss_step("sparse", device=device, vocab_size=vocab_size, repeats=repeats, **sizes)
        dense = loss_step("dense", device=device, vocab_size=vocab_size, repeats=repeats, **sizes)
        difference = abs(sparse["loss"] - dense["loss"]) / abs(dense["loss"])
        reports.append(
            {
                "vocab_size": vocab_size,
                "sparse": sparse,
                "dense_reference": dense,
                "extra_memory_ratio": sparse["extra_mib"] / dense["extra_mib"] if dense["extra_mib"] > 0 else None,
                "relative_loss_difference": difference,
                "ok": bool(np.isfinite(sparse["loss"]) and difference < LOSS_TOLERANCE),
            }
        )
    return reports


class StepTimer(transformers.TrainerCallback):
    """Wall time of each optimizer step, the device synchronized at both ends."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.durations: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize(self.device)
        self.durations.append(time.perf_counter() - self._start)


class TimedCollator:
    """A collator that records how long each batch took to build."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate
        self.durations: list[float] = []

    def __call__(self, features: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        batch = self.collate(features)
        self.durations.append(time.perf_counter() - start)
        return batch


class DenseReferenceCollator:
    """The reference collator: the sparse batch plus dense ``[N, B, L, V]`` teacher distributions."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def __call__(self, features: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        batch = FusionCollator()(features)
        plain = {key: batch[key] for key in ("input_ids", "attention_mask", "labels", "teacher_ce")}
        # Batch-first, so that the Trainer's data-parallel splitting would cut it along the batch.
        return plain | {"dense_targets": reference_collate(features, vocab_size=self.vocab_size).transpose(0, 1)}


class DenseReferenceTrainer(transformers.Trainer):
    """The reference training step: MinCE over dense targets and a soft-target cross-entropy."""

    loss_is_scaled_for_ga = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        loss = dense_reference_loss(
            outputs.logits,
            inputs["labels"],
            inputs["attention_mask"],
            inputs["dense_targets"].transpose(0, 1),
            inputs["teacher_ce"],
            lm_weight=self.args.lm_weight,
        )
        return (loss, outputs) if return_outputs else loss


def check_training(device: torch.device, *, tiny: bool, steps: int) -> dict[str, Any]:
    shapes, sizes = (TINY_SHAPES, TINY_MODEL) if tiny else (FULL_SHAPES, FULL_MODEL)
    vocab_size, batch = shapes["vocab_sizes"][0], shapes["batch"]
    examples = random_fusion_examples(
        np.random.default_rng(2),
        count=batch * (steps + 1),
        length=shapes["length"],
        models=shapes["models"],
        slots=shapes["slots"],
        vocab_size=vocab_size,
    )
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=shapes["length"],
        num_key_value_heads=sizes["num_attention_heads"],
        tie_word_embeddings=False,
        **sizes,
    )
    report: dict[str, Any] = {"model": sizes, "vocab_size": vocab_size, "length": shapes["length"], "batch": batch}
    with tempfile.TemporaryDirectory() as output_dir:
        settings = {
            "output_dir": output_dir,
            "per_device_train_batch_size": batch,
            "max_steps": steps + 1,
            "learning_rate": 1e-4,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "disable_tqdm": True,
            "use_cpu": device.type == "cpu",
            "bf16": device.type == "cuda",
            "seed": 0,
        }
        for name, trainer_class, collate in (
            ("sparse", FusionTrainer, FusionCollator()),
            ("dense_reference", DenseReferenceTrainer, DenseReferenceCollator(vocab_size)),
        ):
            torch.manual_seed(0)
            model = transformers.LlamaForCausalLM(config).to(device)
            report["parameters"] = sum(p.numel() for p in model.parameters())
            timer, collator = StepTimer(device), TimedCollator(collate)
            trainer = trainer_class(
                model=model,
                args=FusionTrainingArguments(**settings),
                train_dataset=examples,
                data_collator=collator,
                callbacks=[timer],
            )
            trainer.remove_callback(transformers.PrinterCallback)  # stdout carries the JSON report only
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            trainer.train()
            losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
            report[name] = {
                "median_step_s": round(statistics.median(timer.durations[1:]), 5),  # the first step warms up
                "median_collate_s": round(statistics.median(collator.durations[1:]), 5),
                "steps_timed": len(timer.durations) - 1,
                "losses": losses,
                "peak_device_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            }
            del trainer, model
    # Same initialization and data: the first losses differ only by the dense targets' bfloat16 rounding.
    first = [report[name]["losses"][0] for name in ("sparse", "dense_reference")]
    report["first_loss_relative_difference"] = abs(first[0] - first[1]) / abs(first[1])
    finite = all(np.isfinite(report[name]["losses"]).all() for name in ("sparse", "dense_reference"))
    report["ok"] = bool(finite and report["first_loss_relative_difference"] < TRAINING_LOSS_TOLERANCE)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device to check (default: cuda)")
    parser.add_argument("--tiny", action="store_true", help="small shapes and model, for a quick run anywhere")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each loss step (the fastest is reported)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (default: 4, tiny: 2)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    options = parser.parse_args(argv)
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available here; pass --device cpu (with --tiny for a quick run)")
    shapes = TINY_SHAPES if options.tiny else FULL_SHAPES
    steps = options.steps if options.steps is not None else (2 if options.tiny else 4)

    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "shapes": {key: value for key, value in shapes.items() if key != "vocab_sizes"},
        "loss": check_loss(device, shapes, repeats=options.repeats),
        "training": check_training(device, tiny=options.tiny, steps=steps),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if options.out is not None:
        options.out.write_text(text + "\n")
    return 0 if all(part["ok"] for part in [*report["loss"], report["training"]]) else 1


if __name__ == "__main__":
    sys.exit(main())
