"""The driver log a person can follow: MLflow's per-run prints out of it unless verbose, and
one line per trial with its progress and the sweep's run link."""

from __future__ import annotations

import logging
import types

import pytest

from deeppert.tracking.client import quiet_mlflow


@pytest.mark.mlflow
def test_mlflow_prints_only_when_verbose(sqlite_server, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_server.url)
    experiment = client.create_experiment("driver-log")
    try:
        for verbose in (False, True):
            quiet_mlflow(verbose)
            run = client.create_run(experiment, run_name=f"verbose-{verbose}")
            capsys.readouterr()
            client.set_terminated(run.info.run_id)
            printed = capsys.readouterr().out
            assert ("View run" in printed) is verbose, printed
            # "Waiting up to 300 seconds ..." (INFO) and the Pickle warning (WARNING)
            registry = logging.getLogger("mlflow.store.model_registry.abstract_store")
            assert registry.isEnabledFor(logging.INFO) is verbose
            assert logging.getLogger("mlflow.pytorch").isEnabledFor(logging.WARNING) is verbose
    finally:
        quiet_mlflow(False)


def test_one_line_per_trial_with_progress_and_the_run_link(caplog):
    pytest.importorskip("ray.tune")
    from ray_jobs.sweep import trial_lines

    session = types.SimpleNamespace(uri="http://127.0.0.1:5000", experiment_id="7")
    ctx = types.SimpleNamespace(session=session, parent_run_id="abc123")
    callback = trial_lines(ctx, 2)
    plan = [
        {"dataset": "SYN", "model": "AE", "latent_dim": 5, "runs": [0, 1]},
        {"dataset": "SYN", "model": "VAE", "latent_dim": 10, "runs": [3]},
    ]
    with caplog.at_level(logging.INFO, logger="deeppert.sweep"):
        for trial in plan:
            fake = types.SimpleNamespace(config={"trial": trial}, last_result={"r2_genes": 0.5})
            callback.on_trial_complete(0, [], fake)
    lines = [r.getMessage() for r in caplog.records if r.name == "deeppert.sweep"]
    assert len(lines) == 2
    assert lines[0].startswith("trial 1/2 SYN_AE_d5_runs0-1 done")
    assert lines[1].startswith("trial 2/2 SYN_VAE_d10_run3 done")
    assert all("held-out R^2 0.500" in line for line in lines)
    assert all("http://127.0.0.1:5000/#/experiments/7/runs/abc123" in line for line in lines)
