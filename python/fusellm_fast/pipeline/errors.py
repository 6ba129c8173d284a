"""The pipeline's one exception."""

from __future__ import annotations

from ..errors import FuseLLMError

__all__ = ["PipelineError"]


class PipelineError(FuseLLMError, ValueError):
    """A pipeline input is missing or does not fit the others; the message says which and why."""
