"""The teacher pass: each model's top-k next-token lists and cross-entropy on the training texts.

In FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv:2401.10491)
every model, the target and each source, runs once over the same texts. For each text and model the
stored record is the model's own tokenization (no special tokens, EOS appended), the top-k ids at
every position (the prediction of the next token) with their log-probabilities under the model's
full softmax, and the model's cross-entropy on the text, from which the fusion's reward
``exp(-ce)`` is computed. (The published pipeline keeps raw logits, which loses each list's share
of the probability mass.)

:func:`extract_topk` returns these records as :class:`~fusellm_fast.teacher_records.TeacherRecords`;
with an output directory it saves them in compact parts, so that a run split into shards, or an
interrupted one, continues where it stopped; :func:`load_topk` reads a finished run back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from fusellm_fast._checks import checked_choice
from fusellm_fast._fingerprint import strings_fingerprint
from fusellm_fast._shards import checked_shard, shard_range
from fusellm_fast.errors import InputTypeError, InvalidInputError
from fusellm_fast.hf import model_or_tokenizer
from fusellm_fast.pipeline.storage import replace_atomically, write_text_atomically
from fusellm_fast.teacher_records import COLUMNS, TeacherRecords, ValuesDtype, records_table, write_records

__all__ = ["TeacherRecords", "ValuesDtype", "extract_topk", "load_topk"]

_RUN_FILE = "extract_topk.json"
_PART_FILE = "part.json"
_RECORDS_FILE = "records.arrow"
# 2: log-probabilities in compact parts; 1: raw logits in `datasets` directories.
_FORMAT_VERSION = 2
# Texts per compressed batch of a part: what reading one text decompresses.
_BATCH_TEXTS = 32
# Positions of one text whose float32 logits are processed at once: bounds the temporaries.
_CHUNK_ELEMENTS = 1 << 24


def extract_topk(
    model: Any,
    tokenizer: Any,
    texts_or_dataset: Sequence[str] | datasets.Dataset,
    *,
    k: int = 10,
    max_length: int = 2048,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    text_column: str = "text",
    values_dtype: ValuesDtype = "float16",
    output_dir: str | os.PathLike[str] | None = None,
    shard: tuple[int, int] = (0, 1),
    texts_per_part: int = 1024,
) -> TeacherRecords:
    """Run a local causal LM over texts and keep what the fusion needs of each.

    Each text is tokenized without special tokens, EOS is appended (no BOS) and the result is cut to
    ``max_length`` tokens, as in the paper's reference pipeline. Texts are batched by similar length
    with right padding. CE, top-k and the softmax's log-normalizer are computed in float32 over the
    tokenizer's vocabulary (padded embedding rows are no tokens); each listed value is
    ``log_softmax`` at that id, so a position's tail is ``1 - sum(exp(values))``. The model runs in
    eval mode under ``torch.inference_mode`` and gets its mode and device back afterwards.

    With ``output_dir``, the texts of ``shard=(i, n)`` (the ``i``-th of ``n`` contiguous ranges) are
    processed in parts of ``texts_per_part`` texts, each saved (:mod:`fusellm_fast.teacher_records`)
    under ``output_dir/shard-i-of-n/`` as soon as it is done; parts already there are checked
    against their texts and skipped, so rerunning the same call continues an interrupted run.
    Shards can run in separate processes; :func:`load_topk` joins them.

    Args:
        model: a ``transformers`` causal LM, or the path of a local one (``from_pretrained`` with
            ``local_files_only``); anything whose call ``model(input_ids=..., attention_mask=...)``
            returns ``.logits [B, L, V]`` works.
        tokenizer: its tokenizer, or a local path; needs ``eos_token_id``.
        texts_or_dataset: the texts, each non-empty, or a ``datasets.Dataset`` with a
            ``text_column``.
        k: top-k list length (paper: 10), at most the tokenizer's vocabulary.
        max_length: keep at most this many tokens of each text (the EOS is lost when it is cut).
        batch_size: texts per forward pass.
        device: where the model runs; its current device when ``None``.
        text_column: the column of a dataset that holds the texts.
        values_dtype: how ``topk_log_probs`` are stored (computed in float32 either way).
        output_dir: where to save the parts; nothing is written when ``None``.
        shard: ``(index, count)``: process only this share of the texts.
        texts_per_part: texts per saved part, the unit of resumption.

    Returns:
        The shard's records, in text order (rows as in :class:`TeacherRecords`).

    Raises:
        InputTypeError: ``texts_or_dataset`` is neither a sequence of strings nor a dataset.
        InvalidInputError: a text is empty or has no token, the tokenizer has no EOS or produces
            ids beyond the model's vocabulary, the model's logits are not finite, an option is out
            of range, or ``output_dir`` holds a run of an older format or other settings or texts.

    >>> from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    >>> from tokenizers import Tokenizer, models
    >>> tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(
    ...     {"a": 0, "b": 1, "</s>": 2, "<unk>": 3}, unk_token="<unk>")), eos_token="</s>")
    >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=4, n_embd=8, n_layer=1, n_head=1,
    ...                                    bos_token_id=2, eos_token_id=2))
    >>> rows = extract_topk(model, tokenizer, ["ab"], k=2)
    >>> rows[0]["input_ids"].tolist(), rows[0]["topk_ids"].shape, bool(np.exp(rows[0]["topk_log_probs"]).sum() < 2)
    ([3, 2], (2, 2), True)
    """
    texts = _Texts(texts_or_dataset, text_column)
    settings, shard_index = _checked_settings(len(texts), k=k, max_length=max_length, batch_size=batch_size,
                                              texts_per_part=texts_per_part, values_dtype=values_dtype, shard=shard)
    model, tokenizer = _model_and_tokenizer(model, tokenizer)
    teacher_pass = _TeacherPass(
        model, tokenizer, k=k, max_length=max_length, batch_size=batch_size, values_dtype=values_dtype
    )
    with _evaluating(model, device) as run_device:
        if output_dir is None:
            start, stop = shard_range(len(texts), shard_index, settings["num_shards"])
            return TeacherRecords([teacher_pass.table(texts, start, stop, run_device)], k=k)
        parts = _computed_parts(Path(output_dir), settings, shard_index, texts, teacher_pass, run_device)
    return TeacherRecords(parts, k=k)


def _checked_settings(num_texts: int, *, k: int, max_length: int, batch_size: int, texts_per_part: int,
                      values_dtype: ValuesDtype, shard: object) -> tuple[dict[str, Any], int]:
    """The options of :func:`extract_topk` checked; the settings a saved run records, and the shard index."""
    _check_int("k", k, minimum=1)
    _check_int("max_length", max_length, minimum=2)
    _check_int("batch_size", batch_size, minimum=1)
    _check_int("texts_per_part", texts_per_part, minimum=1)
    checked_choice(values_dtype, "values_dtype", ("float16", "float32"))
    shard_index, shard_count = checked_shard(shard)
    settings = {
        "k": k,
        "max_length": max_length,
        "values_dtype": values_dtype,
        "num_texts": num_texts,
        "num_shards": shard_count,
        "texts_per_part": texts_per_part,
    }
    return settings, shard_index


def _model_and_tokenizer(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """The model and the tokenizer, loaded where paths are given; the tokenizer has an EOS."""
    model = model_or_tokenizer(model, "model")
    tokenizer = model_or_tokenizer(tokenizer, "tokenizer")
    if getattr(tokenizer, "eos_token_id", None) is None:
        raise InvalidInputError("tokenizer: has no eos_token_id; the teacher pass appends EOS to every text")
    return model, tokenizer


def _computed_parts(root: Path, settings: dict[str, Any], shard_index: int, texts: _Texts, teacher_pass: _TeacherPass,
                    device: torch.device) -> list[Path]:
    """The record files of the shard's parts under ``root``: those already saved, the others computed
    and saved."""
    _claim_run(root, settings)
    parts = []
    for part_dir, part_start, part_stop in _parts(root, settings, shard_index):
        fingerprint = texts.fingerprint(part_start, part_stop)
        if not _finished_part(part_dir, fingerprint):
            _save_part(teacher_pass.table(texts, part_start, part_stop, device), part_dir, fingerprint)
        parts.append(part_dir / _RECORDS_FILE)
    return parts


def load_topk(output_dir: str | os.PathLike[str]) -> TeacherRecords:
    """All rows of a finished :func:`extract_topk` run with an ``output_dir``, in text order.

    Args:
        output_dir: the directory given to :func:`extract_topk`.

    Returns:
        The records of every shard, memory-mapped from disk.

    Raises:
        InvalidInputError: ``output_dir`` holds no run, a run of an older format (raw logits: run
            it again into a new directory), or a part of it is missing (its shard is still running
            or was interrupted: rerun it).

    >>> load_topk("no/such/dir")
    Traceback (most recent call last):
    ...
    fusellm_fast.errors.InvalidInputError: output_dir: holds no extract_topk run (no/such/dir/extract_topk.json)
    """
    root = Path(output_dir)
    settings = _read_run(root)
    parts = []
    for shard_index in range(settings["num_shards"]):
        for part_dir, _, _ in _parts(root, settings, shard_index):
            if not (part_dir / _PART_FILE).is_file():
                raise InvalidInputError(
                    f"output_dir: {part_dir} is missing; run extract_topk with "
                    f"shard=({shard_index}, {settings['num_shards']}) again to finish it"
                )
            parts.append(part_dir / _RECORDS_FILE)
    return TeacherRecords(parts, k=settings["k"])


class _Texts:
    """Random access to the texts of a list or of a dataset column, with per-range fingerprints."""

    def __init__(self, texts_or_dataset: Any, text_column: str) -> None:
        if isinstance(texts_or_dataset, datasets.Dataset):
            if text_column not in texts_or_dataset.column_names:
                raise InvalidInputError(
                    f"text_column: {text_column!r} is not a column of texts_or_dataset "
                    f"({texts_or_dataset.column_names})"
                )
            self._dataset, self._texts = texts_or_dataset, None
        elif isinstance(texts_or_dataset, Sequence) and not isinstance(texts_or_dataset, (str, bytes)):
            self._dataset, self._texts = None, texts_or_dataset
        else:
            raise InputTypeError(
                f"texts_or_dataset: must be a sequence of strings or a datasets.Dataset, "
                f"got {type(texts_or_dataset).__name__}"
            )
        self._column = text_column

    def __len__(self) -> int:
        return len(self._dataset if self._dataset is not None else self._texts)

    def slice(self, start: int, stop: int) -> list[str]:
        texts = list(self._texts[start:stop]) if self._texts is not None else self._dataset[start:stop][self._column]
        for offset, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputTypeError(f"texts_or_dataset: text {start + offset} is {type(text).__name__}, not str")
            if not text:
                raise InvalidInputError(f"texts_or_dataset: text {start + offset} is empty")
        return texts

    def fingerprint(self, start: int, stop: int) -> str:
        return strings_fingerprint(self.slice(start, stop))


class _TeacherPass:
    """The model and the settings of one run; :meth:`rows` computes the columns for a range of texts."""

    def __init__(
        self, model: Any, tokenizer: Any, *, k: int, max_length: int, batch_size: int, values_dtype: ValuesDtype
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.k, self.max_length, self.batch_size = k, max_length, batch_size
        self.values_dtype = np.dtype(values_dtype)
        self.known_ids = len(tokenizer)
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        self.embedding_rows = embeddings.num_embeddings if isinstance(embeddings, torch.nn.Embedding) else None

    def table(self, texts: _Texts, start: int, stop: int, device: torch.device) -> Any:
        """The records of texts ``start`` to ``stop`` as a :func:`records_table`."""
        return records_table(self.rows(texts, start, stop, device), k=self.k, vocab_size=self.known_ids,
                             values_dtype=self.values_dtype.name)

    def rows(self, texts: _Texts, start: int, stop: int, device: torch.device) -> dict[str, list[Any]]:
        chunk = texts.slice(start, stop)
        eos = self.tokenizer.eos_token_id
        encoded = self.tokenizer(chunk, add_special_tokens=False)["input_ids"] if chunk else []
        token_lists = [[*ids, eos][: self.max_length] for ids in encoded]
        for offset, ids in enumerate(token_lists):
            if len(ids) < 2:
                raise InvalidInputError(f"texts_or_dataset: text {start + offset} has no token besides EOS")
        columns: dict[str, list[Any]] = {name: [None] * len(chunk) for name in COLUMNS}
        order = sorted(range(len(chunk)), key=lambda i: len(token_lists[i]))
        with torch.inference_mode():
            for batch_start in range(0, len(order), self.batch_size):
                batch = order[batch_start : batch_start + self.batch_size]
                for offset, row in zip(batch, self._batch([token_lists[i] for i in batch], device), strict=True):
                    row["text_index"] = start + offset
                    row["num_bytes"] = len(chunk[offset].encode("utf-8", "surrogatepass"))
                    stored = row["topk_log_probs"].astype(self.values_dtype)
                    if not np.isfinite(row["total_ce"]) or not np.isfinite(stored).all():
                        raise InvalidInputError(
                            f"model: produced non-finite logits (or {self.values_dtype} overflowed) "
                            f"on text {start + offset}"
                        )
                    for name, value in row.items():
                        columns[name][offset] = value
        return columns

    def _batch(self, token_lists: list[list[int]], device: torch.device) -> list[dict[str, Any]]:
        lengths = [len(ids) for ids in token_lists]
        input_ids = torch.zeros(len(token_lists), max(lengths), dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(token_lists):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        if self.embedding_rows is not None and int(input_ids.max()) >= self.embedding_rows:
            raise InvalidInputError(
                f"tokenizer: produced id {int(input_ids.max())}, beyond the model's vocabulary of {self.embedding_rows}"
            )
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        vocab = min(logits.shape[-1], self.known_ids)
        if self.k > vocab:
            raise InvalidInputError(f"k: must be at most the vocabulary of {vocab} tokens, got {self.k}")
        return [self._text(logits[row, :length], input_ids[row, :length]) for row, length in enumerate(lengths)]

    def _text(self, logits: torch.Tensor, ids: torch.Tensor) -> dict[str, Any]:
        """The columns of one text from its logits ``[L, V]``, in float32 one chunk of positions at a
        time, over the tokenizer's ids only (rows of a padded embedding matrix are no tokens)."""
        length = logits.shape[0]
        vocab = min(logits.shape[1], self.known_ids)
        step = max(1, _CHUNK_ELEMENTS // vocab)
        top_ids, top_log_probs, token_ce = [], [], []
        for chunk_start in range(0, length, step):
            chunk = logits[chunk_start : chunk_start + step, :vocab].float()
            log_normalizer = torch.logsumexp(chunk, -1)
            values, indices = chunk.topk(self.k, dim=-1)
            top_ids.append(indices)
            top_log_probs.append(values - log_normalizer[:, None])
            targets = ids[chunk_start + 1 : chunk_start + step + 1]
            predicted = chunk[: len(targets)].gather(-1, targets[:, None])[:, 0]
            token_ce.append(log_normalizer[: len(targets)] - predicted)
        token_ce = torch.cat(token_ce).double()
        return {
            "input_ids": ids.cpu().numpy(),
            "topk_ids": torch.cat(top_ids).cpu().numpy(),
            "topk_log_probs": torch.cat(top_log_probs).cpu().numpy(),
            "token_ce": token_ce.cpu().numpy(),
            "ce": float(token_ce.mean()),
            "total_ce": float(token_ce.sum()),
        }


@contextlib.contextmanager
def _evaluating(model: Any, device: str | torch.device | None) -> Iterator[torch.device]:
    """Eval mode on the run's device for the duration of a ``with``; the model's mode and device return."""
    home = next(model.parameters()).device
    try:
        run_device = home if device is None else torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidInputError(f"device: {error}") from error
    # Models dispatched over several devices are only moved when asked to.
    moved = run_device != home
    was_training = model.training
    model.eval()
    if moved:
        model.to(run_device)
    try:
        yield run_device
    finally:
        if moved:
            model.to(home)
        model.train(was_training)


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name}: must be an int >= {minimum}, got {value!r}")


def _parts(root: Path, settings: dict[str, Any], shard_index: int) -> list[tuple[Path, int, int]]:
    count = settings["num_shards"]
    start, stop = shard_range(settings["num_texts"], shard_index, count)
    shard_dir = root / f"shard-{shard_index:05d}-of-{count:05d}"
    step = settings["texts_per_part"]
    return [
        (shard_dir / f"part-{number:06d}", part_start, min(part_start + step, stop))
        for number, part_start in enumerate(range(start, stop, step))
    ]


def _read_run(root: Path) -> dict[str, Any]:
    path = root / _RUN_FILE
    if not path.is_file():
        raise InvalidInputError(f"output_dir: holds no extract_topk run ({path})")
    settings = json.loads(path.read_text())
    _check_format(root, settings)
    return settings


def _check_format(root: Path, recorded: dict[str, Any]) -> None:
    if recorded.get("format") != _FORMAT_VERSION:
        raise InvalidInputError(
            f"output_dir: {root} holds a teacher pass of format {recorded.get('format')} (raw top-k logits); "
            f"run extract again into a new directory to store calibrated log-probabilities (format {_FORMAT_VERSION})"
        )


def _claim_run(root: Path, settings: dict[str, Any]) -> None:
    """Record the run's settings in ``root``, or check that they are those already recorded there."""
    wanted = {"format": _FORMAT_VERSION, **settings}
    path = root / _RUN_FILE
    if path.is_file():
        recorded = json.loads(path.read_text())
        _check_format(root, recorded)
        if recorded != wanted:
            different = sorted(key for key in wanted.keys() | recorded.keys() if wanted.get(key) != recorded.get(key))
            changes = ", ".join(f"{key} {recorded.get(key)!r} there, {wanted.get(key)!r} here" for key in different)
            raise InvalidInputError(f"output_dir: holds a run with other settings ({changes}); use another directory")
        return
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(wanted, indent=1))


def _finished_part(part_dir: Path, fingerprint: str) -> bool:
    marker = part_dir / _PART_FILE
    if not marker.is_file():
        shutil.rmtree(part_dir, ignore_errors=True)  # left over from an interrupted save
        return False
    if json.loads(marker.read_text())["texts_sha256"] != fingerprint:
        raise InvalidInputError(f"output_dir: {part_dir} was computed from other texts; use another directory")
    return True


def _save_part(table: Any, part_dir: Path, fingerprint: str) -> None:
    def write(staging: Path) -> None:
        staging.mkdir(parents=True)
        write_records(staging / _RECORDS_FILE, table, batch_rows=_BATCH_TEXTS)
        # The marker goes in last, and the rename makes the part appear whole or not at all.
        (staging / _PART_FILE).write_text(json.dumps({"texts_sha256": fingerprint, "rows": len(table)}))

    replace_atomically(part_dir, write)
