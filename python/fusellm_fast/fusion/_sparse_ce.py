"""Cross-entropies of the student's softmax against sparse targets, without a dense target tensor."""

from __future__ import annotations

import torch

# Student logits per chunk of positions (rows x vocabulary) in the forward and backward passes:
# bounds their float32 temporaries to 16 MiB whatever the batch and sequence length.
_CHUNK_ELEMENTS = 1 << 22


def sparse_cross_entropy(
    student_logits: torch.Tensor,
    entry_ids: torch.Tensor,
    entry_weights: torch.Tensor,
    rest_ids: torch.Tensor | None = None,
    rest_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:class:`_SparseCrossEntropy` over the positions of ``[B, L, V]`` logits: the total, the
    log-partition ``[B, L]``, the listed entries' logits ``[B, L, E]`` and, with a rest, the
    log-sum-exp of the logits outside ``rest_ids`` ``[B, L]`` (``-inf`` where there are none)."""
    batch, length, vocab = student_logits.shape
    rows = batch * length
    total, log_partition, entry_logits, log_outside = _SparseCrossEntropy.apply(
        student_logits.reshape(rows, vocab),
        entry_ids.reshape(rows, -1),
        entry_weights.reshape(rows, -1),
        None if rest_ids is None else rest_ids.reshape(rows, -1),
        None if rest_weights is None else rest_weights.reshape(rows),
    )
    log_outside = None if rest_ids is None else log_outside.view(batch, length)
    return total, log_partition.view(batch, length), entry_logits.view(batch, length, -1), log_outside


class _SparseCrossEntropy(torch.autograd.Function):
    """``sum_n c_n logZ_n - sum_{n,e} w_ne z_{n, id_ne} - sum_n r_n logZ_n^out`` over rows ``z_n``
    of logits ``[N, V]``.

    ``logZ^out`` is the log-sum-exp over the ids outside the row's ``rest_ids``, so
    ``r_n (logZ_n - logZ_n^out) = -r_n log(student mass outside the list)``: the "rest" class of a
    bucket target. ``c_n = sum_e w_ne + r_n`` makes each row a weighted cross-entropy against a sparse
    target. A row whose ``rest_ids`` cover the vocabulary has no rest class; its ``r_n`` is left out.

    The gradient, ``c_n softmax(z_n) - sum_e w_ne onehot(id_ne) - r_n softmax_out(z_n)``, is
    written straight into one ``[N, V]`` tensor; rows are processed in chunks so that float32
    temporaries stay small even for bfloat16 logits over large vocabularies. With a rest,
    ``logZ^out`` is the log-sum-exp of the chunk with the listed ids masked out and ``logZ`` adds the
    listed ones to it, so the pass over the vocabulary is still one, and a rest mass near 0 stays
    exact where ``1 - sum(listed)`` would cancel.

    Returns the total, plus ``logZ [N]``, the listed logits ``[N, E]`` and ``logZ^out [N]`` (empty
    without a rest), without gradients, all in float32, or float64 for float64 logits.
    """

    @staticmethod
    def forward(ctx, logits, entry_ids, entry_weights, rest_ids, rest_weights):
        precision = torch.promote_types(logits.dtype, torch.float32)
        entry_logits = logits.gather(-1, entry_ids).to(precision)
        entry_weights = entry_weights.to(precision)
        row_weights = entry_weights.sum(-1)
        total = -(entry_weights * entry_logits).sum()
        if rest_ids is None:
            log_partition = _chunked_logsumexp(logits, precision)
            log_outside = log_partition.new_empty(0)
        else:
            log_outside = _chunked_logsumexp(logits, precision, masked_ids=rest_ids)
            listed_logits = logits.gather(-1, rest_ids).to(precision)
            log_partition = torch.logaddexp(log_outside, _distinct_logsumexp(listed_logits, rest_ids))
            has_outside = torch.isfinite(log_outside)
            rest_weights = rest_weights.to(precision).where(has_outside, 0.0)
            row_weights = row_weights + rest_weights
            # Rows without an outside have no rest weight: 0 keeps their terms finite.
            total = total - (rest_weights * log_outside.where(has_outside, 0.0)).sum()
        total = total + (row_weights * log_partition).sum()
        ctx.save_for_backward(logits, entry_ids, entry_weights, row_weights, log_partition, rest_ids, rest_weights,
                              log_outside)
        ctx.mark_non_differentiable(log_partition, entry_logits, log_outside)
        return total, log_partition, entry_logits, log_outside

    @staticmethod
    def backward(ctx, grad_total, _grad_log_partition, _grad_entry_logits, _grad_log_outside):
        logits, entry_ids, entry_weights, row_weights, log_partition, rest_ids, rest_weights, log_outside = (
            ctx.saved_tensors)
        grad = torch.empty_like(logits)
        in_place = grad.dtype == log_partition.dtype
        if rest_ids is not None:
            log_outside = log_outside.where(torch.isfinite(log_outside), 0.0)
        for rows in _row_chunks(logits):
            # Logits already in the working precision are turned into their gradient inside `grad`.
            chunk = torch.sub(logits[rows], log_partition[rows, None], out=grad[rows] if in_place else None)
            chunk.exp_().mul_((row_weights[rows] * grad_total).to(chunk.dtype)[:, None])
            if rest_ids is not None:
                outside = logits[rows].to(log_partition.dtype).scatter(-1, rest_ids[rows], float("-inf"))
                outside.sub_(log_outside[rows, None]).exp_()
                chunk.sub_(outside.mul_((rest_weights[rows] * grad_total)[:, None]).to(chunk.dtype))
            chunk.scatter_add_(-1, entry_ids[rows], (-entry_weights[rows] * grad_total).to(chunk.dtype))
            if not in_place:
                grad[rows] = chunk
        return grad, None, None, None, None


def _chunked_logsumexp(logits: torch.Tensor, precision: torch.dtype,
                       masked_ids: torch.Tensor | None = None) -> torch.Tensor:
    """``logsumexp`` of every row of ``[N, V]`` logits in ``precision``, chunk by chunk; with
    ``masked_ids [N, R]``, over the ids outside them (``-inf`` where none is)."""
    result = torch.empty(logits.shape[0], dtype=precision, device=logits.device)
    for rows in _row_chunks(logits):
        chunk = logits[rows].to(precision)
        if masked_ids is not None:
            chunk = chunk.scatter(-1, masked_ids[rows], float("-inf"))
        result[rows] = torch.logsumexp(chunk, dim=-1)
    return result


def _distinct_logsumexp(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` of each row's ``values``, counting a repeated id once."""
    sorted_ids, order = ids.sort(dim=-1)
    repeated = torch.nn.functional.pad(sorted_ids[..., 1:] == sorted_ids[..., :-1], (1, 0), value=False)
    return torch.logsumexp(values.gather(-1, order).masked_fill(repeated, float("-inf")), dim=-1)


def _row_chunks(logits: torch.Tensor) -> list[slice]:
    rows, vocab = logits.shape
    step = max(1, _CHUNK_ELEMENTS // max(vocab, 1))
    return [slice(start, start + step) for start in range(0, rows, step)]
