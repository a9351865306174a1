"""The MLflow UI, as a person sees it: headless Chromium on a finished tiny sweep.

A sweep (2 models x 1 dim x 2 runs, 2 epochs; trials run in-process, the same
``run_trial`` Ray Tune calls) is logged to a real server with its report; Chromium renders
the parent run's page (the UI is a React app: ``--dump-dom`` after a virtual-time budget) and
the test checks that the summary metrics, the description table and the report figures are
listed there. Skips only when no Chromium is installed outside CI (``.ci/run`` installs it).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deeppert.config import parse_config
from deeppert.grid import load_dataset, prepare
from deeppert.tracking.client import finish_run, ui_url
from deeppert.tracking.report import METRICS, log_sweep_report
from deeppert.tracking.server import ServerConfig, TrackingServer
from deeppert.tracking.sweep import data_sha256, log_dataset, open_sweep, run_trial

pytestmark = [pytest.mark.browser, pytest.mark.mlflow, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def chromium() -> str:
    found = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if found is None:
        message = "no headless Chromium on PATH; `apt-get install chromium` (.ci/run does)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    raw = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    raw["name"] = "browser"
    raw["grid"] = {"models": ["AE", "VAE"], "latent_dims": [3], "runs": 2, "baselines": True}
    raw["train"] = {**raw["train"], "epochs": 2}
    with TrackingServer(
        ServerConfig(data_dir=str(tmp_path_factory.mktemp("mlflow")), port=0)
    ) as server:
        raw["tracking"] = {"uri": server.url, "experiment": "browser"}
        config = parse_config(raw)
        ctx = open_sweep(config)
        dataset = config.datasets[0]
        signatures = load_dataset(dataset)
        prepared = prepare(signatures, config)
        sha = data_sha256(signatures)
        entity = log_dataset(ctx, dataset.name, prepared, sha)
        train = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=2))
        for kind in config.grid.models:
            run_trial(
                ctx, prepared, train, dataset=dataset.name, data_sha=sha, kind=kind,
                latent_dim=3, runs=[0, 1], data_input=entity,
            )  # fmt: skip
        log_sweep_report(ctx, config)
        finish_run(ctx.session, ctx.parent_run_id)
        yield server, ctx


def dump_dom(chromium: str, url: str, budget_ms: int = 30000) -> str:
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--virtual-time-budget={budget_ms}", "--window-size=1600,1400", "--dump-dom", url],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_parent_run_page_lists_the_report(chromium, finished_sweep) -> None:
    server, ctx = finished_sweep
    dom = dump_dom(chromium, ui_url(server.url, ctx.session.experiment_id, ctx.parent_run_id))
    assert "sweep browser" in dom  # the run page rendered, not an error page
    for shape in ("AE_d3", "VAE_d3"):
        for stat in ("r2_genes_best", "r2_genes_mean", "r2_genes_sd", "seed_agreement"):
            assert f"{METRICS[stat]}/SYN1/{shape}" in dom, (stat, shape)
    assert f"{METRICS['baseline']}/SYN1/PCA_d3" in dom and METRICS["best"] in dom
    assert "Best by mean held-out gene-space R^2" in dom  # the description's summary
    assert "Evaluation runs" not in dom  # the model-training view, not the GenAI one


def test_parent_run_artifacts_show_the_report_figures(chromium, finished_sweep) -> None:
    server, ctx = finished_sweep
    base = ui_url(server.url, ctx.session.experiment_id, ctx.parent_run_id)
    route, query = base.split("?")
    dom = dump_dom(chromium, f"{route}/artifacts/report/r2_vs_latent_dim.png?{query}")
    for name in ("report", "config.yaml", "r2_vs_latent_dim.png"):
        assert name in dom, name
    # the figure itself is shown: an <img> fetching the artifact through the server
    assert "report%2Fr2_vs_latent_dim.png" in dom or "report/r2_vs_latent_dim.png" in dom
    assert "<img" in dom
