"""The sweep, ensemble and targets jobs against a tracking server with basic auth on.

Real processes: ``deeppert server``'s ``TrackingServer`` with ``--auth``, each job as a
subprocess with credentials only in ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD``. Afterwards
the user's password appears 0 times in the server's store (database, artifacts, logs) and in
the Tune folder, and a second user with no grant gets 403 when writing to the experiment.
Before ``log_torch_model`` pointed MLflow at the run's experiment, a non-admin user's sweep
failed here: MLflow filed each encoder's logged model under the Default experiment (id 0),
where the user may not write (HTTP 403 on POST /api/2.0/mlflow/logged-models).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
import yaml
from sweep_driver import by_status, finished_per_key, sweep_runs, tiny_sweep

from deeppert.config import parse_config
from deeppert.data import make_synthetic, write_synthetic
from deeppert.tracking.server import ServerConfig, TrackingServer
from deeppert.tracking.sweep import grid_key, sweep_name

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]


def count_in_tree(root: Path, needle: bytes) -> dict[str, int]:
    return {
        str(p): n for p in root.rglob("*") if p.is_file() and (n := p.read_bytes().count(needle))
    }


def test_jobs_run_with_credentials_from_the_environment_only(tmp_path: Path) -> None:
    admin_pw, alice_pw, bob_pw = (f"{who}-" + secrets.token_hex(10) for who in ("adm", "al", "bo"))
    data_dir = tmp_path / "srv"
    server_env = {
        **os.environ,
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_pw,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    with TrackingServer(
        ServerConfig(data_dir=str(data_dir), port=0, auth=True), env=server_env
    ) as srv:
        uri = srv.url
        for user, pw in (("alice", alice_pw), ("bob", bob_pw)):
            made = requests.post(
                f"{uri}/api/2.0/mlflow/users/create",
                json={"username": user, "password": pw},
                auth=("admin", admin_pw),
                timeout=30,
            )
            assert made.status_code == 200, made.text[:300]
        raw = tiny_sweep(uri, "authjobs", runs=2, epochs=3, ensemble={"n_clusters": 2})
        config = parse_config(raw)
        sweep = sweep_name(config)
        config_path = tmp_path / "authjobs.yaml"
        config_path.write_text(yaml.safe_dump(raw))
        synth = tmp_path / "synth"
        write_synthetic(make_synthetic(config.datasets[0].synthetic), synth)
        ray_tmp = tempfile.mkdtemp(prefix="rayauth", dir="/tmp")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        env.update(
            MLFLOW_TRACKING_USERNAME="alice",
            MLFLOW_TRACKING_PASSWORD=alice_pw,
            RAY_ADDRESS="local",
            RAY_TMPDIR=ray_tmp,
        )
        tune = tmp_path / "tune"
        jobs = {
            "sweep": ["ray_jobs/sweep.py", "--storage-path", str(tune)],
            "ensemble": ["ray_jobs/ensemble.py"],
            "targets": ["ray_jobs/targets.py", "--disease", "Synthetic Disease",
                        "--pairs-dir", str(synth / "target_pairs")],
        }  # fmt: skip
        codes = {}
        for name, argv in jobs.items():
            proc = subprocess.run(
                [sys.executable, argv[0], "--config", str(config_path), *argv[1:]],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            codes[name] = proc.returncode
            assert proc.returncode == 0, f"{name}: {(proc.stdout + proc.stderr)[-3000:]}"
            assert alice_pw not in proc.stdout + proc.stderr
        _, trials = sweep_runs_as("admin", admin_pw, uri, sweep)
        assert finished_per_key(trials) == {grid_key("SYN1", "AE", 3, r): 1 for r in range(2)}

        # bob may read (default_permission READ) but not write to alice's experiment.
        exp = requests.get(
            f"{uri}/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": "authjobs"},
            auth=("bob", bob_pw),
            timeout=30,
        )
        assert exp.status_code == 200, exp.text[:300]
        experiment_id = exp.json()["experiment"]["experiment_id"]
        write = requests.post(
            f"{uri}/api/2.0/mlflow/runs/create",
            json={"experiment_id": experiment_id},
            auth=("bob", bob_pw),
            timeout=30,
        )
        store = count_in_tree(data_dir, alice_pw.encode())
        tune_hits = count_in_tree(tune, alice_pw.encode())
        print(
            f"\nMEASURE auth jobs: exit codes {codes}; runs {by_status(trials)}; bob's write "
            f"to alice's experiment -> HTTP {write.status_code}; alice's password in the store "
            f"({sum(1 for _ in data_dir.rglob('*'))} paths): {sum(store.values())}, in the Tune "
            f"folder: {sum(tune_hits.values())}"
        )
        assert write.status_code == 403, write.text[:300]
        assert store == {} and tune_hits == {}
    subprocess.run(["rm", "-rf", ray_tmp])


def sweep_runs_as(user: str, password: str, uri: str, sweep: str):
    """Read the store as ``user`` (the test process has no credentials of its own)."""
    old = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    try:
        return sweep_runs(uri, "authjobs", sweep)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
