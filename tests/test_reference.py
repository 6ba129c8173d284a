"""Tests of the plain-Python reference implementation of FuseLLM Steps 1-3 as a package: its
docstring examples and those of each step's module. Each module has its own test file."""

from __future__ import annotations

import doctest
import importlib

import pytest

from fusellm_fast import reference


def test_docstring_examples():
    outcome = doctest.testmod(reference)
    assert outcome.attempted > 0
    assert outcome.failed == 0


@pytest.mark.parametrize("module", ["levenshtein", "vocab_mapping", "token_alignment", "remapping"])
def test_module_docstring_examples(module):
    outcome = doctest.testmod(importlib.import_module(f"fusellm_fast.reference.{module}"))
    assert outcome.attempted > 0
    assert outcome.failed == 0
