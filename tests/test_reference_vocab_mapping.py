"""Tests of the reference's Step 1, ``mined_map`` (MinED)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rapidfuzz.distance import Levenshtein

from fusellm_fast.reference import BYTE_LEVEL_MARKER as G, SENTENCEPIECE_MARKER as SP, edit_distance, mined_map
from reference_examples import SOURCE_VOCAB, SOURCE_VOCAB_DISTANCES, SOURCE_VOCAB_IMAGES, TARGET_VOCAB


def test_mined_map_hand_example():
    images, distances = mined_map(SOURCE_VOCAB, TARGET_VOCAB, source_marker=G, target_marker=SP)
    assert images == SOURCE_VOCAB_IMAGES
    assert distances == SOURCE_VOCAB_DISTANCES


def test_mined_map_tie_goes_to_lowest_target_id():
    # "ab" is 4 from "zzzz" and 1 from each of "ax" (id 1) and "ay" (id 2): the lower id wins.
    assert mined_map(["ab"], ["zzzz", "ax", "ay"], source_marker=SP, target_marker=G) == ([1], [1])
    # Listed the other way round, the tie still goes to the lower id, now "ay".
    assert mined_map(["ab"], ["zzzz", "ay", "ax"], source_marker=SP, target_marker=G) == ([1], [1])


def test_mined_map_exact_match_takes_lowest_id_of_duplicate_string():
    # "Ġab" renamed is "▁ab", which is target ids 1 and 2: the exact match takes id 1.
    targets = ["q", SP + "ab", SP + "ab"]
    assert mined_map([G + "ab"], targets, source_marker=G, target_marker=SP) == ([1], [0])


def test_mined_map_keeps_markers_in_distance():
    # "Ġx" becomes "▁x": 2 from "xy" (delete ▁, insert y) and 1 from "▁xy" (insert y). Without the
    # markers both would be 1 away and the tie would go to id 0.
    assert mined_map([G + "x"], ["xy", SP + "xy"], source_marker=G, target_marker=SP) == ([1], [1])


def test_mined_map_brute_force_calls_distance_for_every_target_of_unmatched_tokens():
    calls = []

    def counting_distance(a, b):
        calls.append((a, b))
        return edit_distance(a, b)

    images, _ = mined_map(
        SOURCE_VOCAB, TARGET_VOCAB, source_marker=G, target_marker=SP, distance=counting_distance
    )
    assert images == SOURCE_VOCAB_IMAGES
    # Two source tokens (Ġcatz, Ġdig) have no exact match; each is compared with all 5 targets.
    assert calls == [(SP + "catz", t) for t in TARGET_VOCAB] + [
        (SP + "dig", t) for t in TARGET_VOCAB
    ]


def test_mined_map_empty_vocabularies():
    assert mined_map([], ["a"], source_marker=SP, target_marker=G) == ([], [])
    with pytest.raises(ValueError, match="target_tokens"):
        mined_map(["a"], [], source_marker=SP, target_marker=G)


@pytest.mark.parametrize("name", ["source_marker", "target_marker"])
def test_mined_map_rejects_empty_marker(name):
    markers = {"source_marker": SP, "target_marker": G, name: ""}
    with pytest.raises(ValueError, match=name):
        mined_map(["a"], ["a"], **markers)


TOKEN_ALPHABET = "ab" + SP + G


@given(
    st.lists(st.text(TOKEN_ALPHABET, max_size=4), max_size=6),
    st.lists(st.text(TOKEN_ALPHABET, max_size=4), min_size=1, max_size=6),
)
def test_mined_map_finds_lowest_id_at_minimum_distance(sources, targets):
    images, distances = mined_map(sources, targets, source_marker=G, target_marker=SP)
    for source, image, image_distance in zip(sources, images, distances):
        renamed = source.replace(G, SP)
        all_distances = [Levenshtein.distance(renamed, target) for target in targets]
        assert image_distance == min(all_distances)
        assert image == all_distances.index(min(all_distances))
