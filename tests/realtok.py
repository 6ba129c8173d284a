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

``realtok_build`` turns the vocabulary files into tokenizers; ``realtok_texts`` holds the sample texts.

>>> tok = load_tokenizer("llama2")
>>> tok.convert_ids_to_tokens(tok(" Hello world", add_special_tokens=False).input_ids)
['▁', '▁Hello', '▁world']
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from realtok_build import (
    BYTE_LEVEL_MARKER,
    SENTENCEPIECE_MARKER,
    build_tokenizer,
    sentencepiece_encoder,
    tiktoken_encoder,
)

# The sample texts are part of this module's interface.
from realtok_texts import EDGE_CASE_TEXTS, sample_texts  # noqa: F401

# Bump when the way tokenizers are built (realtok_build) changes: older builds in the cache are then ignored.
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
    encode = tiktoken_encoder(source) if source.suffix == ".json" else sentencepiece_encoder(source)
    return [(text, encode(text)) for text in sample_texts()]


def _source_file(tokenizer: TokenizerSpec) -> Path:
    path = _sources_dir() / tokenizer.source
    if not path.is_file():
        package = next(p for p in PACKAGES if tokenizer.source in p.files)
        _fetch_package(package)
    return path


def _ensure_built(name: str) -> Path:
    target = _tokenizer_dir(name)
    if (target / "tokenizer.json").is_file():
        return target
    tokenizer = build_tokenizer(TOKENIZERS[name], _source_file(TOKENIZERS[name]))
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
