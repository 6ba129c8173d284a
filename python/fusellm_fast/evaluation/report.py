"""An evaluation's figures: the result, its Markdown tables, its JSON and its bar chart."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .held_out import HeldOutScore

__all__ = ["RESULTS_FILE", "TABLE_FILE", "CHART_FILE", "EvalResult", "plot_scores", "write_report"]

RESULTS_FILE = "eval_results.json"
TABLE_FILE = "eval_table.md"
CHART_FILE = "eval_scores.png"


@dataclass(frozen=True)
class EvalResult:
    """Every figure of one evaluation (also written as ``eval_results.json``).

    Attributes:
        models: name -> model directory.
        corpora: name -> the corpus path, its texts and UTF-8 bytes.
        per_token_of: the model name (or tokenizer directory) whose tokens the perplexities are per.
        held_out: per model, per corpus, its :class:`~fusellm_fast.evaluation.HeldOutScore`.
        tasks: per model, per benchmark task, lm-eval's metrics (``acc``, ``acc_stderr``, ...).
        settings: the options of the run and the versions of the libraries.
    """

    models: dict[str, str]
    corpora: dict[str, dict[str, Any]]
    per_token_of: str
    held_out: dict[str, dict[str, HeldOutScore]] = field(default_factory=dict)
    tasks: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """One row per model: bits per byte and perplexity on every corpus, then every task's
        metrics (``± stderr`` where lm-eval gives one), as Markdown.

        >>> EvalResult({"m": "models/m"}, {}, "m", tasks={"m": {"arc": {"acc": 0.5, "acc_stderr": 0.1}}}).table()
        '| model | arc acc |\\n|---|---:|\\n| m | 0.5000 ± 0.1000 |'
        """
        columns = [f"{corpus} bits/byte" for corpus in self.corpora]
        columns += [f"{corpus} ppl" for corpus in self.corpora]
        columns += [f"{task} {metric}" for task, metric in self.task_columns()]
        lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        for model in self.models:
            cells = [f"{self.held_out[model][c].bits_per_byte:.4f}" for c in self.corpora]
            cells += [f"{self.held_out[model][c].perplexity:.2f}" for c in self.corpora]
            cells += [self._task_cell(model, task, metric) for task, metric in self.task_columns()]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def counts_table(self) -> str:
        """Per model and corpus: bytes, the model's tokens, summed NLL, time and speed, as Markdown."""
        lines = ["| model | corpus | texts | bytes | tokens | NLL (nats) | seconds | tokens/s |",
                 "|---|---|---:|---:|---:|---:|---:|---:|"]
        for model, scores in self.held_out.items():
            for corpus, s in scores.items():
                lines.append(f"| {model} | {corpus} | {s.texts:,} | {s.bytes:,} | {s.tokens:,} | {s.nll:,.1f} | "
                             f"{s.seconds:.1f} | {s.tokens_per_second:,.0f} |")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The tables with a line on how to read them (``eval_table.md``)."""
        parts = [self.table()]
        if self.corpora:
            parts.append(f"Perplexity is per token of {self.per_token_of}'s tokenizer (summed NLL of every text and "
                         "its closing EOS over that tokenizer's token count); bits per byte divide the same NLL "
                         "by ln 2 and the texts' UTF-8 bytes.")
            parts.append(self.counts_table())
        return "\n\n".join(parts) + "\n"

    def task_columns(self) -> list[tuple[str, str]]:
        """(task, metric) of every metric some model has, stderr and sample counts left to the JSON."""
        columns: dict[tuple[str, str], None] = {}
        for per_task in self.tasks.values():
            for task, metrics in per_task.items():
                columns.update({(task, m): None for m in metrics if m != "samples" and "_stderr" not in m})
        return list(columns)

    def _task_cell(self, model: str, task: str, metric: str) -> str:
        metrics = self.tasks.get(model, {}).get(task, {})
        if metric not in metrics:
            return ""
        name, _, selected = metric.partition(",")
        stderr = metrics.get(f"{name}_stderr" + (f",{selected}" if selected else ""))
        return f"{metrics[metric]:.4f}" + ("" if stderr is None else f" ± {stderr:.4f}")


def write_report(result: EvalResult, directory: Path) -> None:
    """Writes ``eval_results.json``, ``eval_table.md`` and ``eval_scores.png`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RESULTS_FILE).write_text(json.dumps(asdict(result), indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    (directory / TABLE_FILE).write_text(result.markdown(), encoding="utf-8")
    plot_scores(result, directory / CHART_FILE)


def plot_scores(result: EvalResult, path: Path) -> None:
    """Grouped bars, one colour per model: bits per byte per corpus (lower is better) and, with
    tasks, every task's metrics."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    panels = _panels(result)
    figure, axes = pyplot.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.0), dpi=110, squeeze=False)
    width = 0.8 / len(result.models)
    for panel, (title, groups, values) in zip(axes[0], panels):
        for index, (model, heights) in enumerate(values.items()):
            offset = (index - (len(values) - 1) / 2) * width
            panel.bar([g + offset for g in range(len(groups))], heights, width, label=model)
        panel.set_xticks(range(len(groups)), groups, fontsize=8)
        panel.set_title(title)
        panel.grid(axis="y", alpha=0.3)
        panel.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def _panels(result: EvalResult) -> list[tuple[str, list[str], dict[str, list[float]]]]:
    """Per panel of the chart: its title, its groups of bars, and per model the bar heights."""
    panels = []
    if result.corpora:
        panels.append(("held-out bits per byte (lower is better)", list(result.corpora),
                       {m: [result.held_out[m][c].bits_per_byte for c in result.corpora] for m in result.models}))
    columns = result.task_columns()
    if columns:
        panels.append(("benchmarks", [f"{task}\n{metric}" for task, metric in columns],
                       {m: [result.tasks[m][task].get(metric, 0.0) for task, metric in columns]
                        for m in result.models}))
    return panels
