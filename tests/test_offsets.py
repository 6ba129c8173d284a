"""Byte normalization and the linear-time alignments (``method="offsets"`` and
``"boundary"``, ``candidates="prefix"``): round trips on real tokenizers and
properties on random tokenizations."""

from __future__ import annotations

import functools
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusellm_fast as ff
from fusellm_fast.alignment import Aligner, align_batch
from fusellm_fast.hf import special_ids
from fusellm_fast.vocab_map import VocabMap, token_bytes
from realtok import TOKENIZERS, expected_round_trip, load_tokenizer_or_skip, sample_texts

TEXTS = sample_texts(max_chars=600)


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_token_bytes_round_trip_real_text(name):
    tokenizer = load_tokenizer_or_skip(name)
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    pieces = token_bytes(vocabulary, special_ids=special_ids(tokenizer))
    # SentencePiece puts one space in front of the text (its dummy prefix).
    prefix = b" " if TOKENIZERS[name].kind == "sentencepiece" else b""
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert b"".join(pieces[i] for i in ids) == prefix + expected_round_trip(name, text).encode(), text


@pytest.mark.parametrize("name", ["llama2", "llama3"])
def test_special_tokens_have_no_bytes(name):
    tokenizer = load_tokenizer_or_skip(name)
    aligner = Aligner.from_tokenizers(tokenizer, tokenizer)
    ids = tokenizer("Hello world").input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert aligner.text_bytes(ids, side="source") == aligner.text_bytes(ids[1:], side="source")


@functools.lru_cache(maxsize=4)
def _real_pair(source_name, target_name):
    source, target = load_tokenizer_or_skip(source_name), load_tokenizer_or_skip(target_name)
    return source, target, Aligner.from_tokenizers(source, target)


def _tokenized(tokenizer, texts):
    return [np.array(tokenizer(t, add_special_tokens=False).input_ids, dtype=np.int64) for t in texts]


def _random_topk(source_ids, size, k, rng):
    topk = [rng.integers(0, size, size=(len(s), k)).astype(np.int64) for s in source_ids]
    logits = [rng.normal(size=(len(s), k)).astype(np.float32) for s in source_ids]
    return topk, logits


def _ends(aligner, ids, side):
    lengths = [len(aligner.text_bytes([i], side=side)) for i in ids]
    return np.cumsum(lengths)


@pytest.mark.parametrize("method", ["offsets", "boundary"])
@pytest.mark.parametrize("pair", [("gpt-neox", "llama2"), ("mistral-tekken", "llama3")])
def test_matched_pairs_end_at_the_same_byte_real(pair, method):
    source, target, aligner = _real_pair(*pair)
    # Texts that NFC leaves alone, so that both tokenizers spell the same bytes.
    texts = [t for t in TEXTS[:16] if unicodedata.normalize("NFC", t) == t]
    t_ids, s_ids = _tokenized(target, texts), _tokenized(source, texts)
    # The source's own tokens as top-1 candidates show which source position each
    # matched target position took.
    topk = [s.reshape(-1, 1) for s in s_ids]
    logits = [np.zeros((len(s), 1), np.float32) for s in s_ids]
    out = align_batch(aligner, t_ids, s_ids, topk, logits, method=method, candidates="prefix")
    assert out.counts.fallback_texts == 0
    assert out.counts.matched > 0.5 * out.counts.positions
    for b, (t, s) in enumerate(zip(t_ids, s_ids)):
        t_ends, s_ends = _ends(aligner, t, "target"), _ends(aligner, s, "source")
        shift = int(s_ends[-1] - t_ends[-1])  # SentencePiece's leading space
        t_ends, s_ends = t_ends + max(shift, 0), s_ends + max(-shift, 0)
        end_to_position = {int(e): i for i, e in enumerate(s_ends)}
        for j in np.flatnonzero(out.status[b, : len(t)] == ff.PositionStatus.MATCHED):
            assert int(t_ends[j]) in end_to_position
            assert out.source_positions[b, j] == end_to_position[int(t_ends[j])]
        stand_ins = out.status[b, : len(t)] == ff.PositionStatus.ONEHOT
        assert (out.source_positions[b, : len(t)][stand_ins] == -1).all()
        assert (out.source_positions[b, len(t) :] == -1).all()


# A toy byte-level vocabulary: the single bytes of a small alphabet plus the
# pieces a tokenization uses.
ALPHABET = "ab é"
SINGLE = sorted(set(ALPHABET.encode()))


def _stand_ins() -> list[str]:
    """GPT-2's stand-in character of every byte."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    others = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(others)) for b in range(256)]


STAND_INS = _stand_ins()


def _spell(token: bytes) -> str:
    return "".join(STAND_INS[b] for b in token)


def _vocabulary(pieces):
    return sorted(set(pieces) | {bytes([b]) for b in SINGLE})


def _split(text: bytes, cuts):
    cuts = sorted(set(c for c in cuts if 0 < c < len(text)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


@st.composite
def two_tokenizations(draw):
    text = draw(st.text(alphabet=ALPHABET, min_size=1, max_size=30)).encode()
    source = _split(text, draw(st.lists(st.integers(0, len(text)), max_size=len(text))))
    target = _split(text, draw(st.lists(st.integers(0, len(text)), max_size=len(text))))
    return source, target


# Source-only tokens that start with a byte the target vocabulary lacks: as
# candidates they have no byte-prefix image and are dropped.
UNMAPPABLE = [b"z", b"zq"]


@settings(max_examples=200, deadline=None)
@given(two_tokenizations(), st.sampled_from(["offsets", "boundary"]), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_matched_pairs_end_at_the_same_byte(tokenizations, method, k, seed):
    source_pieces, target_pieces = tokenizations
    source_vocab, target_vocab = _vocabulary(source_pieces) + UNMAPPABLE, _vocabulary(target_pieces)
    aligner = Aligner([_spell(p) for p in source_vocab], [_spell(p) for p in target_vocab],
                      source_marker="Ġ", target_marker="Ġ")
    s = np.array([source_vocab.index(p) for p in source_pieces])
    t = np.array([target_vocab.index(p) for p in target_pieces])
    rng = np.random.default_rng(seed)
    topk, logits = _random_topk([s], len(source_vocab), k, rng)
    topk[0][:, 0] = s  # position i's first candidate is its own token
    topk[0][rng.random(topk[0].shape) < 0.1] = -1
    out = align_batch(aligner, [t], [s], topk, logits, method=method, candidates="prefix")
    assert out.counts.fallback_texts == 0
    prefix = aligner.prefix_map()
    t_ends, s_ends = np.cumsum([len(p) for p in target_pieces]), np.cumsum([len(p) for p in source_pieces])
    t_starts, s_starts = t_ends - [len(p) for p in target_pieces], s_ends - [len(p) for p in source_pieces]
    expected_matched, kept_total = 0, 0.0
    for j in range(len(t)):
        partner = np.flatnonzero(s_ends == t_ends[j])
        if method == "offsets":
            partner = partner[s_starts[partner] == t_starts[j]]
        kept = _kept_mass(topk[0][partner[0]], logits[0][partner[0]], prefix) if len(partner) else 0.0
        assert out.source_positions[0, j] == (partner[0] if len(partner) else -1)
        if not len(partner) or kept == 0.0:
            assert out.status[0, j] != ff.PositionStatus.MATCHED
            continue
        expected_matched += 1
        assert out.status[0, j] == ff.PositionStatus.MATCHED
        filled = out.ids[0, j] >= 0
        ids = out.ids[0, j][filled].tolist()
        assert len(set(ids)) == len(ids)  # one slot per image
        if topk[0][partner[0], 0] >= 0:
            assert prefix[s[partner[0]]] in ids
        # The summed probabilities are the source's total minus the dropped mass.
        summed = float(np.exp(out.logits[0, j][filled].astype(np.float64)).sum())
        assert summed == pytest.approx(kept, abs=1e-5)
        kept_total += kept
    assert out.counts.matched == expected_matched
    assert out.counts.kept_mass == pytest.approx(kept_total, abs=1e-4)


def _kept_mass(ids, logits, prefix):
    valid = ids >= 0
    if not valid.any():
        return 0.0
    p = np.exp(logits[valid].astype(np.float64) - logits[valid].max())
    p /= p.sum()
    return float(p[prefix[ids[valid]] >= 0].sum())


def test_identical_tokenizers_match_everything_unchanged():
    tokenizer = load_tokenizer_or_skip("llama3")
    aligner = Aligner.from_tokenizers(tokenizer, tokenizer)
    ids = _tokenized(tokenizer, TEXTS[:8])
    rng = np.random.default_rng(0)
    topk, logits = _random_topk(ids, aligner.source_size, 4, rng)
    for method in ("dtw", "offsets", "boundary"):
        out = align_batch(aligner, ids, ids, topk, logits, method=method, vocab_align="hard")
        assert out.counts.matched_rate == 1.0
        for b, row in enumerate(topk):
            np.testing.assert_array_equal(out.source_positions[b, : len(row)], np.arange(len(row)))
            np.testing.assert_array_equal(out.ids[b, : len(row)], row)
            np.testing.assert_array_equal(out.logits[b, : len(row)], logits[b])


def test_byte_vocab_map_equates_both_spellings():
    source = ["ĠcafÃ©", "Ċ", "<s>", "Ġx"]
    target = ["<s>", "▁café", "<0x0A>", "▁y"]
    vm = VocabMap.build(source, target, normalize="bytes", source_special_ids=[2],
                        target_special_ids=[0], special_token_map={2: 0})
    assert vm.target_ids.tolist() == [1, 2, 0, 3]
    assert vm.distances.tolist() == [0, 0, 0, 1]
    assert vm.normalize == "bytes"
    marker = VocabMap.build(source, target)
    assert marker.exact_share < vm.exact_share


def test_map_of_another_normalization_is_refused():
    vm = VocabMap.build(["Ġa"], ["▁a"], normalize="bytes")
    with pytest.raises(ff.VocabMapError, match="normalization"):
        Aligner(["Ġa"], ["▁a"], vocab_map=vm)


@pytest.mark.parametrize(("kwargs", "arg"), [
    ({"method": "fast"}, "method"),
    ({"candidates": "all"}, "candidates"),
])
def test_bad_options_name_the_argument(kwargs, arg):
    aligner = Aligner(["Ġa"], ["▁a"])
    with pytest.raises(ff.InvalidInputError, match=f"^{arg}:"):
        align_batch(aligner, [[0]], [[0]], [[[0]]], [[[0.0]]], **kwargs)


def test_bad_aligner_options_name_the_argument():
    with pytest.raises(ff.InvalidInputError, match="^normalize:"):
        Aligner(["Ġa"], ["▁a"], normalize="text")
    with pytest.raises(ff.InvalidInputError, match="^source_special_ids:"):
        Aligner(["Ġa"], ["▁a"], source_special_ids=[5])
    with pytest.raises(ff.InvalidInputError, match="^source_family:"):
        Aligner(["Ġa"], ["▁a"], source_family="wordpiece")
