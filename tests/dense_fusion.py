"""Dense, position-by-position statements of FuseLLM's Step 4 and random sparse lists, for the fusion tests."""

from __future__ import annotations

import numpy as np
import torch

# Cross-entropies come from a small set so that models either tie exactly or differ clearly.
CE_VALUES = np.array([0.5, 1.0, 1.25, 2.0, 3.0])


def shared_strategies():
    """Hypothesis strategies of the arguments that the dense property tests share: list shapes,
    fusion and loss options, a seed."""
    from hypothesis import strategies as st

    return {
        "batch": st.integers(1, 3),
        "length": st.integers(1, 6),
        "slots_per_model": st.lists(st.integers(1, 4), min_size=1, max_size=4),
        "extra_vocab": st.integers(0, 8),
        "method": st.sampled_from(["min_ce", "avg_ce"]),
        "ce_temperature": st.sampled_from([None, 0.5]),
        "kind": st.sampled_from(["ce", "kl"]),
        "seed": st.integers(0, 2**32 - 1),
    }


def random_dists(rng, batch, length, slots_per_model, vocab, empty_share=0.3):
    """One (ids, logits) pair per model: distinct ids per list, ragged empty slots, empty positions."""
    dists = []
    for slots in slots_per_model:
        ids = np.stack([rng.permutation(vocab)[:slots] for _ in range(batch * length)]).reshape(batch, length, slots)
        ids = np.where(rng.random(ids.shape) < 0.2, -1, ids)
        ids = np.where(rng.random((batch, length, 1)) < empty_share, -1, ids)
        logits = rng.normal(size=ids.shape) * 2.0
        dists.append((torch.tensor(ids), torch.tensor(logits, dtype=torch.float32)))
    return dists


def dense_model_distributions(dists, vocab, temperature):
    """``[N, B, L, V]`` float64: each model's softmax scattered to the vocabulary, the fallback applied."""
    target_ids = dists[0][0].numpy()
    per_model = []
    for n, (ids, logits) in enumerate(dists):
        ids, logits = ids.numpy(), logits.numpy().astype(np.float64)
        dense = np.zeros((*ids.shape[:2], vocab))
        for b in range(ids.shape[0]):
            for t in range(ids.shape[1]):
                row_ids, row_logits = ids[b, t], logits[b, t]
                if n > 0 and (row_ids < 0).all():  # no source distribution here: the target's own
                    row_ids, row_logits = target_ids[b, t], dists[0][1].numpy()[b, t].astype(np.float64)
                listed = row_ids >= 0
                if listed.any():
                    scaled = row_logits[listed] / temperature
                    weights = np.exp(scaled - scaled.max())
                    dense[b, t, row_ids[listed]] = weights / weights.sum()
        per_model.append(dense)
    return np.stack(per_model)


def densify(fused, vocab):
    """The fused lists as dense ``[B, L, V]`` float64 vectors; a fused id may not repeat."""
    dense = np.zeros((*fused.ids.shape[:2], vocab))
    ids, probs = fused.ids.numpy(), fused.probs.double().numpy()
    for b, t, j in zip(*np.nonzero(ids >= 0), strict=True):
        assert dense[b, t, ids[b, t, j]] == 0.0, "a fused id is listed twice at one position"
        dense[b, t, ids[b, t, j]] = probs[b, t, j]
    return dense


def dense_fused(dists, ce, *, method, temperature, level, ce_temperature, vocab, segment_ids=None):
    """Step 4 on dense vocabulary vectors (float64): the fused ``[B, L, V]``; at ``level="text"``
    each position takes the CE of its segment, and a position of segment -1 has no distribution."""
    per_model = dense_model_distributions(dists, vocab, temperature)
    models, batch, length, _ = per_model.shape
    ce = ce.numpy().astype(np.float64)
    fused = np.zeros((batch, length, vocab))
    for b in range(batch):
        for t in range(length):
            if level == "text":
                if segment_ids[b, t] < 0:
                    continue
                column = ce[:, b, int(segment_ids[b, t])]
            else:
                column = ce[:, b, t] if level == "token" else ce[:, b]
            if method == "min_ce":
                weights = np.zeros(models)
                weights[int(np.flatnonzero(column == column.min())[0])] = 1.0
            else:
                scores = np.exp(-column) if ce_temperature is None else -column / ce_temperature
                weights = np.exp(scores) / np.exp(scores).sum()
            fused[b, t] = np.einsum("n,nv->v", weights, per_model[:, b, t])
    totals = fused.sum(-1, keepdims=True)
    return np.divide(fused, totals, out=np.zeros_like(fused), where=totals > 0)


def dense_loss(student_logits, labels, mask, fused_dense, *, kind, lm_weight, rest=None, listed=None):
    """Step 5 on dense tensors with autograd: the trainer's soft-target CE / KL and the shifted CLM.

    With a ``rest [B, L]`` and the ``listed [B, L, V]`` ids (bool), the rest class too:
    ``-r log(student mass outside the listed ids)``, none where the list covers the vocabulary."""
    log_p = torch.log_softmax(student_logits, dim=-1)
    batch, length = labels.shape
    clm_terms = [
        -log_p[b, t, labels[b, t + 1]] for b in range(batch) for t in range(length - 1) if labels[b, t + 1] != -100
    ]
    fusion_terms = []
    for b in range(batch):
        for t in range(length):
            q = torch.tensor(fused_dense[b, t])
            if mask[b, t] and (q.sum() > 0 if listed is None else listed[b, t].any()):
                term = -(q * log_p[b, t]).sum()
                if kind == "kl":
                    term = term + torch.xlogy(q, q).sum()
                outside = None if listed is None else ~torch.tensor(listed[b, t])
                if outside is not None and outside.any():
                    r = torch.tensor(float(rest[b, t]), dtype=log_p.dtype)
                    term = term - r * torch.logsumexp(log_p[b, t][outside], 0)
                    if kind == "kl":
                        term = term + torch.xlogy(r, r)
                fusion_terms.append(term)
    zero = student_logits.sum() * 0.0
    clm = torch.stack(clm_terms).mean() if clm_terms else zero
    fusion_term = torch.stack(fusion_terms).mean() if fusion_terms else zero
    return lm_weight * clm + (1 - lm_weight) * fusion_term, clm, fusion_term
