"""The choices of the fusion's options as ``Literal`` types.

They live apart from :mod:`fusellm_fast.fusion` and :mod:`fusellm_fast.trainer` so that the
pipeline and the command can name them without importing torch.
"""

from __future__ import annotations

from typing import Literal

FusionMethod = Literal["min_ce", "avg_ce"]
"""How the teachers are fused: MinCE (the paper's choice) or AvgCE."""
CeLevel = Literal["sequence", "token"]
"""Where the teachers are ranked: one CE per text or block, or one per position."""
CeUnit = Literal["token", "byte"]
"""The CE that ranks the teachers: per token of each model's tokenization (the paper), or per byte."""
LossKind = Literal["ce", "kl"]
"""The fusion loss: cross-entropy (the paper) or KL divergence."""
