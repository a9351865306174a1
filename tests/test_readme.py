"""The README's tracked-sweep block, run as written; Ray-level failures as one line, exit 2."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
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
    ``.venv/bin/`` or after exporting it on PATH. Commands after ``--`` run inside a Ray job.
    The several-nodes recipe runs on cluster machines set up by their operator."""
    text = (REPO / "README.md").read_text()
    bare = re.compile(r"^(?:python3?|deeppert|ray|mlflow)\s")
    offenders, blocks = [], list(re.finditer(r"(?s)```bash\n(.*?)```", text))
    assert len(blocks) >= 6, len(blocks)
    for match in blocks:
        prose = re.sub(r"(?s)```.*?```", "", text[: match.start()])  # no bash comments
        headers = re.findall(r"(?m)^#+ .*$", prose)
        if "Several nodes" in headers[-1]:
            continue
        block = match.group(1)
        on_path = False
        for line in block.splitlines():
            on_path |= bool(re.match(r"export .*PATH=\$PWD/\.venv/bin", line))
            if bare.match(line.strip()) and not on_path:
                offenders.append(line.strip())
    assert not offenders, offenders
