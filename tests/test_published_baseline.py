"""The benchmarks' published-code baseline (``benches/published_dtw.py``) against the reference, and
the mapping of the peer aligners' output onto a match rate (``benches/peer_aligners.py``)."""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusellm_fast as ff
from fusellm_fast import reference
from fusellm_fast.hf import tokenizer_vocabulary
from fusellm_fast.reference import BYTE_LEVEL_MARKER as G, SENTENCEPIECE_MARKER as SP
from realtok import EDGE_CASE_TEXTS, load_tokenizer_or_skip, sample_texts

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))

import peer_aligners  # noqa: E402
import published_dtw  # noqa: E402
from published_dtw import PublishedAligner, matched_share  # noqa: E402

# Letters, both markers, a combining accent and a character outside the BMP.
TOKEN = st.text("ab" + SP + G + "\u0301\U0001f600", max_size=4)
MARKERS = st.sampled_from([(SP, G), (G, SP), (SP, SP)])


@given(st.lists(TOKEN, max_size=7), st.lists(TOKEN, max_size=7), MARKERS)
def test_dtw_equals_reference(source_strs, target_strs, markers):
    source_marker, target_marker = markers
    assert published_dtw.dtw(source_strs, target_strs, source_marker=source_marker, target_marker=target_marker) \
        == reference.dtw(source_strs, target_strs, source_marker=source_marker, target_marker=target_marker)


@st.composite
def texts_and_vocabularies(draw):
    """Two small vocabularies (repeats allowed), one text in each, top-3 lists with empty slots."""
    source_marker, target_marker = draw(MARKERS)
    source_tokens = draw(st.lists(TOKEN, min_size=1, max_size=8))
    target_tokens = draw(st.lists(TOKEN, min_size=1, max_size=8))
    source_ids = draw(st.lists(st.integers(0, len(source_tokens) - 1), max_size=6))
    target_ids = draw(st.lists(st.integers(0, len(target_tokens) - 1), max_size=6))
    candidate = st.integers(-1, len(source_tokens) - 1)
    topk_ids = draw(st.lists(st.lists(candidate, min_size=3, max_size=3), min_size=len(source_ids),
                             max_size=len(source_ids)))
    topk_logits = [[float(3 * row + slot) / 4 for slot in range(3)] for row in range(len(source_ids))]
    return source_tokens, target_tokens, source_marker, target_marker, target_ids, source_ids, topk_ids, topk_logits


@given(texts_and_vocabularies(), st.sampled_from(["soft", "hard"]), st.sampled_from(["next", "current"]))
@settings(max_examples=200)
def test_align_text_equals_reference(case, vocab_align, onehot):
    source_tokens, target_tokens, source_marker, target_marker, *text = case
    markers = {"source_marker": source_marker, "target_marker": target_marker}
    vocab_map = reference.mined_map(source_tokens, target_tokens, **markers)[0] if vocab_align == "soft" else None
    published = PublishedAligner(source_tokens, target_tokens, vocab_map=vocab_map, vocab_align=vocab_align,
                                 **markers)
    expected = reference.align_text(source_tokens, target_tokens, *text, vocab_align=vocab_align, onehot=onehot,
                                    vocab_map=vocab_map, **markers)
    assert published.align_text(*text, onehot=onehot) == expected


# (source, target, vocab_align, onehot): the paper's pair, a 150k-token byte-level source, a SentencePiece
# source with a 128k-token byte-level target; one mode each (hypothesis covers the modes), soft only where
# the MinED map is quick to build.
CASES = [("gpt-neox", "llama2", "soft", "next"), ("qwen2", "llama2", "hard", "current"),
         ("mistral", "llama3", "hard", "next")]
# The edge cases and the first help topic and source file of the sample texts, short enough for the reference.
TEXTS = [*EDGE_CASE_TEXTS, *sample_texts(max_chars=200)[len(EDGE_CASE_TEXTS)::12]]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}<-{c[0]}-{c[2]}-{c[3]}")
def test_real_text_equals_reference(case):
    source_name, target_name, vocab_align, onehot = case
    source, target = load_tokenizer_or_skip(source_name), load_tokenizer_or_skip(target_name)
    aligner = ff.Aligner.from_tokenizers(source, target)
    vocab_map = aligner.build_vocab_map().target_ids.tolist() if vocab_align == "soft" else None
    source_tokens, target_tokens = tokenizer_vocabulary(source, "s"), tokenizer_vocabulary(target, "t")
    markers = {"source_marker": aligner.source_marker, "target_marker": aligner.target_marker}
    published = PublishedAligner(source_tokens, target_tokens, vocab_map=vocab_map, vocab_align=vocab_align,
                                 **markers)
    rng = np.random.default_rng(0)
    texts, outputs = [], []
    for b, text in enumerate(TEXTS):
        target_ids = target(text, add_special_tokens=False).input_ids
        source_ids = source(text, add_special_tokens=False).input_ids
        # The true next source token first, then random ids, with some empty slots.
        topk_ids = rng.integers(0, len(source_tokens), size=(len(source_ids), 4))
        topk_ids[:-1, 0] = source_ids[1:]
        topk_ids[rng.random(topk_ids.shape) < 0.05] = -1
        texts.append((target_ids, source_ids, topk_ids.tolist(), rng.normal(size=topk_ids.shape).tolist()))
        outputs.append(published.align_text(*texts[-1], onehot=onehot))
        expected = reference.align_text(source_tokens, target_tokens, *texts[-1], vocab_align=vocab_align,
                                        onehot=onehot, vocab_map=vocab_map, **markers)
        assert outputs[-1] == expected, f"text {b} differs"
    # The match rate of a published output counts what align_batch counts.
    batch = ff.align_batch(aligner, *([np.asarray(text[i]) for text in texts] for i in range(4)),
                           vocab_align=vocab_align, onehot=onehot, workers=1)
    assert sum(len(output) for output in outputs) == batch.counts.positions
    assert sum(matched_share(output) * len(output) for output in outputs) == pytest.approx(batch.counts.matched)
    assert batch.counts.matched > 0


def test_remap_of_the_dtw_alignment_is_align_text():
    source_tokens, target_tokens = [G + "the", G + "cat", "s"], [SP + "the", SP + "cats", SP + "cat"]
    published = PublishedAligner(source_tokens, target_tokens, source_marker=G, target_marker=SP,
                                 vocab_align="hard")
    text = ([0, 1], [0, 1, 2], [[1, 2], [0, -1], [2, 0]], [[1.0, 0.5], [2.0, 0.0], [3.0, 1.5]])
    aligned = published_dtw.dtw([source_tokens[i] for i in text[1]], [target_tokens[j] for j in text[0]],
                                source_marker=G, target_marker=SP)
    # "cats" takes both "cat" and "s": only the first target position is matched. Its candidates:
    # "Ġcat" is "▁cat" (target 2), "s" is no target token (dropped).
    assert aligned == [[0], [1, 2]]
    assert published.remap(aligned, *text) == published.align_text(*text) == [
        (reference.STATUS_MATCHED, [(2, 1.0)]), (reference.STATUS_EMPTY, [])]
    assert matched_share(published.align_text(*text)) == 0.5
    # A peer alignment that pairs the second target position with "cat" alone: "▁cat" is not "▁cats".
    assert published.remap([[0], [1]], *text, onehot="current")[1] == (reference.STATUS_ONEHOT, [(1, 1.0)])


def test_pairs_to_alignment():
    assert peer_aligners.pairs_to_alignment([(0, [1, 0]), (2, [2]), (2, [1])], 4, 3) == [[0, 1], [], [1, 2], []]
    with pytest.raises(ValueError, match="outside"):
        peer_aligners.pairs_to_alignment([(0, [3])], 1, 3)
    with pytest.raises(ValueError, match="outside"):
        peer_aligners.pairs_to_alignment([(-1, [0])], 1, 3)


def test_published_aligner_rejects_bad_options():
    with pytest.raises(ValueError, match="vocab_map"):
        PublishedAligner(["a"], ["a"], source_marker=SP, target_marker=SP)
    with pytest.raises(ValueError, match="vocab_align"):
        PublishedAligner(["a"], ["a"], source_marker=SP, target_marker=SP, vocab_align="fuzzy")
    with pytest.raises(ValueError, match="onehot"):
        PublishedAligner(["a"], ["a"], source_marker=SP, target_marker=SP, vocab_map=[0]).align_text(
            [0], [0], [[0]], [[1.0]], onehot="previous")


def test_peers_pair_identical_tokenizations_one_to_one():
    peers, missing = peer_aligners.available_peers()
    assert not missing, missing
    tokens = ["the", "cat", "s", "at", "é"]
    for peer in peers:
        peer.reset()
        assert peer.align(tokens, tokens) == [[j] for j in range(len(tokens))], peer.name


def test_docstring_examples():
    outcome = doctest.testmod(published_dtw)
    assert outcome.attempted > 0
    assert outcome.failed == 0
