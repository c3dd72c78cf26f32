"""Progress that reads well in a terminal and in a log file (issue 16, "one logging story").

In a terminal, a tqdm bar redraws itself in place. In a log (CI, ``nohup``, a cluster job's
output file), the same bar becomes a stream of carriage-return updates, thousands of them in a long
run. Every progress display in the library goes through this module instead:

* :func:`progress_bar` returns a tqdm bar when the stream is a terminal, and otherwise a
  :class:`LineProgress`, which writes a whole line only every ``every_percent`` percent of the work
  or every ``min_interval`` seconds, whichever comes first (plus one line when it closes). A run of
  any length therefore writes at most ``100 / every_percent + elapsed / min_interval + 1`` lines.
* :func:`adapt_trainer_progress` does the same for a ``transformers.Trainer`` (the SFT and
  reward-weighted trainers of NAT, RISE and sub-goal distillation): in a log, its bar is replaced
  by the Trainer's own one-line-per-log printer and a :class:`LineProgress` over the steps.
* :func:`quiet_library_bars` turns off, in a log, the bars of ``datasets`` (dataset preparation),
  ``transformers`` and the hub (weight loading and saving), which have no line mode; the trainers
  call it first.

``--disable_tqdm`` hides every bar: the library's, the Trainer's (through ``TrainingArguments``)
and, through :func:`quiet_library_bars`, those of ``datasets`` and ``transformers``.
Nothing here imports torch or transformers at import time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = [
    "EVERY_PERCENT",
    "MIN_INTERVAL",
    "LineProgress",
    "adapt_trainer_progress",
    "is_interactive",
    "progress_bar",
    "quiet_library_bars",
]

#: A log line at least every this many percent of the work.
EVERY_PERCENT = 10.0
#: ... or after this many seconds without one, whichever comes first.
MIN_INTERVAL = 30.0


def is_interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: ``sys.stderr``) is a terminal, where bars redraw in place."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineProgress:
    """A progress display for logs: whole lines, rarely (the subset of tqdm's API the library uses).

    A line looks like ``collect Mulligan/Echo-v0: 120/1000 ep (12%), 40.1 ep/s, 3s elapsed,
    success=0.50``. One is written when the count crosses the next ``every_percent`` mark, or when
    ``min_interval`` seconds have passed since the last line and the count moved, and on
    :meth:`close` unless the last line already showed the final count.

    Args:
        total: The amount of work (``None``: unknown; then only the time rule applies).
        desc: What is progressing.
        unit: The unit of ``total``.
        initial: Work already done (a resumed run).
        file: Where lines go (default: ``sys.stderr``).
        every_percent: A line at each multiple of this percentage of ``total``.
        min_interval: A line after this many seconds without one.
        clock: Seconds, monotonic (tests pass a fake clock).
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        *,
        initial: int = 0,
        file: TextIO | None = None,
        every_percent: float = EVERY_PERCENT,
        min_interval: float = MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ):
        if every_percent <= 0 or min_interval <= 0:
            raise ValueError(f"every_percent and min_interval must be > 0, got {every_percent} and {min_interval}")
        self.total, self.desc, self.unit = total, desc, unit
        self.n = initial
        self.file = file
        self.every_percent, self.min_interval, self.clock = every_percent, min_interval, clock
        self.postfix = ""
        self.lines_written = 0
        self._start = self._last_time = clock()
        self._last_n: int | None = None
        self._next_mark = self._mark_after(initial)
        self._closed = False

    def _mark_after(self, n: int) -> float:
        """The next count at which a percentage line is due."""
        if not self.total:
            return float("inf")
        step = self.total * self.every_percent / 100
        return (int(n / step) + 1) * step

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units of work; write a line if one is due."""
        self.n += n
        now = self.clock()
        if self.n >= self._next_mark or now - self._last_time >= self.min_interval:
            self._write(now)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """Extra ``key=value`` pairs shown at the end of the next line (tqdm's signature)."""
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        """Change what is progressing."""
        self.desc = desc

    def write(self, text: str) -> None:
        """Write a message line (as ``tqdm.write``)."""
        print(text, file=self.file if self.file is not None else sys.stderr, flush=True)

    def close(self) -> None:
        """Write the final line (unless the last one already showed the final count)."""
        if self._closed:
            return
        self._closed = True
        if self._last_n != self.n:
            self._write(self.clock())

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self, now: float | None = None) -> str:
        """The text of the line for the current count."""
        elapsed = (self.clock() if now is None else now) - self._start
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if elapsed > 0:
            parts.append(f"{self.n / elapsed:.3g} {self.unit}/s")
        parts.append(f"{elapsed:.0f}s elapsed")
        if self.postfix:
            parts.append(self.postfix)
        return (f"{self.desc}: " if self.desc else "") + ", ".join(parts)

    def _write(self, now: float) -> None:
        self.write(self.line(now))
        self.lines_written += 1
        self._last_time, self._last_n = now, self.n
        self._next_mark = self._mark_after(self.n)


def progress_bar(
    total: int | None,
    desc: str = "",
    unit: str = "it",
    *,
    enabled: bool = True,
    initial: int = 0,
    file: TextIO | None = None,
) -> Any:
    """The progress display of a loop: tqdm in a terminal, :class:`LineProgress` in a log, or ``None``.

    Args:
        total: The amount of work.
        desc: What is progressing.
        unit: The unit of ``total``.
        enabled: ``False`` (``--disable_tqdm``) returns ``None``: no display at all.
        initial: Work already done.
        file: The stream (default: ``sys.stderr``); whether it is a terminal decides the display.

    Returns:
        An object with tqdm's ``update``, ``set_postfix``, ``write`` and ``close``, or ``None``.
    """
    if not enabled:
        return None
    if is_interactive(file):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=file, dynamic_ncols=True)
    return LineProgress(total, desc, unit, initial=initial, file=file)


def quiet_library_bars(file: TextIO | None = None, *, force: bool = False) -> bool:
    """Turn off the progress bars of ``datasets``, ``transformers`` and the hub in a log.

    Those bars (dataset ``map``, "Loading weights", "Writing model shards", downloads) redraw with
    carriage returns and have no line mode. Like those libraries' own switches, this is
    process-wide, and it is never undone: a process writing to a log keeps writing to it.

    Args:
        file: The stream whose kind decides (default: ``sys.stderr``).
        force: Turn them off even in a terminal (``--disable_tqdm``).

    Returns:
        Whether the bars were turned off.
    """
    if not force and is_interactive(file):
        return False
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # an optional dependency of the core
        pass
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # the hub's bars too
    except ImportError:
        pass
    return True


def adapt_trainer_progress(trainer: Any, file: TextIO | None = None) -> None:
    """Make a ``transformers.Trainer``'s progress log-friendly when ``file`` is not a terminal.

    In a terminal, or with ``disable_tqdm``, the Trainer is left as it is. In a log, its tqdm bar
    (``ProgressCallback``, one carriage-return update per step) is replaced by its
    ``PrinterCallback`` (one line per ``logging_steps`` log, the same ``loss``, ``learning_rate``,
    ``grad_norm`` names that ``report_to`` receives) and a :class:`LineProgress` over the steps.

    Args:
        trainer: A ``transformers.Trainer`` (TRL's trainers included), before ``train()``.
        file: The stream (default: ``sys.stderr``).
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    if trainer.args.disable_tqdm or is_interactive(file):
        return

    class LineProgressCallback(TrainerCallback):
        """Training steps as rare whole lines (see :class:`LineProgress`)."""

        def __init__(self) -> None:
            self.bar: LineProgress | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = LineProgress(state.max_steps, "train", "step", initial=state.global_step, file=file)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    trainer.remove_callback(ProgressCallback)
    if not any(isinstance(c, PrinterCallback) for c in trainer.callback_handler.callbacks):
        trainer.add_callback(PrinterCallback)
    trainer.add_callback(LineProgressCallback())
