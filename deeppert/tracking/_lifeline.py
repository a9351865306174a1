"""Run a command whose whole process group dies with its owner.

``python -m deeppert.tracking._lifeline CMD...`` is what :class:`~deeppert.tracking.server.
TrackingServer` starts, as the leader of a new session: it runs ``CMD`` (``mlflow server``,
which starts uvicorn) in its own process group and reads its stdin, a pipe whose write end
only the owner holds. When the owner ends for any reason, SIGKILL of its process group
included, the kernel closes that pipe; on EOF this process sends SIGTERM to its group and
SIGKILL after :data:`GRACE_SECONDS`, so no ``mlflow server`` or uvicorn worker is left
holding the port. It sets umask 077 first, so every file and folder the server creates is
private to its owner. Standard library only: it must start fast.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

GRACE_SECONDS = 10.0


def _others_in_group() -> list[int]:
    """Live processes of this process group, this one excepted."""
    pgid, me, found = os.getpgid(0), os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def _signal_others(sig: signal.Signals) -> None:
    for pid in _others_in_group():
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _end_group(child: subprocess.Popen) -> None:
    """SIGTERM the rest of the group, wait up to the grace period, SIGKILL what is left."""
    _signal_others(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline and (child.poll() is None or _others_in_group()):
        time.sleep(0.1)
    _signal_others(signal.SIGKILL)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m deeppert.tracking._lifeline CMD [ARGS...]", file=sys.stderr)
        return 2
    # A SIGTERM sent to the group (TrackingServer.stop) also reaches CMD; this process waits
    # for CMD to exit instead of dying first. Handlers are reset in CMD by exec.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    os.umask(0o077)
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def watch_owner() -> None:
        # The raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader
        # holds its lock, and the interpreter's shutdown then aborts ("Fatal Python error:
        # _enter_buffered_busy") when it closes sys.stdin.
        try:
            while os.read(0, 65536):  # b"" at EOF: the owner closed the pipe or died
                pass
        except OSError:
            pass
        _end_group(child)

    threading.Thread(target=watch_owner, name="lifeline", daemon=True).start()
    code = child.wait()
    _end_group(child)  # uvicorn workers may outlive the server process
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
