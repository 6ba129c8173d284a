"""The FuseLLM pipeline as resumable stages that read and write directories.

FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv 2401.10491)
trains a target LLM on a corpus with the fused next-token distributions of several source LLMs.
Its stages, each a function here, a module of this package and a subcommand of the
``fusellm-fast`` command:

1. :func:`build_vocab_map` (:mod:`.vocab_mapping`): the MinED map from a source vocabulary to the
   target's (optional: the align stage builds it when not given).
2. :func:`extract` (:mod:`.extraction`): the teacher pass of one model (target or source) over the
   corpus: its own tokenization, top-k next-token lists and cross-entropy per text.
   ``shard=(i, n)`` runs one n-th of the corpus, so that many devices share the pass.
3. :func:`align` (:mod:`.alignment`, optional): carries every source's lists over to the target
   tokenization and vocabulary, and writes them.
4. :func:`train` (:mod:`.training`): continual training of the target with ``FusionTrainer``,
   with the options of a :class:`TrainConfig`, on ``align``'s output or on the teacher passes
   themselves, aligned on the fly (:mod:`.teacher_passes`).

Every stage writes its data directory or a model directory, plus a JSON summary; the formats are
described in each stage's module. Mistakes a user can make (a missing
path, a tokenizer that does not fit its model, outputs of different corpora) raise
:class:`PipelineError` with one line that says what to fix.
"""

from __future__ import annotations

# Besides the names of __all__, the helpers that the command, the demo and the benchmarks use.
from .._choices import CeUnit
from ..hf import load_model, load_tokenizer
from .alignment import align, load_aligned
from .blocks import PackedBlocks
from .config import TrainConfig
from .corpus import read_corpus, split_text
from .errors import PipelineError
from .extraction import ExtractedPass, extract, load_extracted, parse_shard
from .storage import PathLike, nested_array
from .teacher_passes import AlignmentOptions, TeacherPasses, open_teacher_passes
from .summaries import (
    SUMMARY_FILE,
    AlignSummary,
    ExtractSummary,
    TrainSummary,
    VocabMapSummary,
    read_summary,
    write_summary,
)
from .training import train
from .vocab_mapping import build_vocab_map

__all__ = [
    "AlignSummary",
    "AlignmentOptions",
    "ExtractSummary",
    "PipelineError",
    "TrainConfig",
    "TrainSummary",
    "VocabMapSummary",
    "align",
    "build_vocab_map",
    "extract",
    "load_extracted",
    "read_corpus",
    "train",
]

