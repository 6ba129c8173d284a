"""The whole pipeline through the ``fusellm-fast`` command, on a tiny corpus with tiny models."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("datasets")

import numpy as np
from fusellm_fast.cli import main
from fusellm_fast.pipeline import PackedBlocks, load_aligned
from fusellm_fast.trainer import pack_examples


def run(*argv: object) -> None:
    progress_option = [] if argv[0] == "vocab-map" else ["--no-progress"]
    assert main([str(a) for a in argv] + progress_option) == 0


def summary(directory: Path, name: str = "summary.json") -> dict:
    return json.loads((directory / name).read_text(encoding="utf-8"))


def test_every_stage_through_the_command(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = workspace["root"]

    assert main(["vocab-map", str(workspace["source_a"]), str(workspace["target"]), "-o", str(root / "a.npz")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source_marker"] == "Ġ" and report["target_marker"] == "▁"
    assert 0 < report["exact_share"] < 1
    assert sum(report["distance_histogram"].values()) == report["source_size"]

    # The target's pass in two shards, as on two devices; the sources in one.
    for shard in ("0/2", "1/2"):
        run("extract", workspace["target"], workspace["corpus"], "-o", root / "t", "--top-k", 5,
            "--max-length", 400, "--shard", shard, "--chunk-texts", 16)
    for name in ("source_a", "source_b"):
        run("extract", workspace[name], workspace["corpus"], "-o", root / name, "--top-k", 5, "--max-length", 400)
    capsys.readouterr()
    shard_report = summary(root / "t", "shard-00001-of-00002-summary.json")
    assert shard_report["texts"] == 40 and shard_report["tokens"] > 40
    assert math.isfinite(shard_report["mean_ce"]) and shard_report["mean_ce"] > 0

    run("vocab-map", workspace["source_b"], workspace["target"], "-o", root / "b.npz")
    run("align", "--target", root / "t", "--source", root / "source_a", "--source", root / "source_b",
        "--vocab-map", root / "a.npz", "--vocab-map", root / "b.npz", "-o", root / "aligned")
    capsys.readouterr()
    aligned_report = summary(root / "aligned")
    assert aligned_report["texts"] == 80
    assert all(0 < source["matched_rate"] <= 1 for source in aligned_report["sources"])
    rows = load_aligned(root / "aligned", arg="ALIGNED_DIR")[0].with_format("numpy")
    assert [int(i) for i in rows["text_index"]] == list(range(80))
    for row in rows.select(range(0, 80, 13)):
        length = len(row["input_ids"])
        assert row["teacher_ids"].shape == (3, length, 5)
        assert row["teacher_logits"].shape == (3, length, 5)
        assert row["teacher_ce"].shape == (3,) and np.isfinite(row["teacher_ce"]).all()
        assert row["teacher_ids"].max() < 300
    # The other alignment methods: boundary pairs every position offsets pairs, and more.
    matched = {}
    for method, candidates in (("offsets", "mined"), ("boundary", "prefix")):
        run("align", "--target", root / "t", "--source", root / "source_a", "--source", root / "source_b",
            "-o", root / f"aligned-{method}", "--method", method, "--candidates", candidates, "--normalize", "bytes",
            "--ce-unit", "byte", "--ce-level", "token" if method == "boundary" else "sequence")
        capsys.readouterr()
        report = summary(root / f"aligned-{method}")
        assert (report["method"], report["candidates"], report["normalize"], report["ce_unit"]) == (
            method, candidates, "bytes", "byte")
        assert all(0 < source["kept_mass_rate"] <= 1 + 1e-6 for source in report["sources"])
        matched[method] = [source["matched"] for source in report["sources"]]
    assert all(b >= o for b, o in zip(matched["boundary"], matched["offsets"]))
    assert matched["boundary"] != matched["offsets"]
    token_rows = load_aligned(root / "aligned-boundary", arg="ALIGNED_DIR")[0].with_format("numpy")
    for row in token_rows.select(range(0, 80, 13)):
        assert row["teacher_ce"].shape == (3, len(row["input_ids"])) and np.isfinite(row["teacher_ce"]).all()
        assert len(np.unique(row["teacher_ce"][1])) > 1  # per position, not one value per text
    run("train", workspace["target"], root / "aligned-boundary", "-o", root / "fused-token", "--block-size", 32,
        "--batch-size", 4, "--max-steps", 4, "--logging-steps", 2)
    capsys.readouterr()
    assert summary(root / "fused-token")["level"] == "token"
    run("train", workspace["target"], root / "aligned", "-o", root / "fused-text", "--block-size", 32,
        "--batch-size", 4, "--max-steps", 2, "--logging-steps", 1, "--level", "text")
    capsys.readouterr()
    per_text = summary(root / "fused-text")
    assert (per_text["level"], per_text["tail"], len(per_text["log_history"])) == ("text", "renormalize", 2)
    for entry in per_text["log_history"]:
        assert sum(entry[f"teacher_weight_{n}"] for n in range(3)) == pytest.approx(1.0)
    # Training reads blocks lazily; they equal packing everything at once.
    lazy = PackedBlocks(rows, block_size=32)
    eager = pack_examples(rows, block_size=32)
    assert len(lazy) == len(eager) > 0
    for index in (0, len(eager) // 2, len(eager) - 1):
        for key, value in eager[index].items():
            np.testing.assert_array_equal(lazy[index][key], value)

    for method in ("min_ce", "avg_ce"):
        out = root / f"fused-{method}"
        run("train", workspace["target"], root / "aligned", "-o", out, "--method", method, "--block-size", 32,
            "--batch-size", 4, "--max-steps", 24, "--learning-rate", 3e-3, "--warmup-ratio", 0.0,
            "--logging-steps", 4, "--seed", 0)
        capsys.readouterr()
        trained = summary(out)
        losses = [entry["loss"] for entry in trained["log_history"]]
        assert trained["steps"] == 24 and len(losses) == 6
        assert all(math.isfinite(loss) for loss in losses)
        assert losses[-1] < losses[0] - 0.3
        weights = [entry[f"teacher_weight_{n}"] for entry in trained["log_history"] for n in range(3)]
        assert all(0.0 <= w <= 1.0 for w in weights)
        assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()


def test_resumed_extract_reuses_finished_parts(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = workspace["root"] / "resumed"
    args = ("extract", workspace["source_b"], workspace["corpus"], "-o", out, "--top-k", 3, "--chunk-texts", 32)
    run(*args)
    first_part = out / "shard-00000-of-00001" / "part-000000"
    stamp = first_part.stat().st_mtime_ns
    run(*args)
    assert first_part.stat().st_mtime_ns == stamp
    reports = capsys.readouterr().out
    assert reports.count('"texts": 80') == 2


def error_line(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    assert main([str(a) for a in argv] + ["--no-progress"] * (argv[0] != "vocab-map")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_user_mistakes_stop_with_one_line(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = workspace["root"]
    assert "does not exist" in error_line(capsys, "extract", workspace["target"], root / "nope.jsonl", "-o", root / "x")
    assert "not a directory" in error_line(capsys, "extract", root / "no-model", workspace["corpus"], "-o", root / "x")
    assert "I/N" in error_line(capsys, "extract", workspace["target"], workspace["corpus"], "-o", root / "x",
                               "--shard", "two")

    # A tokenizer larger than the model's vocabulary.
    mismatched = root / "mismatched"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(workspace["target"]).save_pretrained(mismatched)
    big = AutoTokenizer.from_pretrained(workspace["target"])
    big.add_tokens([f"extra{i}" for i in range(50)])
    big.save_pretrained(mismatched)
    assert "embedding rows" in error_line(capsys, "extract", mismatched, workspace["corpus"], "-o", root / "x")

    # Passes over different corpora cannot be aligned.
    run("extract", workspace["source_a"], workspace["other_corpus"], "-o", root / "other", "--top-k", 5,
        "--max-length", 400)
    capsys.readouterr()
    run("extract", workspace["target"], workspace["corpus"], "-o", root / "t_full", "--top-k", 5, "--max-length", 400)
    capsys.readouterr()
    assert "same corpus" in error_line(capsys, "align", "--target", root / "t_full", "--source", root / "other",
                                       "-o", root / "bad")
    # A target directory that is not a teacher pass.
    assert "summary.json" in error_line(capsys, "align", "--target", workspace["target"], "--source", root / "other",
                                        "-o", root / "bad")
    # Aligned data of one target cannot train another.
    run("align", "--target", root / "other", "--source", root / "other", "-o", root / "aligned_a")
    capsys.readouterr()
    assert "another tokenizer" in error_line(capsys, "train", workspace["target"], root / "aligned_a", "-o",
                                             root / "bad")
    # The bucket tail needs calibrated teachers; aligned data of earlier versions hold raw logits.
    run("align", "--target", root / "t_full", "--source", root / "t_full", "-o", root / "aligned_raw")
    capsys.readouterr()
    raw_summary = json.loads((root / "aligned_raw" / "summary.json").read_text())
    raw_summary.pop("values_are")
    (root / "aligned_raw" / "summary.json").write_text(json.dumps(raw_summary))
    assert "--tail bucket: " in error_line(capsys, "train", workspace["target"], root / "aligned_raw", "-o",
                                           root / "bad", "--tail", "bucket")


def test_module_entry_point_reports_errors_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "fusellm_fast", "vocab-map", str(tmp_path / "a"),
                             str(tmp_path / "b"), "-o", str(tmp_path / "m.npz")],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fusellm-fast vocab-map: error: SOURCE: {str(tmp_path / 'a')!r} is not a directory"
    ]


def test_demo_rejects_bad_seed_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--quick", "--seeds", "0", "-o", "unused"]) == 2
    assert "seeds: must be a positive int, got 0" in capsys.readouterr().err


def command(*argv: object) -> subprocess.CompletedProcess[str]:
    """``fusellm-fast ARGV`` in a process of its own, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "fusellm_fast", *map(str, argv)], check=False, capture_output=True,
                          text=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("fusellm-fast"), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def small_aligned(workspace: dict[str, Path]) -> Path:
    """The target aligned to itself over the small corpus."""
    root = workspace["root"]
    run("extract", workspace["target"], workspace["other_corpus"], "-o", root / "t_small", "--top-k", 3,
        "--max-length", 200)
    run("align", "--target", root / "t_small", "--source", root / "t_small", "-o", root / "aligned_small")
    return root / "aligned_small"


def test_command_line_mistakes_are_one_line(workspace: dict[str, Path]) -> None:
    root = workspace["root"]
    assert "argument --max-steps: invalid int value: 'many'" in one_line_error(
        command("train", workspace["target"], root / "a", "-o", root / "x", "--max-steps", "many"))
    assert "invalid choice: 'frobnicate'" in one_line_error(command("frobnicate"))
    assert "required: --target" in one_line_error(command("align", "--source", root, "-o", root / "x"))
    assert "is not a directory" in one_line_error(
        command("align", "--target", root / "nope", "--source", root / "nope", "-o", root / "x", "--no-progress"))


def test_broken_files_are_one_line_errors(workspace: dict[str, Path], small_aligned: Path, tmp_path: Path) -> None:
    train = ("train", workspace["target"])
    options = ("-o", tmp_path / "fused", "--block-size", 16, "--max-steps", 1, "--no-progress")

    bad_json = tmp_path / "bad_json"
    shutil.copytree(small_aligned, bad_json)
    (bad_json / "summary.json").write_text('{"texts": 4', encoding="utf-8")
    bad_json_line = one_line_error(command(*train, bad_json, *options))
    assert "summary.json' is not valid JSON" in bad_json_line and "run the stage that wrote it again" in bad_json_line

    cut_arrow = tmp_path / "cut_arrow"
    shutil.copytree(small_aligned, cut_arrow)
    arrow = next(cut_arrow.glob("data/part-*/*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    line = one_line_error(command(*train, cut_arrow, *options))
    assert "cannot be read" in line and "run `fusellm-fast align` again" in line

    broken_model = tmp_path / "broken_model"
    shutil.copytree(workspace["target"], broken_model)
    weights = broken_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    line = one_line_error(command("train", broken_model, small_aligned, *options))
    assert f"TARGET_MODEL: no causal LM can be loaded from {str(broken_model)!r}" in line

    # --debug (before or after the command's name) adds the traceback above the same line.
    for argv in (("--debug", *train, bad_json, *options), (*train, bad_json, *options, "--debug")):
        result = command(*argv)
        assert result.returncode == 2 and "Traceback (most recent call last)" in result.stderr
        assert result.stderr.strip().splitlines()[-1] == bad_json_line
