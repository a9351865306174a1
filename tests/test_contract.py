"""The artifact contract: deeppert/tracking/contract.py and docs/architecture.md list the same names,
and the jobs use the constants instead of spelling the strings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deeppert.tracking import contract
from deeppert.tracking.contract import (
    AGREEMENT_METRIC,
    ARTIFACTS,
    EPOCH_METRICS,
    HELD_OUT_METRICS,
    IG_METRIC,
    STABILITY_METRICS,
    TARGETS_METRICS,
    TRIAL_PARAMS,
    VERSION_TAGS,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def section() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index("## Artifact contract")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _ticked(section: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", section))


def test_tags_match(section):
    documented = set(re.findall(r"`(deeppert\.[a-z0-9_]+)", section))
    assert documented == contract.tag_names()


def test_roles_match(section):
    listed = re.search(r"`deeppert\.role` \(([^)]*)\)", section).group(1)
    assert set(re.findall(r"`([a-z_]+)`", listed)) == contract.role_names()


def test_artifact_files_match(section):
    documented = set(re.findall(r"`([a-z_]+\.(?:parquet|json))`", section))
    assert documented == contract.artifact_names()


def test_trial_params_match(section):
    line = re.search(r"- params: (.*?)\n- metrics", section, re.S).group(1)
    assert tuple(p.strip() for p in line.replace("\n", " ").split(",")) == TRIAL_PARAMS


def test_metrics_models_and_version_tags_documented(section):
    ticked = _ticked(section)
    names = [*EPOCH_METRICS, *HELD_OUT_METRICS, IG_METRIC, AGREEMENT_METRIC]
    names += [v for k, v in vars(VERSION_TAGS).items() if not k.startswith("_")]
    names += [ARTIFACTS.encoder, ARTIFACTS.ensemble_model, f"{ARTIFACTS.targets}/"]
    names += list(STABILITY_METRICS.values())
    names += [contract.targets_metric(kind, "<N>") for kind in TARGETS_METRICS]
    assert [n for n in names if n not in ticked] == []
    assert contract.encoder_model_name("<dataset>", "<MODEL>", "<dim>") in ticked
    assert contract.ensemble_model_name("<dataset>") in ticked
    assert contract.ENSEMBLE_ALIAS in ticked


def test_grid_key_and_pca_paths():
    assert contract.grid_key("A549", "VAE", 10, 3) == "A549/VAE/d10/run3"
    assert contract.pca_artifact("A549", "center") == "pca/A549/center.parquet"
    assert contract.dataset_sha_tag("A549") == "deeppert.data_sha256.A549"


def test_jobs_spell_no_contract_string():
    """Outside contract.py, no job module writes a contract name as a string literal."""
    names = contract.tag_names() | contract.artifact_names()
    files = [
        *(ROOT / "deeppert" / "tracking").glob("*.py"),
        *(ROOT / "ray_jobs").glob("*.py"),
        ROOT / "deeppert" / "demo.py",
    ]
    found = []
    for path in files:
        if path.name == "contract.py":
            continue
        text = re.sub(r"getLogger\([^)]*\)", "", path.read_text())  # logger names are not tags
        # a code literal "name" (ruff writes double quotes), not a ``"name"`` docstring example
        found += [f"{path.name}: {n}" for n in names if re.search(f'(?<!`)"{re.escape(n)}"', text)]
    assert found == []


def test_trial_params_are_the_contracts_and_come_from_the_dataclasses():
    from deeppert.config import parse_config
    from deeppert.tracking.sweep import trial_params
    from deeppert.train import seed_for_run

    config = parse_config({"train": {"cycle_epochs": 7}, "model": {"dropout": 0.25}})
    params = trial_params(config, "VAE", 10, 3, n_inputs=40, pca_artifact="runs:/p/pca/X")
    assert tuple(params) == TRIAL_PARAMS
    assert params["seed"] == seed_for_run(3) == 123456 * 3
    assert params["lr_cycle_epochs"] == 7 and params["dropout"] == 0.25
    assert params["pca_components"] == 40 and params["vae_decoder"] == "mirrored"


def test_sweep_params_of_a_file_dataset_have_no_synthetic_section():
    """A file-backed dataset logs no synthetic.* params; the config (and its hash) keep them."""
    from deeppert.config import parse_config
    from deeppert.tracking.sweep import sweep_params

    raw = {
        "datasets": [
            {"name": "FILE", "path": "/data/sigs.parquet"},
            {"name": "SYN", "synthetic": {"n_samples": 300, "seed": 2}},
        ]
    }
    config = parse_config(raw)
    before = config.sha256()
    params = sweep_params(config)
    assert params["datasets.FILE.path"] == "/data/sigs.parquet"
    assert not [k for k in params if k.startswith("datasets.FILE.synthetic.")]
    assert params["datasets.SYN.synthetic.n_samples"] == "300"
    assert config.sha256() == before == parse_config(raw).sha256()
    assert config.to_dict()["datasets"][0]["synthetic"]["n_samples"] == 5000


@pytest.mark.mlflow
def test_the_ensemble_run_logs_the_files_deeppert_ensemble_writes(sqlite_server, tmp_path):
    """One writer: the MLflow ensemble run holds the files of ``RUN_DIR/ensemble/`` (the
    tables, members, summary, stability, selection curve, figures) under the same names; only
    ``model/`` is the run's pyfunc instead, and the figures are also keyed images."""
    from threadpoolctl import threadpool_limits

    import deeppert as dp
    from deeppert.config import parse_config
    from deeppert.data import SynthConfig, make_synthetic
    from deeppert.tracking.client import tracked_run
    from deeppert.tracking.contract import ENSEMBLE_FILES, ROLES, TAGS
    from deeppert.tracking.registry import log_ensemble_outputs
    from deeppert.tracking.session import TrackingSession

    raw = {
        "preprocess": {"n_components": 10},
        "grid": {"models": ["AE"], "latent_dims": [3], "runs": 2, "baselines": False},
        "train": {"epochs": 2, "batch_size": 128},
        "ensemble": {"l_min": 2, "l_max": 3},
    }
    sig = make_synthetic(SynthConfig(n_samples=150, n_programs=2, module_size=10)).signatures
    with threadpool_limits(limits=1):
        run = dp.tl.train(sig, tmp_path / "run", config=parse_config(raw))
    dp.tl.attribute(run, config=dp.IGConfig(n_steps=4))
    step = dp.tl.ensemble(run, stability=False)  # the command's path: writes run/ensemble/
    written = {p.relative_to(run.path / "ensemble").as_posix()
               for p in (run.path / "ensemble").rglob("*") if p.is_file()}  # fmt: skip

    session = TrackingSession.for_uri(sqlite_server.url, "contract-ensemble").connect()
    with tracked_run(session, run_name="ensemble", tags={TAGS.role: ROLES.ensemble}) as run_id:
        log_ensemble_outputs(session, run_id, step, tmp_path / "logged")
    logged, folders = set(), [None]
    while folders:
        for item in session.client.list_artifacts(run_id, folders.pop()):
            (folders.append if item.is_dir else logged.add)(item.path)

    assert ENSEMBLE_FILES.selection in logged and ENSEMBLE_FILES.summary in logged
    assert {p for p in logged if not p.startswith("images/")} == {
        p for p in written if not p.startswith(f"{ENSEMBLE_FILES.model}/")
    }
    assert {p for p in logged if p.startswith("images/")}, "figures also as keyed images"


def test_version_ranges_fit_a_tag_at_deeppert_scale_and_read_back_exactly():
    """1,200 encoder versions (12 registered models x 100) listed one by one are about 30,000
    characters, over MLflow's 8,000 for a tag (the ensemble job at that size failed on it);
    as ranges they fit, and read back to the same items in the same order, gaps included."""
    names = [
        f"SYN-encoder-{kind}-d{dim}" for kind in ("AE", "VAE") for dim in (5, 10, 25, 50, 75, 100)
    ]
    versions = [f"{name}/{v}" for name in names for v in range(1, 101)]
    assert len(",".join(versions)) > 8000
    text = contract.version_ranges(versions)
    assert len(text) < 500 and text.startswith("SYN-encoder-AE-d5/1-100;")
    assert contract.versions_from_ranges(text) == versions
    gaps = ["A/7", "A/3", "A/4", "A/5", "B/2", "A/9"]
    assert contract.version_ranges(gaps) == "A/3-5,7,9;B/2"
    assert contract.versions_from_ranges("A/3-5,7,9;B/2") == [
        "A/3",
        "A/4",
        "A/5",
        "A/7",
        "A/9",
        "B/2",
    ]
