"""Checks and conversions of the tensor arguments of the fusion and the loss."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fusellm_fast.errors import InputTypeError, InvalidInputError


def as_tensor(name: str, value: object, *, device: torch.device | None) -> torch.Tensor:
    """A tensor or numpy array as a tensor on ``device`` (``None``: where it is)."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        array = np.ascontiguousarray(value)
        # Read-only arrays (memory-mapped datasets) are copied: torch tensors are always writable.
        value = torch.from_numpy(array if array.flags.writeable else array.copy())
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(f"{name}: must be a torch.Tensor or numpy array, got {type(value).__name__}")
    return value if device is None else value.to(device)


def check_tensor(name: str, value: object, *, ndim: int | None = None, shape: tuple[int, ...] | None = None) -> None:
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(f"{name}: must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        raise InvalidInputError(f"{name}: must have {ndim} dimensions, got shape {list(value.shape)}")
    if shape is not None and tuple(value.shape) != shape:
        raise InvalidInputError(f"{name}: must have shape {list(shape)}, got {list(value.shape)}")


def check_integer(name: str, value: object, **shape_rules: Any) -> None:
    check_tensor(name, value, **shape_rules)
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise InputTypeError(f"{name}: must have an integer dtype, got {value.dtype}")


def check_floating(name: str, value: object, **shape_rules: Any) -> None:
    check_tensor(name, value, **shape_rules)
    if not value.dtype.is_floating_point:
        raise InputTypeError(f"{name}: must have a floating dtype, got {value.dtype}")


def check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0.0 < value < float("inf")):
        raise InvalidInputError(f"{name}: must be a positive finite number, got {value!r}")
