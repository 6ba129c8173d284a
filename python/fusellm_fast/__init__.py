"""fusellm_fast: fast building blocks for knowledge fusion of LLMs.

Implements the alignment side of FuseLLM (Wan et al., "Knowledge Fusion of Large
Language Models", ICLR 2024, arXiv 2401.10491) in Rust: the minimum-edit-distance
vocabulary map, token alignment between two tokenizations of the same text, and
remapping of top-k distributions onto the target vocabulary. The PyTorch layer
(``fusellm_fast.fusion``, ``fusellm_fast.teacher``, ``fusellm_fast.trainer``) needs
the ``torch`` extra.

>>> import fusellm_fast as ff
>>> ff.edit_distance("▁the", "Ġthe")
1
"""

from __future__ import annotations

import importlib.metadata

from .alignment import AlignedBatch, Aligner, AlignmentCounts, PositionStatus, align_batch
from .errors import (
    FuseLLMError,
    InputTooLargeError,
    InputTypeError,
    InvalidInputError,
    MarkerDetectionError,
    VocabMapError,
)
from .vocab_map import Family, Normalize, VocabMap, edit_distance, token_bytes

__all__ = [
    "AlignedBatch",
    "Aligner",
    "AlignmentCounts",
    "FuseLLMError",
    "InputTooLargeError",
    "InputTypeError",
    "InvalidInputError",
    "MarkerDetectionError",
    "PositionStatus",
    "VocabMap",
    "VocabMapError",
    "Family",
    "Normalize",
    "align_batch",
    "edit_distance",
    "token_bytes",
]

# The version is Cargo.toml's: maturin writes it into the package metadata.
__version__ = importlib.metadata.version("fusellm-fast")
