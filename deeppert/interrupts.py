"""SIGTERM and SIGINT as exceptions, so a stopped command cleans up before it exits.

Python turns SIGINT into ``KeyboardInterrupt``; SIGTERM's default action ends the process at
once, skipping every ``finally`` (an atomic write's temporary folder stays behind, a sweep's
runs stay RUNNING). Under :func:`terminate_raises` SIGTERM raises :class:`Terminated` in the
main thread instead; the command line turns both into one line and the shell's exit codes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Terminated", "terminate_raises", "interrupt_exit"]


class Terminated(BaseException):
    """The process received SIGTERM (a ``BaseException``, like ``KeyboardInterrupt``)."""


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (no-op in
    other threads, where Python cannot set signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_exit(exc: BaseException) -> tuple[str, int] | None:
    """``(what stopped it, exit code)`` for SIGINT (130) or SIGTERM (143); else None."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT)", 128 + signal.SIGINT
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM)", 128 + signal.SIGTERM
    return None
