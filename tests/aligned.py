"""Comparison of the fast alignment with the plain-Python reference."""

from __future__ import annotations

import numpy as np

import fusellm_fast as ff
from fusellm_fast import reference


def reference_positions(batch: ff.AlignedBatch, b: int) -> list[tuple[int, list[tuple[int, float]]]]:
    """Text ``b`` of an AlignedBatch in the reference's ``(status, [(id, logit), ...])`` form."""
    rows = []
    for j in range(int(batch.lengths[b])):
        ids = batch.ids[b, j]
        keep = ids >= 0
        # Slots are filled from the front: no -1 may come before a real id.
        assert keep.tolist() == sorted(keep.tolist(), reverse=True)
        rows.append((int(batch.status[b, j]),
                     [(int(i), float(x)) for i, x in zip(ids[keep], batch.logits[b, j][keep])]))
    assert (batch.status[b, int(batch.lengths[b]):] == ff.PositionStatus.PADDING).all()
    return rows


def assert_matches_reference(aligner_args, texts, *, vocab_align, onehot, workers=1, vocab_map=None):
    """Runs both implementations on ``texts`` (tuples of target ids, source ids,
    top-k ids, top-k logits) and asserts identical output, position by position."""
    source_tokens, target_tokens, source_marker, target_marker = aligner_args
    aligner = ff.Aligner(source_tokens, target_tokens, source_marker=source_marker, target_marker=target_marker,
                         vocab_map=vocab_map)
    target_ids, source_ids, topk_ids, topk_logits = (list(col) for col in zip(*texts)) if texts else ([],) * 4
    batch = ff.align_batch(aligner, target_ids, source_ids, topk_ids, topk_logits,
                           vocab_align=vocab_align, onehot=onehot, workers=workers)
    mined = None
    if vocab_align == "soft":
        mined = aligner.vocab_map.target_ids.tolist()
    for b, (t, s, k_ids, k_logits) in enumerate(texts):
        expected = reference.align_text(
            source_tokens, target_tokens, list(t), list(s),
            np.asarray(k_ids).tolist(), np.asarray(k_logits, dtype=np.float32).tolist(),
            source_marker=source_marker, target_marker=target_marker,
            vocab_align=vocab_align, onehot=onehot, vocab_map=mined,
        )
        assert reference_positions(batch, b) == [(int(st), [(i, float(x)) for i, x in e]) for st, e in expected], \
            f"text {b} differs"
    return batch
