"""The options of the train stage, written once: :class:`TrainConfig`'s fields make the
``fusellm-fast train`` flags and the ``TrainingArguments`` of the run."""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .._choices import FusionLevel, FusionMethod, Tail

__all__ = ["TrainConfig"]


def _option(default: Any, *, help: str | None = None, argument: str | None = None, stage_only: bool = False,
            when_set: bool = False) -> Any:
    """A field of :class:`TrainConfig`.

    Args:
        default: the option's default.
        help: the flag's help text.
        argument: the ``TrainingArguments`` field it sets, where its name is not the option's.
        stage_only: the stage uses it itself; it is no ``TrainingArguments`` field.
        when_set: passed to ``TrainingArguments`` only when set, so that its own default stands.
    """
    return field(default=default, metadata={"help": help, "argument": argument, "stage_only": stage_only,
                                            "when_set": when_set})


@dataclass(frozen=True)
class TrainConfig:
    """The options of :func:`~fusellm_fast.pipeline.train`; the defaults are the paper's settings.

    Each field is a flag of ``fusellm-fast train`` (``lm_weight`` is ``--lm-weight``) and, unless
    the stage uses it itself, a field of ``TrainingArguments``.

    Attributes:
        method: ``"min_ce"`` or ``"avg_ce"``.
        lm_weight: lambda, the weight of the causal LM loss.
        temperature: teacher temperature.
        ce_temperature: AvgCE only: weights ``softmax(-ce / ce_temperature)``; ``None`` keeps the
            paper's ``softmax(exp(-ce))``.
        level: where MinCE/AvgCE choose: per block (``"sequence"``, the paper), per position
            (``"token"``) or per text within a block (``"text"``); ``None`` follows the aligned
            data's ``ce_level``.
        tail: ``"renormalize"`` (softmax over each top-k list, the paper) or ``"bucket"`` (the
            listed probabilities plus one rest class; needs aligned data of calibrated teachers).
        block_size: tokens per training block.
        batch_size: blocks per device and step.
        gradient_accumulation_steps: steps per optimizer update.
        learning_rate, lr_scheduler, warmup_ratio, weight_decay, adam_beta2, epochs, max_steps,
            bf16, seed, logging_steps: as in ``transformers.TrainingArguments``.
        dataloader_workers: data-loader worker processes (``dataloader_num_workers``): they read
            the blocks, and align them when training on teacher passes.
        save_steps: checkpoint every so many steps; no checkpoints when omitted.
        deepspeed: a DeepSpeed JSON config path.
        fsdp, fsdp_config: the FSDP options of ``TrainingArguments``.
        resume: continue from the last checkpoint in the output directory.

    >>> TrainConfig(max_steps=100).training_arguments()["lr_scheduler_type"]
    'cosine'
    """

    method: FusionMethod = "min_ce"
    lm_weight: float = _option(0.9, help="lambda; 1.0 is plain continual training")
    temperature: float = 1.0
    ce_temperature: float | None = _option(
        None, help="AvgCE weights softmax(-ce / tau) with this tau (default: the paper's softmax(exp(-ce)))",
        when_set=True)
    level: FusionLevel | None = _option(
        None, help="choose teachers per block, position or text (default: the aligned data's --ce-level)")
    tail: Tail = _option("renormalize", help="softmax over each top-k list, or keep the tail as one rest class")
    block_size: int = _option(2048, stage_only=True)
    batch_size: int = _option(1, help="blocks per device and step", argument="per_device_train_batch_size")
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5
    lr_scheduler: str = _option("cosine", argument="lr_scheduler_type")
    # transformers reads a warmup_steps below 1 as a share of the training steps.
    warmup_ratio: float = _option(0.008, argument="warmup_steps")
    weight_decay: float = 0.1
    adam_beta2: float = 0.95
    epochs: float = _option(1.0, argument="num_train_epochs")
    max_steps: int = -1
    bf16: bool = False
    seed: int = 42
    logging_steps: int = 10
    dataloader_workers: int = _option(2, help="data-loader processes; they align teacher passes on the fly",
                                      argument="dataloader_num_workers")
    # Read by training_arguments, with seed: they set more than their own TrainingArguments field.
    save_steps: int | None = _option(None, help="checkpoint interval (default: none)", stage_only=True)
    deepspeed: str | None = _option(None, help="DeepSpeed JSON config", when_set=True)
    fsdp: str | None = _option(None, help="FSDP option string, as in TrainingArguments", when_set=True)
    fsdp_config: str | None = _option(None, when_set=True)
    resume: bool = _option(False, help="continue from the last checkpoint in -o", stage_only=True)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds a flag per field to ``parser``: its type, choices and default from the field."""
        hints = typing.get_type_hints(cls)
        for option in fields(cls):
            flag = "--" + option.name.replace("_", "-")
            described = {"help": option.metadata["help"]} if option.metadata.get("help") else {}
            if hints[option.name] is bool:
                parser.add_argument(flag, action="store_true", **described)
            else:
                parser.add_argument(flag, default=option.default, **_value_options(hints[option.name]), **described)

    @classmethod
    def from_arguments(cls, arguments: argparse.Namespace) -> TrainConfig:
        """The options parsed by a parser that :meth:`add_arguments` set up."""
        return cls(**{option.name: getattr(arguments, option.name) for option in fields(cls)})

    def training_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``TrainingArguments`` that these options set."""
        arguments = {}
        for option in fields(self):
            value = getattr(self, option.name)
            if option.metadata.get("stage_only") or option.metadata.get("when_set") and not value:
                continue
            arguments[option.metadata.get("argument") or option.name] = value
        # Without save_steps nothing is saved before the end; save_steps must still be valid.
        return {**arguments, "data_seed": self.seed, "save_strategy": "steps" if self.save_steps else "no",
                "save_steps": self.save_steps or 500}


def _value_options(kind: Any) -> dict[str, Any]:
    """The ``choices`` or ``type`` of a flag whose value has the type ``kind`` (``None`` allowed)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(member for member in typing.get_args(kind) if member is not type(None))
    if typing.get_origin(kind) is Literal:
        return {"choices": typing.get_args(kind)}
    return {"type": kind} if kind in (int, float) else {}
