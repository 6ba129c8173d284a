"""Fusion of sparse teacher distributions and the FuseLLM training objective.

Steps 4 and 5 of FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024,
arXiv:2401.10491), computed directly on top-k lists. A distribution is a pair ``(ids, logits)`` of
tensors ``[B, L, K]``, ``ids == -1`` marking an empty slot; a position whose slots are all empty has
no distribution. The target model's own distribution comes first, the sources aligned to the target
tokenization and vocabulary after it.

No dense ``[batch, length, vocab]`` teacher tensor is ever built: the fused distribution stays a short
list per position, and the loss against the student needs only the student's log-partition function,
computed chunk by chunk, and a gather of the listed logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np
import torch

from fusellm_fast._checks import checked_choice
from fusellm_fast._choices import CeLevel, FusionMethod, LossKind
from fusellm_fast.errors import InputTypeError, InvalidInputError

__all__ = [
    "CeLevel",
    "FusedDistribution",
    "FusionLoss",
    "FusionMethod",
    "LossKind",
    "fuse",
    "fusion_loss",
]

# Student logits per chunk of positions (rows x vocabulary) in the forward and backward passes:
# bounds their float32 temporaries to 16 MiB whatever the batch and sequence length.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class FusedDistribution:
    """The fused next-token distribution of every position, as a sparse list.

    Attributes:
        ids: ``int64 [B, L, K']`` target-vocabulary ids, ``-1`` in empty slots; distinct within a
            position.
        probs: ``float32 [B, L, K']`` their probabilities, ``0.0`` in empty slots; they sum to 1 at
            every position that has a distribution and to 0 where none has one.
        weights: ``float32``, the shape of the ``ce`` given to :func:`fuse` (``[N, B]`` or
            ``[N, B, L]``): the weight of each model's distribution, one-hot on the chosen model for
            MinCE.
    """

    ids: torch.Tensor
    probs: torch.Tensor
    weights: torch.Tensor


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


def fuse(
    dists: Sequence[Any],
    ce: torch.Tensor,
    *,
    method: FusionMethod = "min_ce",
    temperature: float = 1.0,
    level: CeLevel = "sequence",
    ce_temperature: float | None = None,
) -> FusedDistribution:
    """Fuse the models' top-k lists into one next-token distribution per position.

    Each model's list becomes ``softmax(logits / temperature)`` over its listed ids only. A source
    position without a distribution (all ids ``-1``) takes the target's own list there, as the
    reference code does. Then, per text (``level="sequence"``) or per position (``"token"``):

    - ``"min_ce"`` takes the distribution of the model with the lowest cross-entropy (the highest
      reward ``exp(-ce)``); a tie goes to the earlier model. CEs are compared directly, so that
      rewards that underflow to the same float do not tie.
    - ``"avg_ce"`` sums the distributions with weights ``softmax(exp(-ce))`` over the models, a
      softmax over the rewards themselves as in the reference code; ``ce_temperature=tau`` uses
      ``softmax(-ce / tau)`` instead. Where a model lists nothing at all (not even after the
      fallback), the others' weights are renormalized.

    Args:
        dists: ``N >= 1`` distributions, the target model's first; each a pair ``(ids, logits)``
            (or an object with ``.ids`` and ``.logits``, such as an ``AlignedBatch``) of tensors or
            arrays ``[B, L, K_n]``: integer ids, ``-1`` for an empty slot, distinct within a list,
            and floating logits. ``K_n`` may differ between models.
        ce: floating ``[N, B]`` (sequence level) or ``[N, B, L]`` (token level), finite: each
            model's cross-entropy on each text or at each position.
        method: ``"min_ce"`` (the paper's choice) or ``"avg_ce"``.
        temperature: teacher temperature ``T > 0`` (paper: 1.0).
        level: whether ``ce`` holds one value per text or one per position.
        ce_temperature: ``None`` for the reference AvgCE weights, or ``tau > 0`` for
            ``softmax(-ce / tau)``; only with ``method="avg_ce"``.

    Returns:
        The fused distribution on the device of the first model's ids; ``K' = max K_n`` for
        MinCE, ``K' = sum K_n`` for AvgCE (merged entries first, in id order).

    Raises:
        InputTypeError: a distribution or ``ce`` is not a tensor or array of the right kind of dtype.
        InvalidInputError: shapes disagree, the batch is empty, an id is below ``-1``, ``ce`` is not
            finite, or an option is out of range.

    >>> target = (torch.tensor([[[3, 5]]]), torch.tensor([[[0.0, 0.0]]]))   # B=1, L=1, K=2
    >>> source = (torch.tensor([[[5, -1]]]), torch.tensor([[[2.0, 0.0]]]))
    >>> fused = fuse([target, source], torch.tensor([[2.0], [1.0]]))
    >>> fused.ids.tolist(), fused.probs.tolist(), fused.weights.tolist()
    ([[[5, -1]]], [[[1.0, 0.0]]], [[0.0], [1.0]])
    """
    _check_fuse_options(method, level, temperature, ce_temperature)
    ids, logits = _stacked_distributions(dists)
    models, batch, length, _ = ids.shape
    ce = _as_tensor("ce", ce, device=ids.device)
    _check_floating("ce", ce, shape=(models, batch) if level == "sequence" else (models, batch, length))
    if not torch.isfinite(ce).all():
        raise InvalidInputError("ce: must be finite, found NaN or infinity")

    ids, logits = _fill_missing_with_target(ids, logits.float())
    probs = _list_softmax(ids, logits, temperature)
    if method == "min_ce":
        fused_ids, fused_probs, weights = _min_ce(ids, probs, ce, level)
    else:
        fused_ids, fused_probs, weights = _avg_ce(ids, probs, ce, level, ce_temperature)
    return FusedDistribution(ids=fused_ids, probs=fused_probs, weights=weights)


def _check_fuse_options(method: str, level: str, temperature: float, ce_temperature: float | None) -> None:
    checked_choice(method, "method", get_args(FusionMethod))
    checked_choice(level, "level", get_args(CeLevel))
    _check_positive("temperature", temperature)
    if ce_temperature is not None:
        _check_positive("ce_temperature", ce_temperature)
        if method != "avg_ce":
            raise InvalidInputError("ce_temperature: applies to method='avg_ce' only")


def _min_ce(ids: torch.Tensor, probs: torch.Tensor, ce: torch.Tensor,
            level: CeLevel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MinCE: at each position the list of the model with the lowest CE; the ids, probs and weights."""
    models, _, length, _ = ids.shape
    per_position_ce = ce.float() if level == "token" else ce.float()[:, :, None].expand(-1, -1, length)
    chosen = _first_argmin(per_position_ce)  # [B, L]
    index = chosen[None, :, :, None].expand(1, -1, -1, ids.shape[-1])
    fused_ids = ids.gather(0, index)[0]
    fused_probs = probs.gather(0, index)[0]
    weights = torch.nn.functional.one_hot(_first_argmin(ce.float()), models).movedim(-1, 0).float()
    return fused_ids, fused_probs, weights


def _avg_ce(ids: torch.Tensor, probs: torch.Tensor, ce: torch.Tensor, level: CeLevel,
            ce_temperature: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AvgCE: at each position the weighted sum of every model's list; the ids, probs and weights."""
    length = ids.shape[2]
    scores = torch.exp(-ce.float()) if ce_temperature is None else -ce.float() / ce_temperature
    weights = torch.softmax(scores, dim=0)
    per_position = weights if level == "token" else weights[:, :, None].expand(-1, -1, length)
    weighted = probs * per_position[..., None]
    # [N, B, L, K] -> [B, L, N * K]: one list per position holding every model's entries.
    fused_ids, fused_probs = _merge_duplicate_ids(
        ids.permute(1, 2, 0, 3).flatten(2), weighted.permute(1, 2, 0, 3).flatten(2)
    )
    # Only where some model lists nothing even after the fallback is this not a division by 1.
    fused_probs = fused_probs / fused_probs.sum(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    return fused_ids, fused_probs, weights


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
    at ``t`` (a next-token distribution already) with the student's softmax at ``t``, unshifted:
    ``-sum_v q_v log softmax(z)_v = logsumexp(z) - sum_j q_j z_{id_j}`` for ``kind="ce"``, plus
    ``sum_j q_j log q_j`` for ``kind="kl"``, averaged over the positions in ``mask`` that have a
    fused distribution. The log-partition is computed over the vocabulary in chunks of positions and
    serves both terms; the gradient ``softmax(z) * c - sparse weights`` is written chunk by chunk by
    a hand-written backward, so the extra memory is ``O(B * L * K')`` plus one chunk. An average
    over no position is 0.

    Args:
        student_logits: floating ``[B, L, V]`` (bfloat16 is computed in float32 chunk by chunk).
        labels: integer ``[B, L]`` gold tokens, ``-100`` where ignored.
        fused: the output of :func:`fuse`, ``[B, L, K']``, ids below ``V``.
        lm_weight: ``lambda`` in ``[0, 1]`` (paper: 0.9).
        kind: ``"ce"`` (paper) or ``"kl"``; they differ by a constant and have the same gradient.
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
    """
    checked_choice(kind, "kind", get_args(LossKind))
    mask = _checked_loss_inputs(student_logits, labels, fused, mask, lm_weight)

    # Both terms are sparse cross-entropies against the same softmax: the CLM term puts weight on the
    # next gold token, the fusion term on the fused list. One pass over the vocabulary serves both.
    next_gold = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    gold_mask = next_gold != -100
    listed = fused.ids >= 0
    probs = fused.probs.float().where(listed, 0.0)
    fusion_mask = mask.bool() & listed.any(-1)
    clm_scale = lm_weight / gold_mask.sum().clamp(min=1)
    fusion_scale = (1.0 - lm_weight) / fusion_mask.sum().clamp(min=1)
    gold_weight = clm_scale * gold_mask
    list_weights = fusion_scale * probs * fusion_mask.unsqueeze(-1)
    entry_ids = torch.cat([next_gold.clamp(min=0).unsqueeze(-1), fused.ids.clamp(min=0)], dim=-1)
    entry_weights = torch.cat([gold_weight.unsqueeze(-1), list_weights], dim=-1)
    total, log_partition, entry_logits = _sparse_cross_entropy(student_logits, entry_ids, entry_weights)

    clm = _masked_mean(log_partition - entry_logits[..., 0], gold_mask)
    # With q summing to 1: -sum_j q_j log_softmax(z)_j = logZ - sum_j q_j z_j.
    position_loss = log_partition - (probs * entry_logits[..., 1:]).sum(-1)
    if kind == "kl":
        negative_entropy = torch.xlogy(probs, probs).sum(-1)
        position_loss = position_loss + negative_entropy
        # A constant with respect to the student: it shifts the total but not its gradient.
        total = total + fusion_scale * (negative_entropy * fusion_mask).sum()
    fusion = _masked_mean(position_loss, fusion_mask)
    return FusionLoss(total=total, clm=clm, fusion=fusion)


def _checked_loss_inputs(student_logits: torch.Tensor, labels: torch.Tensor, fused: FusedDistribution,
                         mask: torch.Tensor | None, lm_weight: float) -> torch.Tensor:
    """Checks the arguments of :func:`fusion_loss`; the mask of the fusion term."""
    if isinstance(lm_weight, bool) or not (isinstance(lm_weight, (int, float)) and 0.0 <= lm_weight <= 1.0):
        raise InvalidInputError(f"lm_weight: must be a number in [0, 1], got {lm_weight!r}")
    _check_floating("student_logits", student_logits, ndim=3)
    batch, length, vocab = student_logits.shape
    if batch == 0 or length == 0:
        raise InvalidInputError(f"student_logits: the batch is empty, shape {list(student_logits.shape)}")
    _check_integer("labels", labels, shape=(batch, length))
    if not isinstance(fused, FusedDistribution):
        raise InputTypeError(f"fused: must be a FusedDistribution, got {type(fused).__name__}")
    if fused.ids.dim() != 3 or fused.ids.shape[:2] != (batch, length) or fused.ids.shape != fused.probs.shape:
        raise InvalidInputError(
            f"fused: ids and probs must have shape [{batch}, {length}, K'] like student_logits, "
            f"got {list(fused.ids.shape)} and {list(fused.probs.shape)}"
        )
    if mask is None:
        mask = labels != -100
    else:
        _check_tensor("mask", mask, shape=(batch, length))
    if fused.ids.numel() and int(fused.ids.max()) >= vocab:
        raise InvalidInputError(f"fused: holds id {int(fused.ids.max())}, outside the student's vocabulary of {vocab}")
    if int(labels.max()) >= vocab or bool(((labels < 0) & (labels != -100)).any()):
        raise InvalidInputError(f"labels: must be ids in [0, {vocab}) or -100")
    return mask


def _sparse_cross_entropy(student_logits: torch.Tensor, entry_ids: torch.Tensor,
                          entry_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:class:`_SparseCrossEntropy` over the positions of ``[B, L, V]`` logits: the total, the
    log-partition ``[B, L]`` and the listed entries' logits ``[B, L, E]``."""
    batch, length, vocab = student_logits.shape
    total, log_partition, entry_logits = _SparseCrossEntropy.apply(
        student_logits.reshape(batch * length, vocab),
        entry_ids.reshape(batch * length, -1),
        entry_weights.reshape(batch * length, -1),
        entry_weights.sum(-1).reshape(-1),
    )
    return total, log_partition.view(batch, length), entry_logits.view(batch, length, -1)


class _SparseCrossEntropy(torch.autograd.Function):
    """``sum_n c_n logZ_n - sum_{n,e} w_ne z_{n, id_ne}`` over rows ``z_n`` of logits ``[N, V]``.

    ``c_n = sum_e w_ne`` makes each row a weighted cross-entropy against a sparse target. The
    gradient, ``c_n softmax(z_n) - sum_e w_ne onehot(id_ne)``, is written straight into one
    ``[N, V]`` tensor; rows are processed in chunks so that float32 temporaries stay small even for
    bfloat16 logits over large vocabularies.

    Returns the total, plus ``logZ [N]`` and the listed logits ``[N, E]`` (no gradient), all in
    float32, or float64 for float64 logits.
    """

    @staticmethod
    def forward(ctx, logits, entry_ids, entry_weights, row_weights):
        precision = torch.promote_types(logits.dtype, torch.float32)
        log_partition = torch.empty(logits.shape[0], dtype=precision, device=logits.device)
        for rows in _row_chunks(logits):
            log_partition[rows] = torch.logsumexp(logits[rows].to(precision), dim=-1)
        entry_logits = logits.gather(-1, entry_ids).to(precision)
        entry_weights = entry_weights.to(precision)
        row_weights = row_weights.to(precision)
        total = (row_weights * log_partition).sum() - (entry_weights * entry_logits).sum()
        ctx.save_for_backward(logits, entry_ids, entry_weights, row_weights, log_partition)
        ctx.mark_non_differentiable(log_partition, entry_logits)
        return total, log_partition, entry_logits

    @staticmethod
    def backward(ctx, grad_total, _grad_log_partition, _grad_entry_logits):
        logits, entry_ids, entry_weights, row_weights, log_partition = ctx.saved_tensors
        grad = torch.empty_like(logits)
        in_place = grad.dtype == log_partition.dtype
        for rows in _row_chunks(logits):
            # Logits already in the working precision are turned into their gradient inside `grad`.
            chunk = torch.sub(logits[rows], log_partition[rows, None], out=grad[rows] if in_place else None)
            chunk.exp_().mul_((row_weights[rows] * grad_total).to(chunk.dtype)[:, None])
            chunk.scatter_add_(-1, entry_ids[rows], (-entry_weights[rows] * grad_total).to(chunk.dtype))
            if not in_place:
                grad[rows] = chunk
        return grad, None, None, None


def _row_chunks(logits: torch.Tensor) -> list[slice]:
    rows, vocab = logits.shape
    step = max(1, _CHUNK_ELEMENTS // max(vocab, 1))
    return [slice(start, start + step) for start in range(0, rows, step)]


def _stacked_distributions(dists: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked distributions as ``ids int64 [N, B, L, K]`` and ``logits [N, B, L, K]``, K = max K_n."""
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
        ids = _as_tensor(f"dists[{n}] ids", ids, device=device)
        device = ids.device
        logits = _as_tensor(f"dists[{n}] logits", logits, device=device)
        _check_integer(f"dists[{n}] ids", ids, ndim=3)
        _check_floating(f"dists[{n}] logits", logits, shape=tuple(ids.shape))
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


def _fill_missing_with_target(ids: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a source position lists nothing, use the target's own list (model 0) there."""
    missing = ~(ids[1:] >= 0).any(-1, keepdim=True)  # [N-1, B, L, 1]
    source_ids = torch.where(missing, ids[:1], ids[1:])
    source_logits = torch.where(missing, logits[:1], logits[1:])
    return torch.cat([ids[:1], source_ids]), torch.cat([logits[:1], source_logits])


def _list_softmax(ids: torch.Tensor, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax over the listed slots only; empty slots and empty lists get probability 0."""
    listed = ids >= 0
    scaled = (logits / temperature).masked_fill(~listed, float("-inf"))
    peak = scaled.amax(-1, keepdim=True).nan_to_num(neginf=0.0)
    unnormalized = torch.exp(scaled - peak)
    return unnormalized / unnormalized.sum(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)


def _first_argmin(values: torch.Tensor) -> torch.Tensor:
    """Index of the minimum along the first axis, the earliest on a tie (``torch.argmin`` promises none)."""
    positions = torch.arange(values.shape[0], device=values.device).view(-1, *([1] * (values.dim() - 1)))
    is_min = values == values.amin(0, keepdim=True)
    return torch.where(is_min, positions, values.shape[0]).amin(0)


def _merge_duplicate_ids(ids: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return values.where(mask, 0.0).sum() / mask.sum().clamp(min=1)


def _as_tensor(name: str, value: object, *, device: torch.device | None) -> torch.Tensor:
    """A tensor or numpy array as a tensor on ``device`` (``None``: where it is)."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        array = np.ascontiguousarray(value)
        # Read-only arrays (memory-mapped datasets) are copied: torch tensors are always writable.
        value = torch.from_numpy(array if array.flags.writeable else array.copy())
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(f"{name}: must be a torch.Tensor or numpy array, got {type(value).__name__}")
    return value if device is None else value.to(device)


def _check_tensor(name: str, value: object, *, ndim: int | None = None, shape: tuple[int, ...] | None = None) -> None:
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(f"{name}: must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        raise InvalidInputError(f"{name}: must have {ndim} dimensions, got shape {list(value.shape)}")
    if shape is not None and tuple(value.shape) != shape:
        raise InvalidInputError(f"{name}: must have shape {list(shape)}, got {list(value.shape)}")


def _check_integer(name: str, value: object, **shape_rules: Any) -> None:
    _check_tensor(name, value, **shape_rules)
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise InputTypeError(f"{name}: must have an integer dtype, got {value.dtype}")


def _check_floating(name: str, value: object, **shape_rules: Any) -> None:
    _check_tensor(name, value, **shape_rules)
    if not value.dtype.is_floating_point:
        raise InputTypeError(f"{name}: must have a floating dtype, got {value.dtype}")


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0.0 < value < float("inf")):
        raise InvalidInputError(f"{name}: must be a positive finite number, got {value!r}")
