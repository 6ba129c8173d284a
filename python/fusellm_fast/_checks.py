"""Argument checks and conversions shared by the public API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import zip_longest
from typing import Any

import numpy as np

from .errors import InputTypeError, InvalidInputError


def check_token_strings(tokens: Any, arg: str) -> list[str]:
    """The tokens as a new list of str, or an error naming ``arg``."""
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence) and not hasattr(tokens, "__iter__"):
        raise InputTypeError(f"{arg}: must be a sequence of token strings, got {type(tokens).__name__}")
    result = list(tokens)
    for i, token in enumerate(result):
        if not isinstance(token, str):
            raise InputTypeError(f"{arg}: token {i} is {type(token).__name__}, not str")
    return result


def checked_marker(marker: Any, arg: str) -> str | None:
    """A space marker as given: a str, or ``None`` to detect it."""
    if marker is not None and not isinstance(marker, str):
        raise InputTypeError(f"{arg}: must be a str or None, got {type(marker).__name__}")
    return marker


def checked_ids(ids: Any, arg: str) -> list[int]:
    """Token ids as a new list of non-negative ints, or an error naming ``arg``; ``None`` is no ids."""
    if ids is None:
        return []
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise InputTypeError(f"{arg}: must be a sequence of token ids, got {type(ids).__name__}")
    result = []
    for i, value in enumerate(ids):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputTypeError(f"{arg}: item {i} is {type(value).__name__}, not an int")
        if value < 0:
            raise InvalidInputError(f"{arg}: item {i} is the negative id {value}")
        result.append(int(value))
    return result


def checked_pairs(mapping: Any, arg: str) -> list[tuple[int, int]]:
    """A source id -> target id mapping as a list of pairs, or an error naming ``arg``."""
    if mapping is None:
        return []
    if not isinstance(mapping, Mapping):
        raise InputTypeError(f"{arg}: must be a mapping from source id to target id, got {type(mapping).__name__}")
    sources = checked_ids(list(mapping.keys()), arg)
    targets = checked_ids(list(mapping.values()), arg)
    return list(zip(sources, targets))


def checked_choice(value: Any, arg: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; for the options of the Python layer (the Rust core
    checks its own)."""
    if value not in choices:
        raise InvalidInputError(f"{arg}: must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _as_array(value: Any, arg: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:
        raise InvalidInputError(f"{arg}: cannot be read as an array ({e})") from e


def _check_integer(array: np.ndarray, arg: str) -> None:
    if array.dtype.kind not in "iu" and not (array.dtype.kind == "f" and array.size == 0):
        raise InputTypeError(f"{arg}: must hold integers, got dtype {array.dtype}")


def _check_lengths(lengths: Any, batch: int, width: int, arg: str) -> np.ndarray:
    lengths = _as_array(lengths, arg)
    _check_integer(lengths, arg)
    if lengths.shape != (batch,):
        raise InvalidInputError(f"{arg}: must have shape ({batch},), got {lengths.shape}")
    if lengths.size and (lengths.min() < 0 or lengths.max() > width):
        raise InvalidInputError(f"{arg}: lengths must lie in [0, {width}]")
    return lengths.astype(np.int64)


def _is_padded(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.ndim >= 2


def sequences(value: Any, lengths: Any, arg: str, lengths_arg: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch of id sequences as ``(flat int64 values, starts, lengths)``.

    Accepts a sequence of 1-D integer arrays or lists (ragged), or a padded 2-D
    integer array with optional per-row lengths.
    """
    if _is_padded(value):
        if value.ndim != 2:
            raise InvalidInputError(f"{arg}: a padded batch must be 2-D, got {value.ndim}-D")
        _check_integer(value, arg)
        batch, width = value.shape
        lengths = np.full(batch, width, np.int64) if lengths is None else _check_lengths(
            lengths, batch, width, lengths_arg)
        flat = np.ascontiguousarray(value, dtype=np.int64).reshape(-1)
        return flat, np.arange(batch, dtype=np.int64) * width, lengths
    if lengths is not None:
        raise InvalidInputError(f"{lengths_arg}: only valid with a padded 2-D array for {arg}")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise InputTypeError(f"{arg}: must be a sequence of 1-D id arrays or a 2-D array, got {type(value).__name__}")
    rows = [row if type(row) is np.ndarray else _as_array(row, f"{arg}[{b}]") for b, row in enumerate(value)]
    for b, row in enumerate(rows):
        if row.ndim != 1:
            raise InvalidInputError(f"{arg}[{b}]: must be 1-D, got shape {row.shape}")
        _check_integer(row, f"{arg}[{b}]")
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    flat = np.concatenate(rows).astype(np.int64, copy=False) if rows else np.zeros(0, np.int64)
    return np.ascontiguousarray(flat), _starts(lengths), lengths


def _starts(lengths: np.ndarray) -> np.ndarray:
    # The method, not np.cumsum: no dispatch cost on every call.
    return lengths.cumsum() - lengths


def topk_rows(
    ids: Any, logits: Any, source_lengths: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Top-k ids and logits as ``(per-text ids [n_b, K], per-text float32 logits [n_b, K], K)``.

    Accepts per-text ``[n_b, K]`` arrays (ragged) or padded ``[B, N, K]`` arrays
    (then every text gets its ``[N, K]`` row). Nothing is concatenated: arrays
    that are C-contiguous, with int32 or int64 ids (the same for every text) and
    float32 logits, pass as they are.
    """
    batch = len(source_lengths)
    if _is_padded(ids) != _is_padded(logits) and not (_is_padded(ids) and batch == 0):
        raise InvalidInputError("source_topk_logits: must be given in the same layout as source_topk_ids "
                                "(both padded 3-D arrays or both sequences of 2-D arrays)")
    if _is_padded(ids):
        logits = _as_array(logits, "source_topk_logits")
        for arg, array in (("source_topk_ids", ids), ("source_topk_logits", logits)):
            if array.ndim != 3:
                raise InvalidInputError(f"{arg}: a padded batch must be 3-D [batch, positions, k], "
                                        f"got shape {array.shape}")
        if ids.shape != logits.shape:
            raise InvalidInputError(f"source_topk_logits: shape {logits.shape} differs from source_topk_ids "
                                    f"shape {ids.shape}")
        too_short = np.nonzero(source_lengths > ids.shape[1])[0]
        if too_short.size:
            b = int(too_short[0])
            raise InvalidInputError(f"source_topk_ids: text {b} has {ids.shape[1]} rows but "
                                    f"source_ids[{b}] has {int(source_lengths[b])} tokens")
        return list(_topk_ids(ids)), list(_float32(logits)), ids.shape[2]
    id_rows, logit_rows = _rows(ids, "source_topk_ids"), _rows(logits, "source_topk_logits")
    ks = {r.shape[1] for r in id_rows + logit_rows if r.ndim == 2}
    if len(ks) > 1:
        raise InvalidInputError(f"source_topk_ids: every text must have the same k, got {sorted(ks)}")
    k = ks.pop() if ks else 0
    # Every row is brought to [positions, k], also past the last text; the core checks the text counts.
    for b, (i_row, l_row, length) in enumerate(zip_longest(id_rows, logit_rows, source_lengths.tolist())):
        for arg, row in (("source_topk_ids", i_row), ("source_topk_logits", l_row)):
            if row is None:
                continue
            if row.size == 0 and row.ndim == 1:
                row.shape = (0, k)
            if row.ndim != 2:
                raise InvalidInputError(f"{arg}[{b}]: must be 2-D [positions, k], got shape {row.shape}")
            if length is not None and row.shape[0] != length:
                raise InvalidInputError(f"{arg}[{b}]: has {row.shape[0]} rows but source_ids[{b}] has "
                                        f"{length} tokens")
    # Empty rows given as plain lists read as float64: they do not decide the dtype.
    filled = [r for r in id_rows if r.size]
    for row in filled:
        _check_integer(row, "source_topk_ids")
    dtype = _id_dtype(np.result_type(*filled) if filled else np.dtype(np.int64))
    return [np.ascontiguousarray(r, dtype=dtype) for r in id_rows], [_float32(r) for r in logit_rows], k


def _rows(value: Any, arg: str) -> list[np.ndarray]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise InputTypeError(f"{arg}: must be a sequence of 2-D arrays or a 3-D array, got {type(value).__name__}")
    # Fresh array objects: the empty-row reshape above must not touch the caller's arrays.
    return [row.view() if type(row) is np.ndarray else _as_array(row, f"{arg}[{b}]").view()
            for b, row in enumerate(value)]


def _id_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype top-k ids travel in: int32 and int64 as they are, others widened to int64."""
    return dtype if dtype in (np.dtype(np.int32), np.dtype(np.int64)) else np.dtype(np.int64)


def _topk_ids(ids: np.ndarray) -> np.ndarray:
    _check_integer(ids, "source_topk_ids")
    return np.ascontiguousarray(ids, dtype=_id_dtype(ids.dtype))


def _float32(logits: np.ndarray) -> np.ndarray:
    if logits.dtype.kind != "f" and not (logits.dtype.kind in "iu" and logits.size == 0):
        raise InputTypeError(f"source_topk_logits: must hold floating-point values, got dtype {logits.dtype}")
    return np.ascontiguousarray(logits, dtype=np.float32)
