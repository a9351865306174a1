"""Process settings: importing deeppert changes none; ``configure_mlflow`` sets MLflow's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from deeppert.config import TrackingConfig
from deeppert.tracking.client import (
    MLFLOW_DEFAULTS,
    configure_mlflow,
    global_uris,
    tracking_client,
)

REPO = Path(__file__).resolve().parents[1]
RETRY_VARS = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)
#: Every module of the package and the jobs, imported after the third-party libraries (which
#: may set variables of their own: scikit-learn sets KMP_*, RDKit RDBASE).
IMPORT_ALL = """
import importlib, json, os, pkgutil, sys
import mlflow, rdkit.Chem, sklearn, torch
import deeppert, ray_jobs
before = dict(os.environ)
names = [m.name for pkg in (deeppert, ray_jobs)
         for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
         if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print(json.dumps({"modules": len(names), "changed": changed}))
"""


def test_importing_deeppert_changes_no_environment_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_DEFAULTS}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["modules"] > 40
    assert result["changed"] == []


def test_configure_mlflow_sets_defaults_and_the_retry_budget(monkeypatch) -> None:
    for key in (*MLFLOW_DEFAULTS, *RETRY_VARS):
        monkeypatch.delenv(key, raising=False)
    configure_mlflow()
    assert {k: os.environ[k] for k in MLFLOW_DEFAULTS} == MLFLOW_DEFAULTS
    assert not any(k in os.environ for k in RETRY_VARS)  # no config, no budget
    configure_mlflow(TrackingConfig(http_max_retries=3, http_backoff_factor=5, http_timeout=9))
    assert [os.environ[k] for k in RETRY_VARS] == ["3", "5", "9"]


def test_the_environment_wins_over_the_defaults(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    tracking_client("http://127.0.0.1:1")  # building a client configures; it sends nothing
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_global_uris_switch_both_uris_and_put_everything_back(monkeypatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_tracking_uri("http://127.0.0.1:1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # as if set in code, not exported
    seen = []

    def inside(uri: str) -> None:
        with global_uris(uri):
            seen.append((uri, mlflow.get_tracking_uri(), mlflow.get_registry_uri()))

    threads = [threading.Thread(target=inside, args=(f"http://host{i}:5000",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and all(uri == tracking == registry for uri, tracking, registry in seen)
    assert mlflow.get_tracking_uri() == "http://127.0.0.1:1"
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    mlflow.set_tracking_uri(None)
