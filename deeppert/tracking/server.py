"""Start, health-check and stop an MLflow tracking server as a child process.

The server always proxies artifacts (``--serve-artifacts``), so clients only ever talk HTTP
to it: trials never open the SQLite file themselves (concurrent writers would lock it).
Backends: an embedded SQLite file under ``data_dir`` (default) or any SQLAlchemy database
URI; for PostgreSQL the database is created when missing and MLflow migrates the schema
itself on start. Basic authentication (MLflow's ``basic-auth`` app) takes its secrets from
environment variables only. A database password in a URI never reaches the server's command
line nor ``data_dir``: the server gets the URI without it and the password as ``PGPASSWORD``
in its environment (readable only by the same user). The server runs under a lifeline
(:mod:`deeppert.tracking._lifeline`): its whole process group ends when its owner does,
even when the owner is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, get_args

import requests

from deeppert.errors import DeeppertError

__all__ = [
    "ADMIN_PASSWORD_ENV",
    "ADMIN_USERNAME_ENV",
    "SECRET_KEY_ENV",
    "MIN_SECRET_LENGTH",
    "ServerConfig",
    "TrackingServer",
    "ensure_database",
    "free_port",
    "redact_uri",
]

#: Environment variables read when ``auth=True`` (MLflow's own names).
ADMIN_USERNAME_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"
#: MLflow rejects admin passwords under 12 characters; the same floor applies to the key.
MIN_SECRET_LENGTH = 12

_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_LOG_TAIL_LINES = 40
Permission = Literal["READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"]
_PERMISSIONS = get_args(Permission)


@dataclass(frozen=True)
class ServerConfig:
    """How to run one tracking server.

    Parameters
    ----------
    data_dir
        Folder for the default SQLite file (``mlflow.db``), served artifacts (``artifacts/``),
        the auth database and config, and the server log (``server.log``).
    backend_store_uri
        SQLAlchemy URI of the tracking/registry database; ``None`` means
        ``sqlite:///<data_dir>/mlflow.db``.
    artifacts_dir
        Where served artifacts are stored; ``None`` means ``<data_dir>/artifacts``.
    host, port
        Bind address; ``port=0`` picks a free port at start.
    workers
        uvicorn worker processes (keep 1-2 on small machines).
    auth
        Run MLflow's basic-auth app; needs the secrets named in :data:`ADMIN_PASSWORD_ENV`
        and :data:`SECRET_KEY_ENV`.
    default_permission
        What an authenticated user may do on experiments and models nobody granted them:
        ``READ`` (MLflow's default: every user reads everything), ``NO_PERMISSIONS``
        (nothing until granted), ``EDIT`` or ``MANAGE``.
    auth_database_uri
        Users/permissions database; ``None`` means the backend database for server databases
        and ``sqlite:///<data_dir>/basic_auth.db`` for a SQLite backend.
    startup_timeout
        Seconds to wait for ``/health`` to answer before giving up.
    """

    data_dir: str = "mlruns"
    backend_store_uri: str | None = None
    artifacts_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    auth: bool = False
    auth_database_uri: str | None = None
    default_permission: Permission = "READ"
    startup_timeout: float = 120.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def resolved_backend_store_uri(self) -> str:
        if self.backend_store_uri:
            return _with_psycopg2(self.backend_store_uri)
        return f"sqlite:///{Path(self.data_dir).resolve() / 'mlflow.db'}"

    @property
    def resolved_artifacts_dir(self) -> Path:
        return Path(self.artifacts_dir or Path(self.data_dir) / "artifacts").resolve()

    @property
    def resolved_auth_database_uri(self) -> str:
        if self.auth_database_uri:
            return _with_psycopg2(self.auth_database_uri)
        backend = self.resolved_backend_store_uri
        if _scheme(backend) == "sqlite":
            return f"sqlite:///{Path(self.data_dir).resolve() / 'basic_auth.db'}"
        return backend


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (safe for messages and logs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except ArgumentError:  # not a SQLAlchemy URL, so no password field to hide
        return uri


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_database(uri: str, *, connect_timeout: int = 5) -> bool:
    """Create the PostgreSQL database named in ``uri`` if it does not exist.

    Connects to the ``postgres`` maintenance database of the same server with the same
    credentials. Returns ``True`` when the database was created. SQLite needs nothing (the
    file is created on first use); other schemes are left to MLflow.
    """
    scheme = _scheme(uri)
    if scheme != "postgresql":
        return False
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    name = url.database
    if not name:
        raise DeeppertError(f"backend store URI {redact_uri(uri)} names no database")
    params = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "password": url.password,
        "dbname": "postgres",
        "connect_timeout": connect_timeout,
    }
    try:
        conn = psycopg2.connect(**{k: v for k, v in params.items() if v is not None})
    except psycopg2.OperationalError as exc:
        raise DeeppertError(
            f"cannot reach PostgreSQL for backend store URI {redact_uri(uri)}: "
            f"{str(exc).strip().splitlines()[0]}"
        ) from exc
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            try:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg2.errors.DuplicateDatabase:
                return False  # another starter won the race; the database exists
            return True
    finally:
        conn.close()


class TrackingServer:
    """An ``mlflow server`` child process in its own process group.

    Use as a context manager (``with TrackingServer(cfg) as server: server.url``) or call
    :meth:`start` / :meth:`stop`. Start validates the configuration, creates folders and the
    PostgreSQL database, launches the server and waits for ``/health``; any failure raises
    :class:`~deeppert.errors.DeeppertError` carrying the tail of the server log.
    """

    def __init__(self, config: ServerConfig | None = None, *, env: Mapping[str, str] | None = None):
        self.config = config or ServerConfig()
        self._base_env = dict(os.environ if env is None else env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self.startup_seconds: float | None = None

    # -- properties -----------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://host:port`` of the server (the tracking URI clients use)."""
        return f"http://{self.config.host}:{self.config.port}"

    @property
    def log_path(self) -> Path:
        return Path(self.config.data_dir).resolve() / "server.log"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> TrackingServer:
        """Launch the server and block until it is healthy; returns ``self``."""
        if self.running:
            raise DeeppertError(f"tracking server at {self.url} is already running")
        cfg = self.config
        if cfg.port == 0:
            cfg = self.config = replace(cfg, port=free_port(cfg.host))
        backend = cfg.resolved_backend_store_uri
        _check_backend_uri(backend)
        if cfg.default_permission not in _PERMISSIONS:
            raise DeeppertError(
                f"default permission {cfg.default_permission!r} is not one of {_PERMISSIONS}"
            )
        env = self._server_env()
        _check_port_free(cfg.host, cfg.port)
        ensure_database(backend)
        if cfg.auth:
            ensure_database(cfg.resolved_auth_database_uri)
        data_dir = Path(cfg.data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        cfg.resolved_artifacts_dir.mkdir(parents=True, exist_ok=True)
        uris = [backend] + ([cfg.resolved_auth_database_uri] if cfg.auth else [])
        password = _database_password(uris)
        if password is not None:
            env["PGPASSWORD"] = password
        if cfg.auth:
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self._write_auth_config(data_dir))

        cmd = [
            sys.executable, str(Path(__file__).with_name("_lifeline.py")),
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", _without_password(backend),
            "--serve-artifacts",
            "--artifacts-destination", str(cfg.resolved_artifacts_dir),
            "--host", cfg.host,
            "--port", str(cfg.port),
            "--workers", str(cfg.workers),
        ]  # fmt: skip
        if cfg.auth:
            cmd += ["--app-name", "basic-auth"]
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_start = self._log_file.tell()
        t0 = time.perf_counter()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,  # the lifeline: closed when this process ends, however
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=data_dir,
            start_new_session=True,  # own process group: stop() reaches uvicorn workers too
        )
        try:
            self.wait_healthy(cfg.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - t0
        return self

    def wait_healthy(self, timeout: float = 60.0) -> float:
        """Poll ``/health`` until it answers 200; returns the seconds waited.

        Raises :class:`DeeppertError` with the log tail if the process exits or ``timeout``
        passes first.
        """
        t0 = time.perf_counter()
        deadline = t0 + timeout
        while True:
            if self._proc is None:
                raise DeeppertError(f"tracking server at {self.url} was never started")
            code = self._proc.poll()
            if code is not None:
                raise DeeppertError(
                    f"tracking server at {self.url} exited with code {code} during start "
                    f"(backend {redact_uri(self.config.resolved_backend_store_uri)}); "
                    f"log tail:\n{self.log_tail()}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return time.perf_counter() - t0
            if time.perf_counter() > deadline:
                raise DeeppertError(
                    f"tracking server at {self.url} not healthy after {timeout:.0f} s; "
                    f"log tail:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Terminate the whole process group, wait, kill on timeout; returns the exit code."""
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            # Workers may outlive the parent briefly; make sure none is left behind.
            _signal_group(proc.pid, signal.SIGKILL)
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            code = proc.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines this server wrote to its log."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(getattr(self, "_log_start", 0))
                text = fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def __enter__(self) -> TrackingServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"TrackingServer({self.url}, {state})"

    # -- helpers ----------------------------------------------------------------------
    def _server_env(self) -> dict[str, str]:
        from deeppert.tracking.client import MLFLOW_DEFAULTS  # pandas: not for --help

        env = {**MLFLOW_DEFAULTS, **self._base_env}
        # The job executor (huey workers for GenAI scorers) is not used here; on small
        # machines it only costs processes.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        env.pop("MLFLOW_AUTH_CONFIG_PATH", None)
        if self.config.auth:
            password = env.get(ADMIN_PASSWORD_ENV, "")
            key = env.get(SECRET_KEY_ENV, "")
            missing = [
                f"{name} (at least {MIN_SECRET_LENGTH} characters)"
                for name, value in ((ADMIN_PASSWORD_ENV, password), (SECRET_KEY_ENV, key))
                if len(value) < MIN_SECRET_LENGTH
            ]
            if missing:
                raise DeeppertError(
                    "authentication requested but these environment variables are missing "
                    "or too short: " + ", ".join(missing)
                )
            env.setdefault(ADMIN_USERNAME_ENV, "admin")
        return env

    def _write_auth_config(self, data_dir: Path) -> Path:
        """Write the basic-auth ini, mode 0600, without secrets: the admin password comes from
        the environment and a database password is stripped (``PGPASSWORD`` carries it)."""
        path = data_dir / "basic_auth.ini"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                "[mlflow]\n"
                f"default_permission = {self.config.default_permission}\n"
                f"database_uri = {_without_password(self.config.resolved_auth_database_uri)}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                "grant_default_workspace_access = false\n"
            )
        return path


def _with_psycopg2(uri: str) -> str:
    """Pin a bare ``postgresql://`` URI to psycopg2 (SQLAlchemy 2.1 defaults to psycopg 3,
    which is not installed; psycopg2-binary is)."""
    if uri.lower().startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg2://" + uri.split("://", 1)[1]
    return uri


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""


def _check_backend_uri(uri: str) -> None:
    if _scheme(uri) not in _DB_SCHEMES or "://" not in uri:
        raise DeeppertError(
            f"backend store URI {redact_uri(uri)!r} is not a database URI; use "
            "sqlite:////abs/path/mlflow.db or postgresql://user@host:5432/dbname"
        )


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like uvicorn: a port in TIME_WAIT is fine, a live listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DeeppertError(
                f"cannot bind tracking server to {host}:{port}: {exc}{_port_holder(port)}"
            ) from exc


def _port_holder(port: int) -> str:
    """``; held by ...`` naming the processes listening on ``port`` (an MLflow server of ours
    left over from an earlier start is named as such), or ``""`` when they cannot be seen."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    holders = []
    for entry in os.listdir("/proc") if inodes else []:
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if inodes & {
                os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")
            }:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                holders.append((int(entry), os.getpgid(int(entry)), cmd.strip()))
    if not holders:
        return ""
    pid, pgid, cmd = min(holders)
    if "mlflow" in cmd and "server" in cmd:
        where = os.readlink(f"/proc/{pid}/cwd") if os.path.exists(f"/proc/{pid}/cwd") else "?"
        return (
            f"; held by a stale MLflow tracking server (pid {pid}, process group {pgid}, data "
            f"dir {where}): stop it with `kill -TERM -{pgid}`"
        )
    return f"; held by pid {pid} ({cmd[:120]})"


def _database_password(uris: list[str]) -> str | None:
    """The one password the PostgreSQL URIs carry (``None`` if none); two different ones are
    refused, as ``PGPASSWORD`` can carry only one."""
    from sqlalchemy.engine import make_url

    found = {make_url(u).password for u in uris if _scheme(u) == "postgresql"} - {None}
    if len(found) > 1:
        raise DeeppertError(
            "the backend and auth database URIs carry different passwords; use one PostgreSQL "
            "role for both (its password is passed to the server as PGPASSWORD)"
        )
    return found.pop() if found else None


def _without_password(uri: str) -> str:
    """A PostgreSQL ``uri`` without its password (libpq then reads ``PGPASSWORD``)."""
    if _scheme(uri) != "postgresql":
        return uri
    from sqlalchemy.engine import make_url

    return make_url(uri)._replace(password=None).render_as_string(hide_password=False)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
