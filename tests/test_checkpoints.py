"""checkpoints.py: which checkpoints training can resume from, and how one is put in place."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

from fusellm_fast import checkpoints
from fusellm_fast.checkpoints import last_complete_checkpoint, missing_part, publish, remove_staging, staging_root


def write_checkpoint(run_dir: Path, step: int, *, skip: str = "") -> Path:
    """The files a single-process run writes into checkpoint-<step>, but ``skip``."""
    checkpoint = run_dir / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    files = {"trainer_state.json": json.dumps({"global_step": step}), "model.safetensors": "weights",
             "optimizer.pt": "state", "scheduler.pt": "state", "rng_state.pth": "state"}
    for name, text in files.items():
        if name != skip:
            (checkpoint / name).write_text(text, encoding="utf-8")
    return checkpoint


def test_what_a_checkpoint_lacks(tmp_path):
    assert missing_part(write_checkpoint(tmp_path, 2)) is None
    assert missing_part(write_checkpoint(tmp_path, 4, skip="optimizer.pt")) == "no optimizer.pt"
    assert missing_part(write_checkpoint(tmp_path, 6, skip="model.safetensors")) == "no model weights"
    assert missing_part(write_checkpoint(tmp_path, 8, skip="trainer_state.json")) == "no readable trainer_state.json"
    cut = write_checkpoint(tmp_path, 10)
    (cut / "trainer_state.json").write_text('{"global_step": 1', encoding="utf-8")
    assert missing_part(cut) == "no readable trainer_state.json"
    (cut / "trainer_state.json").write_text('{"global_step": 9}', encoding="utf-8")
    assert missing_part(cut) == "its trainer_state.json is of step 9"
    empty = write_checkpoint(tmp_path, 12)
    (empty / "optimizer.pt").write_bytes(b"")
    assert missing_part(empty) == "no optimizer.pt"
    # DeepSpeed keeps weights and optimizer states in a directory of the step.
    sharded = write_checkpoint(tmp_path, 14, skip="optimizer.pt")
    (sharded / "model.safetensors").unlink()
    (sharded / "global_step14").mkdir()
    assert missing_part(sharded) is None


def test_the_newest_complete_checkpoint_by_step(tmp_path):
    assert last_complete_checkpoint(tmp_path) == (None, [])
    write_checkpoint(tmp_path, 9)
    write_checkpoint(tmp_path, 10)  # 10 > 9 as numbers, not as strings
    broken = write_checkpoint(tmp_path, 11, skip="optimizer.pt")
    staging_root(tmp_path, 12).mkdir()  # a save killed half-way is no checkpoint
    assert last_complete_checkpoint(tmp_path) == (tmp_path / "checkpoint-10", [(broken, "no optimizer.pt")])
    (tmp_path / "checkpoint-10" / "optimizer.pt").unlink()
    (tmp_path / "checkpoint-9" / "optimizer.pt").unlink()
    checkpoint, skipped = last_complete_checkpoint(tmp_path)
    assert checkpoint is None and [path.name for path, _ in skipped] == ["checkpoint-11", "checkpoint-10", "checkpoint-9"]


def test_publish_replaces_an_earlier_checkpoint_and_staging_is_removed(tmp_path):
    old = write_checkpoint(tmp_path, 4, skip="optimizer.pt")
    root = staging_root(tmp_path, 4)
    staged = write_checkpoint(root, 4)
    publish(staged, old)
    assert missing_part(old) is None and not staged.exists()
    staging_root(tmp_path, 8).mkdir()
    remove_staging(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]


def test_docstring_examples_run():
    assert doctest.testmod(checkpoints).failed == 0
