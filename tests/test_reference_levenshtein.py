"""Tests of the reference's string distance, ``edit_distance``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rapidfuzz.distance import Levenshtein

from fusellm_fast.reference import BYTE_LEVEL_MARKER as G, SENTENCEPIECE_MARKER as SP, edit_distance


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
