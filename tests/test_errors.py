"""errors.py: the exception hierarchy."""

from __future__ import annotations

import fusellm_fast as ff


def test_input_type_error_is_a_type_error():
    assert issubclass(ff.InputTypeError, TypeError) and issubclass(ff.InputTypeError, ff.FuseLLMError)
    for cls in (ff.InvalidInputError, ff.InputTooLargeError, ff.MarkerDetectionError, ff.VocabMapError):
        assert issubclass(cls, ValueError) and issubclass(cls, ff.FuseLLMError)
