"""The choices of the fusion's options as ``Literal`` types.

They live apart from :mod:`fusellm_fast.fusion` and :mod:`fusellm_fast.trainer` so that the
pipeline and the command can name them without importing torch.
"""

from __future__ import annotations

from typing import Literal

FusionMethod = Literal["min_ce", "avg_ce"]
"""How the teachers are fused: MinCE (the paper's choice) or AvgCE."""
CeLevel = Literal["sequence", "token"]
"""The CE that the align stage stores: one per text, or one per position."""
FusionLevel = Literal["sequence", "token", "text"]
"""Where MinCE/AvgCE choose: per block (the paper), per position, or per text segment of a packed block."""
CeUnit = Literal["token", "byte"]
"""The CE that ranks the teachers: per token of each model's tokenization (the paper), or per byte."""
LossKind = Literal["ce", "kl"]
"""The fusion loss: cross-entropy (the paper) or KL divergence."""
Tail = Literal["renormalize", "bucket"]
"""What becomes of the probability outside a top-k list: a softmax over the list (the paper), or one
"rest" class that holds it."""
ValuesAre = Literal["logits", "log_probs"]
"""What a top-k list's values are: raw logits, or log-probabilities under the model's full softmax."""
