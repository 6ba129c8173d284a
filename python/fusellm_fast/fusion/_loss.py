"""Step 5: the FuseLLM training objective against the fused sparse distribution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch

from fusellm_fast._checks import checked_choice
from fusellm_fast._choices import LossKind
from fusellm_fast.errors import InputTypeError, InvalidInputError

from ._fuse import FusedDistribution
from ._sparse_ce import sparse_cross_entropy
from ._tensors import check_floating, check_integer, check_tensor


@dataclass(frozen=True)
class FusionLoss:
    """``total = lm_weight * clm + (1 - lm_weight) * fusion``.

    Attributes:
        total: the differentiable scalar to call ``backward`` on.
        clm: the shifted next-token cross-entropy against the gold tokens (detached).
        fusion: the cross-entropy (or KL divergence) from the fused distribution to the student's
            softmax, averaged over the positions that have one (detached).
    """

    total: torch.Tensor
    clm: torch.Tensor
    fusion: torch.Tensor


def fusion_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    fused: FusedDistribution,
    *,
    lm_weight: float = 0.9,
    kind: LossKind = "ce",
    mask: torch.Tensor | None = None,
) -> FusionLoss:
    """The FuseLLM objective ``lm_weight * L_clm + (1 - lm_weight) * L_fusion``.

    ``L_clm`` is the shifted next-token cross-entropy, logits at ``t`` against ``labels[t + 1]``,
    averaged over labels that are not ``-100``. ``L_fusion`` compares the fused distribution ``q``
    at ``t`` (a next-token distribution already) with the student's softmax ``s`` at ``t``,
    unshifted: ``-sum_v q_v log s_v = logsumexp(z) - sum_j q_j z_{id_j}`` for ``kind="ce"``, plus
    ``sum_j q_j log q_j`` for ``kind="kl"``, averaged over the positions in ``mask`` that have a
    fused distribution.

    A fused distribution with a ``rest`` (``tail="bucket"``) has one more class: ``-r log(sum_{v not
    listed} s_v)`` (and ``r log r`` for KL). That student mass comes from the pass over the
    vocabulary that computes the log-partition, with the listed ids masked out, so it stays exact
    when it is tiny. Where a list covers the whole vocabulary the rest has no class and is left out.

    The log-partition is computed over the vocabulary in chunks of positions and serves all terms;
    a hand-written backward writes the gradient chunk by chunk, so the extra memory is
    ``O(B * L * K')`` plus one chunk. An average over no position is 0.

    Args:
        student_logits: floating ``[B, L, V]`` (bfloat16 is computed in float32 chunk by chunk).
        labels: integer ``[B, L]`` gold tokens, ``-100`` where ignored.
        fused: the output of :func:`fuse`, ``[B, L, K']``, ids below ``V``.
        lm_weight: ``lambda`` in ``[0, 1]`` (paper: 0.9).
        kind: ``"ce"`` (paper) or ``"kl"``; they differ by a constant, not in their gradient.
        mask: ``[B, L]``, true (non-zero) at positions that count in the fusion term; by default
            those whose label is not ``-100``.

    Returns:
        The total and both terms.

    Raises:
        InputTypeError: an argument is not a tensor of the right kind of dtype.
        InvalidInputError: shapes disagree, the batch is empty, a fused id or a label is outside the
            student's vocabulary, or an option is out of range.

    >>> fused = FusedDistribution(ids=torch.tensor([[[1, -1], [0, 1]]]),
    ...                           probs=torch.tensor([[[1.0, 0.0], [0.5, 0.5]]]),
    ...                           weights=torch.ones(1, 1))
    >>> loss = fusion_loss(torch.zeros(1, 2, 2), torch.tensor([[0, 1]]), fused, lm_weight=0.5)
    >>> round(loss.clm.item(), 4), round(loss.fusion.item(), 4), round(loss.total.item(), 4)
    (0.6931, 0.6931, 0.6931)
    >>> half = torch.tensor([[0.5]])
    >>> bucket = FusedDistribution(torch.tensor([[[1]]]), half[..., None], torch.ones(1, 1), rest=half)
    >>> round(fusion_loss(torch.zeros(1, 1, 4), torch.tensor([[0]]), bucket).fusion.item(), 4)  # -log(1/4 * 3/4) / 2
    0.837
    """
    mask = _checked_loss_inputs(student_logits, labels, fused, mask, lm_weight, kind)

    # Both terms are sparse cross-entropies against the same softmax: the CLM term puts weight on the
    # next gold token, the fusion term on the fused list (and the rest). One pass serves both.
    next_gold = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    gold_mask = next_gold != -100
    listed = fused.ids >= 0
    probs = fused.probs.float().where(listed, 0.0)
    fusion_mask = mask.bool() & listed.any(-1)
    clm_scale = lm_weight / gold_mask.sum().clamp(min=1)
    fusion_scale = (1.0 - lm_weight) / fusion_mask.sum().clamp(min=1)
    entry_ids = torch.cat([next_gold.clamp(min=0).unsqueeze(-1), fused.ids.clamp(min=0)], dim=-1)
    entry_weights = torch.cat([(clm_scale * gold_mask).unsqueeze(-1), fusion_scale * probs * fusion_mask.unsqueeze(-1)],
                              dim=-1)
    total, log_partition, entry_logits, log_outside = sparse_cross_entropy(
        student_logits, entry_ids, entry_weights, *_rest_class(fused, fusion_scale * fusion_mask))

    clm = _masked_mean(log_partition - entry_logits[..., 0], gold_mask)
    position_loss, negative_entropy = _position_losses(probs, fused.rest, log_partition, entry_logits[..., 1:],
                                                       log_outside)
    if kind == "kl":
        position_loss = position_loss + negative_entropy
        # A constant with respect to the student: it shifts the total but not its gradient.
        total = total + fusion_scale * (negative_entropy * fusion_mask).sum()
    return FusionLoss(total=total, clm=clm, fusion=_masked_mean(position_loss, fusion_mask))


def _rest_class(fused: FusedDistribution, scale: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The ids that the rest class leaves out ``[B, L, K']`` and its weights ``[B, L]`` (``None``
    without a rest). Empty slots repeat a listed id of their position, so that leaving the slots
    out leaves exactly the unlisted ids."""
    if fused.rest is None:
        return None, None
    rest_ids = torch.where(fused.ids >= 0, fused.ids, fused.ids.amax(-1, keepdim=True)).clamp(min=0)
    return rest_ids, scale * fused.rest.float()


def _position_losses(probs: torch.Tensor, rest: torch.Tensor | None, log_partition: torch.Tensor,
                     listed_logits: torch.Tensor,
                     log_outside: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The fusion term's cross-entropy at every position, and the fused distribution's negative entropy."""
    if rest is None:
        # With q summing to 1: -sum_j q_j log_softmax(z)_j = logZ - sum_j q_j z_j.
        return log_partition - (probs * listed_logits).sum(-1), torch.xlogy(probs, probs).sum(-1)
    # -sum_j q_j log s_j - r log(mass outside), each log-probability taken as a difference first:
    # the sum of the weights times logZ would cancel against the listed logits.
    has_outside = torch.isfinite(log_outside)
    rest = rest.float().where(has_outside, 0.0)
    listed_term = (probs * (log_partition.unsqueeze(-1) - listed_logits)).sum(-1)
    position_loss = listed_term + rest * (log_partition - log_outside).where(has_outside, 0.0)
    return position_loss, torch.xlogy(probs, probs).sum(-1) + torch.xlogy(rest, rest)


def _checked_loss_inputs(student_logits: torch.Tensor, labels: torch.Tensor, fused: FusedDistribution,
                         mask: torch.Tensor | None, lm_weight: float, kind: str) -> torch.Tensor:
    """Checks the arguments of :func:`fusion_loss`; the mask of the fusion term."""
    checked_choice(kind, "kind", get_args(LossKind))
    if isinstance(lm_weight, bool) or not (isinstance(lm_weight, (int, float)) and 0.0 <= lm_weight <= 1.0):
        raise InvalidInputError(f"lm_weight: must be a number in [0, 1], got {lm_weight!r}")
    check_floating("student_logits", student_logits, ndim=3)
    batch, length, vocab = student_logits.shape
    if batch == 0 or length == 0:
        raise InvalidInputError(f"student_logits: the batch is empty, shape {list(student_logits.shape)}")
    check_integer("labels", labels, shape=(batch, length))
    if not isinstance(fused, FusedDistribution):
        raise InputTypeError(f"fused: must be a FusedDistribution, got {type(fused).__name__}")
    if fused.ids.dim() != 3 or fused.ids.shape[:2] != (batch, length) or fused.ids.shape != fused.probs.shape:
        raise InvalidInputError(
            f"fused: ids and probs must have shape [{batch}, {length}, K'] like student_logits, "
            f"got {list(fused.ids.shape)} and {list(fused.probs.shape)}"
        )
    if fused.rest is not None:
        check_floating("fused.rest", fused.rest, shape=(batch, length))
    if mask is None:
        mask = labels != -100
    else:
        check_tensor("mask", mask, shape=(batch, length))
    if fused.ids.numel() and int(fused.ids.max()) >= vocab:
        raise InvalidInputError(f"fused: holds id {int(fused.ids.max())}, outside the student's vocabulary of {vocab}")
    if int(labels.max()) >= vocab or bool(((labels < 0) & (labels != -100)).any()):
        raise InvalidInputError(f"labels: must be ids in [0, {vocab}) or -100")
    return mask


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return values.where(mask, 0.0).sum() / mask.sum().clamp(min=1)
