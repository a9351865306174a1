"""Shared fixtures: one torch thread, a SQLite tracking server, the real-data path, PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEED_DATA = REPO.parent / "shared" / "data" / "deeppert-seed"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


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
