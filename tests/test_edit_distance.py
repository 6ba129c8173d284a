"""edit_distance: code points, and what it rejects."""

from __future__ import annotations

import pytest

import fusellm_fast as ff


def test_edit_distance_counts_code_points():
    assert ff.edit_distance("\u2581the", "\u0120the") == 1
    assert ff.edit_distance("", "") == 0
    assert ff.edit_distance("caf\u00e9", "cafe") == 1
    assert ff.edit_distance("\U0001F600a", "a") == 1  # one astral code point, two UTF-16 units
    assert ff.edit_distance("kitten", "sitting") == 3


@pytest.mark.parametrize("a, b, arg", [("a", 1, "b"), (None, "a", "a")])
def test_edit_distance_rejects_non_strings(a, b, arg):
    # errors.py: every exception of the package is a FuseLLMError and names its argument.
    with pytest.raises(ff.InputTypeError, match=rf"\b{arg}\b"):
        ff.edit_distance(a, b)
