"""Fusion examples: what the FuseLLM objective trains on, one per text, as numpy arrays.

The pipeline of FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024,
arXiv:2401.10491) stores, per text in the target tokenization, the target's own top-k lists, each
source's lists aligned onto the target tokens, and each model's cross-entropy. Here such a text is
a *fusion example*, a mapping of arrays:

- ``input_ids``: ``int [L]`` the target tokenization;
- ``teacher_ids``: ``int [N, L, K]`` model 0 the target's own top-k ids, models 1..N-1 the aligned
  sources; ``-1`` marks an empty slot;
- ``teacher_logits``: ``float [N, L, K]`` their logits;
- ``teacher_ce``: ``float [N]`` each model's cross-entropy on the text, or ``[N, L]`` one per
  position (token level);
- ``segment_ids`` (packed blocks of ``level="text"`` only): ``int [L]`` the text segment of each
  position, numbered from 0 in the block; ``teacher_ce`` is then ``[N, S]``, one per segment.

:func:`build_fusion_examples` makes them from the teacher pass and the alignment and
:func:`pack_examples` cuts them into fixed blocks; :mod:`fusellm_fast.trainer` batches and trains
them. Nothing here needs torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, get_args

import numpy as np

from fusellm_fast._checks import checked_choice
from fusellm_fast._choices import CeLevel, CeUnit, FusionLevel
from fusellm_fast.errors import InputTypeError, InvalidInputError

__all__ = [
    "EXAMPLE_KEYS",
    "SEGMENT_KEY",
    "AlignedLists",
    "as_examples",
    "build_fusion_examples",
    "ce_layout",
    "pack_examples",
]

EXAMPLE_KEYS = ("input_ids", "teacher_ids", "teacher_logits", "teacher_ce")
SEGMENT_KEY = "segment_ids"
_TEACHER_ROW_KEYS = ("input_ids", "topk_ids", "topk_logits", "ce", "total_ce", "num_bytes")


class AlignedLists(Protocol):
    """One source's lists aligned onto the target tokens of a batch of texts (an ``AlignedBatch``)."""

    ids: np.ndarray  # int [B, L, K], -1 = empty slot
    logits: np.ndarray  # float [B, L, K]
    lengths: np.ndarray  # int [B]
    source_positions: np.ndarray  # int [B, L], the paired source position, -1 = none (token-level CE only)


def build_fusion_examples(
    target_rows: Sequence[Mapping[str, Any]],
    aligned_sources: Sequence[AlignedLists],
    source_rows: Sequence[Sequence[Mapping[str, Any]]],
    *,
    ce_unit: CeUnit = "token",
    ce_level: CeLevel = "sequence",
    byte_lengths: Sequence[np.ndarray] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Combine the target's teacher rows with the sources' aligned lists into fusion examples.

    Args:
        target_rows: the target model's row of each text ``b``, as :func:`~fusellm_fast.teacher.extract_topk`
            writes them (``input_ids``, ``topk_ids``, ``topk_logits``, ``ce``, ``total_ce``,
            ``num_bytes``); a ``datasets.Dataset`` works.
        aligned_sources: per source, its lists aligned onto the target tokens of the same texts
            (the result of ``align_batch``); row ``b`` has length ``len(target_rows[b]["input_ids"])``.
        source_rows: per source, its own teacher row of each text, for its cross-entropy.
        ce_unit: ``"token"`` is the paper's mean CE per token of each model's own tokenization;
            ``"byte"`` divides the text's total CE by its UTF-8 bytes, which compares models with
            different tokenizers fairly.
        ce_level: ``"sequence"``: one CE per text and model, ``teacher_ce [N]``. ``"token"``: one
            per target position, ``teacher_ce [N, L]``: the target's CE of its next token, and
            each source's CE of the next token at the source position paired with the target
            position by the alignment (``source_positions``); positions without a pair, and the
            last one, take the model's CE of the whole text. With ``ce_unit="byte"`` each token's
            CE is divided by the bytes of the token it predicts.
        byte_lengths: for ``ce_level="token"`` with ``ce_unit="byte"``: per model (the target,
            then the sources), the UTF-8 byte length of every token id.

    Returns:
        One fusion example per text; list lengths of the models are padded to the longest with
        empty slots.

    Raises:
        InvalidInputError: the numbers of texts or sources disagree, a row lacks a column, an aligned
            row's length is not the target's, an option is not one of its choices, or
            ``byte_lengths`` is missing where it is needed.

    >>> from types import SimpleNamespace
    >>> row = {"input_ids": [5, 6, 2], "topk_ids": [[6, 7]] * 3, "topk_logits": [[1.0, 0.0]] * 3,
    ...        "ce": 1.5, "total_ce": 3.0, "num_bytes": 6}
    >>> aligned = SimpleNamespace(ids=np.full((1, 3, 1), -1), logits=np.zeros((1, 3, 1)), lengths=np.array([3]))
    >>> example = build_fusion_examples([row], [aligned], [[row]], ce_unit="byte")[0]
    >>> example["teacher_ids"].shape, example["teacher_ce"].tolist()
    ((2, 3, 2), [0.5, 0.5])
    """
    checked_choice(ce_unit, "ce_unit", get_args(CeUnit))
    checked_choice(ce_level, "ce_level", get_args(CeLevel))
    rule = _CeRule(ce_unit, ce_level, byte_lengths)
    if rule.per_byte_tokens and (byte_lengths is None or len(byte_lengths) != 1 + len(aligned_sources)):
        raise InvalidInputError("byte_lengths: give one array per model (the target, then each source) "
                                "for token-level CE per byte")
    _check_text_counts(target_rows, aligned_sources, source_rows)
    return [_fusion_example(b, target_rows[b], aligned_sources, source_rows, rule) for b in range(len(target_rows))]


def _check_text_counts(target_rows: Sequence[Mapping[str, Any]], aligned_sources: Sequence[AlignedLists],
                       source_rows: Sequence[Sequence[Mapping[str, Any]]]) -> None:
    """Every source has its aligned lists and its teacher rows, for every text of the target."""
    if len(aligned_sources) != len(source_rows):
        raise InvalidInputError(
            f"source_rows: must have one entry per source like aligned_sources, "
            f"got {len(aligned_sources)} and {len(source_rows)}"
        )
    for n, rows in enumerate(source_rows):
        if len(rows) != len(target_rows):
            raise InvalidInputError(f"source_rows[{n}]: has {len(rows)} texts, target_rows has {len(target_rows)}")
    for n, aligned in enumerate(aligned_sources):
        if len(aligned.lengths) != len(target_rows):
            raise InvalidInputError(
                f"aligned_sources[{n}]: has {len(aligned.lengths)} texts, target_rows has {len(target_rows)}"
            )


class _CeRule:
    """How a model's CE is read from its teacher row: per text or per position, per token or per byte."""

    def __init__(self, ce_unit: CeUnit, ce_level: CeLevel, byte_lengths: Sequence[np.ndarray] | None) -> None:
        self.unit, self.level, self.byte_lengths = ce_unit, ce_level, byte_lengths
        self.per_byte_tokens = ce_level == "token" and ce_unit == "byte"
        self.required = (*_TEACHER_ROW_KEYS, "token_ce") if ce_level == "token" else _TEACHER_ROW_KEYS

    def text(self, name: str, row: Mapping[str, Any]) -> float:
        """The model's CE on the whole text."""
        missing = [key for key in self.required if key not in row]
        if missing:
            raise InvalidInputError(f"{name}: lacks {missing}")
        return float(row["ce"]) if self.unit == "token" else float(row["total_ce"]) / max(int(row["num_bytes"]), 1)

    def positions(self, model: int, row: Mapping[str, Any], positions: np.ndarray, text_ce: float) -> np.ndarray:
        """The model's CE of its next token at ``positions`` of its own tokenization (-1: none)."""
        own_ce = np.asarray(row["token_ce"], dtype=np.float64)
        if self.per_byte_tokens:
            lengths = np.asarray(self.byte_lengths[model])  # type: ignore[index]
            own_ce = own_ce / np.maximum(lengths[np.asarray(row["input_ids"])[1:]], 1)
        has_ce = (positions >= 0) & (positions < len(own_ce))
        return np.where(has_ce, own_ce[np.where(has_ce, positions, 0)] if len(own_ce) else 0.0, text_ce)


def _fusion_example(b: int, own: Mapping[str, Any], aligned_sources: Sequence[AlignedLists],
                    source_rows: Sequence[Sequence[Mapping[str, Any]]], rule: _CeRule) -> dict[str, np.ndarray]:
    """The fusion example of text ``b``, whose target row is ``own``."""
    own_ce = rule.text(f"target_rows[{b}]", own)
    input_ids = np.asarray(own["input_ids"], dtype=np.int32)
    length = len(input_ids)
    lists = [(np.asarray(own["topk_ids"]), np.asarray(own["topk_logits"]))]
    for n, aligned in enumerate(aligned_sources):
        if int(aligned.lengths[b]) != length:
            raise InvalidInputError(
                f"aligned_sources[{n}]: row {b} has length {int(aligned.lengths[b])}, "
                f"the target tokenization has {length}"
            )
        lists.append((aligned.ids[b, :length], aligned.logits[b, :length]))
    slots = max(ids.shape[-1] for ids, _ in lists)
    text_ce = [own_ce] + [rule.text(f"source_rows[{n}][{b}]", rows[b]) for n, rows in enumerate(source_rows)]
    if rule.level == "token":
        models_ce = [rule.positions(0, own, np.arange(length), own_ce)] + [
            rule.positions(1 + n, rows[b], np.asarray(aligned.source_positions[b, :length]), text_ce[1 + n])
            for n, (aligned, rows) in enumerate(zip(aligned_sources, source_rows))]
    else:
        models_ce = text_ce
    return {
        "input_ids": input_ids,
        "teacher_ids": np.stack([_pad_slots(ids, slots, -1) for ids, _ in lists]).astype(np.int32),
        "teacher_logits": np.stack([_pad_slots(lg, slots, 0.0) for _, lg in lists]).astype(np.float32),
        "teacher_ce": np.array(models_ce, dtype=np.float32),
    }


def pack_examples(
    examples: Sequence[Mapping[str, Any]],
    *,
    block_size: int,
    level: FusionLevel = "sequence",
    drop_remainder: bool = True,
) -> list[dict[str, np.ndarray]]:
    """Concatenate fusion examples and cut them into blocks of ``block_size`` tokens.

    Each position carries its text's CE, or its own for examples with token-level CE. Then:

    - ``level="sequence"``, as in the paper's pipeline: a block's ``teacher_ce [N]`` is the mean
      over its positions (the token-weighted mean of its texts' CEs), so MinCE chooses one model
      per block.
    - ``level="text"``: the block also holds ``segment_ids [block_size]``, the text of each
      position numbered from 0, and ``teacher_ce [N, S]`` is the mean over each segment's positions
      (the text's own CE for sequence-level examples), so that a model is chosen per text; a block
      that holds one text is the ``"sequence"`` block with ``S = 1``.
    - ``level="token"``: ``teacher_ce [N, block_size]`` keeps every position's CE.

    Train the blocks with the same ``level``.

    Args:
        examples: fusion examples with the same number of models ``N``; list lengths ``K`` may
            differ and are padded to the longest with empty slots. Packed blocks of
            ``level="text"`` can be packed again: their segments stay apart.
        block_size: tokens per block.
        level: the CE granularity of the blocks, see above.
        drop_remainder: drop the last, shorter block (the paper's choice) or keep it.

    Returns:
        The blocks, themselves fusion examples.

    Raises:
        InvalidInputError: ``block_size`` is not positive, ``level`` is not one of its choices, an
            example is malformed, or the examples disagree on ``N``.

    >>> ex = {"input_ids": np.arange(3), "teacher_ids": np.zeros((1, 3, 1), np.int32),
    ...       "teacher_logits": np.zeros((1, 3, 1), np.float32), "teacher_ce": np.array([2.0])}
    >>> ex2 = {**ex, "teacher_ce": np.array([5.0])}
    >>> [(b["input_ids"].tolist(), b["teacher_ce"].tolist()) for b in pack_examples([ex, ex2], block_size=4)]
    [([0, 1, 2, 0], [2.75])]
    >>> text = pack_examples([ex, ex2], block_size=4, level="text")[0]
    >>> text["segment_ids"].tolist(), text["teacher_ce"].tolist()
    ([0, 0, 0, 1], [[2.0, 5.0]])
    >>> pack_examples([ex, ex2], block_size=4, level="token")[0]["teacher_ce"].tolist()
    [[2.0, 2.0, 2.0, 5.0]]
    """
    if isinstance(block_size, bool) or not (isinstance(block_size, int) and block_size >= 1):
        raise InvalidInputError(f"block_size: must be a positive int, got {block_size!r}")
    checked_choice(level, "level", get_args(FusionLevel))
    checked = as_examples("examples", examples)
    if not checked:
        return []
    slots = max(example["teacher_ids"].shape[-1] for example in checked)

    input_ids = np.concatenate([example["input_ids"] for example in checked])
    teacher_ids = np.concatenate([_pad_slots(e["teacher_ids"], slots, -1) for e in checked], axis=1)
    teacher_logits = np.concatenate([_pad_slots(e["teacher_logits"], slots, 0.0) for e in checked], axis=1)
    # [N, total tokens]: each position carries its text's CE, or its own for token-level examples.
    position_ce = np.concatenate([_ce_per_position(example) for example in checked], axis=1)
    position_text = _text_of_every_position(checked)
    ends = range(block_size, len(input_ids) + (0 if drop_remainder else block_size - 1) + 1, block_size)
    blocks = []
    for end in ends:
        span = slice(end - block_size, end)
        block = {"input_ids": input_ids[span], "teacher_ids": teacher_ids[:, span],
                 "teacher_logits": teacher_logits[:, span]}
        block_ce = position_ce[:, span]
        if level == "token":
            block["teacher_ce"] = block_ce.astype(np.float32)
        elif level == "sequence":
            block["teacher_ce"] = _segment_means(block_ce, np.zeros(block_ce.shape[1], np.int64), 1)[:, 0]
        else:
            texts, segment_ids = np.unique(position_text[span], return_inverse=True)
            block[SEGMENT_KEY] = segment_ids.astype(np.int32)
            block["teacher_ce"] = _segment_means(block_ce, segment_ids, len(texts))
        blocks.append(block)
    return blocks


def _text_of_every_position(examples: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
    """``int64 [total tokens]``: a number per text, the segments of packed text-level blocks apart."""
    numbers, first = [], 0
    for example in examples:
        if SEGMENT_KEY in example:
            numbers.append(first + example[SEGMENT_KEY].astype(np.int64))
            first += example["teacher_ce"].shape[1]
        else:
            numbers.append(np.full(len(example["input_ids"]), first, dtype=np.int64))
            first += 1
    return np.concatenate(numbers)


def _segment_means(position_ce: np.ndarray, segment_ids: np.ndarray, segments: int) -> np.ndarray:
    """``float32 [N, segments]``: the mean of ``position_ce [N, n]`` over each segment's positions."""
    counts = np.bincount(segment_ids, minlength=segments)
    sums = np.stack([np.bincount(segment_ids, weights=row, minlength=segments) for row in position_ce])
    return (sums / np.maximum(counts, 1)).astype(np.float32)


def as_examples(name: str, features: Sequence[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
    """Checked fusion examples as numpy arrays; they agree on the number of models and the CE level."""
    examples = [_as_example(f"{name}[{i}]", feature) for i, feature in enumerate(features)]
    layouts = {(example["teacher_ce"].shape[0], ce_layout(example)) for example in examples}
    if len({models for models, _ in layouts}) > 1:
        raise InvalidInputError(f"{name}: disagree on the number of models: {sorted({m for m, _ in layouts})}")
    if len(layouts) > 1:
        raise InvalidInputError(
            f"{name}: mix CE layouts {sorted(layout for _, layout in layouts)}: teacher_ce [N] per text, "
            f"[N, L] per position, [N, S] per segment with {SEGMENT_KEY}"
        )
    return examples


def _as_example(name: str, feature: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validate one fusion example and return it as numpy arrays (the input is left untouched)."""
    if not isinstance(feature, Mapping):
        raise InputTypeError(f"{name}: must be a mapping, got {type(feature).__name__}")
    missing = [key for key in EXAMPLE_KEYS if key not in feature]
    if missing:
        raise InvalidInputError(f"{name}: lacks {missing}")
    example = {key: _as_array(name, key, feature[key]) for key in EXAMPLE_KEYS}
    for key in ("input_ids", "teacher_ids"):
        if not np.issubdtype(example[key].dtype, np.integer):
            raise InputTypeError(f"{name}: {key} must hold integers, got dtype {example[key].dtype}")
    for key in ("teacher_logits", "teacher_ce"):
        example[key] = example[key].astype(np.float32, copy=False)

    input_ids, teacher_ids, teacher_ce = example["input_ids"], example["teacher_ids"], example["teacher_ce"]
    if input_ids.ndim != 1 or len(input_ids) == 0:
        raise InvalidInputError(f"{name}: input_ids must be 1-D and non-empty, got shape {list(input_ids.shape)}")
    length = len(input_ids)
    if teacher_ids.ndim != 3 or teacher_ids.shape[1] != length or teacher_ids.shape[0] == 0:
        raise InvalidInputError(
            f"{name}: teacher_ids must have shape [N >= 1, {length}, K] for {length} input_ids, "
            f"got {list(teacher_ids.shape)}"
        )
    if example["teacher_logits"].shape != teacher_ids.shape:
        raise InvalidInputError(
            f"{name}: teacher_logits must have the shape of teacher_ids {list(teacher_ids.shape)}, "
            f"got {list(example['teacher_logits'].shape)}"
        )
    models = teacher_ids.shape[0]
    if SEGMENT_KEY in feature:
        example[SEGMENT_KEY] = _checked_segments(name, _as_array(name, SEGMENT_KEY, feature[SEGMENT_KEY]), example)
    elif teacher_ce.shape not in ((models,), (models, length)):
        raise InvalidInputError(
            f"{name}: teacher_ce must have shape [{models}] or [{models}, {length}], got {list(teacher_ce.shape)}"
        )
    if not np.isfinite(teacher_ce).all():
        raise InvalidInputError(f"{name}: teacher_ce must be finite, found NaN or infinity")
    return example


def _checked_segments(name: str, segment_ids: np.ndarray, example: Mapping[str, np.ndarray]) -> np.ndarray:
    """The ``segment_ids`` of a text-level block: ``[L]`` integers indexing its ``teacher_ce [N, S]``."""
    length, models = len(example["input_ids"]), example["teacher_ids"].shape[0]
    if not np.issubdtype(segment_ids.dtype, np.integer) or segment_ids.shape != (length,):
        raise InvalidInputError(
            f"{name}: {SEGMENT_KEY} must be {length} integers, one per input id, got {segment_ids.dtype} "
            f"{list(segment_ids.shape)}"
        )
    ce_shape = example["teacher_ce"].shape
    if len(ce_shape) != 2 or ce_shape[0] != models or ce_shape[1] == 0:
        raise InvalidInputError(
            f"{name}: with {SEGMENT_KEY}, teacher_ce must have shape [{models}, S], one CE per segment, "
            f"got {list(ce_shape)}"
        )
    if segment_ids.min() < 0 or segment_ids.max() >= ce_shape[1]:
        raise InvalidInputError(f"{name}: {SEGMENT_KEY} must be segments in [0, {ce_shape[1]}) of teacher_ce")
    return segment_ids


def ce_layout(example: Mapping[str, Any]) -> FusionLevel:
    """Where a checked example's ``teacher_ce`` ranks the models: per text, segment or position."""
    if SEGMENT_KEY in example:
        return "text"
    return "token" if np.ndim(example["teacher_ce"]) == 2 else "sequence"


def _as_array(name: str, key: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise InvalidInputError(f"{name}: {key} cannot be read as an array ({error})") from error
    if array.dtype == object:
        raise InvalidInputError(f"{name}: {key} holds non-numbers or ragged lists")
    return array


def _ce_per_position(example: Mapping[str, np.ndarray]) -> np.ndarray:
    """``[N, L]``: the example's CE at every position."""
    ce, length = example["teacher_ce"], len(example["input_ids"])
    if SEGMENT_KEY in example:
        return ce[:, example[SEGMENT_KEY]]
    return ce if ce.ndim == 2 else np.repeat(ce[:, None], length, axis=1)


def _pad_slots(lists: np.ndarray, slots: int, fill: float) -> np.ndarray:
    """Widen the last axis (the list slots) to ``slots`` with ``fill``."""
    missing = slots - lists.shape[-1]
    if missing == 0:
        return lists
    return np.pad(lists, [(0, 0)] * (lists.ndim - 1) + [(0, missing)], constant_values=fill)
