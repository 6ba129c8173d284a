"""What the demo runs: its sizes, the two sources, the alignment settings it compares and the
names of its runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ALIGNMENT_SETTINGS",
    "AVG_CE_RUN",
    "CLM_RUN",
    "CONTROL_RUN",
    "CONTROL_SOURCES",
    "CROSS_FAMILY_SETTING",
    "DOMAINS",
    "PAPER_LM_WEIGHT",
    "PAPER_RUN",
    "PAPER_TOP_K",
    "SETTING_PREFIX",
    "SOURCES",
    "AlignmentSetting",
    "DemoConfig",
    "alignment_settings",
    "describe",
    "estimated_seconds",
    "ranking",
    "run_count",
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
    fusion_steps: int = 300
    """Continual-training steps of each target run: all runs see the same blocks in the same
    order."""
    fusion_epochs: int = 3
    """Passes over the fusion texts in ``fusion_steps`` steps: the teacher passes cover the texts
    of ``fusion_steps / fusion_epochs`` steps."""
    source_domain_share: float = 0.9
    """Share of a source's training text from its own domain."""
    top_k: int = 128
    lm_weight: float = 0.5
    """Teacher list length and lambda of the fusion runs (paper: 10 and 0.9; a longer list
    and a larger fusion weight gain more here)."""
    level: Literal["sequence", "text"] = "text"
    """Where MinCE/AvgCE choose the teacher: per packed block (``"sequence"``, the paper) or per
    text within a block, by each text's own CE (``"text"``)."""
    ce_temperature: float | None = 1.0
    """AvgCE weights ``softmax(-ce / ce_temperature)``; ``None``: the paper's ``softmax(exp(-ce))``."""
    alignments: Literal["chosen", "all"] = "chosen"
    """Which alignment settings the other-family sources run in: the demo's choice
    (:data:`CROSS_FAMILY_SETTING`) or every row of :data:`ALIGNMENT_SETTINGS` (the price of
    alignment table)."""
    fusion_learning_rate: float = 1e-3
    """Peak learning rate of the continual training."""
    eval_texts: int = 80
    """Held-out texts per domain."""
    seed: int = 0
    """Seed of every random choice."""
    threads: int = 1
    """Torch CPU threads per seed. One: models this small gain little from more, and on a busy
    two-core machine a source trained 17x slower on two threads than on one (threads waiting
    for each other)."""

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A tiny setting that checks the plumbing in well under a minute (numbers meaningless)."""
        settings = {"vocab_size": 400, "hidden_size": 32, "layers": 1, "heads": 2, "chunk_chars": 200,
                    "block_size": 32, "batch_size": 4, "source_steps": 8, "target_steps": 4, "fusion_steps": 6,
                    "top_k": 16, "eval_texts": 8}
        return cls(**{**settings, **overrides})


_DEFAULTS = DemoConfig()


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

    def align_options(self) -> dict[str, str]:
        """The keyword arguments of :func:`fusellm_fast.pipeline.align` for this setting."""
        return {"method": self.method, "candidates": self.candidates, "normalize": self.normalize,
                "onehot": self.onehot, "ce_unit": self.ce_unit}

    @property
    def run_name(self) -> str:
        """The name of this setting's MinCE run."""
        return SETTING_PREFIX + self.name + ", " + ranking(self.ce_unit)

    @property
    def directory(self) -> str:
        """The name of this setting's aligned-data directory."""
        return slug(f"{self.name} {self.ce_unit}")


def ranking(ce_unit: str) -> str:
    """How the teachers are ranked, in words."""
    return f"CE per {ce_unit}"


def _settings() -> tuple[AlignmentSetting, ...]:
    published = AlignmentSetting("published: dtw, marker, MinED, current-token stand-in", "dtw", "mined", "marker",
                                 "current", "token")
    corrected = [("dtw, marker, MinED", "dtw", "mined", "marker", ("token", "byte")),
                 ("offsets, bytes, MinED", "offsets", "mined", "bytes", ("byte",)),
                 ("boundary, bytes, prefix", "boundary", "prefix", "bytes", ("token", "byte"))]
    others = [AlignmentSetting(name, method, candidates, normalize, "next", ce_unit)
              for name, method, candidates, normalize, units in corrected for ce_unit in units]
    return (published, *others)


ALIGNMENT_SETTINGS = _settings()
"""Every setting the demo compares: the published alignment, then the others with the next-token
stand-in, with the teachers ranked by CE per token or per byte of each text."""

CROSS_FAMILY_SETTING = ALIGNMENT_SETTINGS[-1]
"""The demo's choice among :data:`ALIGNMENT_SETTINGS` for the other-family sources (boundary,
bytes, prefix, CE per byte): it kept the most of the identical-tokenizer gain on both domains
in earlier runs. Its MinCE run is the headline row; AvgCE runs in it too."""

CLM_RUN = "CLM only"
CONTROL_RUN = "MinCE, sources on the target's tokenizer"
SETTING_PREFIX = "MinCE, "
PAPER_RUN = "MinCE, the paper's setting: published alignment, top-10, lambda 0.9, per block"
AVG_CE_RUN = "AvgCE, " + CROSS_FAMILY_SETTING.run_name.removeprefix(SETTING_PREFIX)
PAPER_TOP_K = 10
PAPER_LM_WEIGHT = 0.9
"""The paper's list length and lambda, for :data:`PAPER_RUN`."""

SOURCES = {
    "source A (code, byte-level BPE)": ("byte_bpe", "gpt2", "code"),
    "source B (prose, SentencePiece BPE)": ("sp_bpe", "llama", "prose"),
}
CONTROL_SOURCES = {name: f"{name.split(' (')[0]} on the target's tokenizer" for name in SOURCES}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def alignment_settings(config: DemoConfig) -> tuple[AlignmentSetting, ...]:
    """The alignment settings that ``config`` runs, in the order of :data:`ALIGNMENT_SETTINGS`.

    >>> [s.name for s in alignment_settings(DemoConfig())]
    ['boundary, bytes, prefix']
    """
    return ALIGNMENT_SETTINGS if config.alignments == "all" else (CROSS_FAMILY_SETTING,)


def run_count(config: DemoConfig) -> int:
    """Continual-training runs of the target per seed: CLM, the control, each setting of
    :func:`alignment_settings`, AvgCE and the paper's setting."""
    return len(alignment_settings(config)) + 4


# Rounded from the demo's default runs on a shared two-core machine (one thread per seed): a
# source step took 0.2 to 0.37 s, a fusion run 60 to 110 s for 300 steps with its evaluation; and
# the fixed cost of each teacher pass, alignment and run.
_SOURCE_STEP_SECONDS = 0.25
_FUSION_STEP_SECONDS = 0.2
_STAGE_SECONDS = 3.0


def estimated_seconds(config: DemoConfig) -> float:
    """Rough wall time of one seed on two CPU cores, from the default sizes' measured speed,
    scaled by tokens per step and width times depth.

    >>> estimated_seconds(DemoConfig.quick()) < estimated_seconds(DemoConfig()) / 10
    True
    """
    scale = (config.batch_size * config.block_size * config.hidden_size * config.layers
             / (_DEFAULTS.batch_size * _DEFAULTS.block_size * _DEFAULTS.hidden_size * _DEFAULTS.layers))
    steps = 2 * len(SOURCES) * config.source_steps + config.target_steps
    stages = 2 * len(SOURCES) + 1 + len(SOURCES) + 1 + len(alignment_settings(config)) + 2 + run_count(config)
    return (scale * (steps * _SOURCE_STEP_SECONDS + run_count(config) * config.fusion_steps * _FUSION_STEP_SECONDS)
            + stages * _STAGE_SECONDS)


def describe(config: DemoConfig, *, seeds: int, jobs: int, cores: int) -> str:
    """What a demo run will do and about how long it takes, in one line.

    >>> describe(DemoConfig(), seeds=1, jobs=1, cores=2)[:60]
    'fusellm-fast demo: trains 2 sources (code, prose), the same '
    """
    at_once = min(jobs, seeds)
    # Seeds at once share the cores; more of them than cores run that much slower each.
    minutes = -(-seeds // at_once) * max(1.0, at_once * config.threads / cores) * estimated_seconds(config) / 60
    duration = "under a minute" if minutes < 1 else f"about {minutes:.0f} min"
    return (f"fusellm-fast demo: trains {len(SOURCES)} sources (code, prose), the same {len(SOURCES)} on the "
            f"target's tokenizer and a target, then continues training the target {run_count(config)} ways (CLM, "
            f"MinCE, AvgCE) for {config.fusion_steps} steps each; {seeds} seed{'s' if seeds > 1 else ''}, "
            f"{duration} on {cores} CPU core{'s' if cores > 1 else ''}")
