"""Benchmark tasks (BBH, ARC, BoolQ, ...) through lm-evaluation-harness, offline.

``lm-eval`` comes with the ``eval`` extra. Its tasks run on the already loaded model and
tokenizer (nothing is fetched for the model), with the Hugging Face hub switched offline, so a
task's dataset must already be on this machine: in the ``datasets`` cache, or a local file named
in the task's YAML (``dataset_path: json`` with ``dataset_kwargs: {data_files: ...}``).
Relative paths in the YAML files of ``tasks_dir`` are read from ``tasks_dir``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..pipeline.errors import PipelineError
from ..pipeline.storage import PathLike

__all__ = ["INSTALL_EVAL", "TaskRunner", "offline_hub", "parse_tasks"]

INSTALL_EVAL = 'pip install "fusellm-fast[eval]"'
"""The command that installs lm-evaluation-harness for ``--tasks``."""

_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def parse_tasks(value: str) -> list[str]:
    """``"bbh,arc_easy"`` as a list of task names, in order, without repeats.

    >>> parse_tasks("bbh, arc_easy,bbh")
    ['bbh', 'arc_easy']
    """
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise PipelineError(f"--tasks: must name at least one task (comma-separated), got {value!r}")
    return list(dict.fromkeys(names))


class TaskRunner:
    """Runs lm-eval tasks on one model after another; the task index is built once.

    Args:
        tasks: lm-eval task or group names.
        tasks_dir: a directory of task YAML files, searched besides lm-eval's own tasks.
        batch_size: requests per forward pass.
        limit: documents per task at most (all when omitted).
        num_fewshot: few-shot examples (each task's own default when omitted).
        allow_code_execution: let tasks that run the model's code (``humaneval``, ``mbpp``) run it
            on this machine, unsandboxed.

    Raises:
        PipelineError: lm-eval is not installed, ``tasks_dir`` is not a directory, or a task is
            unknown.

    >>> runner = TaskRunner(["arc_easy"])  # doctest: +SKIP
    >>> runner.run(model, tokenizer)["arc_easy"]["acc"]  # doctest: +SKIP
    0.25
    """

    def __init__(self, tasks: Sequence[str], *, tasks_dir: PathLike | None = None, batch_size: int = 8,
                 limit: int | None = None, num_fewshot: int | None = None, allow_code_execution: bool = False) -> None:
        try:
            from lm_eval.tasks import TaskManager
        except ImportError:
            raise PipelineError(f"--tasks: lm-evaluation-harness is not installed; {INSTALL_EVAL}") from None
        self.tasks = list(tasks)
        self.tasks_dir = None if tasks_dir is None else Path(tasks_dir).resolve()
        if self.tasks_dir is not None and not self.tasks_dir.is_dir():
            raise PipelineError(f"--tasks-dir: {str(tasks_dir)!r} is not a directory")
        self.batch_size, self.limit, self.num_fewshot = batch_size, limit, num_fewshot
        self.allow_code_execution = allow_code_execution
        with _quiet_harness():
            self._manager = TaskManager(include_path=None if self.tasks_dir is None else str(self.tasks_dir))
        unknown = [task for task in self.tasks if task not in self._manager.all_tasks]
        if unknown:
            where = "lm-eval's tasks" + ("" if self.tasks_dir is None else f" or {str(tasks_dir)!r}")
            raise PipelineError(f"--tasks: {', '.join(unknown)} not found in {where}")

    def settings(self) -> dict[str, Any]:
        """The options, for the report."""
        return {"tasks": self.tasks, "tasks_dir": None if self.tasks_dir is None else str(self.tasks_dir),
                "limit": self.limit, "num_fewshot": self.num_fewshot,
                "allow_code_execution": self.allow_code_execution}

    def run(self, model: Any, tokenizer: Any, *, show_progress: bool = True) -> dict[str, dict[str, float]]:
        """Every task on ``model`` (on its device): per task, its metrics (``acc``, ``acc_norm``,
        ``acc_stderr``, ... as lm-eval names them, the filter appended after a comma unless it is
        ``none``) and ``samples``, the documents scored. ``show_progress`` keeps lm-eval's bars."""
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        # The code-execution metric of `evaluate` asks for this variable besides lm-eval's own switch.
        variables = {"HF_ALLOW_CODE_EVAL": "1"} if self.allow_code_execution else {}
        variables.update({} if show_progress else {"TQDM_DISABLE": "1"})
        with _quiet_harness(), offline_hub(), _environment(variables), _working_directory(self.tasks_dir):
            harness_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=self.batch_size)
            results = lm_eval.simple_evaluate(
                model=harness_model, tasks=list(self.tasks), task_manager=self._manager, limit=self.limit,
                num_fewshot=self.num_fewshot, log_samples=False, confirm_run_unsafe_code=self.allow_code_execution)
        return {task: _task_metrics(results, task) for task in self.tasks}


def _task_metrics(results: dict[str, Any], task: str) -> dict[str, float]:
    """The numeric metrics of ``task`` (a group's aggregate for a group) in lm-eval's results."""
    values = (results.get("groups") or {}).get(task) or results["results"][task]
    metrics: dict[str, float] = {}
    for key, value in values.items():
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if numeric and key != "sample_len":
            metric, _, selected = key.partition(",")
            metrics[metric if selected in ("", "none") else key] = float(value)
    samples = (results.get("n-samples") or {}).get(task, {})
    if "effective" in samples:
        metrics["samples"] = float(samples["effective"])
    return metrics


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """No request to the Hugging Face hub while inside: the offline switches of
    ``huggingface_hub`` and ``datasets`` are on, in the environment and in the flags that the
    already imported modules read."""
    import datasets.config
    import huggingface_hub.constants

    flags = [(huggingface_hub.constants, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"),
             (datasets.config, "HF_DATASETS_OFFLINE")]
    saved_flags = [getattr(module, name, None) for module, name in flags]
    for module, name in flags:
        setattr(module, name, True)
    try:
        with _environment(dict.fromkeys(_OFFLINE_VARIABLES, "1")):
            yield
    finally:
        for (module, name), value in zip(flags, saved_flags):
            setattr(module, name, value)


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """``variables`` set in the environment while inside, then as they were."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _working_directory(directory: Path | None) -> Iterator[None]:
    """Inside ``directory`` (if any), so that relative data paths of its task YAMLs resolve there."""
    if directory is None:
        yield
        return
    previous = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _quiet_harness() -> Iterator[None]:
    """lm-eval's own log lines (per-request details, warnings about passing a loaded model) kept
    to errors; the command reports the results itself."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
