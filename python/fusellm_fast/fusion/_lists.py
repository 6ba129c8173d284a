"""The models' top-k lists: stacked, completed with the target's own, and turned into probabilities."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fusellm_fast.errors import InputTypeError, InvalidInputError

from ._tensors import as_tensor, check_floating, check_integer

# How far the listed probabilities of a calibrated list may add up beyond 1: 16-bit log-probabilities
# round each probability by up to p * |log p| * 2^-8 (bfloat16), at most 0.02 over 150 entries.
_LISTED_MASS_SLACK = 0.02


def stacked_distributions(dists: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked distributions as ``ids int64 [N, B, L, K]`` and ``values [N, B, L, K]``, K = max K_n."""
    if isinstance(dists, (str, bytes, torch.Tensor, np.ndarray)) or not isinstance(dists, Sequence):
        raise InputTypeError(f"dists: must be a sequence of (ids, logits) pairs, got {type(dists).__name__}")
    if len(dists) == 0:
        raise InvalidInputError("dists: must hold at least the target model's own distribution")
    pairs = []
    device = None
    for n, dist in enumerate(dists):
        if hasattr(dist, "ids") and hasattr(dist, "logits"):
            ids, logits = dist.ids, dist.logits
        elif isinstance(dist, Sequence) and len(dist) == 2:
            ids, logits = dist
        else:
            raise InputTypeError(f"dists[{n}]: must be an (ids, logits) pair, got {type(dist).__name__}")
        ids = as_tensor(f"dists[{n}] ids", ids, device=device)
        device = ids.device
        logits = as_tensor(f"dists[{n}] logits", logits, device=device)
        check_integer(f"dists[{n}] ids", ids, ndim=3)
        check_floating(f"dists[{n}] logits", logits, shape=tuple(ids.shape))
        if pairs and ids.shape[:2] != pairs[0][0].shape[:2]:
            raise InvalidInputError(
                f"dists[{n}]: has [B, L] = {list(ids.shape[:2])}, the target's is {list(pairs[0][0].shape[:2])}"
            )
        if ids.numel() and int(ids.min()) < -1:
            raise InvalidInputError(f"dists[{n}] ids: must be token ids or -1 (empty), found {int(ids.min())}")
        pairs.append((ids, logits))
    batch, length = pairs[0][0].shape[:2]
    if batch == 0 or length == 0:
        raise InvalidInputError(f"dists: the batch is empty, [B, L] = [{batch}, {length}]")
    slots = max(1, max(ids.shape[-1] for ids, _ in pairs))
    ids = torch.stack([torch.nn.functional.pad(i.long(), (0, slots - i.shape[-1]), value=-1) for i, _ in pairs])
    logits = torch.stack([torch.nn.functional.pad(lg.float(), (0, slots - lg.shape[-1])) for _, lg in pairs])
    return ids, logits


def check_calibrated_sources(dists: Sequence[Any]) -> None:
    """Distributions that say what their values are (an ``AlignedBatch``) must hold log-probabilities."""
    for n, dist in enumerate(dists):
        if getattr(dist, "values_are", "log_probs") != "log_probs":
            raise InvalidInputError(
                f"dists[{n}]: holds {dist.values_are}, not log-probabilities; tail='bucket' needs calibrated "
                "top-k lists (log-probabilities under the model's full softmax), use tail='renormalize'"
            )


def fill_missing_with_target(ids: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a source position lists nothing, use the target's own list (model 0) there."""
    missing = ~(ids[1:] >= 0).any(-1, keepdim=True)  # [N-1, B, L, 1]
    source_ids = torch.where(missing, ids[:1], ids[1:])
    source_values = torch.where(missing, values[:1], values[1:])
    return torch.cat([ids[:1], source_ids]), torch.cat([values[:1], source_values])


def list_softmax(ids: torch.Tensor, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax over the listed slots only; empty slots and empty lists get probability 0."""
    listed = ids >= 0
    scaled = (logits / temperature).masked_fill(~listed, float("-inf"))
    peak = scaled.amax(-1, keepdim=True).nan_to_num(neginf=0.0)
    unnormalized = torch.exp(scaled - peak)
    return unnormalized / unnormalized.sum(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)


def calibrated_lists(ids: torch.Tensor, log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The listed probabilities ``[N, B, L, K]`` and the rest ``1 - sum p`` ``[N, B, L]`` of
    log-probability lists (a repeated id's probabilities add up); 0 where nothing is listed.

    A list whose probabilities add up to a little more than 1 (16-bit rounding) is scaled to 1 and
    has no rest; one that adds up to more than ``1 + _LISTED_MASS_SLACK`` holds no log-probabilities.
    """
    listed = ids >= 0
    masked = log_probs.masked_fill(~listed, float("-inf"))
    log_mass = torch.logsumexp(masked, dim=-1)  # -inf where nothing is listed
    invalid = ~(log_mass <= math.log1p(_LISTED_MASS_SLACK))
    if bool(invalid.any()):
        n, b, t = (int(i) for i in invalid.nonzero()[0])
        raise InvalidInputError(
            f"dists[{n}] logits: with values_are='log_probs' these must be log-probabilities under the model's "
            f"full softmax, but the listed probabilities at [b={b}, t={t}] add up to "
            f"{math.exp(float(log_mass[n, b, t])):.4g}; raw logits work with tail='renormalize' only"
        )
    probs = torch.exp(masked - log_mass.clamp(min=0.0)[..., None])
    # -expm1 keeps a rest near 0 exact where 1 - sum(p) would cancel.
    rest = (-torch.expm1(log_mass)).clamp(min=0.0).where(listed.any(-1), 0.0)
    return probs, rest


def merge_duplicate_ids(ids: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum the probabilities of equal ids within each list; merged entries come first, in id order."""
    width = ids.shape[-1]
    sorted_ids, order = ids.sort(dim=-1)
    sorted_probs = probs.gather(-1, order)
    listed = sorted_ids >= 0
    previous = torch.nn.functional.pad(sorted_ids[..., :-1], (1, 0), value=-1)
    starts_group = listed & (sorted_ids != previous)
    group = starts_group.long().cumsum(-1) - 1
    # Empty slots go to a spare column that is cut off afterwards.
    slot = torch.where(listed, group, width)
    merged_probs = torch.zeros(*ids.shape[:-1], width + 1, dtype=probs.dtype, device=probs.device)
    merged_probs.scatter_add_(-1, slot, sorted_probs)
    merged_ids = torch.full_like(merged_probs, -1, dtype=ids.dtype)
    merged_ids.scatter_(-1, slot, torch.where(listed, sorted_ids, -1))
    return merged_ids[..., :width], merged_probs[..., :width]
