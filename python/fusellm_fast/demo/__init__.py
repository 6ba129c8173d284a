"""A miniature of the FuseLLM experiment that runs offline on a laptop CPU.

FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv 2401.10491)
claims that continual training of a target LLM on the fused distributions of source LLMs beats
plain continual training at equal data and steps. This demo tests that claim at toy scale with
only what a Python installation ships:

- two domains: the standard library's Python source ("code") and ``pydoc_data``'s English help
  text ("prose");
- source A, a GPT-2-style model with a byte-level BPE tokenizer (space marker ``Ġ``), trained
  mostly on code; source B, a Llama-style model with a SentencePiece-style BPE tokenizer (``▁``),
  trained mostly on prose; the target, a Llama-style model with its own SentencePiece-style
  vocabulary, briefly trained on the mix;
- the pipeline's stages (teacher pass, alignment, training) on new mixed text, training the
  target several ways with the same blocks and steps: plain causal LM (the paper's "CLM"
  baseline), FuseLLM MinCE with sources on the target's own tokenizer (the control, no
  alignment) and with the other-family sources in several alignment settings, AvgCE, and MinCE
  in the paper's own setting (top-10 lists, lambda 0.9, one teacher per packed block).

Held-out perplexities are reported per target token: every model's summed NLL over a held-out
text (its own tokenization, EOS included) divided by the target's token count of the same
texts, so that models with different tokenizers are compared on the same footing.
"""

from __future__ import annotations

from .config import (
    ALIGNMENT_SETTINGS,
    AVG_CE_RUN,
    CLM_RUN,
    CONTROL_RUN,
    CONTROL_SOURCES,
    CROSS_FAMILY_SETTING,
    DOMAINS,
    PAPER_RUN,
    SETTING_PREFIX,
    SOURCES,
    AlignmentSetting,
    DemoConfig,
    alignment_settings,
    describe,
)
from .corpora import DemoCorpora, domain_texts, mixture, split_corpora
from .models import TokenizerKind, max_tokens, new_model, packed_blocks, pretrain, train_tokenizer
from .report import DemoResult, kept_gain, plot_curves, summarize
from .run import TargetRun, run_demo, run_seed

__all__ = ["DemoConfig", "DemoResult", "run_demo"]
