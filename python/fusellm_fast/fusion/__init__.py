"""Fusion of sparse teacher distributions and the FuseLLM training objective.

Steps 4 and 5 of FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024,
arXiv:2401.10491), computed directly on top-k lists. A distribution is a pair ``(ids, logits)`` of
tensors ``[B, L, K]``, ``ids == -1`` marking an empty slot; a position whose slots are all empty has
no distribution. The target model's own distribution comes first, the sources aligned to the target
tokenization and vocabulary after it.

No dense ``[batch, length, vocab]`` teacher tensor is ever built: the fused distribution stays a short
list per position (plus, with ``tail="bucket"``, the probability outside it), and the loss against
the student needs only the student's log-partition function, computed chunk by chunk, and a gather
of the listed logits.

- :func:`fuse` (``_fuse``): MinCE / AvgCE per block, position or text segment, with the tail
  renormalized away or kept as one "rest" class;
- :func:`fusion_loss` (``_loss``): the objective, on the sparse cross-entropies of ``_sparse_ce``;
- ``_lists``: the models' lists stacked and turned into probabilities; ``_tensors``: argument checks.
"""

from __future__ import annotations

from fusellm_fast._choices import CeLevel, FusionLevel, FusionMethod, LossKind, Tail, ValuesAre

from ._fuse import FusedDistribution, fuse
from ._loss import FusionLoss, fusion_loss

__all__ = [
    "CeLevel",
    "FusedDistribution",
    "FusionLevel",
    "FusionLoss",
    "FusionMethod",
    "LossKind",
    "Tail",
    "ValuesAre",
    "fuse",
    "fusion_loss",
]
