"""The FuseLLM pipeline as resumable stages that read and write directories.

FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv 2401.10491)
trains a target LLM on a corpus with the fused next-token distributions of several source LLMs.
Its stages, each a function here and a subcommand of the ``fusellm-fast`` command:

1. :func:`build_vocab_map`: the MinED map from a source vocabulary to the target's (optional: the
   align stage builds it when not given).
2. :func:`extract`: the teacher pass of one model (target or source) over the corpus: its own
   tokenization, top-k next-token lists and cross-entropy per text. ``shard=(i, n)`` runs one
   n-th of the corpus, so that many devices share the pass.
3. :func:`align`: carries every source's lists over to the target tokenization and vocabulary.
4. :func:`train`: continual training of the target with ``FusionTrainer``.

Every stage writes a ``datasets`` directory (``save_to_disk``) or a model directory, plus a JSON
summary; the formats are described in each function's docstring. Mistakes a user can make (a
missing path, a tokenizer that does not fit its model, outputs of different corpora) raise
:class:`PipelineError` with one line that says what to fix.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._fingerprint import strings_fingerprint
from .alignment import Aligner, align_batch
from .hf import special_ids, tokenizer_vocabulary
from .errors import FuseLLMError, InvalidInputError, MarkerDetectionError, VocabMapError
from .vocab_map import Normalize, VocabMap, token_bytes

__all__ = [
    "AlignSummary",
    "ExtractSummary",
    "PipelineError",
    "TrainSummary",
    "VocabMapSummary",
    "align",
    "build_vocab_map",
    "extract",
    "load_extracted",
    "read_corpus",
    "train",
]

PathLike = str | os.PathLike[str]
CeUnit = Literal["token", "byte"]
SUMMARY_FILE = "summary.json"
_TOKENIZER_DIR = "tokenizer"
_CORPUS_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


class PipelineError(FuseLLMError, ValueError):
    """A pipeline input is missing or does not fit the others; the message says which and why."""


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


def read_corpus(
    paths: Sequence[PathLike],
    *,
    text_column: str = "text",
    split_chars: int | None = 4000,
) -> list[str]:
    """The texts of a corpus, in a fixed order.

    Each path is a ``.txt`` file (one text), a ``.jsonl``/``.json`` file (one JSON object per line,
    its ``text_column`` field), a ``.parquet`` file (its ``text_column``), a directory written by
    ``datasets``' ``save_to_disk``, or a directory of such files (read in sorted order).

    Args:
        paths: the corpus files and directories.
        text_column: the field or column holding the text.
        split_chars: texts longer than this are cut, at line ends where possible, into pieces of
            at most this many characters, so that every model's tokenization of a piece fits its
            ``max_length`` and the pieces align end to end; ``None`` keeps texts whole.

    Returns:
        The non-empty texts.

    Raises:
        PipelineError: a path does not exist, has an unknown format, lacks ``text_column``, or the
            corpus is empty.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "corpus.jsonl"
    >>> _ = path.write_text('{"text": "one"}\\n{"text": "two\\\\nlines"}\\n')
    >>> read_corpus([path])
    ['one', 'two\\nlines']
    """
    if split_chars is not None and split_chars < 1:
        raise PipelineError(f"split_chars: must be a positive number of characters, got {split_chars}")
    texts: list[str] = []
    for path in paths:
        texts.extend(_read_texts(Path(path), text_column))
    if split_chars is not None:
        texts = [piece for text in texts for piece in split_text(text, split_chars)]
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise PipelineError(f"data: no non-empty text found in {', '.join(map(str, paths))}")
    return texts


def split_text(text: str, max_chars: int) -> list[str]:
    """``text`` cut into consecutive pieces of at most ``max_chars`` characters, at line ends when
    a line end falls in the second half of a piece.

    >>> split_text("ab\\ncd\\nef", 6)
    ['ab\\ncd\\n', 'ef']
    """
    pieces = []
    while len(text) > max_chars:
        cut = text.rfind("\n", max_chars // 2, max_chars) + 1 or max_chars
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def _read_texts(path: Path, text_column: str) -> list[str]:
    if not path.exists():
        raise PipelineError(f"data: {str(path)!r} does not exist")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            import datasets

            return _column(datasets.load_from_disk(str(path)), text_column, path)
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _CORPUS_SUFFIXES)
        if not files:
            raise PipelineError(f"data: {str(path)!r} holds no {'/'.join(_CORPUS_SUFFIXES)} files")
        return [text for file in files for text in _read_texts(file, text_column)]
    if path.suffix == ".txt":
        return [path.read_text(encoding="utf-8")]
    if path.suffix in (".jsonl", ".json"):
        texts = []
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise PipelineError(f"data: {str(path)!r} line {number} is not JSON ({error.msg})") from None
                if not isinstance(record, dict) or not isinstance(record.get(text_column), str):
                    raise PipelineError(f"data: {str(path)!r} line {number} has no string field {text_column!r}")
                texts.append(record[text_column])
        return texts
    if path.suffix == ".parquet":
        import datasets

        return _column(datasets.Dataset.from_parquet(str(path)), text_column, path)
    raise PipelineError(f"data: {str(path)!r} is not a {'/'.join(_CORPUS_SUFFIXES)} file or a directory")


def _column(dataset: Any, text_column: str, path: Path) -> list[str]:
    if text_column not in dataset.column_names:
        raise PipelineError(f"data: {str(path)!r} has no column {text_column!r} (columns: {dataset.column_names})")
    return list(dataset[text_column])


# --------------------------------------------------------------------------------------------
# Models and tokenizers
# --------------------------------------------------------------------------------------------


def load_tokenizer(path: PathLike, *, arg: str) -> Any:
    """A Hugging Face tokenizer from a local directory, or :class:`PipelineError`."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise PipelineError(f"{arg}: {str(path)!r} is not a directory")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise PipelineError(f"{arg}: no tokenizer can be loaded from {str(path)!r} ({_first_line(error)})") from None


def load_model(path: PathLike, *, arg: str, tokenizer: Any, dtype: Any = None) -> Any:
    """A causal LM from a local directory, checked to cover every id of ``tokenizer``."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as error:
        raise PipelineError(f"{arg}: no causal LM can be loaded from {str(path)!r} ({_first_line(error)})") from None
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise PipelineError(
            f"{arg}: the tokenizer has {len(tokenizer)} tokens but the model only {rows} embedding rows; "
            "the tokenizer does not belong to this model"
        )
    return model


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VocabMapSummary:
    """What :func:`build_vocab_map` wrote and how good the map is."""

    source_size: int
    target_size: int
    source_marker: str
    target_marker: str
    exact_share: float
    """Share of source tokens whose marker-swapped string is a target token."""
    distance_histogram: dict[str, int]
    """Number of source tokens per edit distance to their image ("0", "1", ..., "8+")."""
    seconds: float


@dataclass(frozen=True)
class ExtractSummary:
    """One model's teacher pass over one shard of a corpus."""

    model: str
    shard: tuple[int, int]
    texts: int
    tokens: int
    truncated_texts: int
    """Texts whose tokenization reached ``max_length`` (and may have been cut)."""
    top_k: int
    max_length: int
    mean_ce: float
    """Token-weighted mean next-token cross-entropy (nats per token)."""
    ce_per_byte: float
    corpus_fingerprint: str
    tokenizer_fingerprint: str
    seconds: float
    tokens_per_second: float


@dataclass(frozen=True)
class AlignSummary:
    """Every source aligned to the target tokenization."""

    texts: int
    target_tokens: int
    sources: list[dict[str, Any]]
    """Per source: its directory, ``matched_rate``, ``kept_mass_rate`` (see
    :class:`~fusellm_fast.AlignmentCounts`), the ``positions``, ``matched``, ``onehot``, ``empty``,
    ``dropped_candidates``, ``fallback_texts`` and ``kept_mass`` counts, and the vocabulary map's
    exact-match share (``None`` where no map was needed)."""
    vocab_align: str
    onehot: str
    ce_unit: str
    ce_level: str
    method: str
    candidates: str
    normalize: str
    target_tokenizer_fingerprint: str
    corpus_fingerprint: str
    seconds: float
    tokens_per_second: float


@dataclass(frozen=True)
class TrainSummary:
    """A finished training run."""

    steps: int
    blocks: int
    block_size: int
    method: str
    lm_weight: float
    level: str
    """Where the teachers were chosen: per block (``"sequence"``) or per position (``"token"``)."""
    ce_unit: str
    """The unit of the CE that ranked the teachers, chosen at the align stage."""
    final_loss: float
    seconds: float
    """The whole call, loading and packing included."""
    tokens_per_second: float
    """Training tokens per second of the training loop itself, over all processes."""
    log_history: list[dict[str, float]]


def write_summary(directory: PathLike, summary: Any, name: str = SUMMARY_FILE) -> Path:
    """Writes a summary dataclass as indented JSON into ``directory``."""
    path = Path(directory) / name
    path.write_text(json.dumps(asdict(summary), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_summary(directory: PathLike, name: str = SUMMARY_FILE, *, arg: str) -> dict[str, Any]:
    """The JSON summary a stage wrote into ``directory``, or an error naming ``arg``."""
    path = Path(directory) / name
    if not path.is_file():
        raise PipelineError(f"{arg}: {str(directory)!r} has no {name}; is it the output of the right stage?")
    return json.loads(path.read_text(encoding="utf-8"))


def _progress(total: int, description: str, unit: str, *, show: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, unit_scale=True, dynamic_ncols=True, disable=not show)


# --------------------------------------------------------------------------------------------
# Stage 1: vocabulary map
# --------------------------------------------------------------------------------------------


def build_vocab_map(
    source: PathLike,
    target: PathLike,
    output: PathLike,
    *,
    workers: int = -1,
) -> VocabMapSummary:
    """Builds the MinED map from a source tokenizer's vocabulary to a target's and saves it.

    Args:
        source: a directory with the source tokenizer (a model directory will do).
        target: a directory with the target tokenizer.
        output: the map file to write (``.npz``, see :meth:`VocabMap.save`); the summary goes
            next to it as ``<output>.json``.
        workers: threads; -1 uses every core.

    Returns:
        The summary, with the exact-match share and a histogram of the edit distances.

    Raises:
        PipelineError: a tokenizer cannot be loaded.

    >>> summary = build_vocab_map("source_model", "target_model", "map.npz")  # doctest: +SKIP
    >>> summary.exact_share  # doctest: +SKIP
    0.71
    """
    started = time.perf_counter()
    source_tokens = tokenizer_vocabulary(load_tokenizer(source, arg="SOURCE"), "SOURCE")
    target_tokens = tokenizer_vocabulary(load_tokenizer(target, arg="TARGET"), "TARGET")
    vocab_map = VocabMap.build(source_tokens, target_tokens, workers=workers)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    vocab_map.save(output)
    distances = np.minimum(vocab_map.distances, 8)
    counts = np.bincount(distances, minlength=9)
    summary = VocabMapSummary(
        source_size=vocab_map.source_size,
        target_size=len(target_tokens),
        source_marker=vocab_map.source_marker,
        target_marker=vocab_map.target_marker,
        exact_share=vocab_map.exact_share,
        distance_histogram={(str(d) if d < 8 else "8+"): int(c) for d, c in enumerate(counts)},
        seconds=time.perf_counter() - started,
    )
    write_summary(output.parent, summary, name=output.name + ".json")
    return summary


# --------------------------------------------------------------------------------------------
# Stage 2: teacher pass
# --------------------------------------------------------------------------------------------


def parse_shard(value: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)`` with ``0 <= I < N``.

    >>> parse_shard("1/4")
    (1, 4)
    """
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise PipelineError(f"--shard: must look like I/N (for example 0/8), got {value!r}") from None
    if not 0 <= index < count:
        raise PipelineError(f"--shard: needs 0 <= I < N, got {value!r}")
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
    show_progress: bool = True,
) -> ExtractSummary:
    """Runs one model over one shard of the corpus and stores its teacher records.

    A thin layer over :func:`fusellm_fast.teacher.extract_topk`: shard ``(I, N)`` is the ``I``-th
    of ``N`` contiguous ranges of texts, saved in parts of ``chunk_texts`` texts as soon as each is
    done, so that rerunning the same command resumes an interrupted pass and shards can run on
    different devices and machines into the same directory.

    Output format, in ``output/``: the parts ``shard-IIIII-of-NNNNN/part-PPPPPP/`` (``datasets``
    directories with the columns of :func:`fusellm_fast.teacher.topk_features`: ``text_index``,
    ``input_ids`` ``[L]`` (EOS appended, no BOS), ``topk_ids`` and ``topk_logits`` ``[L, K]``,
    ``token_ce`` ``[L - 1]``, ``ce``, ``total_ce``, ``num_bytes``, ``dropped``), ``tokenizer/``
    (the model's tokenizer), ``summary.json`` (what the pass was run on: corpus and tokenizer
    fingerprints) and ``shard-IIIII-of-NNNNN-summary.json`` (an :class:`ExtractSummary`).

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
    import torch

    from .teacher import extract_topk

    started = time.perf_counter()
    index, count = shard
    if not 0 <= index < count:
        raise PipelineError(f"--shard: needs 0 <= I < N, got {index}/{count}")
    corpus = list(texts) if texts is not None else read_corpus(data, text_column=text_column, split_chars=split_chars)
    tokenizer = load_tokenizer(model_path, arg="MODEL")
    if tokenizer.eos_token_id is None:
        raise PipelineError(f"MODEL: the tokenizer in {str(model_path)!r} has no EOS token")
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise PipelineError(f"--dtype: must be auto, float32, bfloat16 or float16, got {dtype!r}")
    model = load_model(model_path, arg="MODEL", tokenizer=tokenizer,
                       dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    output = Path(output)
    identity = {
        "model": str(model_path),
        "corpus_fingerprint": strings_fingerprint(corpus),
        "tokenizer_fingerprint": strings_fingerprint(tokenizer_vocabulary(tokenizer, "MODEL")),
        "top_k": top_k,
    }
    _claim_output(output, identity)
    tokenizer.save_pretrained(str(output / _TOKENIZER_DIR))

    size, extra = divmod(len(corpus), count)
    shard_texts = size + (index < extra)
    with _progress(shard_texts, f"extract {Path(model_path).name} {index}/{count}", "text",
                   show=show_progress) as bar, _counting_forward(model, bar):
        try:
            records = extract_topk(model, tokenizer, corpus, k=top_k, max_length=max_length, batch_size=batch_size,
                                   device=device, output_dir=output, shard=shard, texts_per_part=chunk_texts)
        except InvalidInputError as error:
            raise PipelineError(f"extract: {error}") from None

    lengths = np.array([len(ids) for ids in records["input_ids"]], dtype=np.int64)
    total_ce = float(np.sum(records["total_ce"]))
    seconds = time.perf_counter() - started
    summary = ExtractSummary(
        model=str(model_path),
        shard=shard,
        texts=len(records),
        tokens=int(lengths.sum()),
        truncated_texts=int(np.sum(lengths >= max_length)),
        top_k=top_k,
        max_length=max_length,
        mean_ce=total_ce / max(int(np.maximum(lengths - 1, 0).sum()), 1),
        ce_per_byte=total_ce / max(int(np.sum(records["num_bytes"])), 1),
        corpus_fingerprint=identity["corpus_fingerprint"],
        tokenizer_fingerprint=identity["tokenizer_fingerprint"],
        seconds=seconds,
        tokens_per_second=float(lengths.sum()) / seconds if seconds else 0.0,
    )
    write_summary(output, summary, name=f"shard-{index:05d}-of-{count:05d}-summary.json")
    return summary


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
            bar.set_postfix_str(f"{tokens / max(bar.format_dict['elapsed'], 1e-9):.0f} tok/s", refresh=False)

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _claim_output(output: Path, identity: dict[str, Any]) -> None:
    """Records what a teacher directory holds, or checks that another shard adds to the same."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / SUMMARY_FILE
    if path.exists():
        existing = json.loads(path.read_text(encoding="utf-8"))
        different = [key for key in ("corpus_fingerprint", "tokenizer_fingerprint", "top_k")
                     if existing.get(key) != identity[key]]
        if different:
            what = ", ".join(key.replace("_fingerprint", "") for key in different)
            raise PipelineError(f"-o: {str(output)!r} already holds a teacher pass with another {what}; "
                                "use a new directory")
        return
    scratch = output / f".{SUMMARY_FILE}.{os.getpid()}"
    scratch.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
    os.replace(scratch, path)


def nested_array(arrays: Sequence[np.ndarray]) -> Any:
    """A pyarrow list array with one row per numpy array (nested lists for 2-D and 3-D arrays,
    whose dimensions may differ from row to row), built from the flat values in one go.

    >>> nested_array([np.zeros((2, 1), np.int32), np.ones((1, 3), np.int32)]).to_pylist()
    [[[0], [0]], [[1, 1, 1]]]
    """
    import pyarrow as pa

    ndim = arrays[0].ndim if arrays else 1
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.float32)
    values: Any = pa.array(flat)
    for depth in reversed(range(ndim)):
        # Every array holds prod(shape[:depth]) lists of shape[depth] items at this depth.
        sizes = np.concatenate([np.full(int(np.prod(a.shape[:depth])), a.shape[depth], np.int64) for a in arrays]) \
            if arrays else np.zeros(0, np.int64)
        offsets = np.zeros(len(sizes) + 1, dtype=np.int32)
        np.cumsum(sizes, out=offsets[1:])
        values = pa.ListArray.from_arrays(pa.array(offsets), values)
    return values


def _save_atomically(table: Any, destination: Path) -> None:
    import datasets

    staging = destination.with_name(f".{destination.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    datasets.Dataset(table).save_to_disk(str(staging))
    shutil.rmtree(destination, ignore_errors=True)
    os.replace(staging, destination)


@dataclass(frozen=True)
class ExtractedPass:
    """A teacher directory with all its shards loaded (see :func:`load_extracted`)."""

    directory: Path
    records: Any
    """The rows of every shard, in text order (a ``datasets.Dataset``)."""
    tokenizer: Any
    identity: dict[str, Any]


def load_extracted(directory: PathLike, *, arg: str) -> ExtractedPass:
    """Loads a finished teacher pass, all shards joined in text order.

    Raises:
        PipelineError: the directory is not a teacher pass, or some shard is missing or unfinished.
    """
    from .teacher import load_topk

    directory = Path(directory)
    if not directory.is_dir():
        raise PipelineError(f"{arg}: {str(directory)!r} is not a directory")
    identity = read_summary(directory, arg=arg)
    if "corpus_fingerprint" not in identity:
        raise PipelineError(f"{arg}: {str(directory)!r} is not the output of `fusellm-fast extract`")
    try:
        records = load_topk(directory)
    except InvalidInputError as error:
        raise PipelineError(f"{arg}: {str(directory)!r} is unfinished: {error}") from None
    return ExtractedPass(directory=directory, records=records,
                         tokenizer=load_tokenizer(directory / _TOKENIZER_DIR, arg=arg), identity=identity)


# --------------------------------------------------------------------------------------------
# Stage 3: alignment
# --------------------------------------------------------------------------------------------


def align(
    target: PathLike,
    sources: Sequence[PathLike],
    output: PathLike,
    *,
    vocab_maps: Sequence[PathLike | None] | None = None,
    vocab_align: Literal["soft", "hard"] = "soft",
    onehot: Literal["next", "current"] = "next",
    ce_unit: CeUnit = "token",
    ce_level: Literal["sequence", "token"] = "sequence",
    method: Literal["dtw", "offsets", "boundary"] = "dtw",
    candidates: Literal["mined", "prefix"] = "mined",
    normalize: Normalize = "marker",
    batch_texts: int = 256,
    workers: int = -1,
    show_progress: bool = True,
) -> AlignSummary:
    """Aligns every source's teacher records to the target's and writes fusion examples.

    Each batch of texts is aligned with :func:`fusellm_fast.align_batch` on all cores (Rust
    threads) and saved as ``output/data/part-PPPPPP/``, a ``datasets`` directory with one row per
    text (:func:`load_aligned` joins them):

    - ``text_index`` int64; ``input_ids`` int32 ``[L]``: the target tokenization;
    - ``teacher_ids`` int32 ``[M, L, K]`` and ``teacher_logits`` float32 ``[M, L, K]``: model 0
      is the target's own top-k, models 1..M-1 the sources in the order given, aligned onto the
      target vocabulary; ``-1`` marks an empty slot;
    - ``teacher_ce`` float32 ``[M]``: each model's CE on the text, in the unit ``ce_unit``.

    These are the fusion examples of :mod:`fusellm_fast.trainer`.

    Args:
        target: the target model's teacher directory (from :func:`extract`).
        sources: the source models' teacher directories.
        output: the directory to write; ``output/summary.json`` is an :class:`AlignSummary`.
        vocab_maps: per source, a map file from :func:`build_vocab_map` or ``None`` to build it.
        vocab_align: ``"soft"`` (MinED map, the paper's default) or ``"hard"``.
        onehot: where a one-hot stand-in puts its mass: ``"next"`` target token (correct) or
            ``"current"`` (the published code's off-by-one).
        ce_unit: ``"token"``: each model's mean NLL per token of its own tokenization (the
            paper's CE); ``"byte"``: its summed NLL per byte of text, which ranks models with
            different tokenizers fairly.
        ce_level: ``"sequence"``: one CE per text and model (the paper); ``"token"``: one per
            target position, carried over from each source through the alignment (see
            :func:`~fusellm_fast.trainer.build_fusion_examples`); train it with ``level="token"``.
        method, candidates: as in :func:`~fusellm_fast.align_batch`.
        normalize: the token normalization of the MinED map and of ``dtw``'s costs, as in
            :class:`~fusellm_fast.Aligner`.
        batch_texts: texts per :func:`~fusellm_fast.align_batch` call.
        workers: threads; -1 uses every core.
        show_progress: draw a progress bar.

    Returns:
        The summary, with each source's match rate.

    Raises:
        PipelineError: a directory is missing or unfinished, or the passes were made over
            different corpora or with different ``top_k``.

    >>> align("teacher/target", ["teacher/a", "teacher/b"], "aligned")  # doctest: +SKIP
    AlignSummary(texts=..., sources=[{'directory': 'teacher/a', 'matched_rate': 0.58, ...}, ...])
    """
    import pyarrow as pa

    started = time.perf_counter()
    if not sources:
        raise PipelineError("--source: give at least one source model's teacher directory")
    vocab_maps = list(vocab_maps) if vocab_maps else [None] * len(sources)
    if len(vocab_maps) != len(sources):
        raise PipelineError(f"--vocab-map: got {len(vocab_maps)} maps for {len(sources)} sources; give one per source")
    target_pass = load_extracted(target, arg="--target")
    source_passes = [load_extracted(s, arg="--source") for s in sources]
    for source_pass in source_passes:
        if source_pass.identity["corpus_fingerprint"] != target_pass.identity["corpus_fingerprint"]:
            raise PipelineError(
                f"--source: {str(source_pass.directory)!r} was extracted from another corpus than the target "
                f"{str(target_pass.directory)!r}; run every model over the same corpus"
            )
    aligners = []
    for source_pass, map_path in zip(source_passes, vocab_maps):
        vocab_map = None
        if map_path is not None:
            if not Path(map_path).is_file():
                raise PipelineError(f"--vocab-map: {str(map_path)!r} does not exist")
            vocab_map = VocabMap.load(map_path)
        try:
            aligners.append(Aligner.from_tokenizers(source_pass.tokenizer, target_pass.tokenizer, vocab_map=vocab_map,
                                                    normalize=normalize))
        except VocabMapError as error:
            raise PipelineError(f"--vocab-map: {str(map_path)!r} {error}") from None
        except MarkerDetectionError as error:
            raise PipelineError(f"--source: {str(source_pass.directory)!r}: {error}") from None
        if vocab_align == "soft" and (method == "dtw" or candidates == "mined"):
            aligners[-1].build_vocab_map(workers=workers)

    from .trainer import build_fusion_examples

    byte_lengths = None
    if ce_level == "token" and ce_unit == "byte":
        byte_lengths = [_token_byte_lengths(p.tokenizer) for p in (target_pass, *source_passes)]
    target_records = target_pass.records.with_format("numpy")
    source_records = [p.records.with_format("numpy") for p in source_passes]
    total = len(target_records)
    counts = [{"matched": 0, "onehot": 0, "empty": 0, "dropped_candidates": 0, "positions": 0, "fallback_texts": 0,
               "kept_mass": 0.0} for _ in sources]
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    # Each batch goes to disk as its own part, so that memory holds one batch whatever the corpus size.
    parts = output / "data"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir()
    target_tokens = 0
    with _progress(total, "align", "text", show=show_progress) as bar:
        for start in range(0, total, batch_texts):
            own = target_records[start : start + batch_texts]
            others = [records[start : start + batch_texts] for records in source_records]
            aligned_sources = []
            for n, (aligner, theirs) in enumerate(zip(aligners, others)):
                aligned = align_batch(aligner, list(own["input_ids"]), list(theirs["input_ids"]),
                                      list(theirs["topk_ids"]), list(theirs["topk_logits"]),
                                      vocab_align=vocab_align, onehot=onehot, workers=workers, method=method,
                                      candidates=candidates)
                for key in counts[n]:
                    counts[n][key] += getattr(aligned.counts, key)
                aligned_sources.append(aligned)
            examples = build_fusion_examples(_rows(own), aligned_sources, [_rows(theirs) for theirs in others],
                                             ce_unit=ce_unit, ce_level=ce_level, byte_lengths=byte_lengths)
            table = {"text_index": pa.array(own["text_index"], pa.int64())}
            for key in ("input_ids", "teacher_ids", "teacher_logits", "teacher_ce"):
                table[key] = nested_array([example[key] for example in examples])
            _save_atomically(pa.table(table), parts / f"part-{start // batch_texts:06d}")
            batch_tokens = int(sum(len(ids) for ids in own["input_ids"]))
            target_tokens += batch_tokens
            bar.update(len(examples))
            bar.set_postfix_str(f"{target_tokens / max(bar.format_dict['elapsed'], 1e-9):.0f} tok/s", refresh=False)
    seconds = time.perf_counter() - started
    summary = AlignSummary(
        texts=total,
        target_tokens=target_tokens,
        sources=[
            {
                "directory": str(source),
                "matched_rate": c["matched"] / c["positions"] if c["positions"] else 0.0,
                "kept_mass_rate": c["kept_mass"] / c["matched"] if c["matched"] else 0.0,
                **c,
                "vocab_map_exact_share": aligner.vocab_map.exact_share if aligner.vocab_map else None,
            }
            for source, c, aligner in zip(sources, counts, aligners)
        ],
        vocab_align=vocab_align,
        onehot=onehot,
        ce_unit=ce_unit,
        ce_level=ce_level,
        method=method,
        candidates=candidates,
        normalize=normalize,
        target_tokenizer_fingerprint=target_pass.identity["tokenizer_fingerprint"],
        corpus_fingerprint=target_pass.identity["corpus_fingerprint"],
        seconds=seconds,
        tokens_per_second=target_tokens / seconds if seconds else 0.0,
    )
    write_summary(output, summary)
    return summary


def _rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a column batch of teacher records."""
    return [{key: batch[key][b] for key in batch} for b in range(len(batch["input_ids"]))]


# --------------------------------------------------------------------------------------------
# Stage 4: training
# --------------------------------------------------------------------------------------------


def _token_byte_lengths(tokenizer: Any) -> np.ndarray:
    """The UTF-8 byte length of every token of ``tokenizer`` (special tokens: 0)."""
    tokens = tokenizer_vocabulary(tokenizer, "tokenizer")
    return np.array([len(b) for b in token_bytes(tokens, special_ids=special_ids(tokenizer))], dtype=np.int64)


def load_aligned(directory: PathLike, *, arg: str) -> tuple[Any, dict[str, Any]]:
    """The fusion examples written by :func:`align` (all parts, memory-mapped) and their summary."""
    import datasets

    directory = Path(directory)
    if not directory.is_dir():
        raise PipelineError(f"{arg}: {str(directory)!r} is not a directory")
    summary = read_summary(directory, arg=arg)
    if "target_tokenizer_fingerprint" not in summary or not (directory / "data").is_dir():
        raise PipelineError(f"{arg}: {str(directory)!r} is not the output of `fusellm-fast align`")
    parts = sorted((directory / "data").glob("part-*"))
    if not parts:
        raise PipelineError(f"{arg}: {str(directory)!r} holds no aligned texts")
    return datasets.concatenate_datasets([datasets.load_from_disk(str(part)) for part in parts]), summary


class PackedBlocks:
    """Aligned rows cut into ``block_size``-token training blocks, read from disk on demand.

    Block ``i`` holds tokens ``[i * block_size, (i + 1) * block_size)`` of all rows concatenated,
    as :func:`fusellm_fast.trainer.pack_examples` would cut them (the remainder is dropped), but
    only the rows it overlaps are read, so that a corpus far larger than memory trains as well.

    >>> blocks = PackedBlocks(load_aligned("aligned", arg="ALIGNED_DIR")[0], block_size=2048)  # doctest: +SKIP
    >>> blocks[0]["input_ids"].shape  # doctest: +SKIP
    (2048,)
    """

    def __init__(self, rows: Any, *, block_size: int, level: Literal["sequence", "token"] = "sequence") -> None:
        if not (isinstance(block_size, int) and block_size >= 1):
            raise PipelineError(f"--block-size: must be a positive int, got {block_size!r}")
        self._level = level
        import pyarrow.compute as pc

        # Rows are read as Arrow and turned into arrays by hand: the numpy formatter of ``datasets``
        # walks nested lists element by element, which costs more than a training step.
        self._rows = rows.with_format("arrow")
        self._block_size = block_size
        # Row lengths straight from the Arrow offsets: the token ids themselves stay on disk.
        lengths = pc.list_value_length(self._rows[:]["input_ids"]).to_numpy().astype(np.int64)
        self._row_starts = np.concatenate([[0], np.cumsum(lengths)])

    def __len__(self) -> int:
        return int(self._row_starts[-1] // self._block_size)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        from .trainer import pack_examples

        if not 0 <= index < len(self):
            raise IndexError(f"index: block {index} of {len(self)}")
        start = index * self._block_size
        first = int(np.searchsorted(self._row_starts, start, side="right")) - 1
        last = int(np.searchsorted(self._row_starts, start + self._block_size, side="left"))
        table = self._rows[first:last]
        rows = [{name: _rectangular_array(table[name][r]) for name in table.column_names} for r in range(last - first)]
        offset = start - int(self._row_starts[first])
        # A text's CE is one value for all its tokens, so trimming the first row keeps the block's mean
        # right; token-level CE is trimmed with the tokens.
        ce = rows[0]["teacher_ce"]
        rows[0] = {**rows[0], "input_ids": rows[0]["input_ids"][offset:],
                   "teacher_ids": rows[0]["teacher_ids"][:, offset:],
                   "teacher_logits": rows[0]["teacher_logits"][:, offset:],
                   "teacher_ce": ce[:, offset:] if ce.ndim == 2 else ce}
        return pack_examples(rows, block_size=self._block_size, level=self._level)[0]


def _rectangular_array(value: Any) -> Any:
    """One cell of an Arrow table as numpy: nested lists of equal lengths become an n-d array."""
    import pyarrow as pa

    if not isinstance(value, pa.ListScalar):
        return value.as_py()
    values = value.values
    shape = [len(values)]
    while pa.types.is_list(values.type):
        inner = values.flatten()
        shape.append(len(inner) // math.prod(shape) if math.prod(shape) else 0)
        values = inner
    return values.to_numpy(zero_copy_only=False).reshape(shape)


def train(
    target_model: PathLike,
    aligned: PathLike,
    output: PathLike,
    *,
    method: Literal["min_ce", "avg_ce"] = "min_ce",
    lm_weight: float = 0.9,
    temperature: float = 1.0,
    level: Literal["sequence", "token"] | None = None,
    block_size: int = 2048,
    batch_size: int = 1,
    gradient_accumulation_steps: int = 1,
    learning_rate: float = 1e-5,
    lr_scheduler: str = "cosine",
    warmup_ratio: float = 0.008,
    weight_decay: float = 0.1,
    adam_beta2: float = 0.95,
    epochs: float = 1.0,
    max_steps: int = -1,
    bf16: bool = False,
    seed: int = 42,
    logging_steps: int = 10,
    save_steps: int | None = None,
    deepspeed: str | None = None,
    fsdp: str | None = None,
    fsdp_config: str | None = None,
    resume: bool = False,
    show_progress: bool = True,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> TrainSummary:
    """Continual training of the target on aligned fusion examples with ``FusionTrainer``.

    The aligned rows are packed into ``block_size``-token blocks (each block's CE is the
    token-weighted mean of its texts', so MinCE picks one teacher per block) and trained with
    ``lm_weight * L_clm + (1 - lm_weight) * L_fusion``; ``lm_weight=1.0`` is plain continual
    training (the paper's "CLM" baseline). Under ``torchrun`` or ``accelerate launch`` each process
    trains on its share of the blocks; ``deepspeed``/``fsdp`` are passed to ``TrainingArguments``.

    The defaults are the paper's settings. The model and tokenizer are saved to ``output``, with
    ``output/summary.json`` (a :class:`TrainSummary`, including the log history).

    Args:
        target_model: the target model directory (with its tokenizer).
        aligned: the directory written by :func:`align`.
        output: where checkpoints and the final model go.
        method: ``"min_ce"`` or ``"avg_ce"``.
        lm_weight: lambda, the weight of the causal LM loss.
        temperature: teacher temperature.
        level: where MinCE/AvgCE choose: per block (``"sequence"``, the paper) or per position
            (``"token"``); ``None`` follows the aligned data's ``ce_level``.
        block_size: tokens per training block.
        batch_size: blocks per device and step.
        gradient_accumulation_steps: steps per optimizer update.
        learning_rate, lr_scheduler, warmup_ratio, weight_decay, adam_beta2, epochs, max_steps,
            bf16, seed, logging_steps: as in ``transformers.TrainingArguments``.
        save_steps: checkpoint every so many steps; no checkpoints when omitted.
        deepspeed: a DeepSpeed JSON config path.
        fsdp, fsdp_config: the FSDP options of ``TrainingArguments``.
        resume: continue from the last checkpoint in ``output``.
        show_progress: draw the trainer's progress bar.
        on_log: called with every log entry (loss terms, learning rate, teacher weights).

    Returns:
        The summary of the run.

    Raises:
        PipelineError: a path is missing, the aligned data belong to another tokenizer, the
            vocabulary exceeds the model, or no full block can be packed.

    >>> train("target_model", "aligned", "fused", max_steps=100)  # doctest: +SKIP
    TrainSummary(steps=100, ...)
    """
    import torch
    from transformers import PrinterCallback, TrainerCallback

    from .trainer import FusionCollator, FusionTrainer, FusionTrainingArguments

    started = time.perf_counter()
    tokenizer = load_tokenizer(target_model, arg="TARGET_MODEL")
    examples, summary = load_aligned(aligned, arg="ALIGNED_DIR")
    fingerprint = strings_fingerprint(tokenizer_vocabulary(tokenizer, "TARGET_MODEL"))
    if fingerprint != summary["target_tokenizer_fingerprint"]:
        raise PipelineError(
            f"ALIGNED_DIR: {str(aligned)!r} was aligned to another tokenizer than {str(target_model)!r}'s; "
            "extract and align with this target model"
        )
    # Full-precision weights: with --bf16 the trainer runs mixed precision on top of them.
    model = load_model(target_model, arg="TARGET_MODEL", tokenizer=tokenizer, dtype=torch.float32)
    level = level or summary.get("ce_level", "sequence")
    blocks = PackedBlocks(examples, block_size=block_size, level=level)
    if not len(blocks):
        raise PipelineError(f"--block-size: the aligned data hold fewer than {block_size} tokens; "
                            "lower --block-size or add data")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    passthrough = {key: value for key, value in (("deepspeed", deepspeed), ("fsdp", fsdp),
                                                  ("fsdp_config", fsdp_config)) if value}
    args = FusionTrainingArguments(
        output_dir=str(output),
        method=method,
        lm_weight=lm_weight,
        temperature=temperature,
        level=level,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=learning_rate,
        lr_scheduler_type=lr_scheduler,
        warmup_steps=warmup_ratio,
        weight_decay=weight_decay,
        adam_beta2=adam_beta2,
        num_train_epochs=epochs,
        max_steps=max_steps,
        bf16=bf16,
        seed=seed,
        data_seed=seed,
        logging_steps=logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        report_to="none",
        disable_tqdm=not show_progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        **passthrough,
    )

    class _Forward(TrainerCallback):
        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict[str, float] | None = None,
                   **_: Any) -> None:
            if on_log is not None and logs:
                on_log(dict(logs))

    trainer = FusionTrainer(model=model, args=args, train_dataset=blocks,
                            data_collator=FusionCollator(pad_token_id=pad_id), callbacks=[_Forward()])
    if not show_progress:
        trainer.remove_callback(PrinterCallback)
    has_checkpoint = resume and any(Path(output).glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if has_checkpoint else None)
    trainer.save_model(str(output))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(output))
    seconds = time.perf_counter() - started
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    steps = trainer.state.global_step
    tokens = steps * batch_size * gradient_accumulation_steps * block_size * max(args.world_size, 1)
    run = TrainSummary(
        steps=steps,
        blocks=len(blocks),
        block_size=block_size,
        method=method,
        lm_weight=lm_weight,
        level=level,
        ce_unit=summary["ce_unit"],
        final_loss=float(history[-1]["loss"]) if history else float(result.training_loss),
        seconds=seconds,
        tokens_per_second=tokens / result.metrics["train_runtime"] if result.metrics.get("train_runtime") else 0.0,
        log_history=history,
    )
    if trainer.is_world_process_zero():
        write_summary(output, run)
    return run

