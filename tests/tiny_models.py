"""Tiny causal LMs built from a config in the tests (no download)."""

from __future__ import annotations

import torch
import transformers


def tiny_llama(vocab_size: int, *, seed: int = 0, **config) -> transformers.LlamaForCausalLM:
    """A 2-layer, 32-wide Llama with a fixed initialization; ``config`` adds config fields."""
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        **config,
    ))
