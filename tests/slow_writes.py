"""``python slow_writes.py PATTERN ARGV...``: the ``fusellm-fast`` command, except that every
``torch.save`` or ``numpy.savez`` into a path containing PATTERN pauses for a minute after writing,
so that a test can kill the command in the middle of saving a checkpoint or a map."""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from typing import Any


def written_path(value: Any) -> str:
    """The path a save writes to, if ``value`` names or is an open file."""
    if isinstance(value, io.IOBase):
        return str(getattr(value, "name", ""))
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else ""


def pausing(write: Callable[..., Any], pattern: str) -> Callable[..., Any]:
    def write_then_pause(*args: Any, **kwargs: Any) -> Any:
        result = write(*args, **kwargs)
        # torch.save(obj, f) and numpy.savez(file, ...): the target is one of the first two.
        if any(pattern in written_path(value) for value in args[:2]):
            time.sleep(60)
        return result

    return write_then_pause


if __name__ == "__main__":
    import numpy as np
    import torch

    pattern = sys.argv[1]
    torch.save = pausing(torch.save, pattern)
    np.savez = pausing(np.savez, pattern)
    from fusellm_fast.cli import main

    sys.exit(main(sys.argv[2:]))
