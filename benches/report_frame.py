"""The frame that the benchmark reports share: progress lines on stderr, the machine section, and a
report printed as Markdown to stdout with how, and in how long, its one run made it."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import fusellm_fast._core

from alignment_workload import ROOT


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def print_report(title: str, script: str, sections: Callable[[], list[str]], *, about: str = "",
                 machine_notes: Sequence[str] = ()) -> None:
    """Runs ``sections()`` once and prints the report: ``title``, the command and its time, the
    machine (with ``machine_notes`` at its end), then the sections.

    Args:
        title: the report's heading.
        script: the file name in ``benches/`` that makes the report.
        sections: makes every measured section, as Markdown lines; timed with the report.
        about: said after the line on how the report was made.
        machine_notes: more lines for the machine section.
    """
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    body = sections()
    made = (f"Produced by `python benches/{script}` in {time.perf_counter() - started:.0f} s; every figure below "
            "comes from that one run.")
    machine = machine_section(load_at_start)
    header = [f"# {title}", "", f"{made} {about}" if about else made, "", *machine[:-1], *machine_notes, machine[-1]]
    print("\n".join(header + body).rstrip())


def cpu_model() -> str:
    match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def memory_gib() -> float:
    match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    return int(match.group(1)) / 2**20 if match else float("nan")


def command_output(command: Sequence[str]) -> str:
    try:
        return subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unavailable"


def machine_section(load_at_start: tuple[float, float, float]) -> list[str]:
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("fusellm-fast", "numpy", "rapidfuzz", "transformers", "tokenizers", "pytest-benchmark")
    )
    commit = command_output(["git", "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "status", "--porcelain", "--", "rust", "python", "Cargo.toml", "Cargo.lock"])
    extension = Path(fusellm_fast._core.__file__)
    built = datetime.datetime.fromtimestamp(extension.stat().st_mtime, datetime.timezone.utc)
    cores = len(os.sched_getaffinity(0))
    return [
        "## Machine",
        "",
        f"- CPU: {cpu_model()}, {cores} cores available ({os.cpu_count()} online), {memory_gib():.0f} GiB RAM",
        f"- Load average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in load_at_start)}; "
        f"at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Python {platform.python_version()}, {versions}; {command_output(['rustc', '--version'])}",
        f"- Source: git {commit}{' with uncommitted changes' if dirty else ''}; "
        f"extension module `{extension.name}` built {built:%Y-%m-%d %H:%M} UTC",
        "",
    ]
