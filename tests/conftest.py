"""Shared fixtures: small synthetic data built once per session, the real-data path, PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEED_DATA = REPO.parent / "shared" / "data" / "deeppert-seed"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


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
