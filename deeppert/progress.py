"""Progress of long steps: a tqdm bar on a terminal or in a notebook, log lines otherwise.

A bar redrawn in place is what a person at a terminal or in Jupyter wants (a notebook's
stderr is no terminal, and INFO log lines there go nowhere unless logging is set up); in a
log file (CI, ``nohup``, a Ray job) a bar becomes thousands of carriage returns, so there the
same progress is written as at most ~10 INFO lines with the elapsed time and an ETA.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

__all__ = ["Progress", "interactive"]

log = logging.getLogger("deeppert.progress")


class Progress:
    """``with Progress(total, "training") as bar: bar.update(1, loss=0.3)``.

    ``tty`` forces the bar (True) or the log lines (False); by default the bar is used when
    stderr is a terminal or the process is a Jupyter kernel (:func:`interactive`).
    """

    def __init__(self, total: int, desc: str, *, unit: str = "step", tty: bool | None = None):
        self.total, self.desc, self.unit = max(int(total), 1), desc, unit
        self.tty = interactive() if tty is None else tty
        self.done = 0
        self._bar = None
        self._start = time.perf_counter()
        self._next_log = 0.1

    def __enter__(self) -> Progress:
        if self.tty:
            from tqdm.auto import tqdm  # a widget in Jupyter, text on a terminal

            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, file=sys.stderr)
        else:  # a first line at once: the first tenth of a long step can take minutes
            log.info("%s: 0/%d %ss", self.desc, self.total, self.unit)
        return self

    def update(self, n: int = 1, **postfix: float | str) -> None:
        """Count ``n`` more steps; ``postfix`` values (e.g. loss) are shown beside the count."""
        self.done += n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: _short(v) for k, v in postfix.items()}, refresh=False)
            self._bar.update(n)
            return
        fraction = self.done / self.total
        if fraction + 1e-12 >= self._next_log or self.done == self.total:
            self._next_log = (int(fraction * 10) + 1) / 10
            elapsed = time.perf_counter() - self._start
            eta = elapsed / fraction - elapsed if fraction > 0 else float("nan")
            extra = "".join(f", {k} {_short(v)}" for k, v in postfix.items())
            log.info(
                "%s: %d/%d %s (%.0f%%), %.0f s elapsed, ETA %.0f s%s",
                self.desc, self.done, self.total, self.unit + "s", 100 * fraction,
                elapsed, eta, extra,
            )  # fmt: skip

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()


def interactive() -> bool:
    """Whether a person watches this process live: stderr is a terminal, or it is a Jupyter
    (IPython) kernel, whose stderr is a pipe shown in the notebook."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _short(value: float | str) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
