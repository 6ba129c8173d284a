"""Stage 4 of the pipeline: continual training of the target with ``FusionTrainer``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .._fingerprint import strings_fingerprint
from ..checkpoints import last_complete_checkpoint, remove_staging
from ..hf import load_model, load_tokenizer, tokenizer_vocabulary
from .alignment import load_aligned
from .blocks import PackedBlocks
from .config import TrainConfig
from .errors import PipelineError
from .progress import trainer_progress
from .storage import PathLike
from .summaries import TrainSummary, write_summary
from .teacher_passes import AlignmentOptions, open_teacher_passes

__all__ = ["train"]

_OPTIONS = frozenset(option.name for option in fields(TrainConfig))


def train(
    target_model: PathLike,
    aligned: PathLike | None,
    output: PathLike,
    *,
    target_pass: PathLike | None = None,
    source_passes: Sequence[PathLike] = (),
    alignment: AlignmentOptions | None = None,
    vocab_maps: Sequence[PathLike | None] | None = None,
    config: TrainConfig | None = None,
    show_progress: bool = True,
    on_log: Callable[[dict[str, float]], None] | None = None,
    **options: Any,
) -> TrainSummary:
    """Continual training of the target on fusion examples with ``FusionTrainer``.

    The examples come from ``align``'s output, or from the teacher passes of :func:`extract`: then
    each block's texts are aligned on the fly in the data loader's workers (``dataloader_workers``)
    with the ``alignment`` options, as ``align`` would (each source's vocabulary map is cached in its
    teacher directory; nothing else is written per source and target). The rows are packed into
    ``block_size``-token blocks (by default each block's CE is the token-weighted mean of its
    texts', so MinCE picks one teacher per block; ``level="text"`` keeps one CE per text in the
    block and picks per text) and trained with
    ``lm_weight * L_clm + (1 - lm_weight) * L_fusion``; ``lm_weight=1.0`` is plain continual
    training (the paper's "CLM" baseline). Under ``torchrun`` or ``accelerate launch`` each process
    trains on its share of the blocks; ``deepspeed``/``fsdp`` are passed to ``TrainingArguments``.

    The defaults are the paper's settings. The model and tokenizer are saved to ``output``, with
    ``output/summary.json`` (a :class:`TrainSummary`, including the log history).

    Args:
        target_model: the target model directory (with its tokenizer).
        aligned: the directory written by :func:`align`, or ``None`` to align the teacher passes
            on the fly.
        output: where checkpoints and the final model go.
        target_pass: with ``aligned=None``: the target's teacher directory.
        source_passes: with ``aligned=None``: the sources' teacher directories.
        alignment: with ``aligned=None``: how the sources are aligned (the options of
            :func:`align`); its defaults when omitted.
        vocab_maps: with ``aligned=None``: per source, a map file or ``None`` (see :func:`align`).
        config: the training options (see :class:`TrainConfig`); its defaults when omitted.
        show_progress: draw the trainer's progress bar.
        on_log: called with every log entry (loss terms, learning rate, teacher weights).
        **options: fields of :class:`TrainConfig` (``method``, ``lm_weight``, ``max_steps``, ...),
            in place of those of ``config``.

    Returns:
        The summary of the run.

    Raises:
        PipelineError: a path is missing, not one of ``aligned`` and ``target_pass`` is given,
            the examples belong to another tokenizer or version, no full block can be packed, or
            ``tail="bucket"`` is asked of teachers that hold raw logits.
        TypeError: an option is not a field of :class:`TrainConfig`.

    >>> train("target_model", None, "fused", target_pass="teacher/target", source_passes=["teacher/a"],
    ...       alignment=AlignmentOptions(method="boundary"), max_steps=100)  # doctest: +SKIP
    TrainSummary(steps=100, ...)
    """
    config = _with_options(config or TrainConfig(), options)
    import torch

    started = time.perf_counter()
    tokenizer = load_tokenizer(target_model, arg="TARGET_MODEL")
    data = _training_data(target_model, tokenizer, aligned, target_pass, source_passes, alignment, vocab_maps)
    _checked_tail(config, data, aligned if aligned is not None else target_pass)
    # Full-precision weights: with --bf16 the trainer runs mixed precision on top of them.
    model = load_model(target_model, arg="TARGET_MODEL", tokenizer=tokenizer, dtype=torch.float32)
    config = replace(config, level=config.level or data.ce_level)
    blocks = PackedBlocks(data.rows, block_size=config.block_size, level=config.level)
    if not len(blocks):
        raise PipelineError(f"--block-size: the data hold fewer than {config.block_size} tokens; "
                            "lower --block-size or add data")
    trainer = _trainer(model, tokenizer, blocks, output, config, values_are=data.values_are,
                       show_progress=show_progress, on_log=on_log)
    checkpoint = _checkpoint_to_resume(output, main=trainer.is_world_process_zero()) if config.resume else None
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(output))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(output))
    run = _run_summary(trainer, result, config, blocks=len(blocks), data=data, started=started)
    if trainer.is_world_process_zero():
        write_summary(output, run)
    return run


def _trainer(model: Any, tokenizer: Any, blocks: PackedBlocks, output: PathLike, config: TrainConfig, *,
             values_are: str, show_progress: bool, on_log: Callable[[dict[str, float]], None] | None) -> Any:
    """The ``FusionTrainer`` of a run. The trainer's own bar and printer write every log entry as a
    line; one bar with the loss instead."""
    import torch
    from transformers import PrinterCallback

    from ..trainer import FusionCollator, FusionTrainer, FusionTrainingArguments

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    args = FusionTrainingArguments(output_dir=str(output), report_to="none", disable_tqdm=True,
                                   dataloader_pin_memory=torch.cuda.is_available(), values_are=values_are,
                                   **config.training_arguments())
    callbacks = [_log_forwarder(on_log)] + ([trainer_progress(f"train {Path(output).name}")] if show_progress else [])
    trainer = FusionTrainer(model=model, args=args, train_dataset=blocks,
                            data_collator=FusionCollator(pad_token_id=pad_id), callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    return trainer


@dataclass(frozen=True)
class _TrainingData:
    """The rows to pack into blocks, and what they are."""

    rows: Any
    ce_level: str
    ce_unit: str
    values_are: str


def _training_data(target_model: PathLike, tokenizer: Any, aligned: PathLike | None, target_pass: PathLike | None,
                   source_passes: Sequence[PathLike], alignment: AlignmentOptions | None,
                   vocab_maps: Sequence[PathLike | None] | None) -> _TrainingData:
    """The aligned rows of ``aligned``, or the teacher passes to align on the fly, checked to
    belong to the target's tokenizer."""
    if (aligned is None) == (target_pass is None):
        raise PipelineError("ALIGNED_DIR: give either the output of `fusellm-fast align` or --target-pass "
                            "and --source-pass (aligned on the fly), not both or neither")
    fingerprint = strings_fingerprint(tokenizer_vocabulary(tokenizer, "TARGET_MODEL"))
    if aligned is not None:
        examples, summary = load_aligned(aligned, arg="ALIGNED_DIR")
        if fingerprint != summary["target_tokenizer_fingerprint"]:
            raise PipelineError(
                f"ALIGNED_DIR: {str(aligned)!r} was aligned to another tokenizer than {str(target_model)!r}'s; "
                "extract and align with this target model"
            )
        # Aligned data of older versions hold logits, which a softmax over the list reads the same.
        return _TrainingData(examples, summary.get("ce_level", "sequence"), summary["ce_unit"],
                             summary.get("values_are", "logits"))
    alignment = alignment or AlignmentOptions()
    passes = open_teacher_passes(target_pass, source_passes, alignment, vocab_maps=vocab_maps, arg="--source-pass",
                                 target_arg="--target-pass")
    if fingerprint != passes.target.identity["tokenizer_fingerprint"]:
        raise PipelineError(f"--target-pass: {str(target_pass)!r} was extracted with another tokenizer than "
                            f"{str(target_model)!r}'s; extract this target model")
    return _TrainingData(passes, alignment.ce_level, alignment.ce_unit, passes.values_are)


def _checked_tail(config: TrainConfig, data: _TrainingData, source: PathLike) -> None:
    """``tail="bucket"`` needs log-probabilities under each model's full softmax."""
    if config.tail == "bucket" and data.values_are != "log_probs":
        raise PipelineError(
            f"--tail bucket: {str(source)!r} holds raw top-k logits, not log-probabilities under each model's "
            "full softmax; extract the teacher passes again with this version, or use --tail renormalize"
        )


def _checkpoint_to_resume(output: PathLike, *, main: bool) -> str | None:
    """The last complete checkpoint in ``output``; a newer, incomplete one is skipped with a warning
    (from the ``main`` process, which also removes what a kill while saving left)."""
    if main:
        remove_staging(output)
    checkpoint, skipped = last_complete_checkpoint(output)
    for partial, reason in skipped if main else ():
        instead = f"resuming from {checkpoint.name}" if checkpoint else "starting from the beginning"
        print(f"fusellm-fast train: warning: skipping the incomplete {partial} ({reason}); {instead}",
              file=sys.stderr)
    return None if checkpoint is None else str(checkpoint)


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


def _run_summary(trainer: Any, result: Any, config: TrainConfig, *, blocks: int, data: _TrainingData,
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
        ce_unit=data.ce_unit,
        values_are=data.values_are,
        final_loss=float(history[-1]["loss"]) if history else float(result.training_loss),
        seconds=seconds,
        tokens_per_second=tokens / result.metrics["train_runtime"] if result.metrics.get("train_runtime") else 0.0,
        log_history=history,
    )
