"""The corpus: texts read from files and directories, cut into pieces every model can hold."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import PipelineError
from .storage import PathLike

__all__ = ["read_corpus", "split_text"]

_CORPUS_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


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
        return _read_json_lines(path, text_column)
    if path.suffix == ".parquet":
        import datasets

        return _column(datasets.Dataset.from_parquet(str(path)), text_column, path)
    raise PipelineError(f"data: {str(path)!r} is not a {'/'.join(_CORPUS_SUFFIXES)} file or a directory")


def _read_json_lines(path: Path, text_column: str) -> list[str]:
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


def _column(dataset: Any, text_column: str, path: Path) -> list[str]:
    if text_column not in dataset.column_names:
        raise PipelineError(f"data: {str(path)!r} has no column {text_column!r} (columns: {dataset.column_names})")
    return list(dataset[text_column])
