"""The leading-space markers of the two tokenizer families whose vocabularies FuseLLM aligns."""

from __future__ import annotations

__all__ = ["BYTE_LEVEL_MARKER", "SENTENCEPIECE_MARKER"]

SENTENCEPIECE_MARKER = "\u2581"
"""Leading-space marker of SentencePiece vocabularies (``▁``, as in Llama)."""

BYTE_LEVEL_MARKER = "\u0120"
"""Leading-space marker of byte-level BPE vocabularies (``Ġ``, as in GPT-2, GPT-NeoX, MPT)."""
