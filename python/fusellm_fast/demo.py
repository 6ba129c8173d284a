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

import inspect
import json
import math
import os
import pathlib
import random
import shutil
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
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
    source_steps: int = 600
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
        return SETTING_PREFIX + self.name + ", " + _ranking(self.ce_unit, self.ce_level)

    @property
    def directory(self) -> str:
        """The name of this setting's aligned-data directory."""
        return _slug(f"{self.name} {self.ce_unit} {self.ce_level}")


def _ranking(ce_unit: str, ce_level: str) -> str:
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


@dataclass(frozen=True)
class DemoResult:
    """Every figure of a demo run over one or more seeds (also written as ``demo_results.json``).

    Attributes:
        perplexity: per model, per domain, held-out perplexity per target token, mean over seeds.
        perplexity_spread: the same, sample standard deviation over seeds (0 for one seed).
        settings: per alignment setting (one row of :data:`ALIGNMENT_SETTINGS`): its options,
            ``matched`` (per source, the mean share of target positions that received the source's
            distribution), ``kept_mass`` (per source, the mean share of top-k probability that
            survived the candidate mapping), ``kept_gain`` and ``kept_gain_spread`` (per domain,
            mean and spread over seeds of the share of the identical-tokenizer gain kept:
            ``(CLM - run) / (CLM - control)`` in perplexity).
        seeds: per seed, its own figures: ``perplexity``, ``bits_per_byte``, ``matched``,
            ``kept_mass``, ``teacher_choice`` (per fusion run, each model's mean fusion weight; for
            MinCE the share of blocks that picked it; model 0 is the target), ``curves`` (per
            continual-training run, the logged steps and the causal-LM term of the loss) and
            ``seconds`` (wall time per phase).
        config: the settings used (``seed`` is the first seed).
    """

    perplexity: dict[str, dict[str, float]]
    perplexity_spread: dict[str, dict[str, float]]
    settings: list[dict[str, Any]]
    seeds: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """The perplexity of every model as Markdown (mean ± spread with several seeds).

        >>> DemoResult({"m": {"code": 2.0, "prose": 3.0}}, {"m": {"code": 0.0, "prose": 0.0}}, [], [{}]).table()
        '| model | code ppl | prose ppl |\\n|---|---:|---:|\\n| m | 2.00 | 3.00 |'
        """
        lines = ["| model | " + " | ".join(f"{d} ppl" for d in DOMAINS) + " |", "|---|" + "---:|" * len(DOMAINS)]
        for model, values in self.perplexity.items():
            lines.append(f"| {model} | " + " | ".join(self._cell(model, d) for d in DOMAINS) + " |")
        return "\n".join(lines)

    def settings_table(self) -> str:
        """Per alignment setting: matched positions, perplexity and the share of the
        identical-tokenizer gain kept, as Markdown."""
        sources = list(SOURCES)
        lines = ["| alignment | CE unit | matched (A / B) | " + " | ".join(f"{d} ppl" for d in DOMAINS)
                 + " | " + " | ".join(f"kept, {d}" for d in DOMAINS) + " |",
                 "|---|---|---:|" + "---:|" * (2 * len(DOMAINS))]
        for row in self.settings:
            level = row.get("ce_level", "sequence")
            run = SETTING_PREFIX + row["name"] + ", " + _ranking(row["ce_unit"], level)
            matched = " / ".join(f"{row['matched'][s]:.1%}" for s in sources)
            kept = [self._with_spread(row["kept_gain"][d], row["kept_gain_spread"][d], ".0%") for d in DOMAINS]
            unit = row["ce_unit"] + (", per position" if level == "token" else "")
            lines.append(f"| {row['name']} | {unit} | {matched} | "
                         + " | ".join(self._cell(run, d) for d in DOMAINS) + " | " + " | ".join(kept) + " |")
        return "\n".join(lines)

    def _cell(self, model: str, domain: str) -> str:
        return self._with_spread(self.perplexity[model][domain], self.perplexity_spread[model][domain], ".2f")

    def _with_spread(self, mean: float, spread: float, spec: str) -> str:
        """``mean``, and ``± spread`` when there are several seeds."""
        return format(mean, spec) + (f" ± {format(spread, spec)}" if len(self.seeds) > 1 else "")


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
CONTROL_SOURCES = {name: f"{name.split(' (')[0]} on the target's tokenizer" for name in SOURCES}


@dataclass(frozen=True)
class TargetRun:
    """One way of continually training the target: on which aligned data, how."""

    name: str
    aligned: str
    method: Literal["min_ce", "avg_ce"]
    lm_weight: float


def run_demo(
    output: str | os.PathLike[str],
    config: DemoConfig = DemoConfig(),
    *,
    seeds: int = 1,
    jobs: int = 1,
    show_progress: bool = True,
    log: Any = print,
) -> DemoResult:
    """Runs the whole miniature once per seed and writes ``demo_results.json``, ``demo_table.md``
    and ``demo_curves.png`` into ``output`` (each seed's models and stage directories go below
    ``output/seed-S``).

    Per seed: two sources on other tokenizers than the target's, the same two sources (same data,
    steps and seeds) on the target's tokenizer as the control, the target; a teacher pass of each;
    the sources aligned to the target in every :data:`ALIGNMENT_SETTINGS` row; and continual
    training of the target with the same blocks and steps: plain CLM, MinCE with the control
    sources (no alignment needed), MinCE in every setting, and AvgCE in the library's default one.

    Args:
        output: the working directory.
        config: the sizes; ``config.seed`` is the first seed.
        seeds: how many seeds (``config.seed``, ``config.seed + 1``, ...).
        jobs: seeds run at the same time, each in its own process.
        show_progress: draw progress bars.
        log: called with one line of text per phase.

    Returns:
        Every figure of the run.

    Raises:
        InvalidInputError: ``seeds`` or ``jobs`` is not a positive int.

    >>> result = run_demo("demo-out", DemoConfig.quick(), log=lambda line: None)  # doctest: +SKIP
    >>> sorted(result.perplexity)[0]  # doctest: +SKIP
    'CLM only'
    """
    for name, value in (("seeds", seeds), ("jobs", jobs)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise InvalidInputError(f"{name}: must be a positive int, got {value!r}")
    root = pathlib.Path(output)
    root.mkdir(parents=True, exist_ok=True)
    if jobs > 1 and config.threads is None:
        config = replace(config, threads=max(1, (os.cpu_count() or 1) // min(jobs, seeds)))
    configs = [replace(config, seed=config.seed + offset) for offset in range(seeds)]
    directories = [root / f"seed-{c.seed}" for c in configs]
    if jobs == 1:
        per_seed = [run_seed(d, c, show_progress=show_progress, log=log) for d, c in zip(directories, configs)]
    else:
        import concurrent.futures
        import multiprocessing

        # Spawned, not forked: torch's thread pools do not survive a fork.
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(jobs, seeds), mp_context=spawn) as pool:
            per_seed = list(pool.map(_run_seed_quietly, directories, configs))
    result = summarize(per_seed, config)
    (root / "demo_results.json").write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    (root / "demo_table.md").write_text(result.table() + "\n\n" + result.settings_table() + "\n", encoding="utf-8")
    plot_curves(per_seed[0]["curves"], root / "demo_curves.png",
                runs=[CLM_RUN, CONTROL_RUN, default_setting().run_name, ALIGNMENT_SETTINGS[0].run_name])
    return result


def _run_seed_quietly(directory: pathlib.Path, config: DemoConfig) -> dict[str, Any]:
    def log(line: str) -> None:
        print(f"[seed {config.seed}] {line}", flush=True)

    return run_seed(directory, config, show_progress=False, log=log)


def default_setting() -> AlignmentSetting:
    """The row of :data:`ALIGNMENT_SETTINGS` with the defaults of :func:`fusellm_fast.pipeline.align`."""
    parameters = inspect.signature(pipeline.align).parameters
    return next(s for s in ALIGNMENT_SETTINGS if all(parameters[k].default == v for k, v in s.align_options().items()))


def run_seed(directory: pathlib.Path, config: DemoConfig, *, show_progress: bool = True,
             log: Any = print) -> dict[str, Any]:
    """One seed of :func:`run_demo`; the figures of that seed (see :attr:`DemoResult.seeds`)."""
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    root = pathlib.Path(directory)
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
    even = {"code": 0.5, "prose": 0.5}
    share = config.source_domain_share
    target_tokenizer = train_tokenizer("sp_bpe", mixture(corpora.pool, even, texts_for(config.source_steps), rng),
                                       config.vocab_size)
    models: dict[str, tuple[Any, Any]] = {}
    for index, (name, (kind, architecture, domain)) in enumerate(SOURCES.items()):
        texts = mixture(corpora.pool, {domain: share, other[domain]: 1 - share}, texts_for(config.source_steps), rng)
        # The control source: same architecture, data, steps and seeds, the target's tokenizer.
        for model_name, tokenizer in ((name, train_tokenizer(kind, texts, config.vocab_size)),
                                      (CONTROL_SOURCES[name], target_tokenizer)):
            model = new_model(architecture, tokenizer, config, config.seed + index)
            pretrain(model, packed_blocks(tokenizer, texts, config.block_size), steps=config.source_steps,
                     batch_size=config.batch_size, learning_rate=3e-3, seed=config.seed + index)
            models[model_name] = (model, tokenizer)
            phase(f"train {model_name}")
    target_texts = mixture(corpora.pool, even, texts_for(config.target_steps), rng)
    target = new_model("llama", target_tokenizer, config, config.seed + 10)
    pretrain(target, packed_blocks(target_tokenizer, target_texts, config.block_size), steps=config.target_steps,
             batch_size=config.batch_size, learning_rate=3e-3, seed=config.seed + 10)
    models["target before"] = (target, target_tokenizer)
    phase("train target")

    model_dirs = {}
    for name, (model, tokenizer) in models.items():
        model_dirs[name] = root / "models" / _slug(name)
        model.save_pretrained(model_dirs[name])
        tokenizer.save_pretrained(model_dirs[name])
    fusion_texts = mixture(corpora.pool, even, texts_for(config.fusion_steps), rng)
    teacher_dirs = {}
    for name, model_dir in model_dirs.items():
        teacher_dirs[name] = root / "teacher" / _slug(name)
        pipeline.extract(model_dir, [], teacher_dirs[name], texts=fusion_texts, top_k=config.top_k,
                         max_length=max_tokens(config), batch_size=16, show_progress=show_progress)
    phase(f"extract ({len(model_dirs)} teacher passes)")

    target_teacher = teacher_dirs["target before"]
    matched, kept_mass = {}, {}
    for setting in ALIGNMENT_SETTINGS:
        summary = pipeline.align(target_teacher, [teacher_dirs[n] for n in SOURCES],
                                 root / "aligned" / setting.directory, show_progress=show_progress,
                                 **setting.align_options())
        matched[setting.name] = {n: round(s["matched_rate"], 4) for n, s in zip(SOURCES, summary.sources)}
        kept_mass[setting.name] = {n: round(s["kept_mass_rate"], 4) for n, s in zip(SOURCES, summary.sources)}
    pipeline.align(target_teacher, [teacher_dirs[CONTROL_SOURCES[n]] for n in SOURCES], root / "aligned" / "control",
                   show_progress=show_progress)
    phase("align (every setting)")

    default = default_setting()
    runs = [TargetRun(CLM_RUN, "control", "min_ce", 1.0), TargetRun(CONTROL_RUN, "control", "min_ce", config.lm_weight)]
    runs += [TargetRun(s.run_name, s.directory, "min_ce", config.lm_weight) for s in ALIGNMENT_SETTINGS]
    runs.append(TargetRun(default.run_name.replace("MinCE", "AvgCE", 1), default.directory, "avg_ce", config.lm_weight))
    held_out_bytes = {d: sum(len(text.encode("utf-8")) for text in corpora.held_out[d]) for d in DOMAINS}
    target_counts = {d: held_out_nll(target, target_tokenizer, corpora.held_out[d])[1] for d in DOMAINS}
    perplexity: dict[str, dict[str, float]] = {}
    bits: dict[str, dict[str, float]] = {}

    def evaluate(name: str, model: Any, tokenizer: Any) -> None:
        perplexity[name], bits[name] = {}, {}
        for domain in DOMAINS:
            nll, _ = held_out_nll(model, tokenizer, corpora.held_out[domain])
            perplexity[name][domain] = round(math.exp(nll / target_counts[domain]), 3)
            bits[name][domain] = round(nll / math.log(2) / held_out_bytes[domain], 4)

    for name, (model, tokenizer) in models.items():
        evaluate(name, model, tokenizer)
    phase("evaluate the sources and the target")

    from transformers import AutoModelForCausalLM

    curves, teacher_choice = {}, {}
    for run in runs:
        run_dir = root / "runs" / _slug(run.name)
        summary = pipeline.train(
            model_dirs["target before"], root / "aligned" / run.aligned, run_dir, method=run.method,
            lm_weight=run.lm_weight, block_size=config.block_size, batch_size=config.batch_size,
            learning_rate=config.fusion_learning_rate, warmup_ratio=0.05, max_steps=config.fusion_steps,
            seed=config.seed, logging_steps=max(1, config.fusion_steps // 30), show_progress=show_progress,
        )
        history = summary.log_history
        curves[run.name] = {"step": [e["step"] for e in history], "loss_clm": [e["loss_clm"] for e in history]}
        if run.lm_weight < 1.0:
            weights = [[e[f"teacher_weight_{n}"] for n in range(1 + len(SOURCES))] for e in history]
            teacher_choice[run.name] = [round(float(w), 4) for w in np.mean(weights, axis=0)]
        evaluate(run.name, AutoModelForCausalLM.from_pretrained(run_dir), target_tokenizer)
        # The run directory holds a full model per run; the figures are all that is kept.
        shutil.rmtree(run_dir)
        phase(f"train and evaluate {run.name}")
    return {"seed": config.seed, "perplexity": perplexity, "bits_per_byte": bits, "matched": matched,
            "kept_mass": kept_mass, "teacher_choice": teacher_choice, "curves": curves, "seconds": seconds}


def kept_gain(perplexity: dict[str, dict[str, float]], run: str, domain: str) -> float:
    """Share of the identical-tokenizer fusion gain over CLM that ``run`` keeps, in perplexity.

    >>> kept_gain({"CLM only": {"code": 30.0}, CONTROL_RUN: {"code": 28.0}, "x": {"code": 29.0}}, "x", "code")
    0.5
    """
    gain = perplexity[CLM_RUN][domain] - perplexity[CONTROL_RUN][domain]
    return (perplexity[CLM_RUN][domain] - perplexity[run][domain]) / gain if gain else float("nan")


def summarize(per_seed: list[dict[str, Any]], config: DemoConfig) -> DemoResult:
    """Means and spreads over seeds of the per-seed figures of :func:`run_seed`."""

    def spread(values: list[float]) -> float:
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    models = list(per_seed[0]["perplexity"])
    values = {m: {d: [seed["perplexity"][m][d] for seed in per_seed] for d in DOMAINS} for m in models}
    rows = []
    for setting in ALIGNMENT_SETTINGS:
        run = setting.run_name
        kept = {d: [kept_gain(seed["perplexity"], run, d) for seed in per_seed] for d in DOMAINS}
        rows.append({
            **asdict(setting),
            "matched": {n: round(float(np.mean([seed["matched"][setting.name][n] for seed in per_seed])), 4)
                        for n in SOURCES},
            "kept_mass": {n: round(float(np.mean([seed["kept_mass"][setting.name][n] for seed in per_seed])), 4)
                          for n in SOURCES},
            "kept_gain": {d: round(float(np.mean(kept[d])), 4) for d in DOMAINS},
            "kept_gain_spread": {d: round(spread(kept[d]), 4) for d in DOMAINS},
        })
    return DemoResult(
        perplexity={m: {d: round(float(np.mean(v)), 3) for d, v in values[m].items()} for m in models},
        perplexity_spread={m: {d: round(spread(v), 3) for d, v in values[m].items()} for m in models},
        settings=rows, seeds=per_seed, config=asdict(config))


def plot_curves(curves: dict[str, dict[str, list[float]]], path: pathlib.Path, *, runs: Sequence[str],
                baseline: str = CLM_RUN) -> None:
    """Two panels: the causal-LM term of the training loss of each of ``runs`` (moving average),
    and its difference from the baseline run's at each logged step. All runs see the same blocks
    in the same order, so the difference is free of the batch-to-batch noise of the loss itself."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    def smooth(values: list[float], window: int = 5) -> np.ndarray:
        padded = np.pad(np.asarray(values, dtype=np.float64), (window // 2, window // 2), mode="edge")
        return np.convolve(padded, np.ones(window) / window, mode="valid")

    figure, (losses, differences) = pyplot.subplots(1, 2, figsize=(11, 4.0), dpi=110)
    reference = np.asarray(curves[baseline]["loss_clm"])
    for name in dict.fromkeys(runs):
        curve = curves[name]
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
