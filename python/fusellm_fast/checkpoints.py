"""Training checkpoints that appear whole or not at all, and the last complete one of a run.

:class:`~fusellm_fast.trainer.FusionTrainer` writes each ``checkpoint-N`` under a staging
directory next to it (``.partial-checkpoint-N``), flushes every file to disk and renames it into
place, so a ``checkpoint-N`` it wrote is complete. A run killed while saving leaves only the
staging directory, which the next save of that step or a resumed run removes. Checkpoints written
otherwise (by a plain ``Trainer``, or copied by hand) are checked for the files that resuming
reads.

Needs no torch: the files are only looked at, not loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

__all__ = ["STAGING_PREFIX", "last_complete_checkpoint", "missing_part", "publish", "remove_staging", "staging_root"]

STAGING_PREFIX = ".partial-"
"""The staging directory of ``checkpoint-N`` is ``.partial-checkpoint-N``, beside it."""

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
            "adapter_model.safetensors", "adapter_model.bin")
# DeepSpeed and FSDP keep weights and optimizer states in directories of their own.
_SHARDED_STATE = re.compile(r"^(global_step\d+|pytorch_model_fsdp_\d+|optimizer_\d+)$")


def staging_root(run_dir: str | os.PathLike[str], step: int) -> Path:
    """Where ``checkpoint-<step>`` of ``run_dir`` is written before it is renamed into place."""
    return Path(run_dir) / f"{STAGING_PREFIX}checkpoint-{step}"


def publish(staged: Path, final: Path) -> None:
    """Flushes every file under ``staged`` to disk, then puts ``staged`` in place of ``final``.

    A checkpoint of the same step already there (an incomplete one from an earlier run) is
    removed first; killed in between, the run has one checkpoint fewer, never a partial one.
    """
    for directory, _, files in os.walk(staged):
        for name in files:
            _flush(Path(directory) / name)
        _flush(Path(directory))
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
    _flush(final.parent)


def remove_staging(run_dir: str | os.PathLike[str]) -> None:
    """Removes what runs killed while saving left under ``run_dir``."""
    for leftover in Path(run_dir).glob(f"{STAGING_PREFIX}checkpoint-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def missing_part(checkpoint: str | os.PathLike[str]) -> str | None:
    """What ``checkpoint`` lacks for training to resume from it, or ``None`` when it is complete.

    >>> missing_part("no/such/checkpoint-8")
    'no readable trainer_state.json'
    """
    checkpoint = Path(checkpoint)
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        step = state["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no readable trainer_state.json"
    match = _CHECKPOINT.match(checkpoint.name)
    if match and int(match.group(1)) != step:
        return f"its trainer_state.json is of step {step}"
    sharded = any(_SHARDED_STATE.match(entry.name) for entry in checkpoint.iterdir() if entry.is_dir())
    if not sharded and not any(_non_empty(checkpoint / name) for name in _WEIGHTS):
        return "no model weights"
    if not sharded and not _non_empty(checkpoint / "optimizer.pt"):
        return "no optimizer.pt"
    return None


def last_complete_checkpoint(run_dir: str | os.PathLike[str]) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete ``checkpoint-N`` in ``run_dir`` (``None`` if there is none), and every
    newer one that was skipped, with what it lacks.

    >>> last_complete_checkpoint("no/such/run")
    (None, [])
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None, []
    steps = {int(m.group(1)): entry for entry in run_dir.iterdir()
             if entry.is_dir() and (m := _CHECKPOINT.match(entry.name))}
    skipped = []
    for step in sorted(steps, reverse=True):
        reason = missing_part(steps[step])
        if reason is None:
            return steps[step], skipped
        skipped.append((steps[step], reason))
    return None, skipped


def _non_empty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _flush(path: Path) -> None:
    if os.name == "nt" and path.is_dir():
        return  # Windows cannot open a directory to flush it
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
