"""Stage 2 of the pipeline: the teacher pass of one model (target or source) over the corpus.

Its tokenization, top-k next-token lists and cross-entropy per text, computed by
:func:`fusellm_fast.teacher.extract_topk`. ``shard=(i, n)`` runs one n-th of the corpus, so that
many devices share the pass.

Output format, in the output directory: the parts ``shard-IIIII-of-NNNNN/part-PPPPPP/``
(``records.arrow``, the compact records of :mod:`fusellm_fast.teacher_records`: ``text_index``,
``input_ids`` ``[L]`` (EOS appended, no BOS), ``topk_ids`` and ``topk_log_probs`` ``[L, K]``
(log-probabilities under the model's full softmax), ``token_ce`` ``[L - 1]``, ``ce``,
``total_ce``, ``num_bytes``; and ``part.json``, written last), ``tokenizer/`` (the model's
tokenizer), ``summary.json`` (what the pass was run on: corpus and tokenizer fingerprints, and
``values_are: "log_probs"``), ``shard-IIIII-of-NNNNN-summary.json`` (an :class:`ExtractSummary`)
and, once a training or alignment run needed them, ``vocab-maps/`` (this model's MinED maps to
each target, keyed by both tokenizers' fingerprints).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._fingerprint import strings_fingerprint
from .._shards import checked_shard, shard_range
from ..errors import InvalidInputError
from ..hf import load_model, load_tokenizer, tokenizer_vocabulary
from ..teacher_records import VALUES_ARE
from .corpus import read_corpus
from .errors import PipelineError
from .progress import progress_bar, show_token_rate
from .storage import PathLike, write_text_atomically
from .summaries import SUMMARY_FILE, ExtractSummary, read_summary, write_summary

__all__ = ["ExtractedPass", "extract", "load_extracted", "parse_shard"]

_TOKENIZER_DIR = "tokenizer"
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def parse_shard(value: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)``; :func:`extract` checks that ``0 <= I < N``.

    >>> parse_shard("1/4")
    (1, 4)
    """
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise PipelineError(f"--shard: must look like I/N (for example 0/8), got {value!r}") from None
    return index, count


def extract(
    model_path: PathLike,
    data: Sequence[PathLike],
    output: PathLike,
    *,
    top_k: int = 10,
    max_length: int = 2048,
    batch_size: int = 8,
    shard: tuple[int, int] = (0, 1),
    chunk_texts: int = 1024,
    text_column: str = "text",
    split_chars: int | None = 4000,
    texts: Sequence[str] | None = None,
    device: str | None = None,
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    values_dtype: Literal["float16", "float32"] = "float16",
    show_progress: bool = True,
) -> ExtractSummary:
    """Runs one model over one shard of the corpus and stores its teacher records.

    A thin layer over :func:`fusellm_fast.teacher.extract_topk`: shard ``(I, N)`` is the ``I``-th
    of ``N`` contiguous ranges of texts, saved in parts of ``chunk_texts`` texts as soon as each is
    done, so that rerunning the same command resumes an interrupted pass and shards can run on
    different devices and machines into the same directory. The output format is described in
    :mod:`fusellm_fast.pipeline.extraction`.

    Args:
        model_path: a local model directory with its tokenizer.
        data: the corpus paths (see :func:`read_corpus`); ignored when ``texts`` is given.
        output: the output directory, shared by all shards of the pass.
        top_k: list length (paper: 10).
        max_length: tokens kept per text (EOS included).
        batch_size: texts per forward pass.
        shard: ``(I, N)``: this run's share of the corpus.
        chunk_texts: texts per saved part (the unit of resumption).
        text_column: see :func:`read_corpus`.
        split_chars: see :func:`read_corpus`.
        texts: the corpus itself, instead of ``data``.
        device: ``"cuda"``, ``"cpu"``, ...; the first GPU if there is one when omitted.
        dtype: the weights' dtype; ``"auto"`` keeps the checkpoint's. Top-k and CE are computed
            in float32 either way.
        values_dtype: how the top-k log-probabilities are stored: ``"float16"`` (compact, within
            a half unit of 16-bit rounding) or ``"float32"``.
        show_progress: draw a progress bar.

    Returns:
        The summary of this shard.

    Raises:
        PipelineError: a path is missing, the tokenizer does not fit the model, the output
            directory holds a pass over another corpus or with other settings, or an option is
            out of range.

    >>> extract("target_model", ["corpus.jsonl"], "teacher/target", shard=(0, 2))  # doctest: +SKIP
    ExtractSummary(model='target_model', shard=(0, 2), ...)
    """
    from ..teacher import extract_topk

    started = time.perf_counter()
    index, count = checked_shard(shard, "--shard", PipelineError)
    corpus = list(texts) if texts is not None else read_corpus(data, text_column=text_column, split_chars=split_chars)
    tokenizer, model = _load(model_path, dtype)
    device = device or _default_device()
    output = Path(output)
    identity = _claim_output(output, model_path, corpus, tokenizer, top_k)
    tokenizer.save_pretrained(str(output / _TOKENIZER_DIR))
    start, stop = shard_range(len(corpus), index, count)
    with progress_bar(stop - start, f"extract {Path(model_path).name} {index}/{count}", "text",
                      show=show_progress) as bar, _counting_forward(model, bar):
        try:
            records = extract_topk(model, tokenizer, corpus, k=top_k, max_length=max_length, batch_size=batch_size,
                                   device=device, output_dir=output, shard=shard, texts_per_part=chunk_texts,
                                   values_dtype=values_dtype)
        except InvalidInputError as error:
            raise PipelineError(f"extract: {error}") from None
    summary = _shard_summary(model_path, shard, records, top_k, max_length, identity, started)
    write_summary(output, summary, name=f"shard-{index:05d}-of-{count:05d}-summary.json")
    return summary


def _load(model_path: PathLike, dtype: str) -> tuple[Any, Any]:
    """The tokenizer and the model of ``model_path``, checked to suit a teacher pass."""
    import torch

    tokenizer = load_tokenizer(model_path, arg="MODEL")
    if tokenizer.eos_token_id is None:
        raise PipelineError(f"MODEL: the tokenizer in {str(model_path)!r} has no EOS token")
    if dtype not in _DTYPES:
        raise PipelineError(f"--dtype: must be auto, float32, bfloat16 or float16, got {dtype!r}")
    model = load_model(model_path, arg="MODEL", tokenizer=tokenizer,
                       dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    return tokenizer, model


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _shard_summary(model_path: PathLike, shard: tuple[int, int], records: Any, top_k: int, max_length: int,
                   identity: dict[str, Any], started: float) -> ExtractSummary:
    lengths = records.lengths()
    total_ce = float(np.sum(records.column("total_ce")))
    seconds = time.perf_counter() - started
    return ExtractSummary(
        model=str(model_path),
        shard=shard,
        texts=len(records),
        tokens=int(lengths.sum()),
        truncated_texts=int(np.sum(lengths >= max_length)),
        top_k=top_k,
        max_length=max_length,
        mean_ce=total_ce / max(int(np.maximum(lengths - 1, 0).sum()), 1),
        ce_per_byte=total_ce / max(int(np.sum(records.column("num_bytes"))), 1),
        values_are=records.values_are,
        corpus_fingerprint=identity["corpus_fingerprint"],
        tokenizer_fingerprint=identity["tokenizer_fingerprint"],
        seconds=seconds,
        tokens_per_second=float(lengths.sum()) / seconds if seconds else 0.0,
    )


@contextlib.contextmanager
def _counting_forward(model: Any, bar: Any) -> Iterator[None]:
    """Advances ``bar`` by the texts of every forward pass and shows the tokens per second."""
    tokens = 0

    def count(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        nonlocal tokens
        mask = kwargs.get("attention_mask")
        if mask is not None:
            tokens += int(mask.sum())
            bar.update(int(mask.shape[0]))
            show_token_rate(bar, tokens)

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _claim_output(output: Path, model_path: PathLike, corpus: list[str], tokenizer: Any,
                  top_k: int) -> dict[str, Any]:
    """Records what a teacher directory holds, or checks that another shard adds to the same; the record."""
    identity = {
        "model": str(model_path),
        "corpus_fingerprint": strings_fingerprint(corpus),
        "tokenizer_fingerprint": strings_fingerprint(tokenizer_vocabulary(tokenizer, "MODEL")),
        "top_k": top_k,
        "values_are": VALUES_ARE,
    }
    output.mkdir(parents=True, exist_ok=True)
    path = output / SUMMARY_FILE
    if path.exists():
        existing = json.loads(path.read_text(encoding="utf-8"))
        _check_calibrated(existing, output, "-o")
        different = [key for key in ("corpus_fingerprint", "tokenizer_fingerprint", "top_k")
                     if existing.get(key) != identity[key]]
        if different:
            what = ", ".join(key.replace("_fingerprint", "") for key in different)
            raise PipelineError(f"-o: {str(output)!r} already holds a teacher pass with another {what}; "
                                "use a new directory")
    else:
        write_text_atomically(path, json.dumps(identity, indent=2) + "\n")
    return identity


def _check_calibrated(identity: dict[str, Any], directory: Path, arg: str) -> None:
    """A teacher directory of an older version, which stored raw logits, is refused in one line."""
    if identity.get("values_are") != VALUES_ARE:
        raise PipelineError(f"{arg}: {str(directory)!r} holds raw top-k logits of an older fusellm-fast; "
                            "run `fusellm-fast extract` again into a new directory")


@dataclass(frozen=True)
class ExtractedPass:
    """A teacher directory with all its shards loaded (see :func:`load_extracted`)."""

    directory: Path
    records: Any
    """The records of every shard, in text order (a :class:`~fusellm_fast.teacher_records.TeacherRecords`)."""
    tokenizer: Any
    identity: dict[str, Any]


def load_extracted(directory: PathLike, *, arg: str) -> ExtractedPass:
    """Loads a finished teacher pass, all shards joined in text order.

    Raises:
        PipelineError: the directory is not a teacher pass, or some shard is missing or unfinished.
    """
    from ..teacher import load_topk

    directory = Path(directory)
    if not directory.is_dir():
        raise PipelineError(f"{arg}: {str(directory)!r} is not a directory")
    identity = read_summary(directory, arg=arg)
    if "corpus_fingerprint" not in identity:
        raise PipelineError(f"{arg}: {str(directory)!r} is not the output of `fusellm-fast extract`")
    _check_calibrated(identity, directory, arg)
    try:
        records = load_topk(directory)
    except InvalidInputError as error:
        raise PipelineError(f"{arg}: {str(directory)!r} is unfinished: {error}") from None
    return ExtractedPass(directory=directory, records=records,
                         tokenizer=load_tokenizer(directory / _TOKENIZER_DIR, arg=arg), identity=identity)
