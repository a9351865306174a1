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
from collections.abc import Callable, Iterator

__all__ = [
    "Terminated",
    "terminate_raises",
    "rearm_terminate",
    "terminate_deferred",
    "interrupt_exit",
]


class Terminated(BaseException):
    """The process received SIGTERM (a ``BaseException``, like ``KeyboardInterrupt``)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


_depth = 0  # open terminate_raises blocks in the main thread


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (no-op in
    other threads, where Python cannot set signal handlers)."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        signal.signal(signal.SIGTERM, previous)


def rearm_terminate() -> None:
    """Inside a :func:`terminate_raises` block, install its handler again after a library
    replaced it: ``ray.init`` sets one that calls ``sys.exit`` wherever the driver is, which
    aborts the process from inside Tune instead of letting the sweep close its runs."""
    if _depth and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def terminate_deferred(ask_to_stop: Callable[[], None]) -> Iterator[None]:
    """Within the block SIGTERM calls ``ask_to_stop`` and :class:`Terminated` is raised when
    the block ends, not inside it.

    For loops that spend their time in C extensions (Ray's ``wait`` under ``tuner.fit()``):
    an exception raised by a signal handler there surfaces as ``SystemError: ... returned a
    result with an exception set``, and the loop's own cleanup never runs. ``ask_to_stop``
    should ask the loop to end by its own means (Tune: SIGUSR1, its graceful stop).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = threading.Event()

    def defer(signum: int, frame: object) -> None:
        received.set()
        ask_to_stop()

    previous = signal.signal(signal.SIGTERM, defer)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
    if received.is_set():
        raise Terminated()


def interrupt_exit(exc: BaseException) -> tuple[str, int] | None:
    """``(what stopped it, exit code)`` for SIGINT (130) or SIGTERM (143); else None."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT)", 128 + signal.SIGINT
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM)", 128 + signal.SIGTERM
    return None
