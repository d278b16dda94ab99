"""Progress on long loops: a live bar on a terminal, a few plain lines in a log file.

tqdm's carriage-return updates suit a terminal and turn a CI log (or ``make demo > log 2>&1``)
into thousands of half-lines. :func:`progress` looks at where the bar would go: a terminal gets
tqdm; anything else (a file, a pipe) gets one line at every 10% and one at the end. Loops whose
caller already logs one line per step (an epoch's batches: the loop logs the epoch) pass
``lines=False`` and stay silent off a terminal.

Every long loop in deepmsi goes through here, so this is the one place to change how progress
looks.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, Protocol, TypeVar

__all__ = ["Bar", "progress"]

T = TypeVar("T")
EVERY = 0.1  # a plain line each time this fraction of the total is passed


class Bar(Protocol):
    """What a loop may call on a bar (a subset of tqdm's interface)."""

    def __iter__(self) -> Iterator[Any]: ...
    def update(self, n: int = 1) -> Any: ...
    def set_postfix(self, *args: Any, **kwargs: Any) -> Any: ...
    def close(self) -> Any: ...


def is_terminal(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (default: stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed stream
        return False


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    transient: bool = False,
    lines: bool = True,
    stream: IO[str] | None = None,
) -> Bar:
    """A progress bar over ``iterable`` (or updated by hand up to ``total``).

    On a terminal: tqdm (``transient``: erased when done). Elsewhere: plain lines at every 10%
    and at the end, or nothing with ``lines=False``. ``enabled=False``: nothing anywhere.
    """
    stream = sys.stderr if stream is None else stream
    if enabled and is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=not transient, file=stream)
    out = stream if enabled and lines else None
    return _Lines(iterable, total=total, desc=desc, unit=unit, stream=out)


class _Lines:
    """The log-file form of a bar: ``desc: 40% (400/1000 utt, 12 s, ~18 s left)``."""

    def __init__(
        self,
        iterable: Iterable[Any] | None,
        *,
        total: int | None,
        desc: str,
        unit: str,
        stream: IO[str] | None,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.n = 0
        self.postfix = ""
        self._mark = 0  # tenths already reported
        self._ended = False
        self._t0 = time.perf_counter()

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this bar was made without an iterable; call update()")
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.total or self.stream is None:
            return
        mark = min(int(self.n / self.total / EVERY + 1e-9), int(round(1 / EVERY)))
        if mark > self._mark:
            self._mark = mark
            self._write(self._line())
            self._ended = self.n >= self.total

    def set_postfix(self, *args: Any, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(*args, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if self._ended or self.stream is None or self.n == 0:
            self._ended = True
            return
        self._ended = True
        self._write(self._line())

    # ---- formatting ---------------------------------------------------------------------------
    def _line(self) -> str:
        elapsed = time.perf_counter() - self._t0
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            done = f"{100 * self.n / self.total:.0f}% ({self.n}/{self.total} {self.unit}"
        else:
            done = f"done ({self.n} {self.unit}"
        parts = [f"{head}{done}, {_seconds(elapsed)}"]
        if self.total and 0 < self.n < self.total:
            parts.append(f"~{_seconds(elapsed * (self.total - self.n) / self.n)} left")
        line = ", ".join(parts) + ")"
        return f"{line} {self.postfix}" if self.postfix else line

    def _write(self, line: str) -> None:
        assert self.stream is not None
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken log stream never stops the work
            self.stream = None


def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    minutes, sec = divmod(int(round(s)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"
