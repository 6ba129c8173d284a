"""What ``fusellm-fast eval`` runs: every model on every held-out corpus and benchmark task."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ..errors import InvalidInputError
from ..hf import load_model, load_tokenizer
from ..pipeline.corpus import read_corpus
from ..pipeline.errors import PipelineError
from ..pipeline.storage import PathLike
from .harness import TaskRunner
from .held_out import HeldOutScore, held_out_score, utf8_bytes
from .nll import check_options, predicted_tokens, text_nll
from .report import EvalResult, write_report

__all__ = ["evaluate", "named_paths"]

_DTYPES = ("auto", "float32", "bfloat16", "float16")


def named_paths(values: Sequence[str], arg: str) -> dict[str, Path]:
    """``NAME=PATH`` or ``PATH`` arguments as name -> path; a bare path is named after its file
    (without suffix) or directory.

    >>> {name: str(path) for name, path in named_paths(["fused=runs/fused", "data/wiki.jsonl"], "MODEL").items()}
    {'fused': 'runs/fused', 'wiki': 'data/wiki.jsonl'}
    """
    named: dict[str, Path] = {}
    for value in values:
        name, separator, path = value.partition("=")
        if not separator or not name or Path(value).exists():
            name, path = Path(value).stem or value, value
        if name in named:
            raise PipelineError(f"{arg}: two of them are named {name!r}; give them names as NAME=PATH")
        named[name] = Path(path)
    return named


def evaluate(
    models: Mapping[str, PathLike],
    output: PathLike,
    *,
    data: Mapping[str, PathLike] | None = None,
    tasks: TaskRunner | None = None,
    per_token_of: str | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    stride: int | None = None,
    text_column: str = "text",
    device: str | None = None,
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    show_progress: bool = True,
) -> EvalResult:
    """Scores every model on every held-out corpus and runs every benchmark task on it, then
    writes ``eval_results.json``, ``eval_table.md`` and ``eval_scores.png`` into ``output``.

    Models are loaded one at a time from local directories (nothing is downloaded) and scored by
    :func:`~fusellm_fast.evaluation.text_nll`; tasks run through lm-evaluation-harness
    (:class:`~fusellm_fast.evaluation.harness.TaskRunner`).

    Args:
        models: name -> local model directory with its tokenizer.
        output: the directory of the report.
        data: name -> corpus (a path :func:`~fusellm_fast.pipeline.read_corpus` reads, texts whole).
        tasks: the benchmark tasks to run on every model, with their options.
        per_token_of: the model name (default: the first) or tokenizer directory whose tokens
            the perplexities are per.
        batch_size: sequences per forward pass of held-out scoring.
        max_length: tokens per forward pass of held-out scoring; each model's context when omitted.
        stride: tokens between two sliding windows; ``max_length // 2`` when omitted.
        text_column: see :func:`~fusellm_fast.pipeline.read_corpus`.
        device: ``"cuda"``, ``"cpu"``, ...; the first GPU if there is one when omitted.
        dtype: the weights' dtype; ``"auto"`` keeps the checkpoint's.
        show_progress: draw progress bars.

    Returns:
        Every figure.

    Raises:
        PipelineError: nothing to evaluate, a path or model is missing or broken, a task is
            unknown, or an option is out of range.

    >>> evaluate({"fused": "fused", "target": "models/target"}, "eval",
    ...          data={"wiki": "data/wiki.jsonl"}, tasks=TaskRunner(["arc_easy"]))  # doctest: +SKIP
    EvalResult(models={'fused': 'fused', 'target': 'models/target'}, ...)
    """
    scoring = {"batch_size": batch_size, "max_length": max_length, "stride": stride}
    _check_request(models, data, tasks, dtype, scoring)
    tokenizers = {name: load_tokenizer(path, arg="MODEL") for name, path in models.items()}
    corpora = {name: read_corpus([path], text_column=text_column, split_chars=None)
               for name, path in (data or {}).items()}
    reference_name, reference_tokens = _reference_counts(per_token_of, tokenizers, corpora)
    device = device or _default_device()
    held_out, task_scores = {}, {}
    for name, path in models.items():
        model = _load_model(path, tokenizers[name], dtype, device)
        held_out[name] = _held_out_scores(name, model, tokenizers[name], corpora, reference_tokens, scoring,
                                          show_progress)
        if tasks is not None:
            task_scores[name] = tasks.run(model, tokenizers[name], show_progress=show_progress)
        del model
        _release_memory()
    settings = {**scoring, "text_column": text_column, "device": device, "dtype": dtype,
                **(tasks.settings() if tasks is not None else {"tasks": []}), "versions": _versions(tasks is not None)}
    result = EvalResult(models={name: str(path) for name, path in models.items()},
                        corpora={name: {"path": str(data[name]), "texts": len(texts), "bytes": utf8_bytes(texts)}
                                 for name, texts in corpora.items()} if data else {},
                        per_token_of=reference_name, held_out=held_out, tasks=task_scores, settings=settings)
    write_report(result, Path(output))
    return result


def _held_out_scores(name: str, model: Any, tokenizer: Any, corpora: dict[str, list[str]],
                     reference_tokens: dict[str, int], scoring: dict[str, Any], show_progress: bool,
                     ) -> dict[str, HeldOutScore]:
    """``model`` (named ``name``) on every corpus."""
    scores = {}
    for corpus, texts in corpora.items():
        try:
            nll = text_nll(model, tokenizer, texts, **scoring, show_progress=show_progress,
                           description=f"{name} on {corpus}")
            scores[corpus] = held_out_score(texts, nll, reference_tokens=reference_tokens[corpus])
        except InvalidInputError as error:
            raise PipelineError(f"MODEL {name}: {error}") from None
    return scores


def _check_request(models: Mapping[str, PathLike], data: Mapping[str, PathLike] | None, tasks: TaskRunner | None,
                   dtype: str, scoring: dict[str, Any]) -> None:
    """What can be checked before anything is loaded."""
    if not models:
        raise PipelineError("MODEL: give at least one model directory")
    if not data and tasks is None:
        raise PipelineError("--data/--tasks: nothing to evaluate; give a held-out corpus or benchmark tasks")
    if dtype not in _DTYPES:
        raise PipelineError(f"--dtype: must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    check_options(**scoring)


def _reference_counts(per_token_of: str | None, tokenizers: dict[str, Any],
                      corpora: dict[str, list[str]]) -> tuple[str, dict[str, int]]:
    """The reference tokenizer ``--per-token-of`` names (a model's name, else a tokenizer
    directory; the first model's by default), and its token count of every corpus."""
    name = next(iter(tokenizers)) if per_token_of is None else per_token_of
    if name in tokenizers:
        tokenizer = tokenizers[name]
    elif Path(name).is_dir():
        tokenizer = load_tokenizer(name, arg="--per-token-of")
    else:
        raise PipelineError(f"--per-token-of: {name!r} is neither a MODEL's name ({', '.join(tokenizers)}) "
                            "nor a directory")
    return name, {corpus: int(predicted_tokens(tokenizer, texts).sum()) for corpus, texts in corpora.items()}


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_model(path: Path, tokenizer: Any, dtype: str, device: str) -> Any:
    import torch

    model = load_model(path, arg="MODEL", tokenizer=tokenizer,
                       dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    try:
        return model.to(device).eval()
    # torch without CUDA support asserts; with it but no GPU, or with a bad name, it raises.
    except (AssertionError, RuntimeError, ValueError) as error:
        raise PipelineError(f"--device: cannot place the model on {device!r} ({error})") from None


def _release_memory() -> None:
    """Frees the last model's GPU memory before the next is loaded."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _versions(with_tasks: bool) -> dict[str, str]:
    names = ["fusellm-fast", "torch", "transformers"] + (["lm_eval"] if with_tasks else [])
    return {name: importlib.metadata.version(name) for name in names}
