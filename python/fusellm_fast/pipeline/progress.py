"""The stages' progress bars, with their throughput in tokens per second or their loss."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar", "show_token_rate", "trainer_progress"]


def progress_bar(total: int, description: str, unit: str, *, show: bool) -> Any:
    """A ``tqdm`` bar of ``total`` ``unit``s, drawn only when ``show``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, unit_scale=True, dynamic_ncols=True, disable=not show)


def show_token_rate(bar: Any, tokens: int) -> None:
    """Shows ``tokens`` over the bar's elapsed time beside it, at the next redraw."""
    bar.set_postfix_str(f"{tokens / max(bar.format_dict['elapsed'], 1e-9):.0f} tok/s", refresh=False)


def trainer_progress(description: str) -> Any:
    """A ``transformers`` trainer callback that draws one bar over the training steps, with the
    last logged loss beside it, and prints nothing else (the trainer's own progress callback
    writes every log entry as a line)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        bar: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if state.is_world_process_zero:
                self.bar = progress_bar(state.max_steps, description, "step", show=True)
                self.bar.update(state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **_: Any) -> None:
            if self.bar is not None and logs and "loss" in logs:
                terms = {"loss": logs["loss"], "clm": logs.get("loss_clm")}
                self.bar.set_postfix_str(", ".join(f"{k} {float(v):.3f}" for k, v in terms.items() if v is not None),
                                         refresh=False)

        def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return Progress()
