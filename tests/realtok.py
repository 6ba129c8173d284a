"""Real LLM tokenizers for the tests and benchmarks, built offline.

No model hub is needed: every vocabulary comes from a file that ships inside a package on PyPI.

- The ``llama-cpp-python`` sdist vendors llama.cpp's vocab-only GGUF files, with test vectors beside
  them: texts, and the token ids that the model's own Hugging Face tokenizer gives for them.
- The ``mistral-common`` wheel carries Mistral's SentencePiece model and its Tekken vocabulary
  (tiktoken-style byte-level BPE).

``fetch_all()`` downloads both packages once with pip, keeps only the needed files, and builds one
Hugging Face tokenizer directory per vocabulary (``save_pretrained``); ``load_tokenizer(name)`` loads
such a directory with ``AutoTokenizer.from_pretrained``, as any local model would be loaded. Run this
file as a script to prepare the cache before the tests (``--strict`` makes a failed download an error).
The cache is ``$FUSELLM_FAST_TESTDATA``, by default ``~/.cache/fusellm_fast/testdata``.

>>> tok = load_tokenizer("llama2")
>>> tok.convert_ids_to_tokens(tok(" Hello world", add_special_tokens=False).input_ids)
['▁', '▁Hello', '▁world']
"""

from __future__ import annotations

import base64
import functools
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SENTENCEPIECE_MARKER = "\u2581"  # ▁
BYTE_LEVEL_MARKER = "\u0120"  # Ġ

# Bump when the way tokenizers are built changes: older builds in the cache are then ignored.
_BUILD_VERSION = 1


class RealTokenizerUnavailable(RuntimeError):
    """The vocabulary files are not in the cache and could not be downloaded."""


@dataclass(frozen=True)
class SourcePackage:
    """A package on PyPI that ships vocabulary files."""

    requirement: str
    distribution: Literal["sdist", "wheel"]
    member_dir: str  # the folder, inside the archive, that holds the files
    files: tuple[str, ...]


@dataclass(frozen=True)
class TokenizerSpec:
    """One real tokenizer: where it comes from and what it must look like.

    ``vocab_size`` is ``len(tokenizer)``, as the model's own tokenizer reports it; ``embedding_rows``
    is the model's (padded) embedding size where that differs. ``normalization`` is what
    ``decode(encode(text))`` gives back: the text itself, or its NFC form. ``adds_bos``: whether the
    real tokenizer puts BOS in front when asked to add special tokens.
    """

    name: str
    models: str
    kind: Literal["sentencepiece", "byte-level"]
    source: str
    vocab_size: int
    embedding_rows: int
    normalization: Literal["none", "NFC"]
    adds_bos: bool

    @property
    def space_marker(self) -> str:
        return SENTENCEPIECE_MARKER if self.kind == "sentencepiece" else BYTE_LEVEL_MARKER


_LLAMA_CPP_VOCABS = ("llama-spm", "mpt", "llama-bpe", "qwen2", "gpt-2")

PACKAGES = (
    SourcePackage(
        requirement="llama-cpp-python==0.3.36",
        distribution="sdist",
        member_dir="vendor/llama.cpp/models/",
        files=tuple(f"ggml-vocab-{v}.gguf{ext}" for v in _LLAMA_CPP_VOCABS for ext in ("", ".inp", ".out")),
    ),
    SourcePackage(
        requirement="mistral-common==1.13.1",
        distribution="wheel",
        member_dir="data/",
        files=("tokenizer.model.v1", "tekken_240718.json"),
    ),
)

TOKENIZERS = {
    entry.name: entry
    for entry in (
        TokenizerSpec("llama2", "Llama-2", "sentencepiece", "ggml-vocab-llama-spm.gguf",
                      vocab_size=32000, embedding_rows=32000, normalization="none", adds_bos=True),
        TokenizerSpec("mistral", "Mistral-7B v0.1", "sentencepiece", "tokenizer.model.v1",
                      vocab_size=32000, embedding_rows=32000, normalization="none", adds_bos=True),
        TokenizerSpec("gpt2", "GPT-2", "byte-level", "ggml-vocab-gpt-2.gguf",
                      vocab_size=50257, embedding_rows=50257, normalization="none", adds_bos=False),
        TokenizerSpec("gpt-neox", "GPT-NeoX-20B, MPT-7B", "byte-level", "ggml-vocab-mpt.gguf",
                      vocab_size=50277, embedding_rows=50432, normalization="NFC", adds_bos=False),
        TokenizerSpec("llama3", "Llama-3", "byte-level", "ggml-vocab-llama-bpe.gguf",
                      vocab_size=128256, embedding_rows=128256, normalization="none", adds_bos=True),
        TokenizerSpec("qwen2", "Qwen2", "byte-level", "ggml-vocab-qwen2.gguf",
                      vocab_size=151646, embedding_rows=151936, normalization="NFC", adds_bos=False),
        TokenizerSpec("mistral-tekken", "Mistral-NeMo (Tekken)", "byte-level", "tekken_240718.json",
                      vocab_size=131072, embedding_rows=131072, normalization="none", adds_bos=True),
    )
}


def cache_dir() -> Path:
    """The cache folder: ``$FUSELLM_FAST_TESTDATA``, else ``~/.cache/fusellm_fast/testdata``."""
    configured = os.environ.get("FUSELLM_FAST_TESTDATA")
    return Path(configured) if configured else Path.home() / ".cache" / "fusellm_fast" / "testdata"


def _sources_dir() -> Path:
    return cache_dir() / "sources"


def _tokenizer_dir(name: str) -> Path:
    # The saved tokenizer_config.json names a transformers class, which differs between major versions.
    transformers_major = importlib.metadata.version("transformers").split(".")[0]
    return cache_dir() / f"tokenizers-v{_BUILD_VERSION}-transformers{transformers_major}" / name


def fetch_all() -> Path:
    """Downloads the source packages (once), extracts their vocabulary files and builds every tokenizer.

    Idempotent: when everything is cached it touches no network and returns at once.

    Returns:
        The cache folder.

    Raises:
        RealTokenizerUnavailable: a package could not be downloaded (no network, no pip).

    >>> (fetch_all() / "sources" / "tekken_240718.json").is_file()
    True
    """
    for package in PACKAGES:
        _fetch_package(package)
    for name in TOKENIZERS:
        _ensure_built(name)
    return cache_dir()


def _fetch_package(package: SourcePackage) -> None:
    sources = _sources_dir()
    if all((sources / f).is_file() for f in package.files):
        return
    sources.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="download-") as download_dir:
        archive = _pip_download(package, Path(download_dir))
        _extract(package, archive, Path(download_dir))


def _pip_download(package: SourcePackage, into: Path) -> Path:
    project = package.requirement.split("==")[0]
    binary_choice = "--no-binary" if package.distribution == "sdist" else "--only-binary"
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               binary_choice, project, package.requirement, "--dest", str(into)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        raise RealTokenizerUnavailable(
            f"could not download {package.requirement} with pip: {detail.strip()[-500:]}") from exc
    (archive,) = [p for p in into.iterdir() if p.is_file()]
    return archive


def _extract(package: SourcePackage, archive: Path, scratch: Path) -> None:
    """Copies the wanted members out of ``archive``; each file appears in the cache whole or not at all."""
    wanted = {f"{package.member_dir}{f}": f for f in package.files}
    found = {}

    def keep(member_path: str, read) -> None:
        for suffix, file_name in wanted.items():
            if member_path.endswith(f"/{suffix}"):
                partial = scratch / file_name
                partial.write_bytes(read())
                found[file_name] = partial

    if package.distribution == "sdist":
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isfile():
                    keep(member.name, lambda m=member: tar.extractfile(m).read())
    else:
        with zipfile.ZipFile(archive) as wheel:
            for member_name in wheel.namelist():
                keep(member_name, lambda n=member_name: wheel.read(n))
    missing = set(package.files) - set(found)
    if missing:
        raise RealTokenizerUnavailable(f"{package.requirement} no longer ships {sorted(missing)}")
    for file_name, partial in found.items():
        os.replace(partial, _sources_dir() / file_name)


def available() -> list[str]:
    """Names of the tokenizers that can be loaded without any download.

    >>> set(available()) <= set(TOKENIZERS)
    True
    """
    return [name for name, entry in TOKENIZERS.items()
            if (_tokenizer_dir(name) / "tokenizer.json").is_file() or (_sources_dir() / entry.source).is_file()]


def spec(name: str) -> TokenizerSpec:
    """The :class:`TokenizerSpec` of ``name``.

    Raises:
        ValueError: ``name`` is not one of ``TOKENIZERS``.

    >>> spec("qwen2").space_marker
    'Ġ'
    """
    if name not in TOKENIZERS:
        raise ValueError(f"name must be one of {sorted(TOKENIZERS)}, got {name!r}")
    return TOKENIZERS[name]


def tokenizer_dir(name: str) -> Path:
    """The local folder of the real tokenizer ``name``, built on first use; loadable with
    ``AutoTokenizer.from_pretrained``."""
    spec(name)
    return _ensure_built(name)


def load_tokenizer(name: str):
    """A fresh ``transformers.PreTrainedTokenizerFast`` for the real tokenizer ``name``.

    It is loaded from a local folder with ``AutoTokenizer.from_pretrained``; the folder is built on
    first use, downloading its source package if it is not cached yet.

    Args:
        name: one of ``TOKENIZERS``.

    Returns:
        The tokenizer; ``add_special_tokens=True`` adds BOS where the real model's tokenizer does.

    Raises:
        ValueError: unknown ``name``.
        RealTokenizerUnavailable: its files are not cached and cannot be downloaded.

    >>> load_tokenizer("gpt2").convert_ids_to_tokens([15496, 995])
    ['Hello', 'Ġworld']
    """
    return _load(tokenizer_dir(name))


def _load(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def load_tokenizer_or_skip(name: str):
    """:func:`load_tokenizer`, or a pytest skip saying why the data is missing."""
    try:
        return load_tokenizer(name)
    except RealTokenizerUnavailable as exc:
        import pytest

        pytest.skip(f"real tokenizer {name!r} unavailable: {exc}")


def vocab(name: str) -> list[str]:
    """Every token string of ``name`` in id order, special tokens included (``convert_ids_to_tokens``).

    >>> vocab("llama2")[:4]
    ['<unk>', '<s>', '</s>', '<0x00>']
    """
    spec(name)
    return list(_vocab_in(_ensure_built(name)))


@functools.lru_cache(maxsize=None)
def _vocab_in(folder: Path) -> tuple[str, ...]:
    tokenizer = _load(folder)
    return tuple(tokenizer.convert_ids_to_tokens(range(len(tokenizer))))


def reference_cases(name: str) -> list[tuple[str, list[int]]]:
    """Texts with the token ids that the model's own tokenizer gives (no special tokens added).

    For llama.cpp's vocabularies these are its test vectors, made with the model's Hugging Face
    tokenizer; for Mistral's, :func:`sample_texts` encoded by ``sentencepiece`` or ``tiktoken``
    from the original vocabulary files.

    >>> reference_cases("llama2")[12]
    (' Hello world', [29871, 15043, 3186])
    """
    source = _source_file(spec(name))
    if source.suffix == ".gguf":
        separator = "\n__ggml_vocab_test__\n"
        texts = source.with_name(source.name + ".inp").read_text(encoding="utf-8").split(separator)[:-1]
        lines = source.with_name(source.name + ".out").read_text(encoding="utf-8").split("\n")[:-1]
        return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, lines, strict=True)]
    encode = _tiktoken_encoder(source) if source.suffix == ".json" else _sentencepiece_encoder(source)
    return [(text, encode(text)) for text in sample_texts()]


def _tiktoken_encoder(path: Path):
    import tiktoken

    tekken = _read_tekken(path)
    encoding = tiktoken.Encoding(name=path.stem, pat_str=tekken.pattern,
                                 mergeable_ranks=dict(zip(tekken.token_bytes, range(len(tekken.token_bytes)))),
                                 special_tokens={})
    return lambda text: [rank + len(tekken.special_tokens) for rank in encoding.encode_ordinary(text)]


def _sentencepiece_encoder(path: Path):
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    return processor.encode


def _source_file(tokenizer: TokenizerSpec) -> Path:
    path = _sources_dir() / tokenizer.source
    if not path.is_file():
        package = next(p for p in PACKAGES if tokenizer.source in p.files)
        _fetch_package(package)
    return path


# --- building the tokenizers ---------------------------------------------------------------------

def _ensure_built(name: str) -> Path:
    target = _tokenizer_dir(name)
    if (target / "tokenizer.json").is_file():
        return target
    tokenizer = _build(TOKENIZERS[name])
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-")
    try:
        tokenizer.save_pretrained(scratch)
        try:
            os.rename(scratch, target)  # atomic: a folder is there complete or not at all
        except OSError:
            if not (target / "tokenizer.json").is_file():  # else another process built it first
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


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


def _build(tokenizer: TokenizerSpec):
    """A ``PreTrainedTokenizerFast`` built from the source file of ``tokenizer``."""
    source = _source_file(tokenizer)
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


# --- sample texts ---------------------------------------------------------------------------------

EDGE_CASE_TEXTS = (
    "Hello world",
    " Hello world, with a leading space.",
    "café naïve résumé façade Äpfel Straße",
    "cafe\u0301 written with a combining accent",
    "日本語のテキストを分割する。中文分词测试。한국어 텍스트.",
    "Ελληνικά, русский язык, العربية, עברית, हिन्दी, ไทย",
    "👍🏽🎉 family: 👨\u200d👩\u200d👧, flags 🇫🇷🇯🇵",
    "rare characters: ☃ ᚠᛇᚻ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0001f9ec ꙮ",
    "literal byte tokens in text: <0x0A> <0xFF> <0x>",
    "a  b   c    d     e      f",
    "   leading spaces and trailing ones   ",
    "\tone tab\t\ttwo tabs\t",
    "line one\nline two\n\n\nline five\r\nwindows line\r\n",
    "def square(x: int) -> int:\n    return x ** 2  # the square\n\n\nprint(square(12))\n",
    "if (a != b && c >= 0) { x += y[i]; } else { return -1; }",
    "3.14159 2,718 1e-10 -42 0xDEADBEEF 1234567890 007 ½ ⅞ ²",
    "I'm sure they'll say WE'VE done it; don't THEY'D?",
    "https://example.org/path/to/page?q=1&r=two#frag user@example.com",
    "zero\u200bwidth space, non\u00a0breaking space, soft\u00adhyphen",
    "Pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious",
    "MIXED case Words, ALLCAPS and camelCaseIdentifiers_with_underscores",
    "--- *** ___ ... !!! ??? ((( ))) [[[ ]]] <<< >>>",
)


def _cut(text: str, max_chars: int) -> str:
    """``text`` up to the last line break within ``max_chars`` (or cut there if no line ends before)."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    line_end = head.rfind("\n")
    return head[: line_end + 1] if line_end > 0 else head


_HELP_TOPICS = ("assignment", "class", "exceptions", "for", "formatstrings", "if", "lambda", "numbers",
                "specialnames", "strings", "truth", "with")
_STDLIB_MODULES = ("textwrap.py", "heapq.py", "bisect.py", "fractions.py", "shlex.py", "difflib.py",
                   "json/decoder.py", "string.py", "calendar.py", "statistics.py", "csv.py", "colorsys.py")


def sample_texts(*, max_chars: int = 2000) -> list[str]:
    """Real texts for alignment tests, made offline: :data:`EDGE_CASE_TEXTS`, then English help text
    from ``pydoc_data.topics`` and Python source files of the standard library, each cut to at most
    ``max_chars`` characters at a line break. All texts are non-empty.

    Args:
        max_chars: longest text kept from a help topic or source file.

    Raises:
        ValueError: ``max_chars`` is below 1.

    >>> len(sample_texts(max_chars=500)) > len(EDGE_CASE_TEXTS)
    True
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    from pydoc_data.topics import topics

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    help_texts = [topics[t] for t in _HELP_TOPICS if t in topics]
    sources = [(stdlib / m).read_text(encoding="utf-8") for m in _STDLIB_MODULES if (stdlib / m).is_file()]
    return [*EDGE_CASE_TEXTS, *(_cut(t, max_chars) for t in help_texts + sources)]


def expected_round_trip(name: str, text: str) -> str:
    """What ``decode(encode(text))`` gives for the tokenizer ``name``: the text, or its NFC form."""
    return unicodedata.normalize("NFC", text) if spec(name).normalization == "NFC" else text


def _main(argv: list[str]) -> int:
    strict = "--strict" in argv
    started = time.perf_counter()
    try:
        folder = fetch_all()
    except RealTokenizerUnavailable as exc:
        print(f"real tokenizers unavailable ({exc}); the tests that need them will be skipped", file=sys.stderr)
        return 1 if strict else 0
    print(f"real tokenizers ready in {folder} ({time.perf_counter() - started:.1f} s): {', '.join(available())}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
