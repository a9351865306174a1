"""Shared fixtures: one torch thread, a SQLite tracking server, the real-data path, PostgreSQL
(the machine's, and a private cluster a test may restart).

SIGTERM to pytest is turned into KeyboardInterrupt, so an interrupted run still runs every
fixture's teardown and ``finally`` block, which end the processes the tests started. What a
SIGKILLed run cannot end (Ray's agents ignore SIGTERM and outlive their driver) the reaper
(tests/reaper.py) ends: a watcher that outlives the session and signals every process that
inherited the session's token.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEED_DATA = REPO.parent / "shared" / "data" / "deeppert-seed"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
LIFELINE = REPO / "deeppert" / "tracking" / "_lifeline.py"
REAPER = pytest.StashKey[subprocess.Popen]()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"pytest received {signal.Signals(signum).name}")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    if "PYTEST_XDIST_WORKER" not in os.environ:  # one reaper, in the controller, before workers
        from reaper import start_reaper

        config.stash[REAPER] = start_reaper()  # its pipe closes when this process ends


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files that hold a ``slow`` test first, the quick files after them, each in its usual
    order: with ``--dist loadfile`` (``make test``) a worker takes the next file in this order
    when it is nearly done, so the quick files last fill in while the other worker finishes
    its last slow one. (xdist's own default, most tests first, put the one-test files that
    take minutes last; the Makefile turns it off with ``--no-loadscope-reorder``.)"""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: keeps each file whole


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads; on a loaded 2-core box OpenMP waits cost ~100x.

    Use per module: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory):
    """A tracking server on a fresh SQLite file, for one test module."""
    from deeppert.tracking.server import ServerConfig, TrackingServer

    with TrackingServer(
        ServerConfig(data_dir=str(tmp_path_factory.mktemp("mlflow-sqlite")), port=0)
    ) as srv:
        yield srv


@pytest.fixture(scope="session")
def seed_data() -> Path:
    """Path to ../shared/data/deeppert-seed; skips the test cleanly when it is absent."""
    if not SEED_DATA.is_dir():
        pytest.skip(f"real data not found at {SEED_DATA} (a fresh clone without ../shared)")
    return SEED_DATA


@pytest.fixture(scope="session")
def postgres_uri() -> str:
    """A SQLAlchemy URI for PostgreSQL at 127.0.0.1:5432 (trust auth).

    Skips when the server is down, except under CI=true, where a missing server is a failure.
    """
    import psycopg2

    uri = os.environ.get("DEEPPERT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        psycopg2.connect(uri, connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL required under CI=true but unreachable at {uri}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {uri}: {exc}")
    return uri


class PrivatePostgres:
    """A PostgreSQL cluster of one test's own, in a temp dir, on a free port, trust auth.

    Its postmaster runs under the tracking server's lifeline (:mod:`deeppert.tracking.
    _lifeline`): when the test process ends, however (SIGKILL included), the lifeline's pipe
    closes and it ends the postmaster's whole process group. As root the cluster belongs to
    the ``postgres`` user (``initdb`` refuses root).
    """

    def __init__(self, root: Path) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not binaries:
            raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb")
        self.bin = Path(binaries[-1]).parent
        self.root, self.data = root, root / "data"
        self.as_user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
        if os.geteuid() != 0:
            self.as_user = []
        else:
            shutil.chown(root, "postgres", "postgres")
        from deeppert.tracking.server import free_port

        self.port = free_port()
        self._proc: subprocess.Popen | None = None
        subprocess.run(
            [*self.as_user, str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
             "-A", "trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    @property
    def uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ready(self) -> bool:
        command = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(command, timeout=30).returncode == 0

    def start(self, timeout: float = 60.0) -> None:
        log = (self.root / "postgres.log").open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, str(LIFELINE), *self.as_user, str(self.bin / "postgres"),
             "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.root / "postgres.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"private PostgreSQL did not start:\n{tail}")
            time.sleep(0.2)

    def stop(self, timeout: float = 60.0) -> None:
        """Fast shutdown (SIGINT to the postmaster: clients are disconnected), then the group."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)
        except (OSError, ValueError, IndexError):
            pass  # not up (yet): the group signal below ends it
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            proc.stdin.close()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_postgres():
    """A running :class:`PrivatePostgres` (stopped and removed after the test); skips when no
    PostgreSQL binaries are installed, except under CI=true, where that is a failure."""
    root = Path(tempfile.mkdtemp(prefix="deeppert-pg-", dir="/tmp"))  # short socket path
    try:
        try:
            pg = PrivatePostgres(root)
        except (FileNotFoundError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            message = f"cannot create a private PostgreSQL cluster: {exc} {detail.decode()[-500:]}"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        pg.start()
        try:
            yield pg
        finally:
            pg.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
