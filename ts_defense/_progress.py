"""Progress for long loops: a tqdm bar on a terminal (or in a notebook); elsewhere (a file, a
pipe, a CI log) one plain line every ``every`` steps, so that a log never fills with a line
of carriage returns."""

from __future__ import annotations

import sys
import time
from typing import IO, Any


def on_terminal(stream: IO[str]) -> bool:
    """Whether a bar can redraw itself on ``stream``: a TTY, or a notebook (tqdm.auto's own)."""
    from tqdm.auto import tqdm as auto

    isatty = getattr(stream, "isatty", None)
    notebook = any(cls.__module__ == "tqdm.notebook" for cls in auto.__mro__)
    return notebook or bool(isatty and isatty())


class Progress:
    """Counts ``total`` steps from ``initial`` under the label ``desc``; :meth:`update` after
    each step, with the values to show (``loss=0.01``). Silent unless ``enabled``.

    Not on a terminal it writes ``desc: step/total (pct%), key value, rate`` every ``every``
    steps (default: a twentieth of the run) and at the last one.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        initial: int = 0,
        enabled: bool = True,
        every: int | None = None,
        stream: IO[str] | None = None,
    ) -> None:
        self.total, self.desc, self.n = total, desc, initial
        self.stream = sys.stderr if stream is None else stream
        self.every = every or max(1, total // 20)
        self.postfix: dict[str, Any] = {}
        self._start, self._first = time.perf_counter(), initial
        self.bar = None
        if enabled and on_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, file=self.stream)
        self.lines = enabled and self.bar is None

    def update(self, **postfix: Any) -> None:
        """One step done; ``postfix`` values are shown from now on."""
        self.n += 1
        self.postfix.update(postfix)
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.update()
        elif self.lines and (self.n % self.every == 0 or self.n == self.total):
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        """The plain progress line for the steps counted so far."""
        shown = "".join(f", {k} {v}" for k, v in self.postfix.items())
        seconds = time.perf_counter() - self._start
        rate = f", {(self.n - self._first) / seconds:.3g} steps/s" if seconds > 0 else ""
        pct = 100 * self.n / self.total if self.total else 100.0
        return f"{self.desc}: {self.n}/{self.total} ({pct:.0f}%){shown}{rate}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
