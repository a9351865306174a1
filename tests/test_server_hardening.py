"""``deeppert server`` as users run it: secrets stay off disk and argv, and it dies with its group.

Real processes only: the ``deeppert server`` command in its own process group, ``mlflow
server`` with uvicorn under it, PostgreSQL at 127.0.0.1:5432.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
import requests

from deeppert.tracking.server import free_port

pytestmark = [pytest.mark.mlflow, pytest.mark.slow, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[1]


def start_cli(data_dir: Path, port: int, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """``deeppert server`` as its own process group (what a shell job or a service would be)."""
    return subprocess.Popen(
        [sys.executable, "-m", "deeppert", "server", "--data-dir", str(data_dir),
         "--port", str(port), *extra],
        cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, text=True,
    )  # fmt: skip


def wait_healthy(proc: subprocess.Popen, port: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"server on port {port} not healthy after {timeout:.0f}s")


def processes_in(data_dir: Path) -> list[tuple[int, str]]:
    """Live processes whose working directory is ``data_dir`` (mlflow server and uvicorn)."""
    found, target = [], str(data_dir.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") != target:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z":
            found.append((int(entry.name), cmd[:100]))
    return found


def kill_leftovers(data_dir: Path) -> None:
    for pid, _ in processes_in(data_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_group_kill_leaves_no_server_behind_and_the_port_restarts(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "srv"
    first = start_cli(data_dir, port)
    try:
        wait_healthy(first, port)
        assert processes_in(data_dir), "mlflow server should run in the data dir"
        # While it runs, a second start on the port names who holds it.
        clash = subprocess.run(
            [sys.executable, "-m", "deeppert", "server", "--data-dir", str(tmp_path / "other"),
             "--port", str(port)],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert clash.returncode == 2, clash.stderr[-2000:]
        assert "held by a stale MLflow tracking server (pid" in clash.stderr
        assert str(data_dir.resolve()) in clash.stderr
        t0 = time.monotonic()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        deadline = time.monotonic() + 20
        while processes_in(data_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = processes_in(data_dir)
        print(
            f"\nMEASURE after SIGKILL of the `deeppert server` group: {len(left)} server "
            f"processes left after {time.monotonic() - t0:.1f}s {left}"
        )
        assert left == []
        second = start_cli(data_dir, port)
        try:
            wait_healthy(second, port)
        finally:
            stop(second)
    finally:
        stop(first)
        kill_leftovers(data_dir)


@pytest.mark.postgres
def test_database_password_stays_off_disk_and_off_every_command_line(
    postgres_uri: str, tmp_path: Path
) -> None:
    password = "pgpw-" + secrets.token_hex(12)
    admin_password = "admin-" + secrets.token_hex(12)
    key = "key-" + secrets.token_hex(16)
    database = "deeppert_auth_" + secrets.token_hex(4)
    base = postgres_uri.rsplit("/", 1)[0].replace("postgres@", f"postgres:{password}@", 1)
    assert password in base, "the test URI must carry the password"
    port = free_port()
    data_dir = tmp_path / "srv"
    env = {
        "DEEPPERT_BACKEND_STORE_URI": f"{base}/{database}",
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": key,
    }
    proc = start_cli(data_dir, port, "--auth", env=env)
    try:
        wait_healthy(proc, port)
        ok = requests.get(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=("admin", admin_password),
            timeout=10,
        )
        assert ok.status_code == 200, ok.text[:500]
        conn = psycopg2.connect(postgres_uri)
        with conn.cursor() as cur:  # the server really stores in that PostgreSQL database
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            assert cur.fetchone() is not None
        conn.close()
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert "mlflow server" in ps or "mlflow.server" in ps or "uvicorn" in ps
        hits = {s: ps.count(s) for s in (password, admin_password, key)}
        files = [p for p in data_dir.rglob("*") if p.is_file()]
        disk = {
            str(p.relative_to(data_dir)): p.read_bytes().count(password.encode()) for p in files
        }
        ini = data_dir / "basic_auth.ini"
        print(
            f"\nMEASURE secrets on `ps -eo args` (db password, admin password, session key): "
            f"{list(hits.values())}; db password in {len(files)} data-dir files: "
            f"{sum(disk.values())}; basic_auth.ini mode {oct(ini.stat().st_mode & 0o777)}"
        )
        assert list(hits.values()) == [0, 0, 0]
        assert sum(disk.values()) == 0, disk
        assert ini.stat().st_mode & 0o077 == 0
    finally:
        stop(proc)
        kill_leftovers(data_dir)
        conn = psycopg2.connect(postgres_uri)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.close()


@pytest.mark.parametrize(("default", "bob_reads"), [("READ", 200), ("NO_PERMISSIONS", 403)])
def test_default_permission_decides_what_other_users_see(
    tmp_path: Path, default: str, bob_reads: int
) -> None:
    """alice's experiment: bob (no grant) reads it only under READ, and never writes to it."""
    from deeppert.tracking.server import ServerConfig, TrackingServer

    admin = "adm-" + secrets.token_hex(10)
    env = {
        **os.environ,
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    config = ServerConfig(data_dir=str(tmp_path), port=0, auth=True, default_permission=default)
    with TrackingServer(config, env=env) as srv:
        api = f"{srv.url}/api/2.0/mlflow"
        users = {"alice": "alice-" + secrets.token_hex(8), "bob": "bob-" + secrets.token_hex(8)}
        for user, pw in users.items():
            made = requests.post(
                f"{api}/users/create",
                json={"username": user, "password": pw},
                auth=("admin", admin),
                timeout=30,
            )
            assert made.status_code == 200, made.text[:300]
        alice, bob = ("alice", users["alice"]), ("bob", users["bob"])
        created = requests.post(
            f"{api}/experiments/create", json={"name": "alices"}, auth=alice, timeout=30
        )
        assert created.status_code == 200, created.text[:300]
        exp_id = created.json()["experiment_id"]
        read = requests.get(
            f"{api}/experiments/get", params={"experiment_id": exp_id}, auth=bob, timeout=30
        )
        write = requests.post(
            f"{api}/runs/create", json={"experiment_id": exp_id}, auth=bob, timeout=30
        )
        own = requests.post(
            f"{api}/runs/create", json={"experiment_id": exp_id}, auth=alice, timeout=30
        )
        print(
            f"\nMEASURE default_permission={default}: bob reads alice's experiment -> HTTP "
            f"{read.status_code}, bob writes -> HTTP {write.status_code}, alice writes -> HTTP "
            f"{own.status_code}"
        )
        assert (read.status_code, write.status_code, own.status_code) == (bob_reads, 403, 200)
