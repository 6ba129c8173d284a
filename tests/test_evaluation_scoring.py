"""The held-out scorer: exact NLL of ``EOS text EOS``, batched like one text at a time, sliding
windows, bits per byte and perplexity per reference token."""

from __future__ import annotations

import doctest
import importlib
import math

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from demo_models import TINY, demo_corpus
from fusellm_fast import demo
from fusellm_fast.errors import InvalidInputError
from fusellm_fast.evaluation import context_length, held_out_score, predicted_tokens, text_nll

TEXT = "Grüße, wörld!\n"
"""14 characters, 17 UTF-8 bytes (ü, ß and ö take two each)."""


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return demo_corpus(TINY, 12)


@pytest.fixture(scope="module")
def models(corpus: list[str]) -> dict[str, tuple]:
    """Two models on different tokenizers: SentencePiece-style Llama, byte-level GPT-2."""
    built = {}
    for seed, (name, kind, architecture) in enumerate((("sp", "sp_bpe", "llama"), ("byte", "byte_bpe", "gpt2"))):
        tokenizer = demo.train_tokenizer(kind, corpus + [TEXT], 300)
        built[name] = (demo.new_model(architecture, tokenizer, TINY, seed).eval(), tokenizer)
    return built


def token_log_probs(model, ids: list[int]) -> np.ndarray:
    """log p(ids[t] | ids[:t]) for t >= 1, each from a softmax written out in float64."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return np.array([log_probs[t - 1, ids[t]] for t in range(1, len(ids))])


@pytest.mark.parametrize("name", ["sp", "byte"])
def test_bits_per_byte_is_the_hand_computation(models: dict, name: str) -> None:
    model, tokenizer = models[name]
    eos = tokenizer.eos_token_id
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    nll = -token_log_probs(model, [eos, *ids, eos]).sum()
    score = held_out_score([TEXT], text_nll(model, tokenizer, [TEXT]))
    assert score.bytes == 17 and score.texts == 1
    assert score.tokens == len(ids) + 1
    assert score.nll == pytest.approx(nll, rel=1e-5)
    assert score.bits_per_byte == pytest.approx(nll / math.log(2) / 17, rel=1e-5)
    assert score.own_perplexity == pytest.approx(math.exp(nll / (len(ids) + 1)), rel=1e-5)


def test_different_tokenizers_share_the_byte_count_and_the_reference_tokens(models: dict, corpus: list[str]) -> None:
    reference = int(predicted_tokens(models["sp"][1], corpus).sum())
    scores = {name: held_out_score(corpus, text_nll(model, tokenizer, corpus), reference_tokens=reference)
              for name, (model, tokenizer) in models.items()}
    assert scores["sp"].bytes == scores["byte"].bytes == sum(len(t.encode("utf-8")) for t in corpus)
    assert scores["sp"].tokens != scores["byte"].tokens
    assert scores["sp"].reference_tokens == scores["byte"].reference_tokens == reference == scores["sp"].tokens
    for score in scores.values():
        assert score.perplexity == pytest.approx(math.exp(score.nll / reference))
        assert score.seconds > 0 and score.tokens_per_second > 0


@pytest.mark.parametrize("name", ["sp", "byte"])
def test_batches_with_padding_score_like_one_text_at_a_time(models: dict, corpus: list[str], name: str) -> None:
    model, tokenizer = models[name]
    texts = corpus + ["x", TEXT]
    alone = np.array([text_nll(model, tokenizer, [text], batch_size=1).nll[0] for text in texts])
    lengths = {len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]}
    assert len(lengths) > 5  # the batches really are padded
    for batch_size in (3, 8, len(texts)):
        batched = text_nll(model, tokenizer, texts, batch_size=batch_size)
        np.testing.assert_allclose(batched.nll, alone, rtol=2e-5)
        np.testing.assert_array_equal(batched.tokens, predicted_tokens(tokenizer, texts))


@pytest.mark.parametrize("name", ["sp", "byte"])
def test_long_texts_are_scored_in_windows_once_per_token(models: dict, corpus: list[str], name: str) -> None:
    model, tokenizer = models[name]
    text = corpus[0] + corpus[1]
    eos = tokenizer.eos_token_id
    sequence = [eos, *tokenizer(text, add_special_tokens=False)["input_ids"], eos]
    assert len(sequence) > 40
    # Stride 1: every token after the first window is predicted from exactly the 7 tokens before it.
    width = 8
    expected = -sum(token_log_probs(model, sequence[:width])) - sum(
        token_log_probs(model, sequence[t - width + 1:t + 1])[-1] for t in range(width, len(sequence)))
    windowed = text_nll(model, tokenizer, [text], max_length=width, stride=1)
    assert windowed.nll[0] == pytest.approx(expected, rel=1e-5)
    assert windowed.tokens[0] == len(sequence) - 1
    assert windowed.forward_tokens == width + (len(sequence) - width) * width
    # Wider windows: still every token once; a window that holds the whole text is no window.
    halves = text_nll(model, tokenizer, [text], max_length=16)
    assert halves.tokens[0] == len(sequence) - 1 and halves.forward_tokens > len(sequence)
    whole = text_nll(model, tokenizer, [text])
    assert text_nll(model, tokenizer, [text], max_length=len(sequence)).nll[0] == whole.nll[0]
    assert whole.forward_tokens == len(sequence)


def test_the_context_is_the_models_position_count(models: dict) -> None:
    assert context_length(models["sp"][0]) == context_length(models["byte"][0]) == demo.max_tokens(TINY)
    assert context_length(object()) is None


def test_bad_options_are_named(models: dict) -> None:
    model, tokenizer = models["sp"]
    with pytest.raises(InvalidInputError, match="batch_size"):
        text_nll(model, tokenizer, [TEXT], batch_size=0)
    with pytest.raises(InvalidInputError, match="max_length"):
        text_nll(model, tokenizer, [TEXT], max_length=1)
    with pytest.raises(InvalidInputError, match="stride"):
        text_nll(model, tokenizer, [TEXT], max_length=8, stride=8)

    class NoEos:
        eos_token_id = None

    with pytest.raises(InvalidInputError, match="EOS"):
        text_nll(model, NoEos(), [TEXT])


@pytest.mark.parametrize("module", ["nll", "held_out", "harness", "report", "run"])
def test_docstring_examples_run(module: str) -> None:
    results = doctest.testmod(importlib.import_module(f"fusellm_fast.evaluation.{module}"))
    assert results.attempted > 0 and results.failed == 0
