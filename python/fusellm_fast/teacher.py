"""The teacher pass: each model's top-k next-token lists and cross-entropy on the training texts.

In FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv:2401.10491)
every model, the target and each source, runs once over the same texts. For each text and model the
stored record is the model's own tokenization (no special tokens, EOS appended), the top-k logits and
ids at every position (the prediction of the next token) and the model's cross-entropy on the text,
from which the fusion's reward ``exp(-ce)`` is computed.

:func:`extract_topk` writes these records as a ``datasets.Dataset``; with an output directory it
saves them in parts, so that a run split into shards, or an interrupted one, continues where it
stopped; :func:`load_topk` reads a finished run back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import torch

from fusellm_fast._checks import checked_choice
from fusellm_fast._fingerprint import strings_fingerprint
from fusellm_fast._shards import checked_shard, shard_range
from fusellm_fast.errors import InputTypeError, InvalidInputError
from fusellm_fast.hf import model_or_tokenizer

__all__ = ["LogitsDtype", "extract_topk", "load_topk", "topk_features"]

LogitsDtype = Literal["float32", "float16"]

_RUN_FILE = "extract_topk.json"
_PART_FILE = "part.json"
_FORMAT_VERSION = 1
# Positions of one text whose float32 logits are processed at once: bounds the temporaries.
_CHUNK_ELEMENTS = 1 << 24


def topk_features(k: int, logits_dtype: LogitsDtype = "float32") -> datasets.Features:
    """The columns :func:`extract_topk` writes, one row per text.

    - ``text_index``: position of the text in the input;
    - ``input_ids``: ``int32 [L]`` the model's tokenization, no BOS, EOS last (unless cut off);
    - ``topk_ids``: ``int32 [L, k]`` the top-k next-token ids at every position in descending
      logit order; ids the tokenizer does not know are dropped, leaving ``-1`` at the end;
    - ``topk_logits``: ``[L, k]`` their logits in ``logits_dtype``, ``0.0`` where dropped;
    - ``token_ce``: ``float32 [L - 1]`` the cross-entropy of token ``t + 1`` given the text up to ``t``;
    - ``ce``: ``float32`` its mean, the sequence-level CE of the paper;
    - ``total_ce``: ``float64`` its sum, and ``num_bytes``: the text's UTF-8 length, for a CE per byte;
    - ``dropped``: how many top-k entries of the text were dropped as unknown to the tokenizer.

    >>> sorted(topk_features(10))[:4]
    ['ce', 'dropped', 'input_ids', 'num_bytes']
    """
    return datasets.Features(
        {
            "text_index": datasets.Value("int64"),
            "input_ids": datasets.Sequence(datasets.Value("int32")),
            "topk_ids": datasets.Array2D(shape=(None, k), dtype="int32"),
            "topk_logits": datasets.Array2D(shape=(None, k), dtype=logits_dtype),
            "token_ce": datasets.Sequence(datasets.Value("float32")),
            "ce": datasets.Value("float32"),
            "total_ce": datasets.Value("float64"),
            "num_bytes": datasets.Value("int64"),
            "dropped": datasets.Value("int32"),
        }
    )


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
    logits_dtype: LogitsDtype = "float32",
    output_dir: str | os.PathLike[str] | None = None,
    shard: tuple[int, int] = (0, 1),
    texts_per_part: int = 1024,
) -> datasets.Dataset:
    """Run a local causal LM over texts and keep what the fusion needs of each.

    Each text is tokenized without special tokens, EOS is appended (no BOS) and the result is cut to
    ``max_length`` tokens, as in the paper's reference pipeline. Texts are batched by similar length
    with right padding. Cross-entropy and top-k are computed in float32 whatever the model's dtype,
    over the vocabulary of the model's logits (which may exceed the tokenizer's: padded embedding
    rows); top-k ids the tokenizer does not know are dropped and counted. The model runs in eval
    mode under ``torch.inference_mode`` and gets its mode and device back afterwards.

    With ``output_dir``, the texts of ``shard=(i, n)`` (the ``i``-th of ``n`` contiguous ranges) are
    processed in parts of ``texts_per_part`` texts, each saved with ``save_to_disk`` under
    ``output_dir/shard-i-of-n/`` as soon as it is done; parts already there are checked against
    their texts and skipped, so rerunning the same call continues an interrupted run. Shards can
    run in separate processes; :func:`load_topk` joins them.

    Args:
        model: a ``transformers`` causal LM, or the path of a local one (``from_pretrained`` with
            ``local_files_only``); anything whose call ``model(input_ids=..., attention_mask=...)``
            returns ``.logits [B, L, V]`` works.
        tokenizer: its tokenizer, or a local path; needs ``eos_token_id``.
        texts_or_dataset: the texts, each non-empty, or a ``datasets.Dataset`` with a
            ``text_column``.
        k: top-k list length (paper: 10), at most the model's vocabulary.
        max_length: keep at most this many tokens of each text (the EOS is lost when it is cut).
        batch_size: texts per forward pass.
        device: where the model runs; its current device when ``None``.
        text_column: the column of a dataset that holds the texts.
        logits_dtype: how ``topk_logits`` are stored (computed in float32 either way).
        output_dir: where to save the parts; nothing is written when ``None``.
        shard: ``(index, count)``: process only this share of the texts.
        texts_per_part: texts per saved part, the unit of resumption.

    Returns:
        The shard's rows, in text order, with the columns of :func:`topk_features`.

    Raises:
        InputTypeError: ``texts_or_dataset`` is neither a sequence of strings nor a dataset.
        InvalidInputError: a text is empty or has no token, the tokenizer has no EOS or produces
            ids beyond the model's vocabulary, the model's logits are not finite, an option is out
            of range, or ``output_dir`` holds a run with other settings or texts.

    >>> from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    >>> from tokenizers import Tokenizer, models
    >>> tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(
    ...     {"a": 0, "b": 1, "</s>": 2, "<unk>": 3}, unk_token="<unk>")), eos_token="</s>")
    >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=4, n_embd=8, n_layer=1, n_head=1,
    ...                                    bos_token_id=2, eos_token_id=2))
    >>> rows = extract_topk(model, tokenizer, ["ab"], k=2)
    >>> rows[0]["input_ids"], len(rows[0]["topk_ids"]), len(rows[0]["token_ce"])
    ([3, 2], 2, 1)
    """
    texts = _Texts(texts_or_dataset, text_column)
    settings, shard_index = _checked_settings(len(texts), k=k, max_length=max_length, batch_size=batch_size,
                                              texts_per_part=texts_per_part, logits_dtype=logits_dtype, shard=shard)
    model, tokenizer = _model_and_tokenizer(model, tokenizer)
    teacher_pass = _TeacherPass(
        model, tokenizer, k=k, max_length=max_length, batch_size=batch_size, logits_dtype=logits_dtype
    )
    features = topk_features(k, logits_dtype)
    with _evaluating(model, device) as run_device:
        if output_dir is None:
            start, stop = shard_range(len(texts), shard_index, settings["num_shards"])
            return datasets.Dataset.from_dict(teacher_pass.rows(texts, start, stop, run_device), features=features)
        parts = _computed_parts(Path(output_dir), settings, shard_index, texts, teacher_pass, features, run_device)
    return datasets.concatenate_datasets(parts) if parts else _empty(features)


def _checked_settings(num_texts: int, *, k: int, max_length: int, batch_size: int, texts_per_part: int,
                      logits_dtype: LogitsDtype, shard: object) -> tuple[dict[str, Any], int]:
    """The options of :func:`extract_topk` checked; the settings a saved run records, and the shard index."""
    _check_int("k", k, minimum=1)
    _check_int("max_length", max_length, minimum=2)
    _check_int("batch_size", batch_size, minimum=1)
    _check_int("texts_per_part", texts_per_part, minimum=1)
    checked_choice(logits_dtype, "logits_dtype", ("float32", "float16"))
    shard_index, shard_count = checked_shard(shard)
    settings = {
        "k": k,
        "max_length": max_length,
        "logits_dtype": logits_dtype,
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
                    features: datasets.Features, device: torch.device) -> list[datasets.Dataset]:
    """The shard's parts under ``root``: those already saved, the others computed and saved."""
    _claim_run(root, settings)
    parts = []
    for part_dir, part_start, part_stop in _parts(root, settings, shard_index):
        fingerprint = texts.fingerprint(part_start, part_stop)
        if not _finished_part(part_dir, fingerprint):
            rows = teacher_pass.rows(texts, part_start, part_stop, device)
            _save_part(datasets.Dataset.from_dict(rows, features=features), part_dir, fingerprint)
        parts.append(datasets.load_from_disk(str(part_dir)))
    return parts


def load_topk(output_dir: str | os.PathLike[str]) -> datasets.Dataset:
    """All rows of a finished :func:`extract_topk` run with an ``output_dir``, in text order.

    Args:
        output_dir: the directory given to :func:`extract_topk`.

    Returns:
        The rows of every shard, memory-mapped from disk.

    Raises:
        InvalidInputError: ``output_dir`` holds no run, or a part of it is missing (its shard is
            still running or was interrupted: rerun it).

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
            parts.append(datasets.load_from_disk(str(part_dir)))
    if not parts:
        return _empty(topk_features(settings["k"], settings["logits_dtype"]))
    return datasets.concatenate_datasets(parts)


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
        self, model: Any, tokenizer: Any, *, k: int, max_length: int, batch_size: int, logits_dtype: LogitsDtype
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.k, self.max_length, self.batch_size = k, max_length, batch_size
        self.logits_dtype = np.dtype(logits_dtype)
        self.known_ids = len(tokenizer)
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        self.embedding_rows = embeddings.num_embeddings if isinstance(embeddings, torch.nn.Embedding) else None

    def rows(self, texts: _Texts, start: int, stop: int, device: torch.device) -> dict[str, list[Any]]:
        chunk = texts.slice(start, stop)
        eos = self.tokenizer.eos_token_id
        encoded = self.tokenizer(chunk, add_special_tokens=False)["input_ids"] if chunk else []
        token_lists = [[*ids, eos][: self.max_length] for ids in encoded]
        for offset, ids in enumerate(token_lists):
            if len(ids) < 2:
                raise InvalidInputError(f"texts_or_dataset: text {start + offset} has no token besides EOS")
        columns: dict[str, list[Any]] = {name: [None] * len(chunk) for name in topk_features(self.k)}
        order = sorted(range(len(chunk)), key=lambda i: len(token_lists[i]))
        with torch.inference_mode():
            for batch_start in range(0, len(order), self.batch_size):
                batch = order[batch_start : batch_start + self.batch_size]
                for offset, row in zip(batch, self._batch([token_lists[i] for i in batch], device), strict=True):
                    row["text_index"] = start + offset
                    row["num_bytes"] = len(chunk[offset].encode("utf-8", "surrogatepass"))
                    if not np.isfinite(row["total_ce"]) or not np.isfinite(row["topk_logits"]).all():
                        raise InvalidInputError(
                            f"model: produced non-finite logits (or {self.logits_dtype} overflowed) "
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
        vocab = logits.shape[-1]
        if self.k > vocab:
            raise InvalidInputError(f"k: must be at most the model's vocabulary of {vocab}, got {self.k}")
        return [self._text(logits[row, :length], input_ids[row, :length]) for row, length in enumerate(lengths)]

    def _text(self, logits: torch.Tensor, ids: torch.Tensor) -> dict[str, Any]:
        """The columns of one text from its logits ``[L, V]``, in float32 one chunk of positions at a time."""
        length, vocab = logits.shape
        step = max(1, _CHUNK_ELEMENTS // vocab)
        top_ids, top_logits, token_ce = [], [], []
        for chunk_start in range(0, length, step):
            chunk = logits[chunk_start : chunk_start + step].float()
            values, indices = chunk.topk(self.k, dim=-1)
            top_ids.append(indices)
            top_logits.append(values)
            targets = ids[chunk_start + 1 : chunk_start + step + 1]
            predicting = chunk[: len(targets)]
            token_ce.append(torch.logsumexp(predicting, -1) - predicting.gather(-1, targets[:, None])[:, 0])
        indices, values = torch.cat(top_ids), torch.cat(top_logits)
        unknown = indices >= self.known_ids
        # A stable sort on the flag moves dropped entries to the end and keeps the logit order.
        order = unknown.to(torch.int8).sort(dim=-1, stable=True).indices
        unknown = unknown.gather(-1, order)
        indices = indices.gather(-1, order).masked_fill(unknown, -1)
        values = values.gather(-1, order).masked_fill(unknown, 0.0)
        token_ce = torch.cat(token_ce).double()
        return {
            "input_ids": ids.cpu().numpy().astype(np.int32),
            "topk_ids": indices.cpu().numpy().astype(np.int32),
            "topk_logits": values.cpu().numpy().astype(self.logits_dtype),
            "token_ce": token_ce.cpu().numpy().astype(np.float32),
            "ce": float(token_ce.mean()),
            "total_ce": float(token_ce.sum()),
            "dropped": int(unknown.sum()),
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


def _empty(features: datasets.Features) -> datasets.Dataset:
    return datasets.Dataset.from_dict({name: [] for name in features}, features=features)


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
    return json.loads(path.read_text())


def _claim_run(root: Path, settings: dict[str, Any]) -> None:
    """Record the run's settings in ``root``, or check that they are those already recorded there."""
    wanted = {"format": _FORMAT_VERSION, **settings}
    path = root / _RUN_FILE
    if path.is_file():
        recorded = json.loads(path.read_text())
        if recorded != wanted:
            different = sorted(key for key in wanted.keys() | recorded.keys() if wanted.get(key) != recorded.get(key))
            changes = ", ".join(f"{key} {recorded.get(key)!r} there, {wanted.get(key)!r} here" for key in different)
            raise InvalidInputError(f"output_dir: holds a run with other settings ({changes}); use another directory")
        return
    root.mkdir(parents=True, exist_ok=True)
    # Written under a private name and renamed: shards starting together all see a whole file.
    scratch = root / f".{_RUN_FILE}.{os.getpid()}"
    scratch.write_text(json.dumps(wanted, indent=1))
    os.replace(scratch, path)


def _finished_part(part_dir: Path, fingerprint: str) -> bool:
    marker = part_dir / _PART_FILE
    if not marker.is_file():
        shutil.rmtree(part_dir, ignore_errors=True)  # left over from an interrupted save
        return False
    if json.loads(marker.read_text())["texts_sha256"] != fingerprint:
        raise InvalidInputError(f"output_dir: {part_dir} was computed from other texts; use another directory")
    return True


def _save_part(rows: datasets.Dataset, part_dir: Path, fingerprint: str) -> None:
    scratch = part_dir.with_name(f".{part_dir.name}.{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    # One small part after another: a progress bar per part would only clutter the output.
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        rows.save_to_disk(str(scratch))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    # The marker goes in last, and the rename makes the part appear whole or not at all.
    (scratch / _PART_FILE).write_text(json.dumps({"texts_sha256": fingerprint, "rows": len(rows)}))
    os.replace(scratch, part_dir)
