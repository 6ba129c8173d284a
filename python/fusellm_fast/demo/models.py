"""The demo's tokenizers and models: trained from scratch, pretrained briefly, scored on held-out text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ..errors import InvalidInputError
from ..evaluation import held_out_score, predicted_tokens, text_nll
from ..pipeline.progress import progress_bar
from .config import DemoConfig

__all__ = ["HeldOutScores", "TokenizerKind", "max_tokens", "new_model", "packed_blocks", "pretrain", "train_tokenizer"]

TokenizerKind = Literal["byte_bpe", "sp_bpe"]


def train_tokenizer(kind: TokenizerKind, texts: Sequence[str], vocab_size: int) -> Any:
    """A small BPE tokenizer trained on ``texts``, as a ``PreTrainedTokenizerFast``.

    ``"byte_bpe"`` is GPT-2-style byte-level BPE (space marker ``Ġ``); ``"sp_bpe"`` is
    SentencePiece-style BPE (``▁``, an unknown-token for characters it never saw). Both trainers
    are deterministic, so the same texts give the same vocabulary.

    >>> tokenizer = train_tokenizer("sp_bpe", ["a b c", "a b"], 40)
    >>> tokenizer.convert_ids_to_tokens(tokenizer("a b")["input_ids"])
    ['▁a', '▁b']
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "byte_bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        special = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    elif kind == "sp_bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "</s>"], show_progress=False)
        special = {"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}
    else:
        raise InvalidInputError(f"kind: must be 'byte_bpe' or 'sp_bpe', got {kind!r}")
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)


def new_model(architecture: str, tokenizer: Any, config: DemoConfig, seed: int) -> Any:
    """A freshly initialised small causal LM (``"gpt2"`` or ``"llama"``) for ``tokenizer``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    ids = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    positions = max_tokens(config)
    if architecture == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=config.hidden_size, n_layer=config.layers,
                                          n_head=config.heads, n_positions=positions, **ids))
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=3 * config.hidden_size,
        num_hidden_layers=config.layers, num_attention_heads=config.heads, num_key_value_heads=config.heads,
        max_position_embeddings=positions, **ids))


def max_tokens(config: DemoConfig) -> int:
    """Room for any piece of text in any tokenizer: at most two tokens per character (byte-level
    BPE spends one token per UTF-8 byte on unseen characters), plus EOS."""
    return 2 * config.chunk_chars + 8


def packed_blocks(tokenizer: Any, texts: Sequence[str], block_size: int) -> np.ndarray:
    """The texts' tokens, each followed by EOS, concatenated and cut into ``[blocks, block_size]``."""
    stream = [token for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]
              for token in (*ids, tokenizer.eos_token_id)]
    usable = len(stream) // block_size * block_size
    return np.asarray(stream[:usable], dtype=np.int64).reshape(-1, block_size)


def pretrain(model: Any, blocks: np.ndarray, *, steps: int, batch_size: int, learning_rate: float,
             seed: int, description: str = "pretrain", show_progress: bool = False) -> list[float]:
    """Plain causal-LM training from scratch (AdamW, warm-up then cosine decay); the step losses.

    With ``show_progress`` a bar named ``description`` counts the steps, the loss beside it."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    data = torch.from_numpy(blocks)
    losses = []
    model.train()
    bar = progress_bar(steps, description, "step", show=show_progress)
    for _ in range(steps):
        batch = data[torch.randint(len(data), (batch_size,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        bar.set_postfix_str(f"loss {losses[-1]:.3f}", refresh=False)
        bar.update()
    bar.close()
    return losses


class HeldOutScores:
    """Every model's held-out perplexity per target token and bits per byte, per domain.

    Each model's summed NLL over a domain's held-out texts (its own tokenization, see
    :func:`fusellm_fast.evaluation.text_nll`) is divided by the target's token count of the
    same texts, so that models with different tokenizers are compared on the same footing.
    """

    def __init__(self, held_out: dict[str, list[str]], target_tokenizer: Any) -> None:
        self.held_out = held_out
        self.target_tokenizer = target_tokenizer
        self.perplexity: dict[str, dict[str, float]] = {}
        self.bits_per_byte: dict[str, dict[str, float]] = {}
        self._target_tokens = {d: int(predicted_tokens(target_tokenizer, texts).sum()) for d, texts in held_out.items()}

    def add(self, name: str, model: Any, tokenizer: Any) -> None:
        """Scores ``model`` (with its ``tokenizer``) under ``name``."""
        self.perplexity[name], self.bits_per_byte[name] = {}, {}
        for domain, texts in self.held_out.items():
            scores = text_nll(model, tokenizer, texts)
            score = held_out_score(texts, scores, reference_tokens=self._target_tokens[domain])
            self.perplexity[name][domain] = round(score.perplexity, 3)
            self.bits_per_byte[name][domain] = round(score.bits_per_byte, 4)
