"""The stages' progress bars, with their throughput in tokens per second."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar", "show_token_rate"]


def progress_bar(total: int, description: str, unit: str, *, show: bool) -> Any:
    """A ``tqdm`` bar of ``total`` ``unit``s, drawn only when ``show``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, unit_scale=True, dynamic_ncols=True, disable=not show)


def show_token_rate(bar: Any, tokens: int) -> None:
    """Shows ``tokens`` over the bar's elapsed time beside it, at the next redraw."""
    bar.set_postfix_str(f"{tokens / max(bar.format_dict['elapsed'], 1e-9):.0f} tok/s", refresh=False)
