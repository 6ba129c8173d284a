"""The README's example runs as written, with real tokenizers in place of the model paths, and its demo
tables are those of the saved run."""

from __future__ import annotations

import re
from pathlib import Path

from realtok import load_tokenizer_or_skip, tokenizer_dir

README = Path(__file__).parent.parent / "README.md"


def test_align_batch_example_runs(capsys):
    load_tokenizer_or_skip("gpt-neox")
    load_tokenizer_or_skip("llama2")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    example = next(b for b in blocks if "align_batch" in b)
    example = example.replace("path/to/mpt-7b", str(tokenizer_dir("gpt-neox")))
    example = example.replace("path/to/llama-2-7b", str(tokenizer_dir("llama2")))
    exec(compile(example, str(README), "exec"), {})
    shape, rate = capsys.readouterr().out.strip().rsplit(" ", 1)
    assert shape.startswith("(1, ") and shape.endswith(", 10)")
    assert 0.0 < float(rate) <= 1.0


def test_demo_tables_are_the_saved_run():
    """The README's demo tables are the ones the saved results render."""
    import json

    from fusellm_fast.demo import DemoResult

    saved = json.loads((README.parent / "docs" / "demo_results.json").read_text(encoding="utf-8"))
    result = DemoResult(**saved)
    readme = README.read_text(encoding="utf-8").replace("**", "").replace(" (the demo's choice)", "")
    rendered = result.settings_table().splitlines()[2:] + result.table().splitlines()[2:]
    shown = [line for line in rendered if "target before" not in line and not line.startswith("| MinCE, ")
             and not line.startswith("| AvgCE")]
    assert len(shown) == len(result.settings) + 5
    for line in shown:
        assert line in readme
