"""A private local platform: one Ray head and one MLflow server on free ports, started and stopped.

``deeppert cluster start --dir DIR`` (and ``make demo``) use this. What it gets right, each
of which broke a README followed by hand:

- every Ray port is picked free (the GCS default 6379 is Redis's, taken on many machines);
- the head runs with this interpreter's ``bin/`` first on ``PATH``, so ``python`` in
  ``ray job submit -- python ...`` is the venv's, not the system one;
- ``RAY_AUTH_MODE=disabled`` for head and client alike (Ray switches token authentication
  on when ``~/.ray/auth_token`` exists, and head and client then disagree); the head listens on
  127.0.0.1 only;
- each process runs in its own session and is stopped by process group, never with
  ``ray stop`` (which would stop every Ray on the machine).

``DIR/cluster.json`` records the processes and addresses; ``DIR/env.sh`` holds the exports
(``RAY_ADDRESS``, ``MLFLOW_TRACKING_URI``, ``RAY_AUTH_MODE``) to ``source`` in a shell.
``DIR/cluster.lock`` is the folder's lock (``flock``): the start takes it before anything
else and hands it to the MLflow server and the Ray head, which hold it as long as either
lives, so a second start in the same folder, at once or later, fails in one line.
No Ray or MLflow import here: both run as subprocesses.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from deeppert.errors import DeeppertError
from deeppert.tracking.server import free_port, free_ports

__all__ = [
    "ClusterInfo",
    "free_ports",
    "lock_cluster_dir",
    "job_env",
    "ray_head_command",
    "ray_temp_dir",
    "remove_ray_temp_dir",
    "start_ray_head",
    "start_cluster",
    "stop_cluster",
    "stop_group",
    "stop_ray_head",
    "wait_until_answering",
    "check_ray_address",
    "submit_command",
]

_PORT_FLAGS = (
    "--port",
    "--object-manager-port",
    "--node-manager-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)


@dataclass
class ClusterInfo:
    """What ``deeppert cluster start`` started: addresses and process-group ids."""

    ray_address: str  # the job-submission (dashboard) address for `ray job submit`
    tracking_uri: str
    ray_pid: int
    server_pid: int
    folder: str

    def exports(self) -> str:
        """Shell lines that point ``ray job submit`` and the jobs at this cluster."""
        from deeppert.tracking.client import ui_url  # loads pandas: not for stop's errors

        return (
            f"export RAY_ADDRESS={self.ray_address}\n"
            f"export MLFLOW_TRACKING_URI={self.tracking_uri}\n"
            "export RAY_AUTH_MODE=disabled\n"
            f"# MLflow UI: {ui_url(self.tracking_uri)}\n"
        )


def job_env(base: dict | None = None) -> dict:
    """Environment for the head and for ``ray job submit``: venv first on PATH, auth off."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["RAY_AUTH_MODE"] = "disabled"
    return env


def ray_temp_dir(folder: Path) -> Path:
    """The Ray head's own temp dir for ``folder``: short (Ray's sockets live under it) and not
    the shared /tmp/ray, where a second cluster started on the machine takes over
    ``session_latest`` and this head's jobs then fail to fetch their working directory."""
    digest = hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"deeppert-ray-{digest}"


def remove_ray_temp_dir(folder: Path) -> None:
    """Remove what the stopped head of ``folder`` left in its temp dir."""

    def already_gone(_func, _path, exc_info) -> None:  # Ray's last processes unlink as we walk
        if not issubclass(exc_info[0], FileNotFoundError):
            raise exc_info[1]

    if ray_temp_dir(folder).exists():
        shutil.rmtree(ray_temp_dir(folder), onerror=already_gone)


def ray_head_command(dashboard_port: int, num_cpus: int, temp_dir: Path) -> list[str]:
    """``ray start --head --block`` on 127.0.0.1 with every port picked free and distinct."""
    ports = free_ports(len(_PORT_FLAGS), exclude=(dashboard_port,))
    ray = str(Path(sys.executable).parent / "ray")
    return [
        ray if Path(ray).exists() else "ray",
        "start",
        "--head",
        "--block",
        "--node-ip-address", "127.0.0.1",
        "--num-cpus", str(num_cpus),
        "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dashboard_port),
        *[arg for flag, port in zip(_PORT_FLAGS, ports) for arg in (flag, str(port))],
        "--temp-dir", str(temp_dir),
        "--disable-usage-stats",
    ]  # fmt: skip


def start_ray_head(
    folder: Path, *, num_cpus: int, cwd: Path | None = None, pass_fds: tuple[int, ...] = ()
) -> tuple:
    """Start a Ray head in its own session; returns ``(Popen, dashboard address)`` once it
    answers. ``pass_fds`` stay open in the head's ``ray start`` process (a folder lock)."""
    port = free_port()
    log = (folder / "ray_head.log").open("wb")
    proc = subprocess.Popen(
        ray_head_command(port, num_cpus, ray_temp_dir(folder)),
        cwd=cwd,
        env=job_env(),
        start_new_session=True,
        stdout=log,
        stderr=subprocess.STDOUT,
        pass_fds=pass_fds,
    )
    try:
        wait_until_answering(
            "Ray head", f"http://127.0.0.1:{port}/api/version", proc, folder / "ray_head.log"
        )
    except BaseException:
        stop_ray_head(proc.pid)
        raise
    return proc, f"http://127.0.0.1:{port}"


def wait_until_answering(
    what: str, url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0
) -> None:
    """Poll ``url`` until it answers 2xx; DeeppertError naming ``what`` and ``log`` if the
    process ``proc`` exits first or nothing answers within ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise DeeppertError(f"{what} exited with code {proc.returncode}; see {log}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise DeeppertError(f"{what} did not answer at {url} within {timeout:.0f} s; see {log}")


def stop_ray_head(pid: int) -> None:
    """Stop a Ray head started by :func:`start_ray_head` (its process group).

    On SIGTERM its GCS, raylet and workers end at once, but ``ray start --block`` and its
    autoscaler monitor stay up with their ended children unreaped until killed: a 30-s grace
    was 30 s of waiting on every stop. Five seconds, then SIGKILL."""
    stop_group(pid, grace=5.0)


def stop_group(pid: int, grace: float = 30.0) -> None:
    """SIGTERM the process group ``pid`` leads, SIGKILL it after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            _reap(pid)
            time.sleep(0.2)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def lock_cluster_dir(folder: str | Path) -> int:
    """Take ``folder``'s lock (an exclusive ``flock`` on ``folder/cluster.lock``) and return
    its file descriptor; the lock lasts while any process holds that descriptor.

    Raises a one-line :class:`DeeppertError` naming the cluster that holds it.
    """
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "cluster.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        state = folder / "cluster.json"
        try:
            info = ClusterInfo(**json.loads(state.read_text()))
            holder = (
                f"a cluster is running in {folder} (Ray {info.ray_address} pid {info.ray_pid}, "
                f"MLflow {info.tracking_uri} pid {info.server_pid})"
            )
        except (OSError, ValueError, TypeError):
            holder = f"another `deeppert cluster start` is starting a cluster in {folder}"
        raise DeeppertError(
            f"{holder}; stop it with `deeppert cluster stop --dir {folder}` or use another --dir"
        ) from None
    return fd


def start_cluster(folder: str | Path, *, num_cpus: int = 2) -> ClusterInfo:
    """Start an MLflow server (SQLite under ``folder``) and a Ray head; write cluster.json, env.sh.

    Holds ``folder``'s lock (:func:`lock_cluster_dir`) from the first step; the two processes
    keep holding it after this returns.
    """
    folder = Path(folder).resolve()
    lock = lock_cluster_dir(folder)
    try:
        return _start_locked(folder, num_cpus, lock)
    finally:
        os.close(lock)  # this process's copy: the server and the head keep theirs


def _start_locked(folder: Path, num_cpus: int, lock: int) -> ClusterInfo:
    state = folder / "cluster.json"
    if state.exists():
        raise DeeppertError(
            f"{state} exists but no process of it holds {folder / 'cluster.lock'}: a cluster "
            f"started there has ended; `deeppert cluster stop --dir {folder}` clears it"
        )
    port = free_port()
    server_log = (folder / "mlflow_server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "deeppert", "server", "--data-dir", str(folder / "mlflow"),
         "--port", str(port)],
        env=job_env(),
        start_new_session=True,
        stdout=server_log,
        stderr=subprocess.STDOUT,
        pass_fds=(lock,),
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering("MLflow server", f"{uri}/health", server, folder / "mlflow_server.log")
        ray, address = start_ray_head(folder, num_cpus=num_cpus, pass_fds=(lock,))
    except BaseException:
        stop_group(server.pid)
        raise
    info = ClusterInfo(address, uri, ray.pid, server.pid, str(folder))
    state.write_text(json.dumps(asdict(info), indent=2) + "\n")
    (folder / "env.sh").write_text(info.exports())
    return info


def stop_cluster(folder: str | Path) -> ClusterInfo:
    """Stop what :func:`start_cluster` started in ``folder`` (by process group) and forget it."""
    state = Path(folder).resolve() / "cluster.json"
    if not state.is_file():
        raise DeeppertError(f"no cluster started in {Path(folder).resolve()} (no cluster.json)")
    info = ClusterInfo(**json.loads(state.read_text()))
    stop_ray_head(info.ray_pid)
    stop_group(info.server_pid)
    remove_ray_temp_dir(Path(info.folder))
    state.unlink()
    return info


def check_ray_address(address: str, *, timeout: float = 5.0) -> None:
    """Raise a one-line :class:`DeeppertError` unless a Ray job server answers at ``address``."""
    base = address.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise DeeppertError(
            f"Ray address {address!r} is not a job-submission address (http://host:dashboard-port)"
        )
    try:
        answer = requests.get(f"{base}/api/version", timeout=timeout)
    except requests.RequestException as exc:
        raise DeeppertError(
            f"no Ray head answers at {address} ({type(exc).__name__}); start one with "
            "`deeppert cluster start --dir DIR` and use the RAY_ADDRESS it prints"
        ) from exc
    if answer.status_code in (401, 403):
        raise DeeppertError(
            f"Ray head at {address} refused the request (HTTP {answer.status_code}): token "
            "authentication differs between head and client; set RAY_AUTH_MODE the same on both "
            "(deeppert cluster start uses RAY_AUTH_MODE=disabled)"
        )
    if not answer.ok:
        raise DeeppertError(f"Ray head at {address} answered HTTP {answer.status_code}")


def submit_command(address: str, entrypoint: list[str]) -> list[str]:
    """``ray job submit`` of ``entrypoint`` from the repository root, with the git commit.

    Ray uploads the working directory without ``.git``; the commit travels as
    ``$DEEPPERT_GIT_COMMIT`` so runs still record the code version that ran.
    """
    from deeppert.tracking.client import GIT_COMMIT_ENV, git_commit

    ray = str(Path(sys.executable).parent / "ray")
    command = [ray if Path(ray).exists() else "ray", "job", "submit", "--address", address]
    command += ["--working-dir", "."]
    commit = git_commit()
    if commit:
        command += ["--runtime-env-json", json.dumps({"env_vars": {GIT_COMMIT_ENV: commit}})]
    return [*command, "--", *entrypoint]
