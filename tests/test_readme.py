"""The README's tracked-sweep block, run as written; Ray-level failures as one line, exit 2."""

from __future__ import annotations

import http.server
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from deeppert.cli import main
from deeppert.cluster import ray_temp_dir
from deeppert.tracking.server import free_port

REPO = Path(__file__).resolve().parents[1]
MARK = "<!-- readme-test: tracked-sweep -->"


def readme_block(mark: str = MARK) -> str:
    """The fenced bash block right after ``mark`` in README.md."""
    text = (REPO / "README.md").read_text()
    match = re.search(re.escape(mark) + r"\s*```bash\n(.*?)```", text, re.S)
    assert match, f"README.md has no ```bash block after {mark}"
    return match.group(1)


def test_readme_block_names_only_existing_commands_and_files() -> None:
    block = readme_block()
    for path in re.findall(r"(?:ray_jobs|configs)/[\w./]+", block):
        assert (REPO / path).is_file(), path
    subcommands = re.findall(r"deeppert cluster (\w+)", block)
    assert subcommands == ["start", "submit", "submit", "stop"]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.timeout(900)
def test_readme_tracked_sweep_runs_as_written(tmp_path: Path) -> None:
    """Fresh HOME (no ~/.ray/auth_token, no cluster folder), the block in bash -e."""
    env = {**os.environ, "HOME": str(tmp_path)}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_MODE"):
        env.pop(key, None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_block()],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=840,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    print(f"\nMEASURE readme tracked sweep: {time.perf_counter() - t0:.0f} s")
    folder = tmp_path / "deeppert-cluster"
    try:
        assert proc.returncode == 0, out[-4000:]
        assert "export RAY_ADDRESS=http://127.0.0.1:" in out
        assert re.search(r"SYN1\s+VAE\s+5", out), out[-3000:]  # the sweep's table
        assert "SYN1-ensemble@current" in out  # the ensemble job registered its model
        assert not (folder / "cluster.json").exists()  # stopped, state removed
        assert not ray_temp_dir(folder).exists()  # the head's own temp dir (not /tmp/ray) too
        assert (folder / "mlflow" / "mlflow.db").is_file()
    finally:
        if (folder / "cluster.json").exists():
            main(["cluster", "stop", "--dir", str(folder)])


def _submit(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deeppert", "cluster", "submit", *argv],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_submit_without_a_head_is_one_line_exit_2() -> None:
    t0 = time.perf_counter()
    address = f"http://127.0.0.1:{free_port()}"
    proc = _submit(["--address", address, "--", "python", "ray_jobs/sweep.py"])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"deeppert cluster: error: no Ray head answers at {address}")
    assert "deeppert cluster start" in lines[0]
    assert time.perf_counter() - t0 < 30  # not Ray's minute of retries


def test_submit_to_a_head_refusing_the_token_is_one_line_exit_2() -> None:
    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"http://127.0.0.1:{server.server_port}"
        proc = _submit(["--address", address, "--", "python", "ray_jobs/sweep.py"])
    finally:
        server.shutdown()
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "token authentication differs" in lines[0], proc.stderr


def test_stop_without_a_cluster_names_the_folder(tmp_path: Path, capsys) -> None:
    assert main(["cluster", "stop", "--dir", str(tmp_path)]) == 2
    assert f"no cluster started in {tmp_path}" in capsys.readouterr().err


def test_readme_blocks_run_the_venvs_tools() -> None:
    """A fresh machine has none of the project's packages on its own ``python`` nor its tools
    (``deeppert``, ``ray``, ``mlflow``) on PATH: every bash block calls them through
    ``.venv/bin/`` or after exporting it on PATH. Commands after ``--`` run inside a Ray job."""
    text = (REPO / "README.md").read_text()
    bare = re.compile(r"^(?:python3?|deeppert|ray|mlflow)\s")
    offenders, blocks = [], list(re.finditer(r"(?s)```bash\n(.*?)```", text))
    assert len(blocks) >= 6, len(blocks)
    for match in blocks:
        block = match.group(1)
        on_path = False
        for line in block.splitlines():
            on_path |= bool(re.match(r"export .*PATH=\$PWD/\.venv/bin", line))
            if bare.match(line.strip()) and not on_path:
                offenders.append(line.strip())
    assert not offenders, offenders


SEVERAL_NODES = "<!-- readme-test: several-nodes -->"

# The recipe's job, replaced by a small one: once three nodes are up, four one-CPU tasks
# spread over the cluster; it prints where the driver and each task ran, which nodes offer CPUs.
NODES_JOB = """
import json, time, ray
ray.init()
deadline = time.time() + 180  # the workers may still be joining
while len([n for n in ray.nodes() if n["Alive"]]) < 3 and time.time() < deadline:
    time.sleep(1)
@ray.remote(num_cpus=1)
def node():
    import time
    time.sleep(1)
    return ray.get_runtime_context().get_node_id()
tasks = ray.get([node.options(scheduling_strategy="SPREAD").remote() for _ in range(4)])
alive = [n for n in ray.nodes() if n["Alive"]]
print("NODES " + json.dumps({
    "driver": ray.get_runtime_context().get_node_id(),
    "tasks": tasks,
    "cpu_nodes": [n["NodeID"] for n in alive if n["Resources"].get("CPU", 0) > 0],
    "all_nodes": [n["NodeID"] for n in alive],
}))
"""


def recipe_commands(block: str) -> list[str]:
    """The block's commands: comments dropped, backslash continuations joined."""
    joined = re.sub(r"\\\n\s*", "", block)
    return [c for line in joined.splitlines() if (c := line.split(" #")[0].strip())
            and not c.startswith("#")]  # fmt: skip


def test_several_nodes_recipe_has_the_lines_its_test_runs() -> None:
    kinds = [c.split()[:3] for c in recipe_commands(readme_block(SEVERAL_NODES))]
    assert kinds == [
        ["export", "PATH=$PWD/.venv/bin:$PATH"],
        ["export", "RAY_AUTH_MODE=token"],
        ["ray", "get-auth-token", "--generate"],
        ["ray", "start", "--head"],
        ["ray", "start", "--address=HEAD_HOST:6379"],
        ["deeppert", "server", "--backend-store-uri"],
        ["export", "RAY_ADDRESS=http://HEAD_HOST:8265"],
        ["ray", "job", "submit"],
    ], kinds


@pytest.fixture
def recipe_nodes(tmp_path: Path):
    """Start the recipe's head and two workers as written, each in its own process group with
    its own temp dir and free ports (one machine); yields ``(env, dashboard address)`` and
    stops exactly those process groups, interrupted or not (never ``ray stop``, which ends
    every Ray on the machine)."""
    from deeppert.cluster import _PORT_FLAGS, free_ports, stop_ray_head

    commands = recipe_commands(readme_block(SEVERAL_NODES))
    env = {**os.environ, "HOME": str(tmp_path)}  # a machine with no token yet
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    gcs, dashboard = free_ports(2)
    started: list[subprocess.Popen] = []
    temp_dirs: list[str] = []

    def node(command: str, name: str) -> subprocess.Popen:
        own = free_ports(len(_PORT_FLAGS) - 1, exclude=(gcs, dashboard))  # all but --port
        temp = tempfile.mkdtemp(prefix="rrn", dir="/tmp")  # short: socket paths <= 107 chars
        temp_dirs.append(temp)
        argv = (
            command.replace("HEAD_HOST", "127.0.0.1")
            .replace("6379", str(gcs))
            .replace("--dashboard-host=0.0.0.0", "--dashboard-host=127.0.0.1")
            .replace("--num-cpus=16", "--num-cpus=1")
            .replace("--num-gpus=1", "--num-gpus=0")
            .split()
        )
        argv += ["--block", "--temp-dir", temp, "--node-ip-address", "127.0.0.1"]
        argv += [a for flag, port in zip(_PORT_FLAGS[1:], own) for a in (flag, str(port))]
        if "--head" in argv:
            argv += ["--dashboard-port", str(dashboard), "--disable-usage-stats"]
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv, env=env, cwd=tmp_path, start_new_session=True, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append(proc)
        return proc

    try:
        for command in commands:
            if command.startswith("export RAY_AUTH_MODE="):
                env["RAY_AUTH_MODE"] = command.split("=", 1)[1]
            elif command.startswith("ray get-auth-token"):
                subprocess.run(command.split(), env=env, check=True, capture_output=True)
            elif command.startswith("ray start --head"):
                head = node(command, "head")
                _wait_for_dashboard(f"http://127.0.0.1:{dashboard}", head, tmp_path)
            elif command.startswith("ray start --address"):
                workers = [node(command, f"worker{i}") for i in range(2)]
        assert (tmp_path / ".ray" / "auth_token").is_file()
        yield env, f"http://127.0.0.1:{dashboard}", commands
        for i, proc in enumerate(workers):  # still up after the job: none fell over
            assert proc.poll() is None, (tmp_path / f"worker{i}.log").read_text()[-3000:]
    finally:
        for proc in reversed(started):  # head and workers: `ray start --block` process groups
            stop_ray_head(proc.pid)
        for temp in temp_dirs:
            shutil.rmtree(temp, ignore_errors=True)


def _wait_for_dashboard(address: str, head: subprocess.Popen, home: Path) -> None:
    """Until the head's dashboard answers a request carrying the recipe's token."""
    import requests

    token = (home / ".ray" / "auth_token").read_text().strip()
    deadline = time.time() + 180
    while time.time() < deadline:
        assert head.poll() is None, (home / "head.log").read_text()[-3000:]
        try:
            answer = requests.get(
                f"{address}/api/version", headers={"Authorization": f"Bearer {token}"}, timeout=5
            )
            if answer.ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise AssertionError(f"the head's dashboard {address} did not answer within 180 s")


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_several_nodes_recipe_runs_a_job_on_head_and_workers(recipe_nodes, tmp_path) -> None:
    """The recipe's `ray` lines as real processes; its submit line runs a small job whose
    driver runs on the CPU-less head and whose tasks run on both workers."""
    env, address, commands = recipe_nodes
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "nodes_job.py").write_text(NODES_JOB)
    export = next(c for c in commands if c.startswith("export RAY_ADDRESS="))
    assert export.endswith("HEAD_HOST:8265")
    env = {**env, "RAY_ADDRESS": address}
    submit = next(c for c in commands if c.startswith("ray job submit"))
    argv = submit.split(" -- ")[0].split() + ["--", "python", "nodes_job.py"]
    proc = subprocess.run(argv, env=env, cwd=job_dir, capture_output=True, text=True,
                          timeout=400)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    report = json.loads(next(line for line in out.splitlines() if line.startswith("NODES "))[6:])
    head = set(report["all_nodes"]) - set(report["cpu_nodes"])
    assert len(report["all_nodes"]) == 3 and len(report["cpu_nodes"]) == 2, report
    assert {report["driver"]} == head, report  # the driver on the head (--num-cpus=0)
    assert set(report["tasks"]) == set(report["cpu_nodes"]), report  # tasks on both workers
    print(f"\nMEASURE several-nodes recipe: tasks per worker "
          f"{ {n[:8]: report['tasks'].count(n) for n in report['cpu_nodes']} }")  # fmt: skip


def python_blocks() -> list[str]:
    return re.findall(r"(?s)```python\n(.*?)```", (REPO / "README.md").read_text())


def test_readme_python_blocks_compile_and_import_what_exists() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        compile(block, "README.md", "exec")
        for module, names in re.findall(r"(?m)^from ([\w.]+) import ([\w, ]+)$", block):
            imported = importlib.import_module(module)
            for name in (n.strip() for n in names.split(",")):
                assert hasattr(imported, name), f"{module}.{name}"


def test_readme_encoder_block_passes_a_session_and_a_model_uri(monkeypatch, capsys) -> None:
    """The encoder block, run with the loader replaced: it must hand the loader what it takes
    (a TrackingSession, then a models:/ URI), not a bare URL string."""
    import deeppert.tracking.client as client
    from deeppert.tracking import TrackingSession

    calls = []

    class MeanEncoder:
        pass

    def fake_loader(session, model_uri, *, map_location=None):
        calls.append((session, model_uri, map_location))
        return MeanEncoder()

    monkeypatch.setattr(client, "load_torch_model", fake_loader)
    block = next(b for b in python_blocks() if "load_torch_model" in b)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - the README's own code
    ((session, model_uri, _),) = calls
    assert isinstance(session, TrackingSession) and session.uri == "http://127.0.0.1:5000"
    assert model_uri.startswith("models:/") and "@" in model_uri
    assert capsys.readouterr().out.strip() == "MeanEncoder"
