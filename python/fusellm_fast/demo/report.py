"""The demo's figures: means and spreads over seeds, the Markdown tables and the training curves."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .config import (
    CLM_RUN,
    CONTROL_RUN,
    CROSS_FAMILY_SETTING,
    DOMAINS,
    SETTING_PREFIX,
    SOURCES,
    DemoConfig,
    alignment_settings,
    ranking,
)

__all__ = ["DemoResult", "kept_gain", "plot_curves", "summarize"]


@dataclass(frozen=True)
class DemoResult:
    """Every figure of a demo run over one or more seeds (also written as ``demo_results.json``).

    Attributes:
        perplexity: per model, per domain, held-out perplexity per target token, mean over seeds.
        perplexity_spread: the same, sample standard deviation over seeds (0 for one seed).
        settings: per alignment setting (one of :func:`~fusellm_fast.demo.config.alignment_settings`): its options,
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
            run = SETTING_PREFIX + row["name"] + ", " + ranking(row["ce_unit"])
            matched = " / ".join(f"{row['matched'][s]:.1%}" for s in sources)
            kept = [self._with_spread(row["kept_gain"][d], row["kept_gain_spread"][d], ".0%") for d in DOMAINS]
            lines.append(f"| {row['name']} | {row['ce_unit']} | {matched} | "
                         + " | ".join(self._cell(run, d) for d in DOMAINS) + " | " + " | ".join(kept) + " |")
        return "\n".join(lines)

    def headline(self) -> str:
        """The gain of fusion over CLM with the control sources and the share of it that the
        cross-family setting keeps, per domain, in words (mean over seeds).

        >>> ppl = {CLM_RUN: {"code": 10.0, "prose": 20.0}, CONTROL_RUN: {"code": 9.0, "prose": 18.0},
        ...        CROSS_FAMILY_SETTING.run_name: {"code": 9.2, "prose": 18.5}}
        >>> print(*DemoResult(ppl, ppl, [], [{"perplexity": ppl}]).headline().split("; "), sep=chr(10))
        MinCE with the control sources beats CLM by 10.0% on code, 10.0% on prose (perplexity)
        the cross-family setting keeps 80% / 75% of that gain.
        """
        gains = ", ".join(f"{1 - self.perplexity[CONTROL_RUN][d] / self.perplexity[CLM_RUN][d]:.1%} on {d}"
                          for d in DOMAINS)
        run = CROSS_FAMILY_SETTING.run_name
        kept = " / ".join(f"{np.mean([kept_gain(seed['perplexity'], run, d) for seed in self.seeds]):.0%}"
                          for d in DOMAINS)
        return (f"MinCE with the control sources beats CLM by {gains} (perplexity); "
                f"the cross-family setting keeps {kept} of that gain.")

    def _cell(self, model: str, domain: str) -> str:
        return self._with_spread(self.perplexity[model][domain], self.perplexity_spread[model][domain], ".2f")

    def _with_spread(self, mean: float, spread: float, spec: str) -> str:
        """``mean``, and ``± spread`` when there are several seeds."""
        return format(mean, spec) + (f" ± {format(spread, spec)}" if len(self.seeds) > 1 else "")



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
    for setting in alignment_settings(config):
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

