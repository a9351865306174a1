"""End every process a test session started, even when the session itself is SIGKILLed.

A fixture's teardown cannot run when pytest is killed, and Ray's agents (DashboardAgent,
RuntimeEnvAgent) outlive a killed driver and ignore SIGTERM. :func:`start_reaper` marks the
session's environment with a token, which every process it starts inherits (Ray's daemons
included), and starts this file as a watcher in its own session, holding the read end of a
pipe that only the test session writes to. When the session ends, however, the kernel
closes the pipe; the watcher then sends SIGTERM to every process whose environment carries
the token, SIGKILL after :data:`GRACE_SECONDS`, and names what it ended on stderr. Processes
of other sessions or users are never touched. Standard library only: it must start fast.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

TOKEN_VARIABLE = "DEEPPERT_TEST_SESSION"
GRACE_SECONDS = 10.0


def marked_processes(token: str) -> dict[int, str]:
    """pid -> command name of this user's live processes whose environment holds ``token``."""
    needle = f"{TOKEN_VARIABLE}={token}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat") as fh:
                name, rest = fh.read().rsplit(")", 1)
            if rest.split()[0] != "Z":
                found[int(entry)] = name.split("(", 1)[1]
        except OSError:  # gone meanwhile, or another user's
            continue
    return found


def _signal_all(pids: dict[int, str], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def reap(token: str) -> dict[int, str]:
    """SIGTERM the marked processes, SIGKILL what is left after the grace period."""
    ended = marked_processes(token)
    _signal_all(ended, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline and marked_processes(token):
        time.sleep(0.2)
    left = marked_processes(token)
    _signal_all(left, signal.SIGKILL)
    ended.update(left)
    return ended


def start_reaper() -> subprocess.Popen:
    """Mark this process's environment and start the watcher; keep the returned handle (its
    stdin is the pipe) alive for as long as the session runs."""
    token = uuid.uuid4().hex
    os.environ[TOKEN_VARIABLE] = token
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE}
    return subprocess.Popen(
        [sys.executable, __file__, token],
        stdin=subprocess.PIPE,
        env=env,
        start_new_session=True,  # a signal to the test session's group does not reach it
    )


def main(token: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while os.read(0, 65536):  # b"" at EOF: the test session ended
            pass
    except OSError:
        pass
    ended = reap(token)
    if ended:
        names = ", ".join(sorted(set(ended.values())))
        print(f"test reaper: ended {len(ended)} process(es) left by the test session: {names}",
              file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
