"""Model search: typed ``search:`` section, per-epoch held-out R^2, ASHA trials on Ray + MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deeppert.config import parse_config
from deeppert.errors import DeeppertError
from deeppert.grid import load_dataset, prepare
from deeppert.search import apply_hyperparameters, train_with_validation
from deeppert.train import fit

REPO = Path(__file__).resolve().parents[1]
LOGU = {"distribution": "loguniform", "low": 1e-4, "high": 1e-2}


def tiny(**search) -> dict:
    return {
        "name": "search-tiny",
        "datasets": [{"name": "SYN1", "synthetic": {"n_samples": 300, "seed": 0}}],
        "preprocess": {"n_components": 10, "val_fraction": 0.2},
        "grid": {"models": ["AE"], "latent_dims": [3], "runs": 1, "baselines": False},
        "train": {"epochs": 3, "batch_size": 64},
        "search": search or {"lr_max": LOGU},
    }


@pytest.mark.parametrize(
    "search, key",
    [
        ({"lr_max": {"distribution": "lognormal", "low": 1e-4, "high": 1e-2}}, "search.lr_max.distribution"),
        ({"dropout": {"distribution": "uniform", "low": 0.3, "high": 0.1}}, "search.dropout"),
        ({"lr_max": {"distribution": "loguniform", "low": 0.0, "high": 1e-2}}, "search.lr_max"),
        ({"epochs": {"distribution": "uniform", "low": 2, "high": 9}}, "epochs"),
        ({"batch_size": {"distribution": "choice", "values": [1, 64]}}, "batch_size"),
        ({"dropout": {"distribution": "uniform", "low": 0.1, "high": 1.5}}, "dropout"),
        ({"lr_max": {"distribution": "loguniform", "low": 1e-4, "hgh": 1e-2}}, "search.lr_max.hgh"),
        ({"num_samples": 4}, "at least one"),
    ],
)  # fmt: skip
def test_bad_search_section_names_the_key(search, key):
    with pytest.raises(DeeppertError, match=None) as info:
        parse_config(tiny(**search))
    assert key in str(info.value)


def test_bad_search_section_exits_2_naming_the_key(tmp_path, capsys):
    from ray_jobs import search as search_job

    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(tiny(dropout={"distribution": "uniform", "low": 0.5, "high": 0.2}))
    )
    assert search_job.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "search.dropout" in err and "low must be < high" in err


def test_tracking_uri_is_the_flag_then_the_environment_then_the_config(tmp_path, monkeypatch):
    from ray_jobs._common import job_config, job_parser

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**tiny(), "tracking": {"uri": "http://config:5000"}}))
    parser = job_parser("search")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert job_config(parser.parse_args(["--config", str(path)])).tracking.uri == (
        "http://config:5000"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5001")
    assert job_config(parser.parse_args(["--config", str(path)])).tracking.uri == "http://env:5001"
    flagged = ["--config", str(path), "--tracking-uri", "http://flag:5002"]
    assert job_config(parser.parse_args(flagged)).tracking.uri == "http://flag:5002"


def test_a_dashboard_ray_address_is_one_line_before_any_run(tmp_path, monkeypatch, capsys):
    """``env.sh`` exports the dashboard's http:// address for job submission; a job run
    directly cannot join it: one line saying so, exit 2, and no tracking server contacted."""
    from ray_jobs import search as search_job

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**tiny(), "tracking": {"uri": "http://127.0.0.1:9"}}))
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    assert search_job.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("search: error: Ray address http://127.0.0.1:8265")
    assert "deeppert cluster submit" in err[0] and "unset RAY_ADDRESS" in err[0]


def test_config_without_search_keeps_its_hash():
    raw = tiny()
    del raw["search"]
    plain = parse_config(raw)
    assert plain.search is None
    # The hash of a search-less config does not see the new (empty) section.
    science = {k: v for k, v in plain.to_dict().items() if k not in ("tracking", "sweep", "search")}
    for dataset in science["datasets"]:  # nor the unset load options (tests/test_cmap.py)
        for key in (
            "id_column",
            "gene_columns",
            "pert_type",
            "siginfo",
            "geneinfo",
            "compoundinfo",
        ):
            assert dataset.pop(key) is None
    import hashlib

    expected = hashlib.sha256(json.dumps(science, sort_keys=True).encode()).hexdigest()
    assert plain.sha256() == expected
    assert parse_config(tiny()).sha256() != plain.sha256()


def test_apply_hyperparameters_sets_train_and_model_fields():
    config = parse_config(tiny())
    out = apply_hyperparameters(
        config, {"lr_max": 3e-3, "dropout": 0.25, "batch_size": 32, "epochs": 7}
    )
    assert out.train.lr_max == 3e-3 and out.train.batch_size == 32 and out.train.epochs == 7
    assert out.model.dropout == 0.25
    assert isinstance(out.train.epochs, int)
    low = apply_hyperparameters(config, {"lr_max": 1e-7})
    assert low.train.lr_min <= low.train.lr_max == 1e-7
    with pytest.raises(DeeppertError, match="not searchable"):
        apply_hyperparameters(config, {"beta": 1.0})


@pytest.mark.parametrize("kind", ["AE", "VAE"])
def test_per_epoch_validation_leaves_training_unchanged(kind):
    """The held-out R^2 reported after the last epoch is the trained model's; evaluating every
    epoch draws no random numbers and touches no BatchNorm statistics (weights equal plain fit)."""
    config = parse_config(tiny())
    prepared = prepare(load_dataset(config.datasets[0]), config)
    seen = []
    trained = train_with_validation(prepared, config, kind, 3, 0, lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [0, 1, 2]
    assert all(np.isfinite(m["r2_genes"]) for _, m in seen)
    final = trained.evaluate(
        prepared.x_val, prepared.signatures.values[prepared.val_idx], prepared.pca
    ).iloc[0]
    assert seen[-1][1]["r2_genes"] == pytest.approx(final["r2_genes"], abs=1e-12)
    assert seen[-1][1]["r2_pca"] == pytest.approx(final["r2_pca"], abs=1e-12)
    # R^2 changes over epochs (it is evaluated each time, not copied)
    assert len({round(m["r2_genes"], 9) for _, m in seen}) == 3
    plain = fit(prepared.x_train, trained.model_config, config.train, [0])
    for (name, a), (_, b) in zip(
        trained.module.state_dict().items(), plain.module.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.timeout(900)
def test_asha_search_stops_trials_and_tags_the_best(tmp_path):
    import ray

    from deeppert.tracking.client import tracking_client
    from deeppert.tracking.server import ServerConfig, TrackingServer
    from ray_jobs.search import run_search

    raw = tiny(
        num_samples=6,
        grace_period=1,
        reduction_factor=2,
        lr_max={"distribution": "loguniform", "low": 1e-5, "high": 3e-2},
        dropout={"distribution": "uniform", "low": 0.0, "high": 0.3},
        batch_size={"distribution": "choice", "values": [32, 64]},
        epochs={"distribution": "choice", "values": [4]},
    )
    raw["sweep"] = {"cpus_per_trial": 0.5, "max_concurrent_trials": 2}
    with TrackingServer(ServerConfig(data_dir=str(tmp_path / "mlflow"), port=0)) as server:
        raw["tracking"] = {"uri": server.url, "experiment": "search"}
        config = parse_config(raw)
        ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
        try:
            table = run_search(config, storage_path=str(tmp_path / "tune"))
        finally:
            ray.shutdown()
        summary, best = table.attrs["summary"], table.attrs["best"]
        client = tracking_client(server.url)
        parent = client.get_run(table.attrs["parent_run_id"])
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        )
        print(f"\nMEASURE search: {summary}\n{table.drop(columns=['mlflow_run_id']).round(4)}")
        assert parent.info.run_name == "search search-tiny ASHA"
        trial_dirs = [p.name for p in (tmp_path / "tune").glob("*/*") if p.is_dir()]
        assert len(trial_dirs) == 6 and all(d.startswith("SYN1_AE_d3_") for d in trial_dirs)
        assert len(table) == len(children) == 6
        assert parent.info.status == "FINISHED"
        statuses = {r.info.run_id: r.info.status for r in children}
        assert set(statuses.values()) <= {"FINISHED", "KILLED"}
        assert "KILLED" in statuses.values(), "ASHA stopped no trial"
        for run in children:
            reason = run.data.tags["deeppert.stop_reason"]
            row = table[table["mlflow_run_id"] == run.info.run_id].iloc[0]
            if run.info.status == "KILLED":
                assert "stopped early by asha" in reason
                assert row["epochs_trained"] < 4
            else:
                assert reason == "completed 4 epochs" and row["epochs_trained"] == 4
            # every epoch it trained is in MLflow, one row per metric and epoch
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "r2_genes")]
            assert sorted(steps) == list(range(row["epochs_trained"]))
        assert summary["trials_stopped_early"] == list(statuses.values()).count("KILLED")
        assert summary["epochs_trained"] < summary["epochs_planned"] == 24
        tagged = json.loads(parent.data.tags["deeppert.best_config"])
        assert tagged == best
        assert tagged["r2_genes"] == pytest.approx(table["r2_genes"].max())
        assert statuses[tagged["mlflow_run_id"]] == "FINISHED"
        assert "Traceback" not in server.log_tail(400)
