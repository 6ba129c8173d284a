"""Exceptions raised by fusellm_fast.

Every error names the argument at fault. Errors about values subclass
``ValueError`` and errors about types subclass ``TypeError``, so code that already
catches those keeps working; ``FuseLLMError`` catches them all.
"""

from __future__ import annotations

__all__ = [
    "FuseLLMError",
    "InvalidInputError",
    "InputTooLargeError",
    "InputTypeError",
    "MarkerDetectionError",
    "VocabMapError",
]


class FuseLLMError(Exception):
    """Base class of every exception raised by fusellm_fast."""


class InvalidInputError(FuseLLMError, ValueError):
    """An argument has a wrong value: a shape, a length, an id out of range, a non-finite logit."""


class InputTooLargeError(InvalidInputError):
    """An input, or the output it asks for, is larger than the core can address or allocate:
    a text of more than 2**31 - 1 tokens, or an output array that does not fit in memory."""


class InputTypeError(FuseLLMError, TypeError):
    """An argument has a wrong type or dtype."""


class MarkerDetectionError(InvalidInputError):
    """A vocabulary's space marker was not given and cannot be detected."""


class VocabMapError(InvalidInputError):
    """A vocabulary map is corrupt or belongs to other vocabularies."""
