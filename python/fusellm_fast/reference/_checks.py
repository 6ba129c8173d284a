"""The reference's input checks: each bad argument becomes an exception that names it."""

from __future__ import annotations

import numbers
import operator
from collections.abc import Sequence

VOCAB_ALIGN_CHOICES = ("soft", "hard")
ONEHOT_CHOICES = ("next", "current")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        expected = " or ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_marker(name: str, marker: object) -> None:
    if not isinstance(marker, str):
        raise TypeError(f"{name} must be a str, got {type(marker).__name__}")
    # Replacing the empty string would insert the other marker between every two characters.
    if not marker:
        raise ValueError(f"{name} must not be empty")


def checked_text(
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    target_ids: Sequence[int],
    source_ids: Sequence[int],
    topk_ids: Sequence[Sequence[int]],
    topk_logits: Sequence[Sequence[float]],
    vocab_map: Sequence[int] | None,
    *,
    vocab_align: object,
    onehot: object,
    source_marker: object,
    target_marker: object,
) -> tuple[list[int], list[int], list[list[tuple[int, float]]], list[int] | None]:
    """Checks the arguments of ``align_text``, options first.

    Returns:
        ``(target_ids, source_ids, candidates_by_position, vocab_map)`` in Python numbers: the
        candidates are, per source position, its non-empty ``(candidate id, logit)`` slots in order;
        ``vocab_map`` stays ``None`` when not given.
    """
    check_choice("vocab_align", vocab_align, VOCAB_ALIGN_CHOICES)
    check_choice("onehot", onehot, ONEHOT_CHOICES)
    check_marker("source_marker", source_marker)
    check_marker("target_marker", target_marker)
    target_ids = checked_ids("target_ids", target_ids, len(target_tokens))
    source_ids = checked_ids("source_ids", source_ids, len(source_tokens))
    candidates_by_position = checked_topk(topk_ids, topk_logits, len(source_ids), len(source_tokens))
    if vocab_map is not None:
        vocab_map = checked_vocab_map(vocab_map, len(source_tokens), len(target_tokens))
    return target_ids, source_ids, candidates_by_position, vocab_map


def checked_ids(name: str, ids: Sequence[int], vocab_size: int) -> list[int]:
    checked = []
    for position, value in enumerate(ids):
        token_id = _as_int(f"{name}[{position}]", value)
        if not 0 <= token_id < vocab_size:
            raise ValueError(
                f"{name}[{position}] = {token_id} is outside the vocabulary of {vocab_size} tokens"
            )
        checked.append(token_id)
    return checked


def checked_topk(
    topk_ids: Sequence[Sequence[int]],
    topk_logits: Sequence[Sequence[float]],
    source_length: int,
    source_vocab_size: int,
) -> list[list[tuple[int, float]]]:
    """Returns, per source position, its non-empty (candidate id, logit) slots in order."""
    if len(topk_ids) != source_length:
        raise ValueError(
            f"topk_ids has {len(topk_ids)} rows but source_ids has {source_length} ids"
        )
    if len(topk_logits) != source_length:
        raise ValueError(
            f"topk_logits has {len(topk_logits)} rows but source_ids has {source_length} ids"
        )
    rows = []
    for position, (id_row, logit_row) in enumerate(zip(topk_ids, topk_logits)):
        if len(id_row) != len(logit_row):
            raise ValueError(
                f"topk_logits[{position}] has {len(logit_row)} entries "
                f"but topk_ids[{position}] has {len(id_row)}"
            )
        row = []
        for slot, (raw_id, raw_logit) in enumerate(zip(id_row, logit_row)):
            candidate = _as_int(f"topk_ids[{position}][{slot}]", raw_id)
            if candidate >= source_vocab_size:
                raise ValueError(
                    f"topk_ids[{position}][{slot}] = {candidate} is outside the source vocabulary "
                    f"of {source_vocab_size} tokens"
                )
            if not isinstance(raw_logit, numbers.Real):
                raise TypeError(
                    f"topk_logits[{position}][{slot}] must be a real number, got {raw_logit!r}"
                )
            if candidate >= 0:
                row.append((candidate, float(raw_logit)))
        rows.append(row)
    return rows


def checked_vocab_map(
    vocab_map: Sequence[int], source_vocab_size: int, target_vocab_size: int
) -> list[int]:
    if len(vocab_map) != source_vocab_size:
        raise ValueError(
            f"vocab_map has {len(vocab_map)} entries but source_tokens has {source_vocab_size}"
        )
    return checked_ids("vocab_map", vocab_map, target_vocab_size)


def _as_int(name: str, value: object) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
