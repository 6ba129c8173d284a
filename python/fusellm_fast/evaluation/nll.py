"""The exact held-out NLL of a causal LM: every token of every text, and the closing EOS, predicted.

Each text is scored as ``EOS text EOS`` in the model's own tokenization: the first EOS is the
context of the text's first token, and the closing EOS is predicted too, so that every model pays
for the whole text and for knowing where it ends, whatever its tokenizer. A sequence longer than
the model's context is scored in sliding windows: each window holds ``max_length`` tokens, starts
``stride`` tokens after the previous one and scores only the tokens no earlier window scored, so
every token is predicted exactly once, with at least ``max_length - stride`` tokens of context
after the first window.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError

__all__ = ["TextNLL", "check_options", "context_length", "predicted_tokens", "text_nll"]


@dataclass(frozen=True)
class TextNLL:
    """Per text, the summed NLL of its tokens and of the closing EOS, and how many tokens that is.

    Attributes:
        nll: float64 ``[texts]``, nats.
        tokens: int64 ``[texts]``: the text's tokens plus the closing EOS.
        forward_tokens: tokens fed to the model, window overlaps included (no padding).
        seconds: wall time of the scoring, tokenization included.
    """

    nll: np.ndarray
    tokens: np.ndarray
    forward_tokens: int
    seconds: float

    @property
    def total(self) -> float:
        """The summed NLL of every text, added in text order."""
        return sum(self.nll.tolist(), 0.0)


@dataclass(frozen=True)
class _Window:
    """Tokens ``[start, stop)`` of text ``text``'s sequence, scoring those from ``first`` on."""

    text: int
    start: int
    stop: int
    first: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def predicted_tokens(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """Per text, the tokens :func:`text_nll` predicts: the text's own, plus the closing EOS.

    >>> from fusellm_fast.demo import train_tokenizer
    >>> predicted_tokens(train_tokenizer("sp_bpe", ["a b c"], 40), ["a b", "c"]).tolist()
    [3, 2]
    """
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return np.array([len(ids) + 1 for ids in encoded], dtype=np.int64)


def check_options(*, batch_size: int, max_length: int | None, stride: int | None) -> None:
    """Raises ``InvalidInputError`` naming the first of :func:`text_nll`'s options that is out of
    range, before any model is loaded.

    >>> check_options(batch_size=8, max_length=16, stride=16)
    Traceback (most recent call last):
    fusellm_fast.errors.InvalidInputError: stride: must be below the 16 tokens of a window, got 16
    """
    for name, value, least in (("batch_size", batch_size, 1), ("max_length", max_length, 2), ("stride", stride, 1)):
        optional = name != "batch_size"
        given = isinstance(value, int) and not isinstance(value, bool) and value >= least
        if not (given or value is None and optional):
            raise InvalidInputError(f"{name}: must be an int of at least {least}, got {value!r}")
    if max_length is not None and stride is not None and stride >= max_length:
        raise InvalidInputError(f"stride: must be below the {max_length} tokens of a window, got {stride}")


def context_length(model: Any) -> int | None:
    """The longest sequence ``model`` is made for (its config's position count), or ``None``."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def text_nll(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    stride: int | None = None,
    show_progress: bool = False,
    description: str = "score",
) -> TextNLL:
    """The summed NLL of every text, each scored as ``EOS text EOS`` (see the module's docstring).

    Sequences of similar length share a forward pass, right-padded and masked; the result is that
    of scoring each text on its own, within float tolerance. Each row's cross-entropy is computed
    in float32 from its own logits, whatever the model's dtype. The model runs where its weights
    are.

    Args:
        model: a causal LM (``transformers``' ``...ForCausalLM``).
        tokenizer: its tokenizer; it must have an EOS token.
        texts: the texts.
        batch_size: sequences (or windows) per forward pass.
        max_length: tokens per forward pass at most; the model's context (:func:`context_length`)
            when omitted, no limit if it has none.
        stride: tokens between the starts of two windows of a long text; ``max_length // 2``
            when omitted.
        show_progress: draw a progress bar of the tokens fed to the model, with their rate.
        description: the bar's label.

    Returns:
        Per text, its NLL and its predicted-token count.

    Raises:
        InvalidInputError: the tokenizer has no EOS token, or an option is out of range.

    >>> import torch
    >>> from fusellm_fast.demo import DemoConfig, new_model, train_tokenizer
    >>> tokenizer = train_tokenizer("sp_bpe", ["a b c", "a b"], 40)
    >>> model = new_model("llama", tokenizer, DemoConfig.quick(), seed=0)
    >>> scores = text_nll(model, tokenizer, ["a b", "c a b c"])
    >>> scores.tokens.tolist(), bool(scores.nll.min() > 0)
    ([3, 5], True)
    """
    import torch

    from ..pipeline.progress import progress_bar

    started = time.perf_counter()
    check_options(batch_size=batch_size, max_length=max_length, stride=stride)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InvalidInputError("tokenizer: has no EOS token, which held-out scoring needs around every text")
    max_length = max_length or context_length(model)
    stride = stride or (max_length // 2 if max_length else None)
    check_options(batch_size=batch_size, max_length=max_length, stride=stride)  # against the model's context
    sequences = [[eos, *ids, eos] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    windows = [window for index, sequence in enumerate(sequences)
               for window in _windows(index, len(sequence), max_length, stride)]
    # Longest first, so that a batch too large for memory fails at once and padding stays small.
    windows.sort(key=lambda w: w.length, reverse=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    nll = np.zeros(len(sequences), dtype=np.float64)
    model.eval()
    forward_tokens = sum(w.length for w in windows)
    with torch.inference_mode(), progress_bar(forward_tokens, description, "tok", show=show_progress) as bar:
        for begin in range(0, len(windows), batch_size):
            batch = windows[begin:begin + batch_size]
            for window, value in zip(batch, _batch_nll(model, sequences, batch, pad)):
                nll[window.text] += value
            bar.update(sum(w.length for w in batch))
    return TextNLL(nll=nll, tokens=np.array([len(s) - 1 for s in sequences], dtype=np.int64),
                   forward_tokens=forward_tokens, seconds=time.perf_counter() - started)


def _windows(text: int, length: int, max_length: int | None, stride: int | None) -> Iterator[_Window]:
    """The windows of a sequence of ``length`` tokens; one if it fits ``max_length``.

    >>> [(w.start, w.stop, w.first) for w in _windows(0, 10, 4, 2)]
    [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    """
    if max_length is None or length <= max_length:
        yield _Window(text, 0, length, 1)
        return
    assert stride is not None
    start, scored = 0, 1
    while True:
        stop = min(start + max_length, length)
        yield _Window(text, start, stop, scored)
        if stop == length:
            return
        start, scored = start + stride, stop


def _batch_nll(model: Any, sequences: list[list[int]], batch: list[_Window], pad: int) -> list[float]:
    """One forward pass over the batch's windows, right-padded with ``pad`` and masked; per window,
    the summed NLL of the tokens it scores, in float32 from its own row of logits."""
    import torch

    ids = torch.full((len(batch), max(w.length for w in batch)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, window in enumerate(batch):
        ids[row, :window.length] = torch.tensor(sequences[window.text][window.start:window.stop])
        mask[row, :window.length] = 1
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits
    values = []
    for row, window in enumerate(batch):
        scored = window.first - window.start
        predicted = logits[row, scored - 1:window.length - 1].float()
        values.append(float(torch.nn.functional.cross_entropy(predicted, ids[row, scored:window.length],
                                                              reduction="sum")))
    return values
