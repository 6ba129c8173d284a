"""Stage 4 of the pipeline: continual training of the target with ``FusionTrainer``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from .._fingerprint import strings_fingerprint
from ..hf import load_model, load_tokenizer, tokenizer_vocabulary
from .alignment import load_aligned
from .blocks import PackedBlocks
from .errors import PipelineError
from .storage import PathLike
from .summaries import TrainSummary, write_summary

__all__ = ["train"]


def train(
    target_model: PathLike,
    aligned: PathLike,
    output: PathLike,
    *,
    method: Literal["min_ce", "avg_ce"] = "min_ce",
    lm_weight: float = 0.9,
    temperature: float = 1.0,
    level: Literal["sequence", "token"] | None = None,
    block_size: int = 2048,
    batch_size: int = 1,
    gradient_accumulation_steps: int = 1,
    learning_rate: float = 1e-5,
    lr_scheduler: str = "cosine",
    warmup_ratio: float = 0.008,
    weight_decay: float = 0.1,
    adam_beta2: float = 0.95,
    epochs: float = 1.0,
    max_steps: int = -1,
    bf16: bool = False,
    seed: int = 42,
    logging_steps: int = 10,
    save_steps: int | None = None,
    deepspeed: str | None = None,
    fsdp: str | None = None,
    fsdp_config: str | None = None,
    resume: bool = False,
    show_progress: bool = True,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> TrainSummary:
    """Continual training of the target on aligned fusion examples with ``FusionTrainer``.

    The aligned rows are packed into ``block_size``-token blocks (each block's CE is the
    token-weighted mean of its texts', so MinCE picks one teacher per block) and trained with
    ``lm_weight * L_clm + (1 - lm_weight) * L_fusion``; ``lm_weight=1.0`` is plain continual
    training (the paper's "CLM" baseline). Under ``torchrun`` or ``accelerate launch`` each process
    trains on its share of the blocks; ``deepspeed``/``fsdp`` are passed to ``TrainingArguments``.

    The defaults are the paper's settings. The model and tokenizer are saved to ``output``, with
    ``output/summary.json`` (a :class:`TrainSummary`, including the log history).

    Args:
        target_model: the target model directory (with its tokenizer).
        aligned: the directory written by :func:`align`.
        output: where checkpoints and the final model go.
        method: ``"min_ce"`` or ``"avg_ce"``.
        lm_weight: lambda, the weight of the causal LM loss.
        temperature: teacher temperature.
        level: where MinCE/AvgCE choose: per block (``"sequence"``, the paper) or per position
            (``"token"``); ``None`` follows the aligned data's ``ce_level``.
        block_size: tokens per training block.
        batch_size: blocks per device and step.
        gradient_accumulation_steps: steps per optimizer update.
        learning_rate, lr_scheduler, warmup_ratio, weight_decay, adam_beta2, epochs, max_steps,
            bf16, seed, logging_steps: as in ``transformers.TrainingArguments``.
        save_steps: checkpoint every so many steps; no checkpoints when omitted.
        deepspeed: a DeepSpeed JSON config path.
        fsdp, fsdp_config: the FSDP options of ``TrainingArguments``.
        resume: continue from the last checkpoint in ``output``.
        show_progress: draw the trainer's progress bar.
        on_log: called with every log entry (loss terms, learning rate, teacher weights).

    Returns:
        The summary of the run.

    Raises:
        PipelineError: a path is missing, the aligned data belong to another tokenizer, the
            vocabulary exceeds the model, or no full block can be packed.

    >>> train("target_model", "aligned", "fused", max_steps=100)  # doctest: +SKIP
    TrainSummary(steps=100, ...)
    """
    import torch
    from transformers import PrinterCallback, TrainerCallback

    from ..trainer import FusionCollator, FusionTrainer, FusionTrainingArguments

    started = time.perf_counter()
    tokenizer = load_tokenizer(target_model, arg="TARGET_MODEL")
    examples, summary = load_aligned(aligned, arg="ALIGNED_DIR")
    fingerprint = strings_fingerprint(tokenizer_vocabulary(tokenizer, "TARGET_MODEL"))
    if fingerprint != summary["target_tokenizer_fingerprint"]:
        raise PipelineError(
            f"ALIGNED_DIR: {str(aligned)!r} was aligned to another tokenizer than {str(target_model)!r}'s; "
            "extract and align with this target model"
        )
    # Full-precision weights: with --bf16 the trainer runs mixed precision on top of them.
    model = load_model(target_model, arg="TARGET_MODEL", tokenizer=tokenizer, dtype=torch.float32)
    level = level or summary.get("ce_level", "sequence")
    blocks = PackedBlocks(examples, block_size=block_size, level=level)
    if not len(blocks):
        raise PipelineError(f"--block-size: the aligned data hold fewer than {block_size} tokens; "
                            "lower --block-size or add data")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    passthrough = {key: value for key, value in (("deepspeed", deepspeed), ("fsdp", fsdp),
                                                  ("fsdp_config", fsdp_config)) if value}
    args = FusionTrainingArguments(
        output_dir=str(output),
        method=method,
        lm_weight=lm_weight,
        temperature=temperature,
        level=level,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=learning_rate,
        lr_scheduler_type=lr_scheduler,
        warmup_steps=warmup_ratio,
        weight_decay=weight_decay,
        adam_beta2=adam_beta2,
        num_train_epochs=epochs,
        max_steps=max_steps,
        bf16=bf16,
        seed=seed,
        data_seed=seed,
        logging_steps=logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        report_to="none",
        disable_tqdm=not show_progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        **passthrough,
    )

    class _Forward(TrainerCallback):
        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict[str, float] | None = None,
                   **_: Any) -> None:
            if on_log is not None and logs:
                on_log(dict(logs))

    trainer = FusionTrainer(model=model, args=args, train_dataset=blocks,
                            data_collator=FusionCollator(pad_token_id=pad_id), callbacks=[_Forward()])
    if not show_progress:
        trainer.remove_callback(PrinterCallback)
    has_checkpoint = resume and any(Path(output).glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if has_checkpoint else None)
    trainer.save_model(str(output))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(output))
    seconds = time.perf_counter() - started
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    steps = trainer.state.global_step
    tokens = steps * batch_size * gradient_accumulation_steps * block_size * max(args.world_size, 1)
    run = TrainSummary(
        steps=steps,
        blocks=len(blocks),
        block_size=block_size,
        method=method,
        lm_weight=lm_weight,
        level=level,
        ce_unit=summary["ce_unit"],
        final_loss=float(history[-1]["loss"]) if history else float(result.training_loss),
        seconds=seconds,
        tokens_per_second=tokens / result.metrics["train_runtime"] if result.metrics.get("train_runtime") else 0.0,
        log_history=history,
    )
    if trainer.is_world_process_zero():
        write_summary(output, run)
    return run
