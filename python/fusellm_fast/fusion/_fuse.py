"""Step 4: the models' top-k lists fused into one next-token distribution per position (MinCE, AvgCE)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, get_args

import torch

from fusellm_fast._checks import checked_choice
from fusellm_fast._choices import FusionLevel, FusionMethod, Tail, ValuesAre
from fusellm_fast.errors import InvalidInputError

from ._lists import (
    calibrated_lists,
    check_calibrated_sources,
    fill_missing_with_target,
    list_softmax,
    merge_duplicate_ids,
    stacked_distributions,
)
from ._tensors import as_tensor, check_floating, check_integer, check_positive


@dataclass(frozen=True)
class FusedDistribution:
    """The fused next-token distribution of every position, as a sparse list.

    Attributes:
        ids: ``int64 [B, L, K']`` target-vocabulary ids, ``-1`` in empty slots; distinct within a
            position when the models' lists are.
        probs: ``float32 [B, L, K']`` their probabilities, ``0.0`` in empty slots. With ``rest``
            they sum to 1 at every position that has a distribution, and to 0 where none has one.
        weights: ``float32``, the shape of the ``ce`` given to :func:`fuse` (``[N, B]``,
            ``[N, B, L]`` or ``[N, B, S]``): the weight of each model's distribution, one-hot on the
            chosen model for MinCE.
        rest: ``float32 [B, L]``, the probability outside the listed ids (``tail="bucket"``), or
            ``None``: the list holds all of it (``tail="renormalize"``).
    """

    ids: torch.Tensor
    probs: torch.Tensor
    weights: torch.Tensor
    rest: torch.Tensor | None = None


def fuse(
    dists: Sequence[Any],
    ce: torch.Tensor,
    *,
    method: FusionMethod = "min_ce",
    temperature: float = 1.0,
    level: FusionLevel = "sequence",
    ce_temperature: float | None = None,
    segment_ids: torch.Tensor | None = None,
    tail: Tail = "renormalize",
    values_are: ValuesAre = "logits",
) -> FusedDistribution:
    """Fuse the models' top-k lists into one next-token distribution per position.

    ``tail="renormalize"`` (the paper) makes each model's list ``softmax(values / temperature)`` over
    its listed ids. ``tail="bucket"`` takes log-probabilities under the model's full softmax
    (``values_are="log_probs"``): the listed ids keep their probabilities (a repeated id's add up)
    and ``rest = 1 - sum p`` holds the others', so that an unsure teacher stays unsure; it takes
    ``temperature=1`` only, as a temperature would reshape the unlisted mass, which is unknown.

    A source position without a list (all ids ``-1``) takes the target's own, as the reference code
    does. Then, per text or block (``level="sequence"``, the paper), per position (``"token"``) or
    per text segment of a packed block (``"text"``):

    - ``"min_ce"`` takes the distribution of the model with the lowest cross-entropy (the highest
      reward ``exp(-ce)``), the earlier model on a tie; CEs are compared directly, so that rewards
      that underflow to the same float do not tie.
    - ``"avg_ce"`` sums the distributions (and rests) with weights ``softmax(exp(-ce))`` over the
      models, a softmax over the rewards as in the reference code, or ``softmax(-ce / tau)``. Where
      a model lists nothing (even after the fallback), the others' weights are renormalized. With
      bucket, a model's mass on an id that only others list stays in its rest.

    Args:
        dists: ``N >= 1`` distributions, the target model's first; each a pair ``(ids, logits)``
            (or an object with ``.ids`` and ``.logits``, such as an ``AlignedBatch``) of tensors or
            arrays ``[B, L, K_n]``: integer ids, ``-1`` for an empty slot, distinct within a list,
            and floating values (what ``values_are`` says). ``K_n`` may differ between models.
        ce: floating, finite, each model's cross-entropy: ``[N, B]`` per text (``"sequence"``),
            ``[N, B, L]`` per position (``"token"``), ``[N, B, S]`` per segment (``"text"``).
        method: ``"min_ce"`` (the paper's choice) or ``"avg_ce"``.
        temperature: teacher temperature ``T > 0`` (paper: 1.0).
        level: where the teachers are chosen, see above.
        ce_temperature: ``tau > 0`` for the AvgCE weights ``softmax(-ce / tau)``, or ``None``.
        segment_ids: with ``level="text"`` only: integer ``[B, L]``, the segment in ``[0, S)`` of
            each position, ``-1`` where a position belongs to no text (padding: no distribution).
        tail: ``"renormalize"`` or ``"bucket"``, see above.
        values_are: ``"logits"``, or ``"log_probs"`` under the model's full softmax (calibrated).

    Returns:
        The fused distribution on the device of the first model's ids; ``K' = max K_n`` for
        MinCE, ``K' = sum K_n`` for AvgCE (merged entries first, in id order).

    Raises:
        InputTypeError: a distribution, ``ce`` or ``segment_ids`` is not a tensor or array of the
            right kind of dtype.
        InvalidInputError: shapes disagree, the batch is empty, an id or segment id is out of
            range, ``ce`` is not finite, options do not fit, or bucket's probabilities exceed 1.

    >>> target = (torch.tensor([[[3, 5]]]), torch.tensor([[[0.0, 0.0]]]))   # B=1, L=1, K=2
    >>> source = (torch.tensor([[[5, -1]]]), torch.tensor([[[2.0, 0.0]]]))
    >>> fused = fuse([target, source], torch.tensor([[2.0], [1.0]]))
    >>> fused.ids.tolist(), fused.probs.tolist(), fused.weights.tolist()
    ([[[5, -1]]], [[[1.0, 0.0]]], [[0.0], [1.0]])
    >>> calibrated = (torch.tensor([[[5, -1]]]), torch.log(torch.tensor([[[0.75, 1.0]]])))
    >>> bucket = fuse([calibrated], torch.tensor([[1.0]]), tail="bucket", values_are="log_probs")
    >>> bucket.probs.tolist(), round(bucket.rest.item(), 6)
    ([[[0.75, 0.0]]], 0.25)
    """
    _check_fuse_options(method, level, temperature, ce_temperature, tail, values_are, dists)
    ids, values = stacked_distributions(dists)
    unit_ce, position_unit = _choice_units(as_tensor("ce", ce, device=ids.device), level, segment_ids, ids.shape[:3])
    ids, values = fill_missing_with_target(ids, values.float())
    probs, rest = calibrated_lists(ids, values) if tail == "bucket" else (list_softmax(ids, values, temperature), None)
    if method == "min_ce":
        fused = _min_ce(ids, probs, rest, unit_ce, position_unit)
    else:
        fused = _avg_ce(ids, probs, rest, unit_ce, position_unit, ce_temperature)
    if level == "text":
        fused = _without_distributions(fused, segment_ids.to(ids.device) < 0)  # padding: in no text
    return replace(fused, weights=fused.weights[:, :, 0]) if level == "sequence" else fused


def _check_fuse_options(method: str, level: str, temperature: float, ce_temperature: float | None, tail: str,
                        values_are: str, dists: Sequence[Any]) -> None:
    checked_choice(method, "method", get_args(FusionMethod))
    checked_choice(level, "level", get_args(FusionLevel))
    check_positive("temperature", temperature)
    if ce_temperature is not None:
        check_positive("ce_temperature", ce_temperature)
        if method != "avg_ce":
            raise InvalidInputError("ce_temperature: applies to method='avg_ce' only")
    check_tail_options(tail, values_are, temperature)
    if tail == "bucket":
        check_calibrated_sources(dists)


def check_tail_options(tail: str, values_are: str, temperature: float) -> None:
    """The tail options, and what ``tail="bucket"`` needs of the others (the trainer's arguments too)."""
    checked_choice(tail, "tail", get_args(Tail))
    checked_choice(values_are, "values_are", get_args(ValuesAre))
    if tail == "bucket" and values_are != "log_probs":
        raise InvalidInputError(
            "tail: 'bucket' needs calibrated top-k lists, log-probabilities under each model's full softmax "
            "(values_are='log_probs'); raw logits work with tail='renormalize' only"
        )
    if tail == "bucket" and temperature != 1.0:
        raise InvalidInputError(
            f"temperature: tail='bucket' takes 1.0 only (a temperature would reshape the unlisted mass, "
            f"which is unknown), got {temperature!r}"
        )


def _choice_units(ce: torch.Tensor, level: str, segment_ids: Any,
                  shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """The checked CE as ``float32 [N, B, U]``, one per unit of choice, and the unit ``[B, L]`` of
    every position: one unit per text (``"sequence"``), position (``"token"``) or segment (``"text"``)."""
    models, batch, length = shape
    if level != "text" and segment_ids is not None:
        raise InvalidInputError("segment_ids: apply to level='text' only")
    if level == "sequence":
        check_floating("ce", ce, shape=(models, batch))
    elif level == "token":
        check_floating("ce", ce, shape=(models, batch, length))
    else:
        check_floating("ce", ce, ndim=3)
        if ce.shape[:2] != (models, batch) or ce.shape[2] == 0:
            raise InvalidInputError(f"ce: must have shape [{models}, {batch}, S >= 1], got {list(ce.shape)}")
    if not torch.isfinite(ce).all():
        raise InvalidInputError("ce: must be finite, found NaN or infinity")
    if level == "sequence":
        return ce.float()[:, :, None], torch.zeros(batch, length, dtype=torch.long, device=ce.device)
    if level == "token":
        return ce.float(), torch.arange(length, device=ce.device).expand(batch, length)
    if segment_ids is None:
        raise InvalidInputError("segment_ids: level='text' needs the segment of every position, [B, L]")
    segment_ids = as_tensor("segment_ids", segment_ids, device=ce.device)
    check_integer("segment_ids", segment_ids, shape=(batch, length))
    segments = ce.shape[2]
    if int(segment_ids.min()) < -1 or int(segment_ids.max()) >= segments:
        raise InvalidInputError(f"segment_ids: must be segments in [0, {segments}) of ce, or -1 (no text)")
    return ce.float(), segment_ids.long().clamp(min=0)


def _min_ce(ids: torch.Tensor, probs: torch.Tensor, rest: torch.Tensor | None, unit_ce: torch.Tensor,
            position_unit: torch.Tensor) -> FusedDistribution:
    """MinCE: at each position the list of the model with the lowest CE in its unit; weights per unit."""
    chosen_per_unit = _first_argmin(unit_ce)  # [B, U]
    chosen = chosen_per_unit.gather(1, position_unit)  # [B, L]
    index = chosen[None, :, :, None].expand(1, -1, -1, ids.shape[-1])
    fused_ids = ids.gather(0, index)[0]
    fused_probs = probs.gather(0, index)[0]
    fused_rest = None if rest is None else rest.gather(0, chosen[None])[0]
    weights = torch.nn.functional.one_hot(chosen_per_unit, ids.shape[0]).movedim(-1, 0).float()
    return FusedDistribution(ids=fused_ids, probs=fused_probs, weights=weights, rest=fused_rest)


def _avg_ce(ids: torch.Tensor, probs: torch.Tensor, rest: torch.Tensor | None, unit_ce: torch.Tensor,
            position_unit: torch.Tensor, ce_temperature: float | None) -> FusedDistribution:
    """AvgCE: at each position the weighted sum of every model's list; weights per unit."""
    scores = torch.exp(-unit_ce) if ce_temperature is None else -unit_ce / ce_temperature
    weights = torch.softmax(scores, dim=0)
    per_position = weights.gather(2, position_unit[None].expand(ids.shape[0], -1, -1))  # [N, B, L]
    weighted = probs * per_position[..., None]
    # [N, B, L, K] -> [B, L, N * K]: one list per position holding every model's entries.
    fused_ids, fused_probs = merge_duplicate_ids(
        ids.permute(1, 2, 0, 3).flatten(2), weighted.permute(1, 2, 0, 3).flatten(2)
    )
    total = fused_probs.sum(-1)
    fused_rest = None
    if rest is not None:
        fused_rest = (rest * per_position).sum(0)
        total = total + fused_rest
    # Only where some model lists nothing even after the fallback is this not a division by 1.
    total = total.clamp(min=torch.finfo(torch.float32).tiny)
    fused_probs = fused_probs / total[..., None]
    fused_rest = None if fused_rest is None else fused_rest / total
    return FusedDistribution(ids=fused_ids, probs=fused_probs, weights=weights, rest=fused_rest)


def _without_distributions(fused: FusedDistribution, positions: torch.Tensor) -> FusedDistribution:
    """``fused`` with no distribution at the ``positions`` (bool ``[B, L]``)."""
    rest = None if fused.rest is None else fused.rest.masked_fill(positions, 0.0)
    return replace(fused, ids=fused.ids.masked_fill(positions[..., None], -1),
                   probs=fused.probs.masked_fill(positions[..., None], 0.0), rest=rest)


def _first_argmin(values: torch.Tensor) -> torch.Tensor:
    """Index of the minimum along the first axis, the earliest on a tie (``torch.argmin`` promises none)."""
    positions = torch.arange(values.shape[0], device=values.device).view(-1, *([1] * (values.dim() - 1)))
    is_min = values == values.amin(0, keepdim=True)
    return torch.where(is_min, positions, values.shape[0]).amin(0)
