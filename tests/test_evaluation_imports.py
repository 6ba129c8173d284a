"""The package, the evaluation package and the command import without torch, transformers,
datasets, matplotlib or lm-eval: those are extras, imported only when used."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("torch", "transformers", "datasets", "matplotlib", "lm_eval")

PROGRAM = f"""
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(name + " is not installed here")

sys.meta_path.insert(0, Blocked())
import fusellm_fast, fusellm_fast.evaluation, fusellm_fast.cli
from fusellm_fast.evaluation import parse_tasks, utf8_bytes
assert parse_tasks("bbh,arc_easy") == ["bbh", "arc_easy"] and utf8_bytes(["é"]) == 2
print(sorted(name for name in sys.modules if name.split(".")[0] in {BLOCKED!r}))
"""


def test_imports_without_the_extras() -> None:
    run = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
