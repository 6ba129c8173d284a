"""The demo's run: per seed, every model trained, every stage of the pipeline, every target run
trained and scored; over seeds, the figures and the report."""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from .. import pipeline
from ..errors import InvalidInputError
from .config import (
    ALIGNMENT_SETTINGS,
    AVG_CE_RUN,
    CLM_RUN,
    CONTROL_RUN,
    CONTROL_SOURCES,
    CROSS_FAMILY_SETTING,
    PAPER_LM_WEIGHT,
    PAPER_RUN,
    PAPER_TOP_K,
    SOURCES,
    DemoConfig,
    alignment_settings,
    slug,
)
from .corpora import DemoCorpora, domain_texts, mixture, split_corpora
from ..pipeline.progress import progress_bar
from .models import HeldOutScores, max_tokens, new_model, packed_blocks, pretrain, train_tokenizer
from .report import DemoResult, plot_curves, summarize

__all__ = ["TargetRun", "run_demo", "run_seed"]


@dataclass(frozen=True)
class TargetRun:
    """One way of continually training the target: on which aligned data, how."""

    name: str
    aligned: str
    method: Literal["min_ce", "avg_ce"]
    lm_weight: float
    level: Literal["sequence", "text"]


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
    steps and seeds) on the target's tokenizer as the control, the target; a teacher pass of each
    (top-``config.top_k``, and top-10 of the target and the sources for the paper's setting); the
    sources aligned to the target in each setting of :func:`alignment_settings`; and continual
    training of the target with the same blocks and steps: plain CLM, MinCE with the control
    sources (no alignment needed), MinCE in each setting, AvgCE in :data:`CROSS_FAMILY_SETTING`, all with
    ``config``'s lambda and level, and MinCE in the paper's setting (:data:`PAPER_RUN`).

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
                runs=[CLM_RUN, CONTROL_RUN, CROSS_FAMILY_SETTING.run_name, PAPER_RUN])
    return result


def _run_seed_quietly(directory: pathlib.Path, config: DemoConfig) -> dict[str, Any]:
    from transformers.utils import logging

    # A spawned process starts with the library's default warnings, whatever the parent set.
    logging.set_verbosity_error()

    def log(line: str) -> None:
        print(f"[seed {config.seed}] {line}", flush=True)

    return run_seed(directory, config, show_progress=False, log=log)



def run_seed(directory: pathlib.Path, config: DemoConfig, *, show_progress: bool = True,
             log: Any = print) -> dict[str, Any]:
    """One seed of :func:`run_demo`; the figures of that seed (see :attr:`DemoResult.seeds`)."""
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(config.threads)
    root = pathlib.Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    phase = _Phases(log)
    rng = random.Random(config.seed)
    corpora = split_corpora(domain_texts(config.chunk_chars), eval_texts=config.eval_texts, seed=config.seed)
    models = _trained_models(corpora, config, rng, phase, show_progress=show_progress)
    model_dirs = {}
    for name, (model, tokenizer) in models.items():
        model_dirs[name] = root / "models" / slug(name)
        model.save_pretrained(model_dirs[name])
        tokenizer.save_pretrained(model_dirs[name])
    fusion_texts = mixture(corpora.pool, _EVEN, _texts_for(config.fusion_steps // config.fusion_epochs, config), rng)
    passes = [(name, config.top_k, root / "teacher" / slug(name)) for name in model_dirs]
    # The paper's top-10 lists of the target and the other-family sources, unless top_k is 10 already.
    paper_dirs = {name: root / "teacher" / f"{slug(name)}-top-{PAPER_TOP_K}" for name in ("target before", *SOURCES)}
    passes += [(name, PAPER_TOP_K, path) for name, path in paper_dirs.items() if config.top_k != PAPER_TOP_K]
    for name, top_k, teacher_dir in passes:
        pipeline.extract(model_dirs[name], [], teacher_dir, texts=fusion_texts, top_k=top_k,
                         max_length=max_tokens(config), batch_size=16, show_progress=show_progress)
    phase(f"extract ({len(passes)} teacher passes)")
    teacher_dirs = {name: root / "teacher" / slug(name) for name in model_dirs}
    if config.top_k == PAPER_TOP_K:
        paper_dirs = teacher_dirs
    matched, kept_mass = _align_every_setting(root, config, teacher_dirs, paper_dirs, show_progress=show_progress)
    phase("align (every setting)")

    scores = HeldOutScores(corpora.held_out, models["target before"][1])
    bar = progress_bar(len(models), "evaluate the sources and the target", "model", show=show_progress)
    for name, (model, tokenizer) in models.items():
        scores.add(name, model, tokenizer)
        bar.update()
    bar.close()
    phase("evaluate the sources and the target")
    curves, teacher_choice = _train_target_runs(root, model_dirs["target before"], config, scores,
                                                show_progress=show_progress, phase=phase)
    return {"seed": config.seed, "perplexity": scores.perplexity, "bits_per_byte": scores.bits_per_byte,
            "matched": matched, "kept_mass": kept_mass, "teacher_choice": teacher_choice, "curves": curves,
            "seconds": phase.seconds}


_EVEN = {"code": 0.5, "prose": 0.5}
_OTHER_DOMAIN = {"code": "prose", "prose": "code"}


class _Phases:
    """Times the phases of a seed: each call ends one, logs and keeps its wall time."""

    def __init__(self, log: Any) -> None:
        self.seconds: dict[str, float] = {}
        self._log = log
        self._clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._clock, 1)
        self._clock = now
        self._log(f"[demo] {name}: {self.seconds[name]:.1f} s")

    def announce(self, line: str) -> None:
        """Logs what comes next, without ending a phase."""
        self._log(f"[demo] {line}")


def _texts_for(steps: int, config: DemoConfig) -> int:
    """Pieces of text for ``steps`` training steps: at about 3.5 characters per token, enough for
    every block to be seen about once."""
    return max(64, steps * config.batch_size * config.block_size * 7 // (2 * config.chunk_chars))


def _trained_models(corpora: DemoCorpora, config: DemoConfig, rng: random.Random, phase: _Phases, *,
                    show_progress: bool) -> dict[str, tuple[Any, Any]]:
    """Every source, its control on the target's tokenizer, and the target: name -> (model, tokenizer)."""
    share = config.source_domain_share
    target_tokenizer = train_tokenizer("sp_bpe", mixture(corpora.pool, _EVEN, _texts_for(config.source_steps, config),
                                                         rng), config.vocab_size)
    models: dict[str, tuple[Any, Any]] = {}
    for index, (name, (kind, architecture, domain)) in enumerate(SOURCES.items()):
        texts = mixture(corpora.pool, {domain: share, _OTHER_DOMAIN[domain]: 1 - share},
                        _texts_for(config.source_steps, config), rng)
        # The control source: same architecture, data, steps and seeds, the target's tokenizer.
        for model_name, tokenizer in ((name, train_tokenizer(kind, texts, config.vocab_size)),
                                      (CONTROL_SOURCES[name], target_tokenizer)):
            model = new_model(architecture, tokenizer, config, config.seed + index)
            pretrain(model, packed_blocks(tokenizer, texts, config.block_size), steps=config.source_steps,
                     batch_size=config.batch_size, learning_rate=3e-3, seed=config.seed + index,
                     description=f"train {model_name}", show_progress=show_progress)
            models[model_name] = (model, tokenizer)
            phase(f"train {model_name}")
    target_texts = mixture(corpora.pool, _EVEN, _texts_for(config.target_steps, config), rng)
    target = new_model("llama", target_tokenizer, config, config.seed + 10)
    pretrain(target, packed_blocks(target_tokenizer, target_texts, config.block_size), steps=config.target_steps,
             batch_size=config.batch_size, learning_rate=3e-3, seed=config.seed + 10, description="train target",
             show_progress=show_progress)
    models["target before"] = (target, target_tokenizer)
    phase("train target")
    return models


def _align_every_setting(root: pathlib.Path, config: DemoConfig, teacher_dirs: dict[str, pathlib.Path],
                         paper_dirs: dict[str, pathlib.Path], *,
                         show_progress: bool) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """The sources aligned in every setting, the control sources once, and the paper's top-10
    lists in the published setting; per setting and source the share of matched positions and
    of kept probability mass."""
    target_teacher = teacher_dirs["target before"]
    matched, kept_mass = {}, {}
    for setting in alignment_settings(config):
        summary = pipeline.align(target_teacher, [teacher_dirs[n] for n in SOURCES],
                                 root / "aligned" / setting.directory, show_progress=show_progress,
                                 **setting.align_options())
        matched[setting.name] = {n: round(s["matched_rate"], 4) for n, s in zip(SOURCES, summary.sources)}
        kept_mass[setting.name] = {n: round(s["kept_mass_rate"], 4) for n, s in zip(SOURCES, summary.sources)}
    pipeline.align(target_teacher, [teacher_dirs[CONTROL_SOURCES[n]] for n in SOURCES], root / "aligned" / "control",
                   show_progress=show_progress)
    pipeline.align(paper_dirs["target before"], [paper_dirs[n] for n in SOURCES], root / "aligned" / "paper",
                   show_progress=show_progress, **ALIGNMENT_SETTINGS[0].align_options())
    return matched, kept_mass


def _target_runs(config: DemoConfig) -> list[TargetRun]:
    """CLM, MinCE with the control sources, MinCE in each setting, AvgCE in the demo's
    cross-family setting, MinCE in the paper's setting."""
    fused = {"lm_weight": config.lm_weight, "level": config.level}
    runs = [TargetRun(CLM_RUN, "control", "min_ce", 1.0, "sequence"),
            TargetRun(CONTROL_RUN, "control", "min_ce", **fused)]
    runs += [TargetRun(s.run_name, s.directory, "min_ce", **fused) for s in alignment_settings(config)]
    runs.append(TargetRun(AVG_CE_RUN, CROSS_FAMILY_SETTING.directory, "avg_ce", **fused))
    runs.append(TargetRun(PAPER_RUN, "paper", "min_ce", PAPER_LM_WEIGHT, "sequence"))
    return runs


def _train_target_runs(root: pathlib.Path, target_dir: pathlib.Path, config: DemoConfig, scores: HeldOutScores, *,
                       show_progress: bool, phase: _Phases) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Every target run trained and scored; per run its training curve, and per fusion run each
    model's mean fusion weight."""
    from transformers import AutoModelForCausalLM

    curves, teacher_choice = {}, {}
    runs = _target_runs(config)
    for number, run in enumerate(runs, 1):
        # A short directory name: the progress bar is named after it.
        run_dir = root / "runs" / f"run-{number}-of-{len(runs)}"
        phase.announce(f"run {number} of {len(runs)}: {run.name}")
        summary = pipeline.train(
            target_dir, root / "aligned" / run.aligned, run_dir, method=run.method, lm_weight=run.lm_weight,
            level=run.level, ce_temperature=config.ce_temperature if run.method == "avg_ce" else None,
            block_size=config.block_size, batch_size=config.batch_size,
            learning_rate=config.fusion_learning_rate, warmup_ratio=0.05, max_steps=config.fusion_steps,
            seed=config.seed, logging_steps=max(1, config.fusion_steps // 30), show_progress=show_progress,
        )
        history = summary.log_history
        curves[run.name] = {"step": [e["step"] for e in history], "loss_clm": [e["loss_clm"] for e in history]}
        if run.lm_weight < 1.0:
            weights = [[e[f"teacher_weight_{n}"] for n in range(1 + len(SOURCES))] for e in history]
            teacher_choice[run.name] = [round(float(w), 4) for w in np.mean(weights, axis=0)]
        scores.add(run.name, AutoModelForCausalLM.from_pretrained(run_dir), scores.target_tokenizer)
        # The run directory holds a full model per run; the figures are all that is kept.
        shutil.rmtree(run_dir)
        phase(f"train and evaluate {run.name}")
    return curves, teacher_choice
