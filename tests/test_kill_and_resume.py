"""``fusellm-fast train`` and ``vocab-map`` killed with SIGKILL at any moment lose nothing: rerun
(``train --resume``), they end with the weights and the map of an uninterrupted run, and no partial
checkpoint or map is ever read."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("datasets")

from safetensors.torch import load_file

from fusellm_fast import VocabMap
from fusellm_fast.cli import main

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX-only")

# 86 blocks of 64 tokens make 11 steps an epoch: runs resumed from checkpoint-6 cross an epoch boundary.
TRAIN_OPTIONS = ("--block-size", 64, "--batch-size", 8, "--max-steps", 16, "--save-steps", 6, "--learning-rate", 3e-3,
                 "--warmup-ratio", 0.0, "--seed", 0, "--logging-steps", 4, "--no-progress")


def run(*argv: object) -> None:
    assert main([str(a) for a in argv]) == 0


@pytest.fixture(scope="module")
def aligned(workspace: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    for name, out in (("target", "t"), ("source_a", "a")):
        run("extract", workspace[name], workspace["corpus"], "-o", root / out, "--top-k", 3, "--max-length", 200,
            "--no-progress")
    run("align", "--target", root / "t", "--source", root / "a", "-o", root / "aligned", "--no-progress")
    return root / "aligned"


def train_argv(workspace: dict[str, Path], aligned: Path, output: Path) -> tuple[object, ...]:
    return ("train", workspace["target"], aligned, "-o", output, *TRAIN_OPTIONS)


@pytest.fixture(scope="module")
def uninterrupted(workspace: dict[str, Path], aligned: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("uninterrupted") / "fused"
    run(*train_argv(workspace, aligned, output))
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-16", "checkpoint-6"]
    return output


def assert_same_weights(output: Path, expected: Path) -> None:
    got, want = load_file(output / "model.safetensors"), load_file(expected / "model.safetensors")
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), f"{name} differs by {(got[name] - want[name]).abs().max()}"


def start(argv: tuple[object, ...], log: Path, *, pausing_on: str | None = None) -> subprocess.Popen[bytes]:
    """The command in a process of its own; with ``pausing_on``, its saves into matching paths
    pause after writing (see slow_writes.py)."""
    runner = [str(Path(__file__).with_name("slow_writes.py")), pausing_on] if pausing_on else ["-m", "fusellm_fast"]
    with log.open("wb") as stderr:
        return subprocess.Popen([sys.executable, *runner, *map(str, argv)], stdout=subprocess.DEVNULL, stderr=stderr)


def kill_when(process: subprocess.Popen[bytes], ready: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + 600
    while not ready():
        assert process.poll() is None, f"the command ended before it was killed: {log.read_text()}"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait(60) == -signal.SIGKILL


def resume(argv: tuple[object, ...], capsys: pytest.CaptureFixture[str]) -> str:
    """Runs ``argv --resume`` here and returns what it wrote to standard error."""
    capsys.readouterr()
    run(*argv, "--resume")
    return capsys.readouterr().err


def test_killed_right_after_start(workspace, aligned, uninterrupted, tmp_path, capsys):
    argv = train_argv(workspace, aligned, tmp_path / "fused")
    started = time.monotonic()
    kill_when(start(argv, tmp_path / "log"), lambda: time.monotonic() - started > 1.0, tmp_path / "log")
    resume(argv, capsys)
    assert_same_weights(tmp_path / "fused", uninterrupted)


def test_killed_between_checkpoints(workspace, aligned, uninterrupted, tmp_path, capsys):
    output = tmp_path / "fused"
    argv = train_argv(workspace, aligned, output)
    kill_when(start(argv, tmp_path / "log"), (output / "checkpoint-6").is_dir, tmp_path / "log")
    assert not (output / "summary.json").exists()
    assert resume(argv, capsys) == ""
    assert_same_weights(output, uninterrupted)


def test_killed_while_writing_a_checkpoint(workspace, aligned, uninterrupted, tmp_path, capsys):
    output = tmp_path / "fused"
    argv = train_argv(workspace, aligned, output)
    staged = output / ".partial-checkpoint-12" / "checkpoint-12"
    process = start(argv, tmp_path / "log", pausing_on="checkpoint-12")
    # The weights are written, the optimizer, scheduler and RNG states not yet.
    kill_when(process, (staged / "training_args.bin").is_file, tmp_path / "log")
    assert (staged / "model.safetensors").is_file() and not (staged / "optimizer.pt").exists()
    assert not (output / "checkpoint-12").exists()
    assert resume(argv, capsys) == ""
    assert_same_weights(output, uninterrupted)
    assert not list(output.glob(".partial-*"))


def test_an_incomplete_checkpoint_is_skipped_with_a_warning(workspace, aligned, uninterrupted, tmp_path, capsys):
    # As a trainer that writes checkpoints in place leaves one it was killed while writing.
    output = tmp_path / "fused"
    for step in (6, 12):
        shutil.copytree(uninterrupted / f"checkpoint-{step}", output / f"checkpoint-{step}")
    (output / "checkpoint-12" / "optimizer.pt").unlink()
    err = resume(train_argv(workspace, aligned, output), capsys)
    assert err.splitlines() == [f"fusellm-fast train: warning: skipping the incomplete {output / 'checkpoint-12'} "
                                "(no optimizer.pt); resuming from checkpoint-6"]
    assert_same_weights(output, uninterrupted)


def test_vocab_map_killed_while_writing(workspace, tmp_path):
    argv = ("vocab-map", workspace["source_a"], workspace["target"], "-o", tmp_path / "a.npz")
    process = start(argv, tmp_path / "log", pausing_on=".partial")
    kill_when(process, lambda: any(tmp_path.glob(".a.npz.*.partial")), tmp_path / "log")
    assert not (tmp_path / "a.npz").exists()
    run(*argv)
    run("vocab-map", workspace["source_a"], workspace["target"], "-o", tmp_path / "uninterrupted.npz")
    assert VocabMap.load(tmp_path / "a.npz") == VocabMap.load(tmp_path / "uninterrupted.npz")
