"""Held-out figures of one model on one corpus that compare across tokenizers.

Bits per byte divide a model's summed NLL (:func:`~fusellm_fast.evaluation.nll.text_nll`) by the
UTF-8 bytes of the texts, which no tokenizer changes. Perplexity per reference token divides the
same NLL by one chosen tokenizer's token count of the same texts (the count :func:`text_nll`
would predict with it), so that models with different tokenizers are compared per the same
tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidInputError
from .nll import TextNLL

__all__ = ["HeldOutScore", "held_out_score", "utf8_bytes"]


@dataclass(frozen=True)
class HeldOutScore:
    """One model on one corpus.

    Attributes:
        texts: texts scored.
        bytes: their UTF-8 bytes.
        tokens: tokens the model predicted: every text's tokens in its own tokenization, plus one
            closing EOS per text.
        reference_tokens: the reference tokenizer's count of the same (its tokens plus one EOS
            per text).
        nll: summed NLL, nats.
        bits_per_byte: ``nll / ln 2 / bytes``.
        perplexity: per reference token, ``exp(nll / reference_tokens)``.
        own_perplexity: per token of the model's own tokenizer, ``exp(nll / tokens)``; it
            depends on the tokenizer, so it does not compare across tokenizers.
        seconds: wall time of the scoring.
        tokens_per_second: tokens fed to the model (window overlaps included) per second.
    """

    texts: int
    bytes: int
    tokens: int
    reference_tokens: int
    nll: float
    bits_per_byte: float
    perplexity: float
    own_perplexity: float
    seconds: float
    tokens_per_second: float


def utf8_bytes(texts: Sequence[str]) -> int:
    """The UTF-8 length of the texts together.

    >>> utf8_bytes(["héllo", "ok"])
    8
    """
    return sum(len(text.encode("utf-8")) for text in texts)


def held_out_score(texts: Sequence[str], scores: TextNLL, *, reference_tokens: int | None = None) -> HeldOutScore:
    """The figures of :func:`~fusellm_fast.evaluation.nll.text_nll`'s ``scores`` of ``texts``.

    Args:
        texts: the texts scored.
        scores: their scores.
        reference_tokens: the reference tokenizer's count of the texts
            (:func:`~fusellm_fast.evaluation.nll.predicted_tokens` summed); the model's own
            count when omitted.

    Returns:
        The figures.

    Raises:
        InvalidInputError: ``scores`` are not of as many texts.

    >>> from fusellm_fast.demo import DemoConfig, new_model, train_tokenizer
    >>> from fusellm_fast.evaluation import text_nll
    >>> tokenizer = train_tokenizer("byte_bpe", ["one two", "two"], 270)
    >>> model = new_model("gpt2", tokenizer, DemoConfig.quick(), seed=0)
    >>> texts = ["one two", "two one"]
    >>> score = held_out_score(texts, text_nll(model, tokenizer, texts), reference_tokens=6)
    >>> score.bytes, score.reference_tokens, round(score.perplexity, 6) == round(math.exp(score.nll / 6), 6)
    (14, 6, True)
    """
    if len(scores.nll) != len(texts):
        raise InvalidInputError(f"scores: are of {len(scores.nll)} texts, not of the {len(texts)} given")
    nll, tokens, size = scores.total, int(scores.tokens.sum()), utf8_bytes(texts)
    reference = tokens if reference_tokens is None else reference_tokens
    return HeldOutScore(
        texts=len(texts),
        bytes=size,
        tokens=tokens,
        reference_tokens=reference,
        nll=nll,
        bits_per_byte=nll / math.log(2) / size if size else float("nan"),
        perplexity=math.exp(nll / reference),
        own_perplexity=math.exp(nll / tokens),
        seconds=scores.seconds,
        tokens_per_second=scores.forward_tokens / scores.seconds if scores.seconds else 0.0,
    )
