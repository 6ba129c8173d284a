"""What the demo runs: its sizes, the two sources, the alignment settings it compares and the
names of its runs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Any, Literal

from .. import pipeline

__all__ = [
    "ALIGNMENT_SETTINGS",
    "CLM_RUN",
    "CONTROL_RUN",
    "CONTROL_SOURCES",
    "DOMAINS",
    "SETTING_PREFIX",
    "SOURCES",
    "AlignmentSetting",
    "DemoConfig",
    "default_setting",
    "ranking",
    "slug",
]

DOMAINS = ("code", "prose")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. The defaults run in a few minutes on two CPU cores."""

    vocab_size: int = 2048
    """Tokens per trained tokenizer."""
    hidden_size: int = 96
    layers: int = 3
    heads: int = 4
    """Every model's shape: its width, depth and attention heads per layer."""
    chunk_chars: int = 400
    """Texts are cut into pieces of about this many characters (see
    :func:`~fusellm_fast.pipeline.split_text`)."""
    block_size: int = 128
    """Tokens per training block."""
    batch_size: int = 8
    """Blocks per step."""
    source_steps: int = 600
    """Training steps of each source on its domain."""
    target_steps: int = 40
    """Training steps of the target before the comparison."""
    fusion_steps: int = 100
    """Continual-training steps of each target run: all runs see the same blocks in the same
    order."""
    source_domain_share: float = 0.9
    """Share of a source's training text from its own domain."""
    top_k: int = 10
    lm_weight: float = 0.9
    """Teacher list length and lambda of the fusion runs (paper: 10 and 0.9)."""
    fusion_learning_rate: float = 1e-3
    """Peak learning rate of the continual training."""
    eval_texts: int = 80
    """Held-out texts per domain."""
    seed: int = 0
    """Seed of every random choice."""
    threads: int | None = None
    """Torch CPU threads; ``None`` keeps torch's default."""

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A tiny setting that checks the plumbing in well under a minute (numbers meaningless)."""
        settings = {"vocab_size": 400, "hidden_size": 32, "layers": 1, "heads": 2, "chunk_chars": 200,
                    "block_size": 32, "batch_size": 4, "source_steps": 8, "target_steps": 4, "fusion_steps": 6,
                    "eval_texts": 8}
        return cls(**{**settings, **overrides})


@dataclass(frozen=True)
class AlignmentSetting:
    """One way of aligning the sources to the target (see :func:`fusellm_fast.align_batch`) and of
    ranking the teachers (``ce_unit``)."""

    name: str
    method: Literal["dtw", "offsets", "boundary"]
    candidates: Literal["mined", "prefix"]
    normalize: Literal["marker", "bytes"]
    onehot: Literal["next", "current"]
    ce_unit: Literal["token", "byte"]
    ce_level: Literal["sequence", "token"] = "sequence"

    def align_options(self) -> dict[str, str]:
        """The keyword arguments of :func:`fusellm_fast.pipeline.align` for this setting."""
        return {"method": self.method, "candidates": self.candidates, "normalize": self.normalize,
                "onehot": self.onehot, "ce_unit": self.ce_unit, "ce_level": self.ce_level}

    @property
    def run_name(self) -> str:
        """The name of this setting's MinCE run."""
        return SETTING_PREFIX + self.name + ", " + ranking(self.ce_unit, self.ce_level)

    @property
    def directory(self) -> str:
        """The name of this setting's aligned-data directory."""
        return slug(f"{self.name} {self.ce_unit} {self.ce_level}")


def ranking(ce_unit: str, ce_level: str) -> str:
    """How the teachers are ranked, in words."""
    return f"CE per {ce_unit}" + (", chosen per position" if ce_level == "token" else "")


def _settings() -> tuple[AlignmentSetting, ...]:
    published = AlignmentSetting("published: dtw, marker, MinED, current-token stand-in", "dtw", "mined", "marker",
                                 "current", "token")
    corrected = [("dtw, marker, MinED", "dtw", "mined", "marker"), ("dtw, bytes, MinED", "dtw", "mined", "bytes"),
                 ("offsets, bytes, MinED", "offsets", "mined", "bytes"),
                 ("boundary, bytes, prefix", "boundary", "prefix", "bytes")]
    per_text = [AlignmentSetting(name, method, candidates, normalize, "next", ce_unit)
                for name, method, candidates, normalize in corrected for ce_unit in ("token", "byte")]
    # Teachers chosen per position (CE of the paired source position) for the default and the
    # byte-exact alignment.
    per_position = [replace(per_text[0], ce_level="token"), replace(per_text[-1], ce_level="token")]
    return (published, *per_text, *per_position)


ALIGNMENT_SETTINGS = _settings()
"""Every setting the demo compares: the published alignment, then the others with the next-token
stand-in, each with the teachers ranked by CE per token and per byte (one block, one teacher), and
two with the teacher chosen per position."""

CLM_RUN = "CLM only"
CONTROL_RUN = "MinCE, sources on the target's tokenizer"
SETTING_PREFIX = "MinCE, "

SOURCES = {
    "source A (code, byte-level BPE)": ("byte_bpe", "gpt2", "code"),
    "source B (prose, SentencePiece BPE)": ("sp_bpe", "llama", "prose"),
}
CONTROL_SOURCES = {name: f"{name.split(' (')[0]} on the target's tokenizer" for name in SOURCES}


def default_setting() -> AlignmentSetting:
    """The row of :data:`ALIGNMENT_SETTINGS` with the defaults of :func:`fusellm_fast.pipeline.align`."""
    parameters = inspect.signature(pipeline.align).parameters
    return next(s for s in ALIGNMENT_SETTINGS if all(parameters[k].default == v for k, v in s.align_options().items()))



def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")
