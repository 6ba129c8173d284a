"""Evaluation of local models the way FuseLLM's results compare them: held-out text, and benchmarks.

FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv 2401.10491)
compares the fused model with its sources, the original target and the plain causal-LM baseline
on benchmarks (BBH, ARC, BoolQ, HellaSwag, OpenBookQA, MultiPL-E). This package runs such a
comparison on any number of local model directories, with any tokenizers:

- :mod:`.nll`: the exact held-out NLL of every text (``EOS text EOS``, long texts in sliding
  windows), batched;
- :mod:`.held_out`: figures that compare across tokenizers: bits per byte and perplexity per
  token of one reference tokenizer;
- :mod:`.harness`: benchmark tasks through lm-evaluation-harness (the ``eval`` extra), offline;
- :mod:`.report`: the JSON, Markdown table and bar chart;
- :mod:`.run`: :func:`evaluate`, what ``fusellm-fast eval`` runs.

Nothing here imports torch or lm-eval until it is called.
"""

from __future__ import annotations

from .harness import INSTALL_EVAL, TaskRunner, parse_tasks
from .held_out import HeldOutScore, held_out_score, utf8_bytes
from .nll import TextNLL, check_options, context_length, predicted_tokens, text_nll
from .report import CHART_FILE, RESULTS_FILE, TABLE_FILE, EvalResult, plot_scores, write_report
from .run import evaluate, named_paths

__all__ = [
    "EvalResult",
    "HeldOutScore",
    "TaskRunner",
    "TextNLL",
    "evaluate",
    "held_out_score",
    "predicted_tokens",
    "text_nll",
]
