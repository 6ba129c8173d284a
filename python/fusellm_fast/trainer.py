"""Training a target model with the FuseLLM objective on top of ``transformers.Trainer``.

FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv:2401.10491)
trains the target on *fusion examples* (see :mod:`fusellm_fast.fusion_examples`):
:func:`build_fusion_examples` makes them from the teacher pass and the alignment,
:func:`pack_examples` cuts them into fixed blocks, :class:`FusionCollator` batches them into sparse
tensors (never a dense ``[batch, length, vocab]`` teacher tensor), and :class:`FusionTrainer` fuses
the teachers and computes the loss on the device inside the training step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from fusellm_fast._checks import checked_choice
from fusellm_fast._choices import CeUnit
from fusellm_fast.errors import InputTypeError, InvalidInputError
from fusellm_fast.fusion import FusionLevel, FusionMethod, LossKind, Tail, ValuesAre, fuse, fusion_loss
from fusellm_fast.fusion._fuse import check_tail_options
from fusellm_fast.fusion_examples import (
    EXAMPLE_KEYS,
    SEGMENT_KEY,
    AlignedLists,
    as_examples,
    build_fusion_examples,
    ce_layout,
    pack_examples,
)

__all__ = [
    "AlignedLists",
    "CeUnit",
    "FusionCollator",
    "FusionTrainer",
    "FusionTrainingArguments",
    "build_fusion_examples",
    "pack_examples",
]


@dataclass(frozen=True)
class FusionCollator:
    """Pad fusion examples into a batch of sparse tensors, one array copy per example.

    The batch holds ``input_ids``, ``attention_mask`` and ``labels`` (``-100`` on padding)
    ``[B, L]``, ``teacher_ids`` (int32, ``-1`` on padding) and ``teacher_logits`` ``[B, N, L, K]``, and
    ``teacher_ce`` ``[B, N]``, or for token-level examples ``[B, N, L]`` (``0.0`` on padding). Blocks
    packed with ``level="text"`` give ``teacher_ce [B, N, S]`` (``S`` the most segments of a block,
    ``0.0`` on padding) and ``segment_ids`` int64 ``[B, L]`` (``-1`` on padding). Padding is on the
    right.

    Attributes:
        pad_token_id: the id written into padded ``input_ids``.
        pad_to_multiple_of: round the batch length up to a multiple of this, if given.

    Raises:
        InvalidInputError: ``pad_token_id`` is negative or ``pad_to_multiple_of`` is not positive.

    >>> ex = {"input_ids": [5, 6], "teacher_ids": [[[6], [7]]], "teacher_logits": [[[1.0], [1.0]]],
    ...       "teacher_ce": [2.0]}
    >>> batch = FusionCollator(pad_token_id=0)([ex])
    >>> batch["labels"].tolist(), batch["teacher_ids"].shape
    ([[5, 6]], torch.Size([1, 1, 2, 1]))
    """

    pad_token_id: int = 0
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int) or self.pad_token_id < 0:
            raise InvalidInputError(f"pad_token_id: must be a non-negative int, got {self.pad_token_id!r}")
        if self.pad_to_multiple_of is not None and not (
            isinstance(self.pad_to_multiple_of, int) and self.pad_to_multiple_of >= 1
        ):
            raise InvalidInputError(
                f"pad_to_multiple_of: must be a positive int or None, got {self.pad_to_multiple_of!r}"
            )

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate ``features`` (fusion examples, from numpy arrays or nested lists).

        Raises:
            InvalidInputError: ``features`` is empty, an example is malformed, or the examples
                disagree on the number of models or the CE level.
        """
        if len(features) == 0:
            raise InvalidInputError("features: must not be empty")
        examples = as_examples("features", features)
        length = max(len(example["input_ids"]) for example in examples)
        if self.pad_to_multiple_of is not None:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        slots = max(example["teacher_ids"].shape[-1] for example in examples)
        batch, models = len(examples), examples[0]["teacher_ce"].shape[0]
        layout = ce_layout(examples[0])
        if layout == "sequence":
            ce_width: tuple[int, ...] = ()
        else:
            ce_width = (length if layout == "token" else max(example["teacher_ce"].shape[1] for example in examples),)

        input_ids = np.full((batch, length), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((batch, length), dtype=np.int64)
        teacher_ids = np.full((batch, models, length, slots), -1, dtype=np.int32)
        teacher_logits = np.zeros((batch, models, length, slots), dtype=np.float32)
        teacher_ce = np.zeros((batch, models, *ce_width), dtype=np.float32)
        segment_ids = np.full((batch, length), -1, dtype=np.int64)
        for row, example in enumerate(examples):
            n, k = len(example["input_ids"]), example["teacher_ids"].shape[-1]
            input_ids[row, :n] = example["input_ids"]
            attention_mask[row, :n] = 1
            teacher_ids[row, :, :n, :k] = example["teacher_ids"]
            teacher_logits[row, :, :n, :k] = example["teacher_logits"]
            ce = example["teacher_ce"]
            if ce.ndim == 2:
                teacher_ce[row, :, :ce.shape[1]] = ce
            else:
                teacher_ce[row] = ce
            if layout == "text":
                segment_ids[row, :n] = example[SEGMENT_KEY]
        labels = np.where(attention_mask == 1, input_ids, -100)
        collated = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "labels": torch.from_numpy(labels),
            "teacher_ids": torch.from_numpy(teacher_ids),
            "teacher_logits": torch.from_numpy(teacher_logits),
            "teacher_ce": torch.from_numpy(teacher_ce),
        }
        return collated | ({SEGMENT_KEY: torch.from_numpy(segment_ids)} if layout == "text" else {})


@dataclass
class FusionTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the FuseLLM objective's options.

    The paper's run used ``learning_rate=1e-5``, ``lr_scheduler_type="cosine"``,
    ``warmup_ratio=0.008``, ``adam_beta2=0.95``, ``weight_decay=0.1``, ``num_train_epochs=1`` and
    ``bf16=True`` on 2048-token blocks, besides the defaults below. ``remove_unused_columns``
    defaults to ``False`` here because the teacher columns are not arguments of the model's
    ``forward``.

    >>> args = FusionTrainingArguments(output_dir="out", method="avg_ce", report_to="none")
    >>> args.method, args.lm_weight, args.level
    ('avg_ce', 0.9, 'sequence')
    """

    lm_weight: float = field(
        default=0.9, metadata={"help": "lambda: weight of the causal LM loss; the fusion loss gets 1 - lambda."}
    )
    method: FusionMethod = field(
        default="min_ce", metadata={"help": "How the teachers are fused: 'min_ce' (paper) or 'avg_ce'."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Temperature of the teacher softmax."})
    kind: LossKind = field(
        default="ce", metadata={"help": "Fusion loss: cross-entropy 'ce' (paper) or KL divergence 'kl'."}
    )
    level: FusionLevel = field(
        default="sequence",
        metadata={"help": "'sequence': teacher_ce [N] per example (paper); 'token': [N, L], one per position; "
                          "'text': [N, S], one per text segment of a block packed with level='text'."},
    )
    ce_temperature: float | None = field(
        default=None,
        metadata={"help": "AvgCE weights softmax(-ce / tau) with this tau; unset: softmax(exp(-ce)) (paper)."},
    )
    tail: Tail = field(
        default="renormalize",
        metadata={"help": "'renormalize': softmax over each top-k list (paper); 'bucket': the listed probabilities "
                          "and one rest class for the tail (needs values_are='log_probs')."},
    )
    values_are: ValuesAre = field(
        default="logits",
        metadata={"help": "What the teacher lists hold: 'logits', or 'log_probs' under each model's full softmax."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the teacher columns are not model arguments."}
    )

    def __post_init__(self) -> None:
        for name, choices in (("method", FusionMethod), ("kind", LossKind), ("level", FusionLevel)):
            checked_choice(getattr(self, name), name, get_args(choices))
        check_tail_options(self.tail, self.values_are, self.temperature)
        if not 0.0 <= self.lm_weight <= 1.0:
            raise InvalidInputError(f"lm_weight: must be in [0, 1], got {self.lm_weight!r}")
        if not 0.0 < self.temperature < float("inf"):
            raise InvalidInputError(f"temperature: must be positive and finite, got {self.temperature!r}")
        if self.ce_temperature is not None and not (
            self.method == "avg_ce" and 0.0 < self.ce_temperature < float("inf")
        ):
            raise InvalidInputError(
                f"ce_temperature: must be positive and finite, with method='avg_ce'; got {self.ce_temperature!r}"
            )
        super().__post_init__()


class FusionTrainer(Trainer):
    """``transformers.Trainer`` whose loss is the FuseLLM objective on sparse teacher lists.

    Batches come from :class:`FusionCollator`. Each step runs the model once, fuses the teachers
    with :func:`~fusellm_fast.fusion.fuse` on the model's device and returns
    :func:`~fusellm_fast.fusion.fusion_loss`'s total. Training logs also carry ``loss_clm``,
    ``loss_fusion`` and ``teacher_weight_<n>``, each model's mean fusion weight (for MinCE, the
    share of blocks, positions or texts that chose it), averaged over the steps since the last log and
    over the processes. Works under ``torchrun`` / ``accelerate`` data parallelism like any Trainer.

    Raises:
        InputTypeError: ``args`` is not a :class:`FusionTrainingArguments`.

    >>> FusionTrainer(model=None, args=TrainingArguments(output_dir="out", report_to="none"))
    Traceback (most recent call last):
    ...
    fusellm_fast.errors.InputTypeError: args: FusionTrainer needs FusionTrainingArguments, got TrainingArguments
    """

    # The objective is a per-batch mean; the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if not isinstance(training_args, FusionTrainingArguments):
            raise InputTypeError(
                f"args: FusionTrainer needs FusionTrainingArguments, got {type(training_args).__name__}"
            )
        super().__init__(*args, **kwargs)
        # The model never sees labels or `num_items_in_batch`: the objective normalizes itself.
        self.model_accepts_loss_kwargs = False
        self._logged_sums: torch.Tensor | None = None
        self._logged_steps = 0

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The FuseLLM objective of one batch; ``num_items_in_batch`` is not used.

        Raises:
            InvalidInputError: the batch lacks a column of :class:`FusionCollator`, or its
                ``teacher_ce`` does not fit the ``level`` of the arguments.
        """
        args: FusionTrainingArguments = self.args
        needed = ("attention_mask", "labels", *EXAMPLE_KEYS, *((SEGMENT_KEY,) if args.level == "text" else ()))
        missing = [key for key in needed if key not in inputs]
        if missing:
            raise InvalidInputError(f"inputs: lack {missing}; batch them with FusionCollator"
                                    + (", from blocks packed with level='text'" if SEGMENT_KEY in missing else ""))
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        teacher_ids, teacher_logits = inputs["teacher_ids"], inputs["teacher_logits"]
        segment_ids = inputs[SEGMENT_KEY] if args.level == "text" else None
        fused = fuse(
            [(teacher_ids[:, n], teacher_logits[:, n]) for n in range(teacher_ids.shape[1])],
            inputs["teacher_ce"].movedim(1, 0),
            method=args.method,
            temperature=args.temperature,
            level=args.level,
            ce_temperature=args.ce_temperature,
            segment_ids=segment_ids,
            tail=args.tail,
            values_are=args.values_are,
        )
        mask = inputs["attention_mask"].bool()
        loss = fusion_loss(outputs.logits, inputs["labels"], fused, lm_weight=args.lm_weight, kind=args.kind, mask=mask)
        if model.training:
            self._accumulate_log_terms(loss.clm, loss.fusion, _mean_weights(fused.weights, mask, segment_ids))
        return (loss.total, outputs) if return_outputs else loss.total

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the mean loss terms and teacher weights to the training logs, then log."""
        if "loss" in logs and self._logged_sums is not None:
            means = self.accelerator.reduce(self._logged_sums / self._logged_steps, reduction="mean").tolist()
            logs = {**logs, "loss_clm": means[0], "loss_fusion": means[1]}
            logs.update({f"teacher_weight_{n}": weight for n, weight in enumerate(means[2:])})
            self._logged_sums, self._logged_steps = None, 0
        super().log(logs, *args, **kwargs)

    def _accumulate_log_terms(self, clm: torch.Tensor, fusion: torch.Tensor, weights: torch.Tensor) -> None:
        terms = torch.cat([clm.reshape(1), fusion.reshape(1), weights]).detach().float()
        self._logged_sums = terms if self._logged_sums is None else self._logged_sums + terms
        self._logged_steps += 1


def _mean_weights(weights: torch.Tensor, mask: torch.Tensor, segment_ids: torch.Tensor | None) -> torch.Tensor:
    """``[N]``: each model's fusion weight averaged over the blocks (``weights [N, B]``), the
    positions in ``mask`` (``[N, B, L]``) or the segments that have a position in ``mask``
    (``[N, B, S]``, with ``segment_ids``)."""
    if weights.dim() == 2:
        return weights.mean(1)
    if segment_ids is None:
        return (weights * mask).sum((1, 2)) / mask.sum().clamp(min=1)
    segments = weights.shape[2]
    counted = torch.where(mask & (segment_ids >= 0), segment_ids, segments)
    present = torch.zeros(mask.shape[0], segments + 1, dtype=torch.bool, device=mask.device)
    present = present.scatter(1, counted, True)[:, :segments]
    return (weights * present).sum((1, 2)) / present.sum().clamp(min=1)
