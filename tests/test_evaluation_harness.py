"""Benchmarks through lm-evaluation-harness, offline: the tiny multiple-choice task of
``tests/eval_tasks`` (its YAML and jsonl ship here) on two tiny models with different tokenizers,
its accuracy in the table and equal to scoring the choices directly."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("lm_eval")

import torch
from demo_models import TINY, demo_corpus, save_models
from fusellm_fast.cli import main
from fusellm_fast.evaluation import parse_tasks
from fusellm_fast.hf import load_model, load_tokenizer

TASKS = Path(__file__).parent / "eval_tasks"
TASK = "fusellm_tiny_choice"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("harness")
    return save_models(root, demo_corpus(TINY, 20), TINY, [("llama", "sp_bpe", "llama", 300),
                                                           ("gpt2", "byte_bpe", "gpt2", 300)])


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every attempt to look up a host or open an internet connection, refused and recorded."""
    attempts = []
    resolve, connect = socket.getaddrinfo, socket.socket.connect

    def refuse_lookup(host: object, *args: object, **options: object) -> list:
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            attempts.append(host)
            raise OSError(f"no network in this test (looked up {host})")
        return resolve(host, *args, **options)

    def refuse_connection(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            attempts.append(address)
            raise OSError(f"no network in this test (tried {address})")
        connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    monkeypatch.setattr(socket.socket, "connect", refuse_connection)
    return attempts


def choice_log_likelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context), the continuation's tokens being those of the whole string
    after the context's own tokens (lm-eval's rule for causal models)."""
    context_ids = tokenizer(context)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    ids = context_ids + whole[len(context_ids):]
    with torch.inference_mode():
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
    return float(sum(log_probs[t - 1, ids[t]] for t in range(len(context_ids), len(ids))))


def expected_accuracy(path: Path) -> tuple[float, float]:
    """acc and acc_norm of the task on the model in ``path``, from scoring every choice here:
    the highest log-likelihood, and the highest per character of the choice."""
    tokenizer = load_tokenizer(path, arg="MODEL")
    model = load_model(path, arg="MODEL", tokenizer=tokenizer).eval()
    correct, correct_norm = [], []
    for line in (TASKS / "tiny_choice.jsonl").read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        scores = np.array([choice_log_likelihood(model, tokenizer, doc["question"], " " + c) for c in doc["choices"]])
        lengths = np.array([len(c) for c in doc["choices"]], dtype=np.float64)
        correct.append(np.argmax(scores) == doc["answer"])
        correct_norm.append(np.argmax(scores / lengths) == doc["answer"])
    return float(np.mean(correct)), float(np.mean(correct_norm))


def test_local_task_offline_on_two_models(models: dict[str, Path], tmp_path: Path, no_network: list,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["eval", str(models["llama"]), str(models["gpt2"]), "--tasks", TASK, "--tasks-dir", str(TASKS),
                 "-o", str(out), "--batch-size", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert no_network == []
    saved = json.loads((out / "eval_results.json").read_text(encoding="utf-8"))
    assert saved["held_out"] == {"llama": {}, "gpt2": {}} and saved["settings"]["tasks"] == [TASK]
    table = (out / "eval_table.md").read_text(encoding="utf-8")
    assert table in printed
    assert table.splitlines()[0] == f"| model | {TASK} acc | {TASK} acc_norm |"
    for name, path in models.items():
        metrics = saved["tasks"][name][TASK]
        assert metrics["samples"] == 12
        acc, acc_norm = expected_accuracy(path)
        assert (metrics["acc"], metrics["acc_norm"]) == pytest.approx((acc, acc_norm))
        assert f"| {name} | {acc:.4f} ± {metrics['acc_stderr']:.4f} | {acc_norm:.4f} ± " in table
    assert (out / "eval_scores.png").stat().st_size > 10_000


def test_unknown_tasks_and_task_lists(models: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(models["llama"]), "--tasks", f"{TASK},no_such_task", "--tasks-dir", str(TASKS),
                 "-o", str(tmp_path), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"no_such_task not found in lm-eval's tasks or {str(TASKS)!r}")
    assert parse_tasks(" bbh,arc_easy ,, bbh") == ["bbh", "arc_easy"]
