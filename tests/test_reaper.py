"""The test session's reaper (tests/reaper.py) ends what a SIGKILLed session left, and only that."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_sigkilled_session_leaves_no_process_and_others_are_untouched(tmp_path: Path):
    """A 'session' (a script that starts the reaper, then a child in its own session that
    ignores SIGTERM, like Ray's agents) is SIGKILLed: the child is gone within the grace
    period; a process of another session (started here) keeps running."""
    script = tmp_path / "session.py"
    script.write_text(
        textwrap.dedent(f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from reaper import start_reaper
        reaper = start_reaper()
        child = subprocess.Popen([sys.executable, "-c", {STUBBORN!r}],
                                 start_new_session=True, stdout=subprocess.PIPE, text=True)
        child.stdout.readline()
        print(child.pid, flush=True)
        time.sleep(600)
    """)
    )
    bystander = subprocess.Popen(
        [sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True
    )
    session = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert bystander.stdout.readline().strip() == "ready"
        child = int(session.stdout.readline())
        assert _alive(child)
        session.send_signal(signal.SIGKILL)
        session.wait(timeout=10)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child), f"pid {child} outlived its SIGKILLed session"
        assert bystander.poll() is None, "the reaper touched a process of another session"
    finally:
        for proc in (bystander, session):
            proc.kill()
            proc.wait()
        try:
            os.kill(child, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass
