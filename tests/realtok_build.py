"""Hugging Face tokenizers built from the vocabulary files that ``realtok`` fetches, and the files'
own encoders.

The GGUF files of llama.cpp, Mistral's SentencePiece model and its Tekken vocabulary are read into
one :class:`_Vocabulary` form, then laid out as the families' own ``tokenizer.json`` files lay them out:
SentencePiece BPE with byte fallback, or byte-level BPE with the family's split pattern.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from realtok import TokenizerSpec

SENTENCEPIECE_MARKER = "\u2581"  # ▁
BYTE_LEVEL_MARKER = "\u0120"  # Ġ


@dataclass(frozen=True)
class _Vocabulary:
    """A vocabulary as the source file states it, before it becomes a ``tokenizers.Tokenizer``."""

    tokens: list[str]
    kinds: list[str]  # "normal", "control", "user", "byte" or "unknown", per token
    embedding_rows: int  # ids the model has, with any padding beyond the tokens
    scores: list[float] | None  # SentencePiece only
    merges: list[tuple[str, str]] | None  # byte-level only
    bos: str | None
    eos: str | None
    unk: str | None
    pad: str | None


_GGUF_TOKEN_KINDS = {1: "normal", 2: "unknown", 3: "control", 4: "user", 6: "byte"}

# Split patterns of the byte-level vocabularies, as their own tokenizer.json files state them.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass(frozen=True)
class _ByteLevelRecipe:
    split_pattern: str | None  # None: GPT-2's own pattern, built into the ByteLevel pre-tokenizer
    nfc: bool
    ignore_merges: bool  # tiktoken-made vocabularies take a whole pre-token when it is a token


# Keyed by the GGUF's tokenizer.ggml.pre.
_GGUF_BYTE_LEVEL_RECIPES = {
    "gpt-2": _ByteLevelRecipe(None, nfc=False, ignore_merges=False),
    "mpt": _ByteLevelRecipe(None, nfc=True, ignore_merges=False),
    "llama-bpe": _ByteLevelRecipe(_LLAMA3_SPLIT, nfc=False, ignore_merges=True),
    "qwen2": _ByteLevelRecipe(_QWEN2_SPLIT, nfc=True, ignore_merges=False),
}


def build_tokenizer(tokenizer: TokenizerSpec, source: Path):
    """A ``PreTrainedTokenizerFast`` built from ``source``, the vocabulary file of ``tokenizer``."""
    if source.suffix == ".gguf":
        vocabulary, recipe = _read_gguf(source)
    elif source.suffix == ".json":
        vocabulary, recipe = _tekken_vocabulary(source)
    else:
        vocabulary, recipe = _read_sentencepiece(source), None
    found = (len(vocabulary.tokens), vocabulary.embedding_rows)
    if found != (tokenizer.vocab_size, tokenizer.embedding_rows):
        raise RuntimeError(f"{source.name} has {found[0]} tokens and {found[1]} ids, not the "
                           f"{tokenizer.vocab_size} and {tokenizer.embedding_rows} that {tokenizer.name} has")
    if tokenizer.kind == "sentencepiece":
        backend = _sentencepiece_bpe(vocabulary)
    else:
        backend = _byte_level_bpe(vocabulary, recipe)
    return _wrap(backend, vocabulary, adds_bos=tokenizer.adds_bos)


def _read_gguf(path: Path) -> tuple[_Vocabulary, _ByteLevelRecipe | None]:
    from gguf import GGUFReader

    fields = GGUFReader(path).fields

    def value(key: str, default=None):
        return fields[key].contents() if key in fields else default

    tokens = value("tokenizer.ggml.tokens")
    kinds = [_GGUF_TOKEN_KINDS[t] for t in value("tokenizer.ggml.token_type")]
    embedding_rows = len(tokens)
    # llama.cpp pads some vocabularies to the embedding size with "[PAD<id>]" placeholders that the
    # model's own tokenizer does not have; they all come last.
    while kinds[-1] == "user" and tokens[-1] == f"[PAD{len(tokens) - 1}]":
        tokens.pop()
        kinds.pop()

    def token(key: str) -> str | None:
        index = value(f"tokenizer.ggml.{key}_token_id")
        return tokens[index] if index is not None else None

    merges = value("tokenizer.ggml.merges")
    vocabulary = _Vocabulary(
        tokens=tokens, kinds=kinds, embedding_rows=embedding_rows,
        scores=value("tokenizer.ggml.scores"),
        merges=[tuple(m.split(" ")) for m in merges] if merges is not None else None,
        bos=token("bos"), eos=token("eos"), unk=token("unknown"), pad=token("padding"),
    )
    recipe = _GGUF_BYTE_LEVEL_RECIPES[value("tokenizer.ggml.pre")] if merges is not None else None
    return vocabulary, recipe


def _read_sentencepiece(path: Path) -> _Vocabulary:
    import sentencepiece

    model = sentencepiece.SentencePieceProcessor(model_file=str(path))
    ids = range(model.get_piece_size())

    def kind(i: int) -> str:
        if model.is_unknown(i):
            return "unknown"
        if model.is_control(i):
            return "control"
        return "byte" if model.is_byte(i) else "normal"

    def piece(i: int) -> str | None:
        return model.id_to_piece(i) if i >= 0 else None  # -1: the model has no such token

    return _Vocabulary(
        tokens=[model.id_to_piece(i) for i in ids], kinds=[kind(i) for i in ids], embedding_rows=len(ids),
        scores=[model.get_score(i) for i in ids], merges=None,
        bos=piece(model.bos_id()), eos=piece(model.eos_id()), unk=piece(model.unk_id()), pad=piece(model.pad_id()),
    )


# Names of Tekken's first special tokens, for files that do not list them (mistral-common's defaults);
# the rest up to the file's count are "<SPECIAL_{id}>".
_TEKKEN_SPECIAL_TOKENS = (
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
    "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
)


@dataclass(frozen=True)
class _Tekken:
    pattern: str
    special_tokens: list[str]
    token_bytes: list[bytes]  # by rank; rank r has token id r + len(special_tokens)


def _read_tekken(path: Path) -> _Tekken:
    import json

    data = json.loads(path.read_text(encoding="utf-8"))
    config = data["config"]
    special_count = config["default_num_special_tokens"]
    named = [t["token_str"] for t in data["special_tokens"]] if "special_tokens" in data else _TEKKEN_SPECIAL_TOKENS
    special = [*named, *(f"<SPECIAL_{i}>" for i in range(len(named), special_count))]
    ranked = data["vocab"][: config["default_vocab_size"] - special_count]
    return _Tekken(config["pattern"], special, [base64.b64decode(t["token_bytes"]) for t in ranked])


def _tekken_vocabulary(path: Path) -> tuple[_Vocabulary, _ByteLevelRecipe]:
    tekken = _read_tekken(path)
    ranks = {token: rank for rank, token in enumerate(tekken.token_bytes)}
    # tiktoken merges any two adjacent parts whose concatenation is a token, lowest rank first: as
    # BPE merges, that is every split of every token into two tokens, ordered by the token's rank.
    merges = [(_spell_bytes(token[:cut]), _spell_bytes(token[cut:]))
              for token in tekken.token_bytes
              for cut in range(1, len(token))
              if token[:cut] in ranks and token[cut:] in ranks]
    vocabulary = _Vocabulary(
        tokens=[*tekken.special_tokens, *map(_spell_bytes, tekken.token_bytes)],
        kinds=["control"] * len(tekken.special_tokens) + ["normal"] * len(tekken.token_bytes),
        embedding_rows=len(tekken.special_tokens) + len(tekken.token_bytes),
        scores=None, merges=merges, bos="<s>", eos="</s>", unk="<unk>", pad=None,
    )
    return vocabulary, _ByteLevelRecipe(tekken.pattern, nfc=False, ignore_merges=True)


@functools.lru_cache(maxsize=1)
def _byte_alphabet() -> tuple[str, ...]:
    """GPT-2's printable stand-in for each byte value: printable Latin-1 bytes stand for themselves,
    the others take code points from U+0100 upwards, in byte order (so a space becomes Ġ)."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    others = iter(range(256, 512))
    return tuple(chr(b) if b in printable else chr(next(others)) for b in range(256))


def _spell_bytes(token: bytes) -> str:
    alphabet = _byte_alphabet()
    return "".join(alphabet[b] for b in token)


def _sentencepiece_merges(vocabulary: _Vocabulary) -> list[tuple[str, str]]:
    """The BPE merges a SentencePiece BPE model implies: it joins the adjacent pair whose result
    scores highest, so every split of a normal piece into two pieces is a merge, ranked by score."""
    pieces = {t for t, k in zip(vocabulary.tokens, vocabulary.kinds) if k == "normal"}
    scored = [(score, index, (piece[:cut], piece[cut:]))
              for index, (piece, kind, score) in enumerate(zip(vocabulary.tokens, vocabulary.kinds, vocabulary.scores))
              if kind == "normal"
              for cut in range(1, len(piece))
              if piece[:cut] in pieces and piece[cut:] in pieces]
    scored.sort(key=lambda entry: (-entry[0], entry[1]))
    return [merge for _, _, merge in scored]


def _sentencepiece_bpe(vocabulary: _Vocabulary):
    """Llama-2's tokenizer.json layout: a space becomes ▁ and one ▁ is put in front of the text; no
    pre-tokenizer; characters outside the vocabulary fall back to <0xNN> byte tokens."""
    from tokenizers import Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    backend = Tokenizer(BPE(
        vocab={token: i for i, token in enumerate(vocabulary.tokens)},
        merges=_sentencepiece_merges(vocabulary),
        unk_token=vocabulary.unk, fuse_unk=True, byte_fallback=True,
    ))
    backend.normalizer = normalizers.Sequence([
        normalizers.Prepend(SENTENCEPIECE_MARKER), normalizers.Replace(" ", SENTENCEPIECE_MARKER)])
    backend.decoder = decoders.Sequence([
        decoders.Replace(SENTENCEPIECE_MARKER, " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0)])
    return backend


def _byte_level_bpe(vocabulary: _Vocabulary, recipe: _ByteLevelRecipe):
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    backend = Tokenizer(BPE(
        vocab={token: i for i, token in enumerate(vocabulary.tokens)},
        merges=vocabulary.merges, ignore_merges=recipe.ignore_merges,
    ))
    if recipe.nfc:
        backend.normalizer = normalizers.NFC()
    if recipe.split_pattern is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(recipe.split_pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    return backend


def _wrap(backend, vocabulary: _Vocabulary, *, adds_bos: bool):
    """The ``PreTrainedTokenizerFast`` around ``backend``, with its added tokens and special roles."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    # Control tokens are matched whole in text and skipped by decode(skip_special_tokens=True); the
    # user-defined ones (GPT-NeoX's runs of spaces) are matched whole too, but are ordinary text.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, k in zip(vocabulary.tokens, vocabulary.kinds) if k in ("control", "unknown")])
    backend.add_tokens([AddedToken(t, special=False, normalized=True)
                        for t, k in zip(vocabulary.tokens, vocabulary.kinds) if k == "user"])
    if adds_bos:
        bos_id = vocabulary.tokens.index(vocabulary.bos)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{vocabulary.bos} $A", pair=f"{vocabulary.bos} $A {vocabulary.bos} $B",
            special_tokens=[(vocabulary.bos, bos_id)])
    roles = {"bos_token": vocabulary.bos, "eos_token": vocabulary.eos,
             "unk_token": vocabulary.unk, "pad_token": vocabulary.pad}
    return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False,
                                   **{role: token for role, token in roles.items() if token is not None})


# --- the files' own encoders, for the reference cases ---------------------------------------------

def tiktoken_encoder(path: Path):
    """The encoder of ``tiktoken`` on the Tekken file ``path``, its ranks counted after the special tokens."""
    import tiktoken

    tekken = _read_tekken(path)
    encoding = tiktoken.Encoding(name=path.stem, pat_str=tekken.pattern,
                                 mergeable_ranks=dict(zip(tekken.token_bytes, range(len(tekken.token_bytes)))),
                                 special_tokens={})
    return lambda text: [rank + len(tekken.special_tokens) for rank in encoding.encode_ordinary(text)]


def sentencepiece_encoder(path: Path):
    """The encoder of ``sentencepiece`` on the model file ``path``."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    return processor.encode
