"""The demo package: the whole miniature over two seeds, and its docstring examples."""

from __future__ import annotations

import doctest
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("datasets")

from fusellm_fast import demo


def test_demo_compares_every_alignment_setting_over_seeds(tmp_path: Path) -> None:
    lines: list[str] = []
    result = demo.run_demo(tmp_path, demo.DemoConfig.quick(alignments="all"), seeds=2, jobs=2, show_progress=False,
                           log=lines.append)
    assert [seed["seed"] for seed in result.seeds] == [0, 1]
    assert result.seeds[0]["perplexity"] != result.seeds[1]["perplexity"]
    runs = ({demo.CLM_RUN, demo.CONTROL_RUN, demo.AVG_CE_RUN, demo.PAPER_RUN}
            | {s.run_name for s in demo.ALIGNMENT_SETTINGS})
    assert runs <= set(result.perplexity)
    for model, values in result.perplexity.items():
        for domain in demo.DOMAINS:
            per_seed = [seed["perplexity"][model][domain] for seed in result.seeds]
            assert values[domain] == pytest.approx(np.mean(per_seed), abs=1e-3)
            assert result.perplexity_spread[model][domain] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-3)
    assert len(result.settings) == len(demo.ALIGNMENT_SETTINGS)
    for row, setting in zip(result.settings, demo.ALIGNMENT_SETTINGS, strict=True):
        run = setting.run_name
        for domain in demo.DOMAINS:
            kept = []
            for seed in result.seeds:
                ppl = seed["perplexity"]
                clm = ppl[demo.CLM_RUN][domain]
                kept.append((clm - ppl[run][domain]) / (clm - ppl[demo.CONTROL_RUN][domain]))
            assert row["kept_gain"][domain] == pytest.approx(np.mean(kept), abs=1e-3)
        assert all(0 < rate <= 1 for rate in row["matched"].values())
    by_name = {(row["name"], row["ce_unit"]): row for row in result.settings}
    for source in demo.SOURCES:
        # Same end byte is a weaker requirement than the same span.
        assert (by_name[("boundary, bytes, prefix", "byte")]["matched"][source]
                >= by_name[("offsets, bytes, MinED", "byte")]["matched"][source])
    # MinCE picks exactly one model per block or text: its mean weights sum to one.
    for seed in result.seeds:
        assert set(seed["teacher_choice"]) == runs - {demo.CLM_RUN}
        for weights in seed["teacher_choice"].values():
            assert sum(weights) == pytest.approx(1.0, abs=1e-3)
    saved = json.loads((tmp_path / "demo_results.json").read_text(encoding="utf-8"))
    assert saved["settings"] == json.loads(json.dumps(result.settings))
    table = (tmp_path / "demo_table.md").read_text(encoding="utf-8")
    assert "| published: dtw, marker, MinED, current-token stand-in | token |" in table
    assert (tmp_path / "demo_curves.png").stat().st_size > 10_000


def test_newcomers_run_says_what_it_does_first_and_shows_bars_not_log_dicts(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "fusellm_fast", "demo", "--quick", "--threads", "1", "-o", str(tmp_path / "out")]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    first_seconds = time.perf_counter() - started
    rest, errors = process.communicate(timeout=600)
    assert process.returncode == 0, errors[-2000:]
    # The plan and its duration, before torch or transformers are imported.
    assert first.startswith("fusellm-fast demo: trains 2 sources") and "1 seed, " in first and "min" in first
    assert first_seconds < 5, first_seconds
    output = first + rest + errors
    assert "{'loss'" not in output and "'grad_norm'" not in output
    bars = {line.split(":")[0].strip() for line in errors.replace("\r", "\n").splitlines() if "|" in line}
    runs = 5
    expected = {*(f"train {name}" for name in [*demo.SOURCES, *demo.CONTROL_SOURCES.values(), "target"]),
                "align", "evaluate the sources and the target",
                *(f"train run-{n}-of-{runs}" for n in range(1, runs + 1))}
    assert expected <= bars, expected - bars
    assert any(bar.startswith("extract ") for bar in bars)
    assert "| CLM only |" in rest and f"| {demo.PAPER_RUN} |" in rest
    assert f"| {demo.CROSS_FAMILY_SETTING.name} | byte |" in rest
    assert "MinCE with the control sources beats CLM by " in rest


@pytest.mark.parametrize("module", ["config", "corpora", "models", "report"])
def test_docstring_examples_run(module: str) -> None:
    results = doctest.testmod(importlib.import_module(f"fusellm_fast.demo.{module}"))
    assert results.attempted > 0 and results.failed == 0
