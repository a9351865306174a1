"""The tracking server process: start on SQLite and PostgreSQL, auth, clean stop, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
import requests

from deeppert.errors import DeeppertError
from deeppert.tracking import (
    ServerConfig,
    TrackingServer,
    TrackingSession,
    check_server,
    get_or_create_experiment,
)

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
ADMIN_PASSWORD = "test-admin-" + uuid.uuid4().hex[:12]
SECRET_KEY = "test-key-" + uuid.uuid4().hex


def _group_members(pgid: int) -> list[int]:
    """Live pids whose process group is ``pgid`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def _drop_database(admin_uri: str, name: str) -> None:
    conn = psycopg2.connect(admin_uri)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def _database_exists(admin_uri: str, name: str) -> bool:
    conn = psycopg2.connect(admin_uri)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        found = cur.fetchone() is not None
    conn.close()
    return found


def _with_database(admin_uri: str, name: str) -> str:
    return admin_uri.rsplit("/", 1)[0] + f"/{name}"


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and everything under it, by path relative to ``root``."""
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}


def test_sqlite_server_starts_serves_and_stops_its_whole_process_group(tmp_path: Path) -> None:
    """Start, serve, stop with exit 0 (the lifeline does not abort); the state it finds or
    creates, artifacts logged through it included, is private to its owner."""
    from mlflow import MlflowClient

    data = tmp_path / "srv"
    (data / "artifacts").mkdir(parents=True, mode=0o755)
    data.chmod(0o755)
    (data / "server.log").write_text("")
    (data / "server.log").chmod(0o644)
    server = TrackingServer(ServerConfig(data_dir=str(data), port=0))
    try:
        server.start()
        pgid = server.pid
        assert pgid is not None
        assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
        assert (data / "mlflow.db").is_file()
        assert (data / "artifacts").is_dir()
        assert _group_members(pgid), "server process group should be alive while running"
        print(f"\nMEASURE start_seconds sqlite {server.startup_seconds:.2f}")
        check_server(server.url)  # reachable: no error
        client = MlflowClient(server.url)
        run = client.create_run(
            get_or_create_experiment(TrackingSession.for_uri(server.url), "modes")
        )
        client.log_text(run.info.run_id, "private", "notes/a.txt")
    finally:
        code = server.stop()
    assert not server.running
    assert _group_members(pgid) == []
    assert code == 0
    assert "Fatal Python error" not in (data / "server.log").read_text()
    modes = _modes(data)
    assert any(p.endswith("notes/a.txt") for p in modes), modes
    loose = {p: oct(m) for p, m in modes.items() if m & 0o077}
    assert loose == {}, loose
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/health", timeout=2)


@pytest.mark.postgres
def test_postgres_server_creates_database_and_migrates(postgres_uri: str, tmp_path: Path) -> None:
    name = f"deeppert_test_{uuid.uuid4().hex[:10]}"
    assert not _database_exists(postgres_uri, name)
    config = ServerConfig(
        data_dir=str(tmp_path), backend_store_uri=_with_database(postgres_uri, name), port=0
    )
    try:
        with TrackingServer(config) as server:
            assert _database_exists(postgres_uri, name)
            conn = psycopg2.connect(_with_database(postgres_uri, name))
            with conn.cursor() as cur:
                cur.execute("SELECT version_num FROM alembic_version")
                assert len(cur.fetchall()) == 1  # MLflow ran its migrations
                cur.execute("SELECT count(*) FROM experiments")
                assert cur.fetchone()[0] >= 1  # the Default experiment
            conn.close()
            assert not (tmp_path / "mlflow.db").exists()
            print(f"\nMEASURE start_seconds postgres(fresh db) {server.startup_seconds:.2f}")
            eid = get_or_create_experiment(TrackingSession.for_uri(server.url), "pg-check")
        # A restart on the existing, migrated database keeps the data.
        with TrackingServer(config) as server:
            print(f"MEASURE start_seconds postgres(existing db) {server.startup_seconds:.2f}")
            assert get_or_create_experiment(TrackingSession.for_uri(server.url), "pg-check") == eid
    finally:
        _drop_database(postgres_uri, name)


def test_auth_refuses_unauthenticated_requests_and_accepts_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = dict(os.environ)
    env.update(
        MLFLOW_AUTH_ADMIN_USERNAME="admin",
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
        MLFLOW_FLASK_SERVER_SECRET_KEY=SECRET_KEY,
    )
    with TrackingServer(ServerConfig(data_dir=str(tmp_path), port=0, auth=True), env=env) as srv:
        api = f"{srv.url}/api/2.0/mlflow/experiments/search"
        assert requests.get(api, params={"max_results": 1}, timeout=10).status_code == 401
        bad = requests.get(api, params={"max_results": 1}, auth=("admin", "wrong-password-123"))
        assert bad.status_code == 401
        ok = requests.get(api, params={"max_results": 1}, auth=("admin", ADMIN_PASSWORD))
        assert ok.status_code == 200
        # The ini holds the database URI but never the password; the users' database, with
        # its password hashes, is the owner's alone.
        assert ADMIN_PASSWORD not in (tmp_path / "basic_auth.ini").read_text()
        assert (tmp_path / "basic_auth.db").stat().st_mode & 0o777 == 0o600

        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        with pytest.raises(DeeppertError, match="refused no credentials"):
            check_server(srv.url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        check_server(srv.url)
        # the MLflow client authenticates
        eid = get_or_create_experiment(TrackingSession.for_uri(srv.url), "authed")
        assert eid != "0"


@pytest.mark.parametrize(
    ("password", "key", "missing"),
    [
        (None, None, "MLFLOW_AUTH_ADMIN_PASSWORD"),
        ("short", SECRET_KEY, "MLFLOW_AUTH_ADMIN_PASSWORD"),
        (ADMIN_PASSWORD, None, "MLFLOW_FLASK_SERVER_SECRET_KEY"),
    ],
    ids=["no-secrets", "short-password", "no-session-key"],  # the secrets are random per run
)
def test_auth_without_secrets_refuses_to_start(
    tmp_path: Path, password: str | None, key: str | None, missing: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    if password is not None:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
    if key is not None:
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = key
    server = TrackingServer(ServerConfig(data_dir=str(tmp_path), port=0, auth=True), env=env)
    with pytest.raises(DeeppertError, match=missing):
        server.start()
    assert server.pid is None and not (tmp_path / "server.log").exists()


def test_check_server_unreachable_names_uri_quickly() -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(DeeppertError, match=uri.replace(".", r"\.")):
        check_server(uri)
    assert time.perf_counter() - t0 < 5.0
    with pytest.raises(DeeppertError, match="not a tracking server address"):
        check_server("sqlite:///mlflow.db")


def test_port_in_use_is_refused(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = TrackingServer(ServerConfig(data_dir=str(tmp_path), port=port))
        with pytest.raises(DeeppertError, match=f"127.0.0.1:{port}"):
            server.start()
        assert server.pid is None


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "deeppert", "server", *args]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("foo://bar", "not a database URI"),
        ("postgresql://postgres@127.0.0.1:1/nope", "cannot reach PostgreSQL"),
        ("sqlite:///{tmp}/a-file/mlflow.db", "backend store folder"),
    ],
)
def test_cli_bad_backend_uri_exits_nonzero_with_message(
    tmp_path: Path, uri: str, message: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory")  # MLflow cannot create a DB under it
    uri = uri.format(tmp=tmp_path)
    proc = subprocess.run(
        _cli("--backend-store-uri", uri, "--port", "0", "--data-dir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "deeppert server: error:" in proc.stderr
    assert message in proc.stderr


def test_cli_runs_in_foreground_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _cli("--port", "0", "--data-dir", str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        line = proc.stdout.readline()  # blocks until the server is healthy (or the CLI fails)
        assert line.startswith("MLFLOW_TRACKING_URI=http://127.0.0.1:"), proc.stderr.read()
        url = line.strip().split("=", 1)[1]
        assert requests.get(f"{url}/health", timeout=5).status_code == 200
        server_pids = _children(proc.pid)
        assert server_pids, "the CLI should have a server child process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=2)
    for pid in server_pids:
        assert _group_members(pid) == []


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: Run in a fresh interpreter (MLflow's auth module reads its ini once, at import): verify
#: ``alice`` N times through MLflow's own basic-auth request hook, counting password checks.
_COUNT_VERIFICATIONS = """
import base64, json, sys
from flask import Flask, Response
import mlflow.server.auth as auth

auth.store.init_db(auth.auth_config.database_uri)
auth.store.create_user("alice", sys.argv[1])
checks = []
real = auth.store.authenticate_user
auth.store.authenticate_user = lambda *a, **k: checks.append(a[0]) or real(*a, **k)
app = Flask("probe")

def status(password):
    token = base64.b64encode(f"alice:{password}".encode()).decode()
    with app.test_request_context(headers={"Authorization": "Basic " + token}):
        answer = auth.authenticate_request_basic_auth()
    return answer.status_code if isinstance(answer, Response) else 200

right = [status(sys.argv[1]) for _ in range(20)]
checks_right = len(checks)
wrong = [status("not-" + sys.argv[1]) for _ in range(3)]
print(json.dumps({"right": right, "checks_right": checks_right, "wrong": wrong,
                  "checks_wrong": len(checks) - checks_right}))
"""


@pytest.mark.parametrize(("ttl", "checks"), [(None, 1), (0, 20)], ids=["default-ttl", "ttl-0"])
def test_auth_cache_verifies_a_password_once_and_still_refuses_a_wrong_one(
    tmp_path: Path, ttl: int | None, checks: int
) -> None:
    """The ini ``deeppert server --auth`` writes turns MLflow's credential cache on: 20 requests
    with the same right password cost one password check (20 with the cache off), and a wrong
    password is refused, and checked each time, after the right one was cached."""
    import json

    config = ServerConfig(data_dir=str(tmp_path), auth=True, auth_cache_ttl=ttl)
    ini = TrackingServer(config)._write_auth_config(tmp_path)
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini)}
    env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    proc = subprocess.run(
        [sys.executable, "-c", _COUNT_VERIFICATIONS, ADMIN_PASSWORD],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["right"] == [200] * 20
    assert got["checks_right"] == checks
    assert got["wrong"] == [401] * 3
    assert got["checks_wrong"] == 3


def test_auth_ini_keeps_user_settings_and_drops_secrets(tmp_path: Path) -> None:
    """A user's own basic_auth.ini settings survive a restart; the config's TTL wins when set."""
    import configparser

    from deeppert.tracking.server import DEFAULT_AUTH_CACHE_TTL

    def written(ttl: int | None) -> configparser.SectionProxy:
        config = ServerConfig(data_dir=str(tmp_path), auth=True, auth_cache_ttl=ttl)
        path = TrackingServer(config)._write_auth_config(tmp_path)
        assert path.stat().st_mode & 0o777 == 0o600
        ini = configparser.ConfigParser(interpolation=None)
        ini.read(path)
        return ini["mlflow"]

    assert written(None)["auth_cache_ttl_seconds"] == str(DEFAULT_AUTH_CACHE_TTL)
    (tmp_path / "basic_auth.ini").write_text(
        "[mlflow]\nauth_cache_ttl_seconds = 7\nauth_cache_max_size = 50\n"
        "admin_password = do-not-keep-me\ndefault_permission = MANAGE\n"
    )
    kept = written(None)
    assert (kept["auth_cache_ttl_seconds"], kept["auth_cache_max_size"]) == ("7", "50")
    assert "admin_password" not in kept and kept["default_permission"] == "READ"
    assert written(0)["auth_cache_ttl_seconds"] == "0"
    assert written(None)["auth_cache_ttl_seconds"] == "0"  # what the last start wrote stays


def _where_read_only(paths: list[Path], command: list[str]) -> list[str]:
    """``command`` run where each of ``paths`` cannot be written: under a private read-only
    bind mount for root (permission bits do not stop root), after ``chmod a-w`` otherwise."""
    if os.geteuid() != 0:
        for path in paths:
            path.chmod(0o500 if path.is_dir() else 0o400)
        return command
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root without a private mount namespace: {probe.stderr.strip()}")
    mounts = " && ".join(f"mount --bind -o ro '{p}' '{p}'" for p in paths)
    script = f'{mounts} && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *command]


@pytest.mark.parametrize(
    ("read_only", "message"),
    [
        ("artifacts", "artifact store {data}/artifacts is not writable: [Errno 30] Read-only"),
        ("mlflow.db", "backend store {data}/mlflow.db cannot be written: attempt to write a"),
    ],
    ids=["artifact-store", "database"],
)
def test_cli_refuses_state_it_cannot_write(tmp_path: Path, read_only: str, message: str) -> None:
    """A read-only artifact store or database: one line naming it, exit 2, no server started."""
    import sqlite3

    data = tmp_path / "srv"
    (data / "artifacts").mkdir(parents=True)
    sqlite3.connect(data / "mlflow.db").execute("CREATE TABLE t (x INTEGER)").connection.close()
    command = _where_read_only([data / read_only], _cli("--port", "0", "--data-dir", str(data)))
    if os.geteuid() != 0:
        message = message.replace("[Errno 30] Read-only", "[Errno 13] Permission denied")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("deeppert server: error: " + message.format(data=data)), lines
    assert not (data / "server.log").exists()


_OWN_A_POSTGRES = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from conftest import PrivatePostgres
pg = PrivatePostgres(Path(sys.argv[1]))
pg.start()
print(pg.port, flush=True)
time.sleep(600)
"""


@pytest.mark.postgres
def test_private_postgres_restarts_and_ends_with_its_owner(private_postgres) -> None:
    """The fixture's cluster keeps its data across a restart, and a cluster whose owner is
    SIGKILLed leaves no process behind (its lifeline ends the group)."""
    import shutil
    import tempfile

    from sweep_driver import ray_processes, wait_for

    conn = psycopg2.connect(private_postgres.uri)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE kept (x integer); INSERT INTO kept VALUES (7)")
    private_postgres.restart()
    with pytest.raises(psycopg2.OperationalError):
        with conn.cursor() as cur:
            cur.execute("SELECT 1")  # the restart ended every session
    conn = psycopg2.connect(private_postgres.uri)
    with conn.cursor() as cur:
        cur.execute("SELECT x FROM kept")
        assert cur.fetchall() == [(7,)]
    conn.close()

    root = Path(tempfile.mkdtemp(prefix="deeppert-pg-", dir="/tmp"))
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWN_A_POSTGRES, str(root), str(REPO / "tests")],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert owner.stdout.readline().strip().isdigit()
        assert ray_processes(str(root)), "the postmaster names its data dir on its command line"
        os.killpg(owner.pid, signal.SIGKILL)
        owner.wait(10)
        wait_for(lambda: not ray_processes(str(root)), 30, "the orphaned postmaster to end")
    finally:
        for pid, _ in ray_processes(str(root)):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
