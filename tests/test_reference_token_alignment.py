"""Tests of the reference's Step 2, ``dtw``."""

from __future__ import annotations

import functools
import itertools

from hypothesis import given
from hypothesis import strategies as st
from rapidfuzz.distance import Levenshtein

from fusellm_fast.reference import BYTE_LEVEL_MARKER as G, SENTENCEPIECE_MARKER as SP, dtw, edit_distance


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
