"""Tests of the plain-Python reference implementation of FuseLLM Steps 1-3."""

from __future__ import annotations

import copy
import doctest
import functools
import importlib
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import Levenshtein

from fusellm_fast import reference
from fusellm_fast.reference import (
    BYTE_LEVEL_MARKER as G,
    SENTENCEPIECE_MARKER as SP,
    STATUS_EMPTY,
    STATUS_MATCHED,
    STATUS_ONEHOT,
    align_batch,
    align_text,
    dtw,
    edit_distance,
    mined_map,
)

# A target vocabulary with the SentencePiece marker and a source vocabulary with the byte-level one.
TARGET_VOCAB = [SP + "the", SP + "cat", SP + "dog", "s", SP + "a"]
SOURCE_VOCAB = [G + "the", G + "cat", G + "catz", G + "dig", G + "a", "s"]
# MinED of SOURCE_VOCAB onto TARGET_VOCAB, worked by hand (markers renamed to ▁ first):
#   0 ▁the  -> exact, id 0          3 ▁dig -> ▁dog at 1 (▁the, ▁cat: 3; ▁a: 3; s: 4) -> id 2
#   1 ▁cat  -> exact, id 1          4 ▁a   -> exact, id 4
#   2 ▁catz -> ▁cat at 1 (▁a: 3, ▁the, ▁dog: 4, s: 5) -> id 1     5 s -> exact, id 3
SOURCE_VOCAB_IMAGES = [0, 1, 1, 2, 4, 3]
SOURCE_VOCAB_DISTANCES = [0, 0, 1, 1, 0, 0]

# One text: target "▁the ▁cat", source "Ġthe Ġcatz".
# DTW costs (markers deleted): the/the 0, the/cat 3, catz/the 4, catz/cat 1, so the path is the
# diagonal and each target position has exactly one source position.
TEXT_TARGET_IDS = [0, 1]
TEXT_SOURCE_IDS = [0, 2]
TEXT_TOPK_IDS = [[1, 2, 3, -1], [5, 0, 4, 3]]
TEXT_TOPK_LOGITS = [[2.5, 1.5, 0.5, 0.0], [3.0, 2.0, 1.0, 0.25]]


def align_example(**options):
    return align_text(
        SOURCE_VOCAB,
        TARGET_VOCAB,
        TEXT_TARGET_IDS,
        TEXT_SOURCE_IDS,
        TEXT_TOPK_IDS,
        TEXT_TOPK_LOGITS,
        source_marker=G,
        target_marker=SP,
        **options,
    )


# --- edit_distance -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("", "", 0),
        ("", "abc", 3),
        ("abc", "", 3),
        ("kitten", "sitting", 3),  # k->s, e->i, insert g
        ("flaw", "lawn", 2),  # delete f, insert n
        (SP + "the", G + "the", 1),  # markers are ordinary code points
        ("\U0001f600a", "a", 1),  # one code point, though two UTF-16 units and four UTF-8 bytes
    ],
)
def test_edit_distance_hand_examples(a, b, expected):
    assert edit_distance(a, b) == expected
    assert edit_distance(b, a) == expected


@given(st.text(max_size=12), st.text(max_size=12))
def test_edit_distance_matches_rapidfuzz(a, b):
    assert edit_distance(a, b) == Levenshtein.distance(a, b)


def test_edit_distance_rejects_non_strings():
    with pytest.raises(TypeError, match="a must be a str"):
        edit_distance(b"abc", "abc")
    with pytest.raises(TypeError, match="b must be a str"):
        edit_distance("abc", None)


# --- mined_map -----------------------------------------------------------------------------------


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


# --- dtw -----------------------------------------------------------------------------------------


def test_dtw_hand_example():
    # Markers deleted: source [the, cat], target [the, c, at].
    # Costs:        the  c  at            Accumulated (without border):  0  3  6
    #   the          0   3   3                                          3  2  3
    #   cat          3   2   1
    # Backtrace from (1, 2): diag 3, up 6, left 2 -> (1, 1); diag 0, up 3, left 3 -> (0, 0).
    # So Ġthe <- ▁the, Ġc <- ▁cat, at <- ▁cat.
    source_strs = [SP + "the", SP + "cat"]
    target_strs = [G + "the", G + "c", "at"]
    aligned = dtw(source_strs, target_strs, source_marker=SP, target_marker=G)
    assert aligned == [[0], [1], [1]]


def test_dtw_several_sources_on_one_target():
    # "▁a" and "b" are each 1 from "ab"; a single target column must take both source rows.
    assert dtw([SP + "a", "b"], [G + "ab"], source_marker=SP, target_marker=G) == [[0, 1]]


def test_dtw_diagonal_wins_ties():
    # "x" against "y" costs 1 everywhere, so each accumulated cost is the length of the cheapest
    # path to that cell.
    # 2 x 3: accumulated 1 2 3 / 2 2 3. From (1, 2): diag 2, up 3, left 2 -> diagonal wins the tie,
    # (0, 1); then i = 0, only left -> (0, 0).
    assert dtw(["x", "x"], ["y", "y", "y"], source_marker=SP, target_marker=G) == [[0], [0], [1]]
    # 3 x 2: accumulated 1 2 / 2 2 / 3 3. From (2, 1): diag 2, up 2, left 3 -> diagonal wins the
    # tie, (1, 0); then j = 0, only up -> (0, 0).
    assert dtw(["x", "x", "x"], ["y", "y"], source_marker=SP, target_marker=G) == [[0, 1], [2]]


def test_dtw_up_wins_tie_against_left():
    # Every pair costs 0 except source 1 with target 1, which costs 5.
    # Accumulated: row 0 = 0 0 0, row 1 = 0 5 0, row 2 = 0 0 0.
    # From (2, 2): diag 5, up 0, left 0 -> up wins the tie, (1, 2); then diag 0, up 0, left 5 ->
    # diagonal, (0, 1); then i = 0, only left -> (0, 0). (Left would have given [[0, 1], [2], [2]].)
    def distance(source, target):
        return 5 if (source, target) == ("r1", "c1") else 0

    aligned = dtw(
        ["r0", "r1", "r2"], ["c0", "c1", "c2"], source_marker=SP, target_marker=G, distance=distance
    )
    assert aligned == [[0], [0], [1, 2]]


def test_dtw_deletes_each_side_own_marker_only():
    seen = []

    def recording_distance(a, b):
        seen.append((a, b))
        return edit_distance(a, b)

    # The source's "Ġ" is not its marker, so it stays; the target's "▁" is not its marker either.
    dtw(
        [SP + G + "x"],
        [G + SP + "y"],
        source_marker=SP,
        target_marker=G,
        distance=recording_distance,
    )
    assert seen == [(G + "x", SP + "y")]


def test_dtw_calls_distance_once_per_cell():
    calls = []

    def counting_distance(a, b):
        calls.append((a, b))
        return edit_distance(a, b)

    dtw(["a", "b", "c"], ["a", "b"], source_marker=SP, target_marker=G, distance=counting_distance)
    assert sorted(calls) == sorted((s, t) for s in "abc" for t in "ab")


def test_dtw_empty_inputs():
    assert dtw([], [G + "a", "b"], source_marker=SP, target_marker=G) == [[], []]
    assert dtw([SP + "a"], [], source_marker=SP, target_marker=G) == []
    assert dtw([], [], source_marker=SP, target_marker=G) == []


def test_dtw_single_pair():
    assert dtw(["x"], ["completely different"], source_marker=SP, target_marker=G) == [[0]]


def path_of(aligned):
    """The (source, target) pairs of a DTW result, in path order."""
    return sorted(
        ((i, j) for j, sources in enumerate(aligned) for i in sources), key=lambda p: (p[1], p[0])
    )


def min_dtw_cost(source_strs, target_strs):
    """Cheapest monotone path cost, by a memoized recursion from each cell to the last one."""
    sources = [s.replace(SP, "") for s in source_strs]
    targets = [t.replace(G, "") for t in target_strs]
    n, m = len(sources), len(targets)

    @functools.cache
    def cost_to_end(i, j):
        here = Levenshtein.distance(sources[i], targets[j])
        if (i, j) == (n - 1, m - 1):
            return here
        onward = [
            cost_to_end(i + di, j + dj)
            for di, dj in ((1, 1), (1, 0), (0, 1))
            if i + di < n and j + dj < m
        ]
        return here + min(onward)

    return cost_to_end(0, 0)


TOKEN_LISTS = st.lists(st.text("abc" + SP + G, max_size=4), min_size=1, max_size=7)


@given(TOKEN_LISTS, TOKEN_LISTS)
def test_dtw_path_is_a_full_monotone_path(source_strs, target_strs):
    aligned = dtw(source_strs, target_strs, source_marker=SP, target_marker=G)
    assert len(aligned) == len(target_strs)
    assert all(sources for sources in aligned)
    assert all(sources == sorted(set(sources)) for sources in aligned)
    path = path_of(aligned)
    assert path[0] == (0, 0)
    assert path[-1] == (len(source_strs) - 1, len(target_strs) - 1)
    steps = {(i2 - i1, j2 - j1) for (i1, j1), (i2, j2) in itertools.pairwise(path)}
    assert steps <= {(1, 0), (0, 1), (1, 1)}


@given(TOKEN_LISTS, TOKEN_LISTS)
def test_dtw_path_has_minimum_cost(source_strs, target_strs):
    aligned = dtw(source_strs, target_strs, source_marker=SP, target_marker=G)
    path_cost = sum(
        Levenshtein.distance(source_strs[i].replace(SP, ""), target_strs[j].replace(G, ""))
        for i, j in path_of(aligned)
    )
    assert path_cost == min_dtw_cost(source_strs, target_strs)


# --- align_text ----------------------------------------------------------------------------------


def test_align_text_hard():
    # Position 0: "Ġthe" -> "▁the" matches. Candidates: 1 Ġcat -> ▁cat (target 1) kept; 2 Ġcatz and
    # 3 Ġdig have no identical target string, dropped; -1 is an empty slot.
    # Position 1: "Ġcatz" -> "▁catz" is not "▁cat": not matched. Stand-in on the next target token,
    # but position 1 is the last one, so nothing.
    assert align_example(vocab_align="hard") == [
        (STATUS_MATCHED, [(1, 2.5)]),
        (STATUS_EMPTY, []),
    ]
    # With the published stand-in the last position gets its own token.
    assert align_example(vocab_align="hard", onehot="current") == [
        (STATUS_MATCHED, [(1, 2.5)]),
        (STATUS_ONEHOT, [(1, 1.0)]),
    ]


def test_align_text_soft():
    # Position 0: matched. Candidates through MinED: 1 -> 1 kept; 2 (Ġcatz) -> 1 again, dropped;
    # 3 (Ġdig) -> 2 kept; -1 skipped.
    # Position 1: "▁catz" is not "▁cat" but its MinED image is, so it matches. Candidates:
    # 5 -> 3, 0 -> 0, 4 -> 4, 3 -> 2, all distinct.
    expected = [
        (STATUS_MATCHED, [(1, 2.5), (2, 0.5)]),
        (STATUS_MATCHED, [(3, 3.0), (0, 2.0), (4, 1.0), (2, 0.25)]),
    ]
    assert align_example() == expected
    assert align_example(vocab_align="soft", vocab_map=SOURCE_VOCAB_IMAGES) == expected


def test_align_text_soft_uses_given_vocab_map():
    # A deliberately different map: every source id to target 3 ("s"). Position 0 still matches
    # (identical strings); position 1 no longer does ("▁catz" now maps to "s"), so it gets the
    # stand-in, which at the last position is empty.
    assert align_example(vocab_map=[3] * len(SOURCE_VOCAB)) == [
        (STATUS_MATCHED, [(3, 2.5)]),
        (STATUS_EMPTY, []),
    ]


def test_align_text_onehot_next_and_current():
    # Target "Ġthe Ġc at" against source "▁the ▁cat" (DTW worked out in test_dtw_hand_example):
    # Ġthe <- ▁the (matches), Ġc <- ▁cat and at <- ▁cat (neither matches "Ġcat").
    source_vocab = [SP + "the", SP + "cat"]
    target_vocab = [G + "the", G + "c", "at", G + "cat"]
    arguments = (
        source_vocab,
        target_vocab,
        [0, 1, 2],
        [0, 1],
        [[1, 0], [0, -1]],
        [[0.5, 0.25], [1.5, 9.0]],
    )
    markers = {"source_marker": SP, "target_marker": G, "vocab_align": "hard"}
    # Position 0's candidates: ▁cat -> Ġcat (3), ▁the -> Ġthe (0).
    assert align_text(*arguments, **markers, onehot="next") == [
        (STATUS_MATCHED, [(3, 0.5), (0, 0.25)]),
        (STATUS_ONEHOT, [(2, 1.0)]),
        (STATUS_EMPTY, []),
    ]
    assert align_text(*arguments, **markers, onehot="current") == [
        (STATUS_MATCHED, [(3, 0.5), (0, 0.25)]),
        (STATUS_ONEHOT, [(1, 1.0)]),
        (STATUS_ONEHOT, [(2, 1.0)]),
    ]


def test_align_text_several_sources_get_stand_in():
    # "▁a" and "b" both align with "Ġab" (see test_dtw_several_sources_on_one_target), so the only
    # target position gets the stand-in whatever the strings.
    arguments = ([SP + "a", "b"], [G + "ab", "b"], [0], [0, 1], [[1], [1]], [[1.0], [2.0]])
    markers = {"source_marker": SP, "target_marker": G}
    assert align_text(*arguments, **markers, onehot="current") == [(STATUS_ONEHOT, [(0, 1.0)])]
    assert align_text(*arguments, **markers, onehot="next") == [(STATUS_EMPTY, [])]


def test_align_text_byte_level_first_token_gains_marker():
    # A byte-level source writes the first word without a marker ("Hello"); the SentencePiece
    # target writes "▁Hello". At j = 0 the marker is prepended, so it matches in hard mode.
    source_vocab = ["Hello", G + "world"]
    target_vocab = [SP + "Hello", SP + "world"]
    arguments = (source_vocab, target_vocab, [0, 1], [0, 1], [[1], [0]], [[4.0], [3.0]])
    assert align_text(*arguments, source_marker=G, target_marker=SP, vocab_align="hard") == [
        (STATUS_MATCHED, [(1, 4.0)]),
        # "Hello" as a candidate is not "▁Hello", and the quirk does not touch candidates.
        (STATUS_EMPTY, []),
    ]


def test_align_text_marker_quirk_only_for_byte_level_source_and_first_position():
    # A SentencePiece source onto a byte-level target gets no such fix: "Hello" is not "ĠHello".
    arguments = (["Hello"], [G + "Hello"], [0], [0], [[0]], [[4.0]])
    assert align_text(
        *arguments, source_marker=SP, target_marker=G, vocab_align="hard", onehot="current"
    ) == [(STATUS_ONEHOT, [(0, 1.0)])]
    # At j = 1 the byte-level source's "Hello" is not fixed either.
    arguments = (
        [G + "x", "Hello"],
        [SP + "x", SP + "Hello"],
        [0, 1],
        [0, 1],
        [[0], [1]],
        [[1.0], [2.0]],
    )
    assert align_text(
        *arguments, source_marker=G, target_marker=SP, vocab_align="hard", onehot="current"
    ) == [(STATUS_MATCHED, [(0, 1.0)]), (STATUS_ONEHOT, [(1, 1.0)])]


def test_align_text_hard_maps_to_lowest_duplicate_and_drops_repeats():
    # Target ids 1 and 2 are both "▁b"; source ids 1 and 2 are both "Ġb". The candidate list
    # [2, 1, 0] maps to [1, 1, 0]: the repeated target 1 keeps its first logit.
    source_vocab = [G + "a", G + "b", G + "b"]
    target_vocab = [SP + "a", SP + "b", SP + "b"]
    assert align_text(
        source_vocab,
        target_vocab,
        [0],
        [0],
        [[2, 1, 0]],
        [[3.0, 2.0, 1.0]],
        source_marker=G,
        target_marker=SP,
        vocab_align="hard",
    ) == [(STATUS_MATCHED, [(1, 3.0), (0, 1.0)])]


def test_align_text_all_candidates_dropped_is_empty():
    # Matched, but no candidate string exists in the target vocabulary (or the slots are empty).
    assert align_text(
        [G + "a", G + "zz"],
        [SP + "a"],
        [0],
        [0],
        [[1, -1]],
        [[1.0, 0.0]],
        source_marker=G,
        target_marker=SP,
        vocab_align="hard",
    ) == [(STATUS_EMPTY, [])]


def test_align_text_empty_texts():
    markers = {"source_marker": G, "target_marker": SP}
    assert align_text(SOURCE_VOCAB, TARGET_VOCAB, [], [0], [[1]], [[1.0]], **markers) == []
    # No source tokens: nothing is aligned, every position gets the stand-in.
    assert align_text(SOURCE_VOCAB, TARGET_VOCAB, [0, 1], [], [], [], **markers) == [
        (STATUS_ONEHOT, [(1, 1.0)]),
        (STATUS_EMPTY, []),
    ]


def test_align_text_accepts_numpy_and_returns_python_numbers():
    result = align_text(
        SOURCE_VOCAB,
        TARGET_VOCAB,
        np.array(TEXT_TARGET_IDS, dtype=np.int64),
        np.array(TEXT_SOURCE_IDS, dtype=np.int32),
        np.array(TEXT_TOPK_IDS, dtype=np.int64),
        np.array(TEXT_TOPK_LOGITS, dtype=np.float32),
        source_marker=G,
        target_marker=SP,
    )
    assert result == align_example()
    for status, entries in result:
        assert type(status) is int
        for target_id, logit in entries:
            assert type(target_id) is int
            assert type(logit) is float


def test_align_text_keeps_logits_unchanged():
    logit = float(np.float32(0.1))  # not representable as a short decimal
    result = align_text(
        ["a"], ["a"], [0], [0], [[0]], [[np.float32(0.1)]], source_marker=SP, target_marker=G
    )
    assert result == [(STATUS_MATCHED, [(0, logit)])]
    nan_result = align_text(
        ["a"], ["a"], [0], [0], [[0]], [[math.nan]], source_marker=SP, target_marker=G
    )
    assert math.isnan(nan_result[0][1][0][1])


def test_align_text_does_not_mutate_inputs():
    inputs = [
        SOURCE_VOCAB,
        TARGET_VOCAB,
        TEXT_TARGET_IDS,
        TEXT_SOURCE_IDS,
        TEXT_TOPK_IDS,
        TEXT_TOPK_LOGITS,
    ]
    vocab_map = list(SOURCE_VOCAB_IMAGES)
    before = copy.deepcopy([*inputs, vocab_map])
    align_text(*inputs, source_marker=G, target_marker=SP, vocab_map=vocab_map)
    align_text(*inputs, source_marker=G, target_marker=SP, vocab_align="hard", onehot="current")
    assert [*inputs, vocab_map] == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vocab_align": "fuzzy"}, "vocab_align"),
        ({"onehot": "previous"}, "onehot"),
        ({"target_ids": [0, 5]}, r"target_ids\[1\]"),
        ({"target_ids": [-1, 0]}, r"target_ids\[0\]"),
        ({"source_ids": [0, 6]}, r"source_ids\[1\]"),
        ({"topk_ids": [[1]]}, "topk_ids"),
        ({"topk_logits": [[1.0]] * 3}, "topk_logits"),
        ({"topk_logits": [[1.0, 2.0], [1.0]]}, r"topk_logits\[0\]"),
        (
            {"topk_ids": [[1, 6], [0, 0]], "topk_logits": [[1.0, 2.0], [1.0, 2.0]]},
            r"topk_ids\[0\]\[1\]",
        ),
        ({"vocab_map": [0, 1]}, "vocab_map"),
        ({"vocab_map": [0, 1, 1, 2, 4, 5]}, r"vocab_map\[5\]"),
        ({"source_marker": ""}, "source_marker"),
        ({"target_marker": ""}, "target_marker"),
    ],
)
def test_align_text_rejects_bad_arguments(changes, message):
    arguments = {
        "source_tokens": SOURCE_VOCAB,
        "target_tokens": TARGET_VOCAB,
        "target_ids": TEXT_TARGET_IDS,
        "source_ids": TEXT_SOURCE_IDS,
        "topk_ids": TEXT_TOPK_IDS,
        "topk_logits": TEXT_TOPK_LOGITS,
        "source_marker": G,
        "target_marker": SP,
        **changes,
    }
    with pytest.raises(ValueError, match=message):
        align_text(**arguments)


def test_align_text_rejects_non_numbers():
    markers = {"source_marker": G, "target_marker": SP}
    with pytest.raises(TypeError, match=r"source_ids\[0\]"):
        align_text(SOURCE_VOCAB, TARGET_VOCAB, [0], [0.0], [[1]], [[1.0]], **markers)
    with pytest.raises(TypeError, match=r"topk_logits\[0\]\[0\]"):
        align_text(SOURCE_VOCAB, TARGET_VOCAB, [0], [0], [[1]], [["1.0"]], **markers)


@given(
    st.lists(st.text("ab" + SP, min_size=1, max_size=3), min_size=1, max_size=5),
    st.data(),
)
@settings(max_examples=50)
def test_align_text_identical_tokenizers_keep_every_distribution(vocab, data):
    # Same vocabulary and tokenization on both sides: DTW is the diagonal, every position matches,
    # and both modes map each candidate to the lowest id with its string.
    ids = data.draw(st.lists(st.integers(0, len(vocab) - 1), max_size=6))
    candidate = st.integers(-1, len(vocab) - 1)
    topk_ids = data.draw(
        st.lists(st.lists(candidate, min_size=3, max_size=3), min_size=len(ids), max_size=len(ids))
    )
    topk_logits = [[float(10 * row + slot) for slot in range(3)] for row in range(len(ids))]
    lowest_id = {token: vocab.index(token) for token in vocab}
    expected = []
    for row_ids, row_logits in zip(topk_ids, topk_logits):
        entries = {}
        for c, logit in zip(row_ids, row_logits):
            if c >= 0:
                entries.setdefault(lowest_id[vocab[c]], logit)
        expected.append((STATUS_MATCHED if entries else STATUS_EMPTY, list(entries.items())))
    for vocab_align in ("soft", "hard"):
        result = align_text(
            vocab,
            vocab,
            ids,
            ids,
            topk_ids,
            topk_logits,
            source_marker=SP,
            target_marker=SP,
            vocab_align=vocab_align,
        )
        assert result == expected


# --- align_batch ---------------------------------------------------------------------------------


def test_align_batch_matches_align_text_per_text():
    texts = [
        (TEXT_TARGET_IDS, TEXT_SOURCE_IDS, TEXT_TOPK_IDS, TEXT_TOPK_LOGITS),
        ([4, 3], [4, 5], [[5, 2], [0, 1]], [[1.0, 0.5], [2.0, 1.5]]),
        ([], [], [], []),
    ]
    for options in ({}, {"vocab_align": "hard", "onehot": "current"}):
        batch = align_batch(
            SOURCE_VOCAB,
            TARGET_VOCAB,
            *map(list, zip(*texts)),
            source_marker=G,
            target_marker=SP,
            **options,
        )
        singles = [
            align_text(
                SOURCE_VOCAB, TARGET_VOCAB, *text, source_marker=G, target_marker=SP, **options
            )
            for text in texts
        ]
        assert batch == singles
        assert batch[0] == align_example(**options)


def test_align_batch_rejects_bad_arguments():
    markers = {"source_marker": G, "target_marker": SP}
    with pytest.raises(ValueError, match="source_ids"):
        align_batch(SOURCE_VOCAB, TARGET_VOCAB, [[0]], [], [], [], **markers)
    with pytest.raises(ValueError, match=r"text 1: target_ids\[0\]"):
        align_batch(
            SOURCE_VOCAB,
            TARGET_VOCAB,
            [[0], [9]],
            [[0], [0]],
            [[[1]], [[1]]],
            [[[1.0]], [[1.0]]],
            **markers,
        )
    with pytest.raises(ValueError, match="vocab_align"):
        align_batch(SOURCE_VOCAB, TARGET_VOCAB, [], [], [], [], vocab_align="fuzzy", **markers)


# --- documentation -------------------------------------------------------------------------------


def test_docstring_examples():
    outcome = doctest.testmod(reference)
    assert outcome.attempted > 0
    assert outcome.failed == 0


@pytest.mark.parametrize("module", ["levenshtein", "vocab_mapping", "token_alignment", "remapping"])
def test_module_docstring_examples(module):
    outcome = doctest.testmod(importlib.import_module(f"fusellm_fast.reference.{module}"))
    assert outcome.attempted > 0
    assert outcome.failed == 0
