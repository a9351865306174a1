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

Server state is private to its owner: the data dir and artifact store are made 0700 and the
databases, auth config and log 0600 at each start, and the server runs with umask 077, so
whatever it creates later is private too. A start refuses, in one line, a data dir, artifact
store or database that cannot be written (:meth:`TrackingServer.check_ready`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, get_args

import requests

from deeppert.errors import DeeppertError
from deeppert.schema import knob

__all__ = [
    "ADMIN_PASSWORD_ENV",
    "ADMIN_USERNAME_ENV",
    "DEFAULT_AUTH_CACHE_TTL",
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
#: Seconds a verified credential stays cached when neither the config nor basic_auth.ini says.
DEFAULT_AUTH_CACHE_TTL = 60

_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_BASIC_AUTH_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"
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
    auth_cache_ttl
        With ``auth``: seconds a verified username/password stays cached in each server worker
        (MLflow's ``auth_cache_ttl_seconds``), so the deliberately slow password hash runs
        once per credential and window instead of on every request. ``0`` turns the cache
        off; ``None`` keeps the value already in ``<data_dir>/basic_auth.ini``, else
        :data:`DEFAULT_AUTH_CACHE_TTL`. The price: a password changed or a user deleted
        through another worker, or in the database directly, is still accepted by a worker
        that cached it until its entry expires.
    startup_timeout
        Seconds to wait for ``/health`` to answer before giving up.
    """

    data_dir: str = knob("mlruns", "server state folder")
    backend_store_uri: str | None = None
    artifacts_dir: str | None = None
    host: str = knob("127.0.0.1", "bind address")
    port: int = knob(5000, "port (0 = any free)")
    workers: int = knob(1, "uvicorn workers")
    auth: bool = False
    auth_database_uri: str | None = None
    default_permission: Permission = knob(
        "READ",
        "with --auth: what users may do where nobody granted them anything (READ: every "
        "authenticated user reads every experiment; NO_PERMISSIONS: nothing until granted)",
    )
    auth_cache_ttl: int | None = knob(
        None,
        "with --auth: seconds a verified password stays cached in each worker (0 = off; None = "
        "auth_cache_ttl_seconds of DATA_DIR/basic_auth.ini, else "
        f"{DEFAULT_AUTH_CACHE_TTL})",
    )
    startup_timeout: float = knob(120.0, "seconds to wait for /health")

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


# Ray's workers bind ports 10002-19999 (its --min/--max-worker-port defaults).
_FIRST_PICKED_PORT = 20000


def _ephemeral_range_start() -> int:
    """The first port the kernel hands to outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n: int, host: str = "127.0.0.1", exclude: tuple[int, ...] = ()) -> list[int]:
    """``n`` distinct TCP ports on ``host`` that were free a moment ago (held open together).

    Picked between Ray's worker ports and the kernel's ephemeral range: a port the kernel
    picks (bind to 0) is an ephemeral one, which any outgoing connection on a busy machine
    can take before the server that was promised it binds it (Ray's dashboard agent then
    fails with "address already in use"); ports below the range are only taken by explicit
    binds. Falls back to the kernel's picks where that band is too narrow.
    """
    import random

    band = list(range(_FIRST_PICKED_PORT, _ephemeral_range_start()))
    random.SystemRandom().shuffle(band)
    if len(band) < 64 * n:
        band = [0] * (4 * n + len(exclude) + 16)  # the kernel's picks
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for candidate in band:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind((host, candidate))
            except OSError:  # taken
                continue
            port = int(sock.getsockname()[1])
            if port not in exclude and port not in ports:
                ports.append(port)
            if len(ports) == n:
                return ports
    raise DeeppertError(f"found only {len(ports)} of {n} free TCP ports on {host}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (see :func:`free_ports`)."""
    return free_ports(1, host)[0]


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

    name = make_url(uri).database
    if not name:
        raise DeeppertError(f"backend store URI {redact_uri(uri)} names no database")
    try:
        conn = _pg_connect(uri, "postgres", connect_timeout)
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


def _pg_connect(uri: str, dbname: str | None = None, connect_timeout: int = 5) -> Any:
    """A psycopg2 connection to the PostgreSQL server of ``uri`` (to ``dbname`` if given,
    else to the URI's database), with the URI's credentials."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    params = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "password": url.password,
        "dbname": dbname or url.database,
        "connect_timeout": connect_timeout,
    }
    return psycopg2.connect(**{k: v for k, v in params.items() if v is not None})


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
        if cfg.auth_cache_ttl is not None and cfg.auth_cache_ttl < 0:
            raise DeeppertError(f"auth cache TTL must be >= 0 seconds, got {cfg.auth_cache_ttl}")
        env = self._server_env()
        _check_port_free(cfg.host, cfg.port)
        uris = [backend] + ([cfg.resolved_auth_database_uri] if cfg.auth else [])
        for uri in uris:
            ensure_database(uri)
        data_dir = Path(cfg.data_dir).resolve()
        _private_folder(data_dir, "data dir")
        _private_folder(cfg.resolved_artifacts_dir, "artifact store")
        self.check_ready()
        for path in [data_dir / "server.log", data_dir / "basic_auth.ini"] + [
            p for uri in uris for p in _sqlite_files(uri)
        ]:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, 0o600)
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
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._log_file = os.fdopen(fd, "ab")
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

    def check_ready(self) -> None:
        """Raise a one-line :class:`DeeppertError` naming the first part of the server's state
        that cannot be written: the data dir, the artifact store or a database.

        Writes and removes a probe file in each folder and a probe table (rolled back) in a
        SQLite database; asks PostgreSQL whether it accepts writes. Used at :meth:`start`, so
        a server that could not store anything never reports healthy.
        """
        cfg = self.config
        _probe_folder(Path(cfg.data_dir).resolve(), "data dir")
        _probe_folder(cfg.resolved_artifacts_dir, "artifact store")
        _probe_database(cfg.resolved_backend_store_uri, "backend store")
        if cfg.auth and cfg.resolved_auth_database_uri != cfg.resolved_backend_store_uri:
            _probe_database(cfg.resolved_auth_database_uri, "auth database")

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
        """Write ``<data_dir>/basic_auth.ini``, mode 0600, and return its path.

        The keys this configuration decides (default permission, database URI, cache TTL when
        set) are written over what the file holds; any other setting a user added there is
        kept, as is their ``auth_cache_ttl_seconds`` when :attr:`ServerConfig.auth_cache_ttl`
        is ``None``. No secret is written: the admin password comes from the environment (an
        ``admin_password`` in the file is dropped) and a database password is stripped
        (``PGPASSWORD`` carries it).
        """
        import configparser

        path = data_dir / "basic_auth.ini"
        ini = configparser.ConfigParser(interpolation=None)
        try:
            ini.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise DeeppertError(f"{path} is not a valid ini file: {exc}".splitlines()[0]) from exc
        if not ini.has_section("mlflow"):
            ini.add_section("mlflow")
        section = ini["mlflow"]
        section.pop("admin_password", None)
        section["default_permission"] = self.config.default_permission
        section["database_uri"] = _without_password(self.config.resolved_auth_database_uri)
        section.setdefault("authorization_function", _BASIC_AUTH_FUNCTION)
        section.setdefault("grant_default_workspace_access", "false")
        ttl = self.config.auth_cache_ttl
        if ttl is not None or "auth_cache_ttl_seconds" not in section:
            section["auth_cache_ttl_seconds"] = str(DEFAULT_AUTH_CACHE_TTL if ttl is None else ttl)
        if not section["auth_cache_ttl_seconds"].strip().isdigit():
            raise DeeppertError(
                f"{path}: auth_cache_ttl_seconds = {section['auth_cache_ttl_seconds']!r} is not "
                "a whole number of seconds"
            )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            ini.write(fh)
        os.replace(tmp, path)
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


def _private_folder(path: Path, what: str) -> None:
    """Create ``path`` if missing and make it 0700 (only its owner enters it)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DeeppertError(f"cannot create {what} {path}: {_reason(exc)}") from exc
    try:
        os.chmod(path, 0o700)
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise DeeppertError(f"{what} {path} is not writable: {_reason(exc)}") from exc
        raise DeeppertError(f"cannot make {what} {path} private (0700): {_reason(exc)}") from exc


def _reason(exc: OSError) -> str:
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno else str(exc)


def _sqlite_files(uri: str) -> list[Path]:
    """The database file of a ``sqlite:///`` URI and its journal/WAL siblings (else none)."""
    if _scheme(uri) != "sqlite" or not uri.startswith("sqlite:///") or ":memory:" in uri:
        return []
    db = Path(uri[len("sqlite:///") :].split("?", 1)[0])
    return [db] + [db.with_name(db.name + s) for s in ("-journal", "-wal", "-shm")]


def _probe_folder(path: Path, what: str) -> None:
    """Write and remove a file in ``path`` (a real write: permission bits do not stop root)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".deeppert-write-probe-", dir=path)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        raise DeeppertError(f"{what} {path} is not writable: {_reason(exc)}") from exc


def _probe_database(uri: str, what: str) -> None:
    """Check that the database behind ``uri`` accepts a write (SQLite: a rolled-back table;
    PostgreSQL: not read-only). A SQLite file not yet created is covered by its folder's probe;
    other schemes are left to MLflow."""
    scheme = _scheme(uri)
    if scheme == "sqlite":
        files = _sqlite_files(uri)
        if not files or not files[0].exists():
            if files:
                _probe_folder(files[0].parent, f"{what} folder")
            return
        import sqlite3

        try:
            conn = sqlite3.connect(files[0], timeout=30, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("CREATE TABLE deeppert_write_probe (x INTEGER)")
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise DeeppertError(f"{what} {files[0]} cannot be written: {exc}") from exc
    elif scheme == "postgresql":
        import psycopg2

        try:
            conn = _pg_connect(uri)
            try:
                with conn.cursor() as cur:
                    cur.execute("SHOW transaction_read_only")
                    read_only = cur.fetchone()[0] == "on"
            finally:
                conn.close()
        except psycopg2.Error as exc:
            raise DeeppertError(
                f"{what} {redact_uri(uri)}: {str(exc).strip().splitlines()[0]}"
            ) from exc
        if read_only:
            raise DeeppertError(f"{what} {redact_uri(uri)} is read-only (a standby?)")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
