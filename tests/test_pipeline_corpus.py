"""The pipeline's corpus: texts read from every supported format, cut into pieces."""

from __future__ import annotations

import doctest
import json

import pytest

from fusellm_fast.pipeline import PipelineError, corpus, read_corpus, split_text


def test_every_format_and_directories_of_them(tmp_path):
    (tmp_path / "a.txt").write_text("first text", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "second"}) + "\n\n" + json.dumps({"body": "third"}) + "\n",
                                      encoding="utf-8")
    (tmp_path / "c.md").write_text("not read", encoding="utf-8")
    assert read_corpus([tmp_path / "a.txt"]) == ["first text"]
    assert read_corpus([tmp_path / "b.jsonl"], text_column="body") == ["second", "third"]
    with pytest.raises(PipelineError, match="has no string field 'text'"):
        read_corpus([tmp_path])
    (tmp_path / "b.jsonl").unlink()
    assert read_corpus([tmp_path]) == ["first text"]


def test_datasets_formats(tmp_path):
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict({"text": ["one", "two"], "other": [1, 2]})
    table.to_parquet(str(tmp_path / "t.parquet"))
    table.save_to_disk(str(tmp_path / "saved"))
    assert read_corpus([tmp_path / "t.parquet"]) == ["one", "two"]
    assert read_corpus([tmp_path / "saved"]) == ["one", "two"]
    with pytest.raises(PipelineError, match=r"has no column 'body' \(columns: \['text', 'other'\]\)"):
        read_corpus([tmp_path / "saved"], text_column="body")


def test_long_texts_are_cut_and_empty_ones_dropped(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["x" * 25, "   ", "short"]), encoding="utf-8")
    assert read_corpus([path], split_chars=10) == ["x" * 10, "x" * 10, "x" * 5, "short"]
    assert read_corpus([path], split_chars=None) == ["x" * 25, "short"]
    assert "".join(split_text("line one\nline two\nline three", 12)) == "line one\nline two\nline three"


@pytest.mark.parametrize("content, message", [
    ("{not json}\n", "line 1 is not JSON"),
    ('{"text": 3}\n', "line 1 has no string field 'text'"),
    ("\n  \n", "no non-empty text found"),
])
def test_bad_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PipelineError, match=message):
        read_corpus([path])


def test_bad_paths_and_options(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        read_corpus([tmp_path / "missing.jsonl"])
    with pytest.raises(PipelineError, match="holds no"):
        read_corpus([tmp_path])
    (tmp_path / "x.csv").write_text("a,b", encoding="utf-8")
    with pytest.raises(PipelineError, match="is not a .txt/.jsonl/.json/.parquet file"):
        read_corpus([tmp_path / "x.csv"])
    with pytest.raises(PipelineError, match="split_chars: must be a positive number"):
        read_corpus([tmp_path / "x.csv"], split_chars=0)


def test_docstring_examples_run():
    results = doctest.testmod(corpus)
    assert results.attempted > 0 and results.failed == 0
