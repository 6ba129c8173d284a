"""Tiny model directories made with the demo's tokenizers and models (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

from fusellm_fast import demo

TINY = demo.DemoConfig.quick(hidden_size=32, layers=1, heads=2, chunk_chars=160)
"""Models small enough to train and run in a test in seconds."""


def demo_corpus(config: demo.DemoConfig, per_domain: int) -> list[str]:
    """The first ``per_domain`` pieces of code and of prose at the config's piece size."""
    texts = demo.domain_texts(config.chunk_chars)
    return texts["code"][:per_domain] + texts["prose"][:per_domain]


def save_models(root: Path, corpus: list[str], config: demo.DemoConfig,
                models: list[tuple[str, demo.TokenizerKind, str, int]]) -> dict[str, Path]:
    """Per ``(name, tokenizer kind, architecture, vocabulary size)``: a tokenizer trained on
    ``corpus`` and a fresh model of ``config`` (seeded by its place in the list), saved together in
    ``root/name``; name -> directory."""
    paths = {}
    for seed, (name, kind, architecture, vocab_size) in enumerate(models):
        tokenizer = demo.train_tokenizer(kind, corpus, vocab_size)
        model = demo.new_model(architecture, tokenizer, config, seed)
        paths[name] = root / name
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return paths
