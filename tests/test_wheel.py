"""The release wheel that ``tests/run.sh`` builds: its tags, its manylinux policy, an install into a
fresh environment with no Rust toolchain, and the release workflow that builds it on every platform."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WHEEL = os.environ.get("FUSELLM_FAST_WHEEL")

needs_wheel = pytest.mark.skipif(not WHEEL, reason="FUSELLM_FAST_WHEEL is set by tests/run.sh to the wheel it built")


def crate_version() -> str:
    return tomllib.loads((ROOT / "rust" / "Cargo.toml").read_text(encoding="utf-8"))["package"]["version"]


@needs_wheel
def test_wheel_is_one_abi3_manylinux_2_28_wheel_of_the_crate_version() -> None:
    name = Path(WHEEL).name
    version = crate_version()
    assert name == f"fusellm_fast-{version}-cp310-abi3-manylinux_2_28_{platform.machine()}.whl", name
    print(f"{name}: {Path(WHEEL).stat().st_size / 1024:.0f} KiB")


@needs_wheel
def test_auditwheel_finds_the_wheel_manylinux_2_28_compliant() -> None:
    shown = subprocess.run([sys.executable, "-m", "auditwheel", "show", WHEEL], capture_output=True, text=True,
                           check=True).stdout
    print(shown)
    tag = re.search(r'consistent\s+with the following platform tag:\s+"([^"]+)"', shown)
    assert tag is not None, shown
    assert tag.group(1) == f"manylinux_2_28_{platform.machine()}"


SMOKE = """
import numpy as np
import fusellm_fast as ff
from fusellm_fast import reference

source = ["\\u0120the", "\\u0120cat", "\\u0120c", "at"]
target = ["\\u2581the", "\\u2581cat", "\\u2581c", "at"]
args = ([[1, 2, 3]], [[0, 2, 3]], [np.array([[1, 0], [3, 1], [0, 2]])],
        [np.array([[2.0, 1.0], [1.5, 0.5], [0.3, 0.2]], np.float32)])
fast = ff.align_batch(ff.Aligner(source, target), *args)
slow = reference.align_batch(source, target, *(np.asarray(a).tolist() for a in args),
                             source_marker="\u0120", target_marker="\u2581")[0]
got = [(int(fast.status[0, j]), [(int(i), float(x)) for i, x in zip(fast.ids[0, j], fast.logits[0, j]) if i >= 0])
       for j in range(3)]
assert got == [(int(status), [(i, float(x)) for i, x in entries]) for status, entries in slow], (got, slow)
print(ff.__file__, ff.__version__, fast.counts.matched_rate)
"""


@needs_wheel
def test_wheel_installs_and_aligns_without_rust(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    python = fresh / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # numpy comes from where the tests find it; everything of the package itself from the wheel.
    import numpy

    (site / "numpy_from_tests.pth").write_text(str(Path(numpy.__file__).resolve().parent.parent) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    WHEEL], check=True)
    path = os.pathsep.join([str(fresh / "bin"), "/usr/bin", "/bin"])
    assert shutil.which("cargo", path=path) is None and shutil.which("rustc", path=path) is None
    env = {"PATH": path, "HOME": str(tmp_path), "CARGO_HOME": str(tmp_path / "no-cargo"),
           "RUSTUP_HOME": str(tmp_path / "no-rustup")}
    run = subprocess.run([str(python), "-c", SMOKE], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    installed, version, matched_rate = run.stdout.split()
    assert Path(installed).resolve().is_relative_to(site.resolve())
    assert version == crate_version()
    assert 0.0 < float(matched_rate) <= 1.0


def test_version_is_single_sourced_from_the_crate() -> None:
    import fusellm_fast

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert fusellm_fast.__version__ == crate_version()
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{crate_version()}]" in changelog


WORKFLOW = ROOT / ".github" / "workflows" / "wheels.yml"


def test_release_workflow_passes_the_github_workflow_schema() -> None:
    check = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                            str(WORKFLOW)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_release_workflow_builds_every_platform_and_publishes_by_trusted_publishing() -> None:
    import yaml

    jobs = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))["jobs"]
    linux = jobs["linux"]["strategy"]["matrix"]
    assert set(linux["target"]) == {"x86_64", "aarch64"} and set(linux["manylinux"]) == {"2_28", "musllinux_1_2"}
    assert {entry["target"] for entry in jobs["macos"]["strategy"]["matrix"]["include"]} == {"x86_64", "aarch64"}
    assert "windows" in jobs and jobs["sdist"]["steps"][-2]["with"]["command"] == "sdist"
    tested = {entry["artifact"] for entry in jobs["test"]["strategy"]["matrix"]["include"]}
    assert tested == {"wheel-linux-x86_64-2_28", "wheel-linux-aarch64-2_28", "wheel-macos-x86_64",
                      "wheel-macos-aarch64", "wheel-windows-x86_64"}
    assert set(jobs["publish"]["needs"]) == {"test", "test-musllinux", "sdist"}
    assert jobs["publish"]["permissions"] == {"id-token": "write"}
    assert jobs["publish"]["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert "password" not in str(jobs["publish"])


def test_release_workflow_runs_test_files_that_exist() -> None:
    named = set(re.findall(r"\btest_\w+\.py\b", WORKFLOW.read_text(encoding="utf-8")))
    assert named, "the workflow runs no test file"
    assert sorted(name for name in named if not (ROOT / "tests" / name).is_file()) == []
