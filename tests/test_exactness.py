"""The fast path against the plain-Python reference, on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusellm_fast as ff
from aligned import assert_matches_reference
from fusellm_fast import reference

SP, BL = reference.SENTENCEPIECE_MARKER, reference.BYTE_LEVEL_MARKER


def vocabulary(marker: str, max_size: int = 12):
    # Few characters so that equal strings, near misses and ties are common.
    piece = st.text(alphabet=["a", "b", "é", "👍", marker], min_size=0, max_size=4)
    return st.lists(piece, min_size=1, max_size=max_size)


@st.composite
def alignment_case(draw):
    source_marker = draw(st.sampled_from([BL, SP]))
    target_marker = draw(st.sampled_from([SP, BL]))
    source_tokens = draw(vocabulary(source_marker))
    target_tokens = draw(vocabulary(target_marker))
    k = draw(st.integers(1, 4))
    texts = []
    for _ in range(draw(st.integers(0, 3))):
        t = draw(st.lists(st.integers(0, len(target_tokens) - 1), max_size=9))
        s = draw(st.lists(st.integers(0, len(source_tokens) - 1), max_size=9))
        topk = draw(st.lists(st.lists(st.integers(-1, len(source_tokens) - 1), min_size=k, max_size=k),
                             min_size=len(s), max_size=len(s)))
        logits = draw(st.lists(st.lists(st.floats(-20, 20, width=32), min_size=k, max_size=k),
                               min_size=len(s), max_size=len(s)))
        texts.append((np.array(t, np.int64), np.array(s, np.int64),
                      np.array(topk, np.int64).reshape(len(s), k), np.array(logits, np.float32).reshape(len(s), k)))
    return (source_tokens, target_tokens, source_marker, target_marker), texts


@pytest.mark.parametrize("vocab_align", ["soft", "hard"])
@pytest.mark.parametrize("onehot", ["current", "next"])
@settings(max_examples=150, deadline=None)
@given(case=alignment_case())
def test_align_batch_equals_reference(case, vocab_align, onehot):
    aligner_args, texts = case
    assert_matches_reference(aligner_args, texts, vocab_align=vocab_align, onehot=onehot)


@settings(max_examples=150, deadline=None)
@given(source=vocabulary(BL, 30), target=vocabulary(SP, 30))
def test_vocab_map_equals_brute_force(source, target):
    fast = ff.VocabMap.build(source, target, source_marker=BL, target_marker=SP, workers=1)
    ids, distances = reference.mined_map(source, target, source_marker=BL, target_marker=SP)
    assert fast.target_ids.tolist() == ids
    assert fast.distances.tolist() == distances


def test_vocab_map_with_long_tokens_equals_brute_force():
    # Strings past 64 code points leave the bit-parallel kernel.
    source = [BL + "=" * 80, "=" * 65 + "x", "a" * 70, BL + "ab"]
    target = [SP + "=" * 70, "=" * 64, "a" * 66 + "b", SP + "a", "b" * 90]
    fast = ff.VocabMap.build(source, target, source_marker=BL, target_marker=SP, workers=2)
    ids, distances = reference.mined_map(source, target, source_marker=BL, target_marker=SP)
    assert (fast.target_ids.tolist(), fast.distances.tolist()) == (ids, distances)


@st.composite
def similar_sequences(draw):
    """Two tokenizations of one string: long, mostly equal, like real text."""
    text = draw(st.text(alphabet=["a", "b", "c", " "], min_size=1, max_size=120))
    def split(marker):
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=len(text) // 2))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        return [p.replace(" ", marker) for p in pieces if p]
    return split(BL), split(SP)


@settings(max_examples=60, deadline=None)
@given(pair=similar_sequences())
def test_long_similar_texts_equal_reference(pair):
    # Exercises the pruned DTW where it prunes most: long, nearly diagonal paths.
    source_pieces, target_pieces = pair
    source_tokens = sorted(set(source_pieces))
    target_tokens = sorted(set(target_pieces))
    s = np.array([source_tokens.index(p) for p in source_pieces])
    t = np.array([target_tokens.index(p) for p in target_pieces])
    k_ids = np.arange(len(s) * 2).reshape(len(s), 2) % len(source_tokens)
    k_logits = np.linspace(-1, 1, len(s) * 2, dtype=np.float32).reshape(len(s), 2)
    for onehot in ("current", "next"):
        assert_matches_reference((source_tokens, target_tokens, BL, SP), [(t, s, k_ids, k_logits)],
                                 vocab_align="soft", onehot=onehot)
