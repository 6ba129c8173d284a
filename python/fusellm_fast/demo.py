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
  baseline), FuseLLM MinCE and FuseLLM AvgCE as in the paper, and MinCE with the teachers
  ranked by CE per byte instead of per token.

Held-out perplexities are reported per target token: every model's summed NLL over a held-out
text (its own tokenization, EOS included) divided by the target's token count of the same
texts, so that models with different tokenizers are compared on the same footing.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import random
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from . import pipeline
from .errors import InvalidInputError

__all__ = ["DemoConfig", "DemoResult", "run_demo"]

DOMAINS = ("code", "prose")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. The defaults run in a few minutes on two CPU cores.

    Attributes:
        vocab_size: tokens per trained tokenizer.
        hidden_size, layers, heads: every model's shape.
        chunk_chars: texts are cut into pieces of about this many characters.
        block_size: tokens per training block.
        batch_size: blocks per step.
        source_steps: training steps of each source on its domain.
        target_steps: training steps of the target before the comparison.
        fusion_steps: continual-training steps of each of the three target runs.
        source_domain_share: share of a source's training text from its own domain.
        top_k: teacher list length (paper: 10).
        lm_weight: lambda of the fusion runs (paper: 0.9).
        fusion_learning_rate: peak learning rate of the continual training.
        eval_texts: held-out texts per domain.
        seed: seed of every random choice.
        threads: torch CPU threads; ``None`` keeps torch's default.
    """

    vocab_size: int = 2048
    hidden_size: int = 96
    layers: int = 3
    heads: int = 4
    chunk_chars: int = 400
    block_size: int = 128
    batch_size: int = 8
    source_steps: int = 200
    target_steps: int = 40
    fusion_steps: int = 100
    source_domain_share: float = 0.9
    top_k: int = 10
    lm_weight: float = 0.9
    fusion_learning_rate: float = 1e-3
    eval_texts: int = 80
    seed: int = 0
    threads: int | None = None

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A tiny setting that checks the plumbing in well under a minute (numbers meaningless)."""
        settings = {"vocab_size": 400, "hidden_size": 32, "layers": 1, "heads": 2, "chunk_chars": 200,
                    "block_size": 32, "batch_size": 4, "source_steps": 8, "target_steps": 4, "fusion_steps": 6,
                    "eval_texts": 8}
        return cls(**{**settings, **overrides})


@dataclass(frozen=True)
class DemoResult:
    """Every figure of a demo run (also written as ``demo_results.json``).

    Attributes:
        perplexity: per model, per domain, held-out perplexity per target token.
        bits_per_byte: the same NLL in bits per UTF-8 byte.
        match_rates: per source, the share of target positions that received its distribution.
        teacher_choice: per fusion run, each model's mean fusion weight over training (for MinCE,
            the share of blocks that picked it); model 0 is the target itself.
        curves: per target run, the logged training steps and the causal-LM term of the loss.
        seconds: wall time per phase.
        config: the settings used.
    """

    perplexity: dict[str, dict[str, float]]
    bits_per_byte: dict[str, dict[str, float]]
    match_rates: dict[str, float]
    teacher_choice: dict[str, list[float]]
    curves: dict[str, dict[str, list[float]]]
    seconds: dict[str, float]
    config: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """The perplexity table as Markdown.

        >>> DemoResult({"m": {"code": 2.0, "prose": 3.0}}, {}, {}, {}, {}, {}).table().splitlines()[2]
        '| m | 2.00 | 3.00 |'
        """
        lines = ["| model | " + " | ".join(f"{d} ppl" for d in DOMAINS) + " |",
                 "|---|" + "---:|" * len(DOMAINS)]
        for model, values in self.perplexity.items():
            lines.append(f"| {model} | " + " | ".join(f"{values[d]:.2f}" for d in DOMAINS) + " |")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Corpora
# --------------------------------------------------------------------------------------------


def domain_texts(chunk_chars: int) -> dict[str, list[str]]:
    """The two domains as lists of pieces of about ``chunk_chars`` characters, in a fixed order.

    >>> texts = domain_texts(400)
    >>> sorted(texts), all(len(t) <= 400 for t in texts["prose"])
    (['code', 'prose'], True)
    """
    import pydoc_data.topics

    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    code = [path.read_text(encoding="utf-8", errors="replace") for path in sorted(stdlib.glob("*.py"))]
    prose = [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]
    return {
        name: [piece for text in documents for piece in pipeline.split_text(text, chunk_chars) if piece.strip()]
        for name, documents in (("code", code), ("prose", prose))
    }


@dataclass(frozen=True)
class DemoCorpora:
    """Disjoint held-out texts and a training pool per domain."""

    held_out: dict[str, list[str]]
    pool: dict[str, list[str]]


def split_corpora(texts: dict[str, list[str]], *, eval_texts: int, seed: int) -> DemoCorpora:
    """Every tenth piece may be held out; ``eval_texts`` of them per domain are, chosen at random."""
    rng = random.Random(seed)
    held_out, pool = {}, {}
    for name, pieces in texts.items():
        candidates = pieces[::10]
        held_out[name] = rng.sample(candidates, min(eval_texts, len(candidates)))
        pool[name] = [piece for i, piece in enumerate(pieces) if i % 10]
    return DemoCorpora(held_out=held_out, pool=pool)


def mixture(pool: dict[str, list[str]], shares: dict[str, float], count: int, rng: random.Random) -> list[str]:
    """``count`` pieces drawn from the domains in the given shares."""
    names = list(shares)
    weights = [shares[name] for name in names]
    return [rng.choice(pool[rng.choices(names, weights)[0]]) for _ in range(count)]


# --------------------------------------------------------------------------------------------
# Tokenizers and models
# --------------------------------------------------------------------------------------------

TokenizerKind = Literal["byte_bpe", "sp_bpe"]


def train_tokenizer(kind: TokenizerKind, texts: Sequence[str], vocab_size: int) -> Any:
    """A small BPE tokenizer trained on ``texts``, as a ``PreTrainedTokenizerFast``.

    ``"byte_bpe"`` is GPT-2-style byte-level BPE (space marker ``Ġ``); ``"sp_bpe"`` is
    SentencePiece-style BPE (``▁``, an unknown-token for characters it never saw). Both trainers
    are deterministic, so the same texts give the same vocabulary.

    >>> tokenizer = train_tokenizer("sp_bpe", ["a b c", "a b"], 40)
    >>> tokenizer.convert_ids_to_tokens(tokenizer("a b")["input_ids"])
    ['▁a', '▁b']
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "byte_bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        special = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    elif kind == "sp_bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "</s>"], show_progress=False)
        special = {"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}
    else:
        raise InvalidInputError(f"kind: must be 'byte_bpe' or 'sp_bpe', got {kind!r}")
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)


def new_model(architecture: str, tokenizer: Any, config: DemoConfig, seed: int) -> Any:
    """A freshly initialised small causal LM (``"gpt2"`` or ``"llama"``) for ``tokenizer``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    ids = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    positions = max_tokens(config)
    if architecture == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=config.hidden_size, n_layer=config.layers,
                                          n_head=config.heads, n_positions=positions, **ids))
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=3 * config.hidden_size,
        num_hidden_layers=config.layers, num_attention_heads=config.heads, num_key_value_heads=config.heads,
        max_position_embeddings=positions, **ids))


def max_tokens(config: DemoConfig) -> int:
    """Room for any piece of text in any tokenizer: at most two tokens per character (byte-level
    BPE spends one token per UTF-8 byte on unseen characters), plus EOS."""
    return 2 * config.chunk_chars + 8


def packed_blocks(tokenizer: Any, texts: Sequence[str], block_size: int) -> np.ndarray:
    """The texts' tokens, each followed by EOS, concatenated and cut into ``[blocks, block_size]``."""
    stream = [token for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]
              for token in (*ids, tokenizer.eos_token_id)]
    usable = len(stream) // block_size * block_size
    return np.asarray(stream[:usable], dtype=np.int64).reshape(-1, block_size)


def pretrain(model: Any, blocks: np.ndarray, *, steps: int, batch_size: int, learning_rate: float,
             seed: int) -> list[float]:
    """Plain causal-LM training from scratch (AdamW, warm-up then cosine decay); the step losses."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    data = torch.from_numpy(blocks)
    losses = []
    model.train()
    for _ in range(steps):
        batch = data[torch.randint(len(data), (batch_size,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def held_out_nll(model: Any, tokenizer: Any, texts: Sequence[str]) -> tuple[float, int]:
    """Summed NLL (nats) of every token of every text, EOS included, and the token count.

    Each text is scored on its own as ``EOS text EOS``, so that every token of the text and the
    closing EOS are predicted, whatever the tokenizer.
    """
    import torch

    eos = tokenizer.eos_token_id
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            sequence = torch.tensor([[eos, *ids, eos]])
            logits = model(input_ids=sequence).logits[0, :-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, sequence[0, 1:], reduction="sum"))
            count += len(ids) + 1
    return total, count


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

SOURCES = {
    "source A (code, byte-level BPE)": ("byte_bpe", "gpt2", "code"),
    "source B (prose, SentencePiece BPE)": ("sp_bpe", "llama", "prose"),
}


@dataclass(frozen=True)
class TargetRun:
    """One way of continually training the target; ``lm_weight=None`` takes the config's."""

    name: str
    method: Literal["min_ce", "avg_ce"]
    lm_weight: float | None
    ce_unit: Literal["token", "byte"]


TARGET_RUNS = (
    TargetRun("CLM only", "min_ce", 1.0, "token"),
    TargetRun("FuseLLM MinCE", "min_ce", None, "token"),
    TargetRun("FuseLLM AvgCE", "avg_ce", None, "token"),
    # The paper's per-token CE favours finer tokenizers when ranking teachers; per byte is fair.
    TargetRun("FuseLLM MinCE, CE per byte", "min_ce", None, "byte"),
)


def run_demo(
    output: str | os.PathLike[str],
    config: DemoConfig = DemoConfig(),
    *,
    show_progress: bool = True,
    log: Any = print,
) -> DemoResult:
    """Runs the whole miniature and writes ``demo_results.json``, ``demo_table.md`` and
    ``demo_curves.png`` into ``output`` (models and intermediate stages go below it too).

    Args:
        output: the working directory.
        config: the sizes.
        show_progress: draw progress bars.
        log: called with one line of text per phase.

    Returns:
        Every figure of the run.

    >>> result = run_demo("demo-out", DemoConfig.quick(), log=lambda line: None)  # doctest: +SKIP
    >>> sorted(result.perplexity)[0]  # doctest: +SKIP
    'CLM only'
    """
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    root = pathlib.Path(output)
    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 1)
        clock = now
        log(f"[demo] {name}: {seconds[name]:.1f} s")

    rng = random.Random(config.seed)
    corpora = split_corpora(domain_texts(config.chunk_chars), eval_texts=config.eval_texts, seed=config.seed)
    tokens_per_step = config.batch_size * config.block_size
    # About 3.5 characters per token: enough text for every block to be seen about once.
    def texts_for(steps: int) -> int:
        return max(64, steps * tokens_per_step * 7 // (2 * config.chunk_chars))

    other = {"code": "prose", "prose": "code"}
    share = config.source_domain_share
    models: dict[str, tuple[Any, Any]] = {}
    for index, (name, (kind, architecture, domain)) in enumerate(SOURCES.items()):
        texts = mixture(corpora.pool, {domain: share, other[domain]: 1 - share}, texts_for(config.source_steps), rng)
        tokenizer = train_tokenizer(kind, texts, config.vocab_size)
        model = new_model(architecture, tokenizer, config, config.seed + index)
        pretrain(model, packed_blocks(tokenizer, texts, config.block_size), steps=config.source_steps,
                 batch_size=config.batch_size, learning_rate=3e-3, seed=config.seed + index)
        models[name] = (model, tokenizer)
        phase(f"train {name}")
    even = {"code": 0.5, "prose": 0.5}
    target_texts = mixture(corpora.pool, even, texts_for(config.target_steps), rng)
    target_tokenizer = train_tokenizer("sp_bpe", mixture(corpora.pool, even, texts_for(config.source_steps), rng),
                                       config.vocab_size)
    target = new_model("llama", target_tokenizer, config, config.seed + 10)
    pretrain(target, packed_blocks(target_tokenizer, target_texts, config.block_size), steps=config.target_steps,
             batch_size=config.batch_size, learning_rate=3e-3, seed=config.seed + 10)
    models["target before"] = (target, target_tokenizer)
    phase("train target")

    model_dirs = {}
    for name, (model, tokenizer) in models.items():
        directory = root / "models" / _slug(name)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        model_dirs[name] = directory

    fusion_texts = mixture(corpora.pool, even, texts_for(config.fusion_steps), rng)
    teacher_dirs = {}
    for name, directory in model_dirs.items():
        teacher_dirs[name] = root / "teacher" / _slug(name)
        pipeline.extract(directory, [], teacher_dirs[name], texts=fusion_texts, top_k=config.top_k,
                         max_length=max_tokens(config), batch_size=16, show_progress=show_progress)
    phase("extract (3 teacher passes)")
    source_names = list(SOURCES)
    for ce_unit in sorted({run.ce_unit for run in TARGET_RUNS}):
        aligned = pipeline.align(teacher_dirs["target before"], [teacher_dirs[n] for n in source_names],
                                 root / f"aligned-ce-per-{ce_unit}", ce_unit=ce_unit, show_progress=show_progress)
    match_rates = {name: s["matched_rate"] for name, s in zip(source_names, aligned.sources)}
    phase("align")

    from transformers import AutoModelForCausalLM

    curves, teacher_choice = {}, {}
    for run in TARGET_RUNS:
        run_name = run.name
        lm_weight = config.lm_weight if run.lm_weight is None else run.lm_weight
        run_dir = root / "runs" / _slug(run_name)
        summary = pipeline.train(
            model_dirs["target before"], root / f"aligned-ce-per-{run.ce_unit}", run_dir, method=run.method,
            lm_weight=lm_weight, block_size=config.block_size, batch_size=config.batch_size,
            learning_rate=config.fusion_learning_rate, warmup_ratio=0.05, max_steps=config.fusion_steps,
            seed=config.seed, logging_steps=max(1, config.fusion_steps // 30), show_progress=show_progress,
        )
        history = summary.log_history
        curves[run_name] = {"step": [e["step"] for e in history], "loss_clm": [e["loss_clm"] for e in history]}
        if lm_weight < 1.0:
            weights = [[e[f"teacher_weight_{n}"] for n in range(1 + len(SOURCES))] for e in history]
            teacher_choice[run_name] = [round(float(w), 4) for w in np.mean(weights, axis=0)]
        models[run_name] = (AutoModelForCausalLM.from_pretrained(run_dir), target_tokenizer)
        phase(f"train {run_name}")

    perplexity: dict[str, dict[str, float]] = {}
    bits: dict[str, dict[str, float]] = {}
    target_counts = {d: held_out_nll(target, target_tokenizer, corpora.held_out[d])[1] for d in DOMAINS}
    for name, (model, tokenizer) in models.items():
        perplexity[name], bits[name] = {}, {}
        for domain in DOMAINS:
            nll, _ = held_out_nll(model, tokenizer, corpora.held_out[domain])
            num_bytes = sum(len(text.encode("utf-8")) for text in corpora.held_out[domain])
            perplexity[name][domain] = round(math.exp(nll / target_counts[domain]), 3)
            bits[name][domain] = round(nll / math.log(2) / num_bytes, 4)
    phase("evaluate")

    result = DemoResult(perplexity=perplexity, bits_per_byte=bits, match_rates=match_rates,
                        teacher_choice=teacher_choice, curves=curves, seconds=seconds, config=asdict(config))
    (root / "demo_results.json").write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    (root / "demo_table.md").write_text(result.table() + "\n", encoding="utf-8")
    plot_curves(result, root / "demo_curves.png")
    return result


def plot_curves(result: DemoResult, path: pathlib.Path, *, baseline: str = "CLM only") -> None:
    """Two panels: the causal-LM term of each target run's training loss (moving average), and
    its difference from the baseline run's at each logged step. All runs see the same blocks in
    the same order, so the difference is free of the batch-to-batch noise of the loss itself."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    def smooth(values: list[float], window: int = 5) -> np.ndarray:
        padded = np.pad(np.asarray(values, dtype=np.float64), (window // 2, window // 2), mode="edge")
        return np.convolve(padded, np.ones(window) / window, mode="valid")

    figure, (losses, differences) = pyplot.subplots(1, 2, figsize=(11, 4.0), dpi=110)
    reference = np.asarray(result.curves[baseline]["loss_clm"])
    for name, curve in result.curves.items():
        losses.plot(curve["step"], smooth(curve["loss_clm"]), label=name)
        differences.plot(curve["step"], smooth(list(np.asarray(curve["loss_clm"]) - reference)), label=name)
    losses.set_ylabel("causal-LM loss on the training blocks (nats/token)")
    losses.set_title("Continual training of the target (moving average)")
    differences.set_ylabel(f"minus the {baseline} run's loss on the same blocks")
    differences.set_title("Difference from plain continual training")
    differences.axhline(0.0, color="grey", linewidth=0.8)
    for axes in (losses, differences):
        axes.set_xlabel("training step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")
