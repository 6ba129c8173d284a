"""What each stage reports: a frozen dataclass, also written as JSON next to the stage's output."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import PipelineError
from .storage import PathLike

__all__ = [
    "SUMMARY_FILE",
    "AlignSummary",
    "ExtractSummary",
    "TrainSummary",
    "VocabMapSummary",
    "read_summary",
    "write_summary",
]

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class VocabMapSummary:
    """What :func:`~fusellm_fast.pipeline.build_vocab_map` wrote and how good the map is."""

    source_size: int
    target_size: int
    source_marker: str
    target_marker: str
    exact_share: float
    """Share of source tokens whose marker-swapped string is a target token."""
    distance_histogram: dict[str, int]
    """Number of source tokens per edit distance to their image ("0", "1", ..., "8+")."""
    seconds: float


@dataclass(frozen=True)
class ExtractSummary:
    """One model's teacher pass over one shard of a corpus."""

    model: str
    shard: tuple[int, int]
    texts: int
    tokens: int
    truncated_texts: int
    """Texts whose tokenization reached ``max_length`` (and may have been cut)."""
    top_k: int
    max_length: int
    mean_ce: float
    """Token-weighted mean next-token cross-entropy (nats per token)."""
    ce_per_byte: float
    corpus_fingerprint: str
    tokenizer_fingerprint: str
    seconds: float
    tokens_per_second: float


@dataclass(frozen=True)
class AlignSummary:
    """Every source aligned to the target tokenization."""

    texts: int
    target_tokens: int
    sources: list[dict[str, Any]]
    """Per source: its directory, ``matched_rate``, ``kept_mass_rate`` (see
    :class:`~fusellm_fast.AlignmentCounts`), the ``positions``, ``matched``, ``onehot``, ``empty``,
    ``dropped_candidates``, ``fallback_texts`` and ``kept_mass`` counts, and the vocabulary map's
    exact-match share (``None`` where no map was needed)."""
    vocab_align: str
    onehot: str
    ce_unit: str
    ce_level: str
    method: str
    candidates: str
    normalize: str
    target_tokenizer_fingerprint: str
    corpus_fingerprint: str
    seconds: float
    tokens_per_second: float


@dataclass(frozen=True)
class TrainSummary:
    """A finished training run."""

    steps: int
    blocks: int
    block_size: int
    method: str
    lm_weight: float
    level: str
    """Where the teachers were chosen: per block (``"sequence"``), per position (``"token"``) or per
    text (``"text"``)."""
    tail: str
    """What became of the probability outside the top-k lists: ``"renormalize"`` or ``"bucket"``."""
    ce_unit: str
    """The unit of the CE that ranked the teachers, chosen at the align stage."""
    final_loss: float
    seconds: float
    """The whole call, loading and packing included."""
    tokens_per_second: float
    """Training tokens per second of the training loop itself, over all processes."""
    log_history: list[dict[str, float]]


def write_summary(directory: PathLike, summary: Any, name: str = SUMMARY_FILE) -> Path:
    """Writes a summary dataclass as indented JSON into ``directory``."""
    path = Path(directory) / name
    path.write_text(json.dumps(asdict(summary), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_summary(directory: PathLike, name: str = SUMMARY_FILE, *, arg: str) -> dict[str, Any]:
    """The JSON summary a stage wrote into ``directory``, or an error naming ``arg``."""
    path = Path(directory) / name
    if not path.is_file():
        raise PipelineError(f"{arg}: {str(directory)!r} has no {name}; is it the output of the right stage?")
    return json.loads(path.read_text(encoding="utf-8"))
