"""Stage 4 of the pipeline: continual training of the target with ``FusionTrainer``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from .._fingerprint import strings_fingerprint
from ..hf import load_model, load_tokenizer, tokenizer_vocabulary
from .alignment import load_aligned
from .blocks import PackedBlocks
from .config import TrainConfig
from .errors import PipelineError
from .progress import trainer_progress
from .storage import PathLike
from .summaries import TrainSummary, write_summary

__all__ = ["train"]

_OPTIONS = frozenset(option.name for option in fields(TrainConfig))


def train(
    target_model: PathLike,
    aligned: PathLike,
    output: PathLike,
    *,
    config: TrainConfig | None = None,
    show_progress: bool = True,
    on_log: Callable[[dict[str, float]], None] | None = None,
    **options: Any,
) -> TrainSummary:
    """Continual training of the target on aligned fusion examples with ``FusionTrainer``.

    The aligned rows are packed into ``block_size``-token blocks (by default each block's CE is
    the token-weighted mean of its texts', so MinCE picks one teacher per block; ``level="text"``
    keeps one CE per text in the block and picks per text) and trained with
    ``lm_weight * L_clm + (1 - lm_weight) * L_fusion``; ``lm_weight=1.0`` is plain continual
    training (the paper's "CLM" baseline). Under ``torchrun`` or ``accelerate launch`` each process
    trains on its share of the blocks; ``deepspeed``/``fsdp`` are passed to ``TrainingArguments``.

    The defaults are the paper's settings. The model and tokenizer are saved to ``output``, with
    ``output/summary.json`` (a :class:`TrainSummary`, including the log history).

    Args:
        target_model: the target model directory (with its tokenizer).
        aligned: the directory written by :func:`align`.
        output: where checkpoints and the final model go.
        config: the training options (see :class:`TrainConfig`); its defaults when omitted.
        show_progress: draw the trainer's progress bar.
        on_log: called with every log entry (loss terms, learning rate, teacher weights).
        **options: fields of :class:`TrainConfig` (``method``, ``lm_weight``, ``max_steps``, ...),
            in place of those of ``config``.

    Returns:
        The summary of the run.

    Raises:
        PipelineError: a path is missing, the aligned data belong to another tokenizer, the
            vocabulary exceeds the model, no full block can be packed, or ``tail="bucket"`` is
            asked of aligned data that hold raw logits.
        TypeError: an option is not a field of :class:`TrainConfig`.

    >>> train("target_model", "aligned", "fused", max_steps=100)  # doctest: +SKIP
    TrainSummary(steps=100, ...)
    """
    config = _with_options(config or TrainConfig(), options)
    import torch
    from transformers import PrinterCallback

    from ..trainer import FusionCollator, FusionTrainer, FusionTrainingArguments

    started = time.perf_counter()
    tokenizer = load_tokenizer(target_model, arg="TARGET_MODEL")
    examples, summary = load_aligned(aligned, arg="ALIGNED_DIR")
    values_are = _checked_aligned_data(summary, tokenizer, config, target_model, aligned)
    config = replace(config, level=config.level or summary.get("ce_level", "sequence"))
    blocks = PackedBlocks(examples, block_size=config.block_size, level=config.level)
    if not len(blocks):
        raise PipelineError(f"--block-size: the aligned data hold fewer than {config.block_size} tokens; "
                            "lower --block-size or add data")
    # Before the model is loaded, so that options that do not fit stop the run at once. The trainer's
    # own bar and printer write every log entry as a line; one bar with the loss instead.
    args = FusionTrainingArguments(output_dir=str(output), report_to="none", disable_tqdm=True,
                                   dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
                                   values_are=values_are, **config.training_arguments())
    # Full-precision weights: with --bf16 the trainer runs mixed precision on top of them.
    model = load_model(target_model, arg="TARGET_MODEL", tokenizer=tokenizer, dtype=torch.float32)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    callbacks = [_log_forwarder(on_log)] + ([trainer_progress(f"train {Path(output).name}")] if show_progress else [])
    trainer = FusionTrainer(model=model, args=args, train_dataset=blocks,
                            data_collator=FusionCollator(pad_token_id=pad_id), callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    has_checkpoint = config.resume and any(Path(output).glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if has_checkpoint else None)
    trainer.save_model(str(output))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(output))
    run = _run_summary(trainer, result, config, blocks=len(blocks), ce_unit=summary["ce_unit"], started=started)
    if trainer.is_world_process_zero():
        write_summary(output, run)
    return run


def _checked_aligned_data(summary: dict[str, Any], tokenizer: Any, config: TrainConfig, target_model: PathLike,
                          aligned: PathLike) -> str:
    """Checks that the aligned data fit the target and the options; what their top-k values are."""
    if strings_fingerprint(tokenizer_vocabulary(tokenizer, "TARGET_MODEL")) != summary["target_tokenizer_fingerprint"]:
        raise PipelineError(
            f"ALIGNED_DIR: {str(aligned)!r} was aligned to another tokenizer than {str(target_model)!r}'s; "
            "extract and align with this target model"
        )
    # Written by the align stage of calibrated teacher passes; older aligned data hold raw logits.
    values_are = summary.get("values_are", "logits")
    if config.tail == "bucket" and values_are != "log_probs":
        raise PipelineError(
            f"--tail bucket: {str(aligned)!r} holds raw top-k logits, not log-probabilities under each model's "
            "full softmax; align calibrated teacher passes, or use --tail renormalize"
        )
    return values_are


def _with_options(config: TrainConfig, options: dict[str, Any]) -> TrainConfig:
    """``config`` with the keyword options of :func:`train` in place of its fields."""
    for name in options:
        if name not in _OPTIONS:
            raise TypeError(f"train() got an unexpected keyword argument {name!r}")
    return replace(config, **options)


def _log_forwarder(on_log: Callable[[dict[str, float]], None] | None) -> Any:
    """A trainer callback that hands every log entry to ``on_log``."""
    from transformers import TrainerCallback

    class Forward(TrainerCallback):
        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict[str, float] | None = None,
                   **_: Any) -> None:
            if on_log is not None and logs:
                on_log(dict(logs))

    return Forward()


def _run_summary(trainer: Any, result: Any, config: TrainConfig, *, blocks: int, ce_unit: str,
                 started: float) -> TrainSummary:
    seconds = time.perf_counter() - started
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    steps = trainer.state.global_step
    tokens = (steps * config.batch_size * config.gradient_accumulation_steps * config.block_size
              * max(trainer.args.world_size, 1))
    return TrainSummary(
        steps=steps,
        blocks=blocks,
        block_size=config.block_size,
        method=config.method,
        lm_weight=config.lm_weight,
        level=config.level,
        tail=config.tail,
        ce_unit=ce_unit,
        final_loss=float(history[-1]["loss"]) if history else float(result.training_loss),
        seconds=seconds,
        tokens_per_second=tokens / result.metrics["train_runtime"] if result.metrics.get("train_runtime") else 0.0,
        log_history=history,
    )
