"""``fusellm-fast eval`` on held-out corpora: the figures, the JSON, the Markdown table, the chart,
and one-line errors."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

for extra in ("torch", "transformers", "matplotlib"):
    pytest.importorskip(extra)

from demo_models import TINY, demo_corpus, save_models
from fusellm_fast.cli import main
from fusellm_fast.evaluation import predicted_tokens
from fusellm_fast.hf import load_tokenizer


def write_corpora(root: Path, texts: list[str]) -> dict[str, Path]:
    """The first half of ``texts`` as a .jsonl file ("code"), the rest as a directory of .txt files ("prose")."""
    half = len(texts) // 2
    code, prose = root / "code.jsonl", root / "prose"
    code.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:half]), encoding="utf-8")
    prose.mkdir()
    for index, text in enumerate(texts[half:]):
        (prose / f"{index:02d}.txt").write_text(text, encoding="utf-8")
    return {"code": code, "prose": prose}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two models on different tokenizers and two corpora of ten texts each."""
    root = tmp_path_factory.mktemp("eval")
    texts = demo_corpus(TINY, 10)
    models = save_models(root, texts, TINY, [("target", "sp_bpe", "llama", 300), ("source", "byte_bpe", "gpt2", 280)])
    return {"root": root, **models, **write_corpora(root, texts)}


def run_eval(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    assert main(["eval", *map(str, argv), "--no-progress"]) == 0
    return capsys.readouterr().out


def test_every_figure_in_the_json_the_table_and_the_chart(workspace: dict[str, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = workspace["root"] / "report"
    printed = run_eval(capsys, workspace["target"], f"src={workspace['source']}", "--data", workspace["code"],
                       "--data", f"prose={workspace['prose']}", "-o", out, "--batch-size", 3)
    saved = json.loads((out / "eval_results.json").read_text(encoding="utf-8"))
    assert list(saved["models"]) == ["target", "src"] and saved["per_token_of"] == "target"
    texts = {"code": [json.loads(line)["text"] for line in workspace["code"].read_text(encoding="utf-8").splitlines()],
             "prose": [p.read_text(encoding="utf-8") for p in sorted(workspace["prose"].iterdir())]}
    target_tokenizer = load_tokenizer(workspace["target"], arg="MODEL")
    for corpus, corpus_texts in texts.items():
        size = sum(len(t.encode("utf-8")) for t in corpus_texts)
        reference = int(predicted_tokens(target_tokenizer, corpus_texts).sum())
        assert saved["corpora"][corpus]["bytes"] == size and saved["corpora"][corpus]["texts"] == 10
        scores = [saved["held_out"][model][corpus] for model in ("target", "src")]
        assert scores[0]["tokens"] == reference != scores[1]["tokens"]
        for score in scores:
            assert score["bytes"] == size and score["reference_tokens"] == reference
            assert score["bits_per_byte"] == pytest.approx(score["nll"] / math.log(2) / size)
            assert score["perplexity"] == pytest.approx(math.exp(score["nll"] / reference))
            assert score["own_perplexity"] == pytest.approx(math.exp(score["nll"] / score["tokens"]))
            assert score["seconds"] > 0 and score["tokens_per_second"] > 0
    assert saved["settings"]["batch_size"] == 3 and saved["settings"]["device"] == "cpu"
    table = (out / "eval_table.md").read_text(encoding="utf-8")
    assert table in printed
    assert table.splitlines()[0] == "| model | code bits/byte | prose bits/byte | code ppl | prose ppl |"
    row = next(line for line in table.splitlines() if line.startswith("| src |"))
    held_out = saved["held_out"]["src"]
    assert row == (f"| src | {held_out['code']['bits_per_byte']:.4f} | {held_out['prose']['bits_per_byte']:.4f} | "
                   f"{held_out['code']['perplexity']:.2f} | {held_out['prose']['perplexity']:.2f} |")
    chart = (out / "eval_scores.png").read_bytes()
    assert chart.startswith(b"\x89PNG") and len(chart) > 10_000


def test_windows_and_another_reference_tokenizer(workspace: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    whole, windowed = workspace["root"] / "whole", workspace["root"] / "windowed"
    run_eval(capsys, workspace["target"], workspace["source"], "--data", workspace["code"], "-o", whole,
             "--per-token-of", workspace["source"])
    run_eval(capsys, workspace["target"], workspace["source"], "--data", workspace["code"], "-o", windowed,
             "--per-token-of", "source", "--max-length", 24, "--stride", 8)
    first, second = (json.loads((d / "eval_results.json").read_text(encoding="utf-8")) for d in (whole, windowed))
    assert first["per_token_of"] == str(workspace["source"]) and second["per_token_of"] == "source"
    for model in ("target", "source"):
        a, b = first["held_out"][model]["code"], second["held_out"][model]["code"]
        assert a["reference_tokens"] == b["reference_tokens"] == first["held_out"]["source"]["code"]["tokens"]
        assert a["tokens"] == b["tokens"] and a["nll"] != b["nll"]  # less context, every token still once


def error_line(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    assert main(["eval", *map(str, argv), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err.strip()


def test_user_mistakes_stop_with_one_line(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    target, code, out = workspace["target"], workspace["code"], workspace["root"] / "bad"
    assert "nothing to evaluate" in error_line(capsys, target, "-o", out)
    assert "--tasks-dir" in error_line(capsys, target, "--data", code, "-o", out, "--tasks-dir", workspace["root"])
    assert "'missing' is not a directory" in error_line(capsys, "missing", "--data", code, "-o", out)
    assert "named 'target'" in error_line(capsys, target, target, "--data", code, "-o", out)
    assert "does not exist" in error_line(capsys, target, "--data", workspace["root"] / "none.jsonl", "-o", out)
    assert "--per-token-of" in error_line(capsys, target, "--data", code, "-o", out, "--per-token-of", "nobody")
    assert "stride" in error_line(capsys, target, "--data", code, "-o", out, "--max-length", 8, "--stride", 8)
    assert "batch_size" in error_line(capsys, target, "--data", code, "-o", out, "--batch-size", 0)
    assert "--device" in error_line(capsys, target, "--data", code, "-o", out, "--device", "nowhere")
    # Without the eval extra, --tasks names the install command.
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)
    line = error_line(capsys, target, "-o", out, "--tasks", "arc_easy")
    assert line.endswith('pip install "fusellm-fast[eval]"') and "lm-evaluation-harness" in line
    assert not out.exists()


def test_the_readme_command_parses() -> None:
    """The README's one-command comparison uses options the command has."""
    import re
    import shlex

    from fusellm_fast.cli import _parser

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    command = re.search(r"^fusellm-fast eval .*?(?<!\\)$", readme, flags=re.M | re.S).group(0)
    args = _parser().parse_args(shlex.split(command.replace("\\\n", " "))[1:])
    assert args.tasks == "bbh,arc_easy,arc_challenge,boolq,hellaswag,openbookqa,humaneval"
    assert args.allow_code_execution and args.per_token_of == "target" and len(args.models) == 5
