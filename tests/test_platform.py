"""The platform end to end: Ray Tune sweep -> registry -> ensemble job -> targets job.

A real local Ray cluster (one per module, 2 CPUs) and real MLflow server processes (SQLite
file and PostgreSQL backends). One sweep per backend, 8 trials at 0.25 CPU each logging at
once, serves both the artifact-contract checks and the concurrency count; the ensemble and
targets jobs then run on its registered encoders. Bad-input exits are checked too.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import psycopg2
import pytest
import torch
import yaml

from deeppert.config import ExperimentConfig, parse_config
from deeppert.data.synthetic import make_synthetic, write_synthetic
from deeppert.ensemble.stability import ensemble_step
from deeppert.errors import DeeppertError
from deeppert.grid import load_dataset, prepare
from deeppert.preprocess import PCAModel
from deeppert.tracking.client import (
    find_runs_by_tag,
    load_parquet,
    load_torch_model,
    tracking_client,
)
from deeppert.tracking.contract import versions_from_ranges
from deeppert.tracking.registry import load_ensemble_outputs, load_sweep_encoders
from deeppert.tracking.report import METRICS
from deeppert.tracking.server import ServerConfig, TrackingServer, ensure_database, free_port
from deeppert.tracking.session import TrackingSession
from deeppert.tracking.sweep import TAGS, data_sha256, grid_key, sweep_name
from ray_jobs import ensemble as ensemble_job
from ray_jobs import sweep as sweep_job
from ray_jobs import targets as targets_job

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
EPOCHS = 3
PER_EPOCH = (
    "loss",
    "reconstruction",
    "kl",
    "beta",
    "lr",
    "val_loss",
    "val_reconstruction",
    "val_kl",
)
DISEASE = "Synthetic Disease"


def sweep_raw(uri: str, name: str, **overrides) -> dict:
    """smoke.yaml as a mapping, pointed at ``uri``: 2 models x 2 dims x 2 runs = 8 trials."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["name"] = name
    raw["grid"] = {"models": ["AE", "VAE"], "latent_dims": [3, 4], "runs": 2, "baselines": False}
    raw["train"] = {**raw.get("train", {}), "epochs": EPOCHS}
    raw["sweep"] = {"cpus_per_trial": 0.25, "seeds_per_trial": 1, "max_failures": 2}
    raw["tracking"] = {"uri": uri, "experiment": name}
    # 3 epochs leave latents too noisy for GMeans to split; fix L so the targets step has
    # more than one cluster to pair up.
    raw["ensemble"] = {"n_clusters": 4}
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


def expected_keys(config: ExperimentConfig) -> set[str]:
    return {
        grid_key(d.name, m, dim, r)
        for d in config.datasets
        for m in config.grid.models
        for dim in config.grid.latent_dims
        for r in range(config.grid.runs)
    }


def child_runs(uri: str, experiment_id: str, parent_run_id: str) -> list:
    client = tracking_client(uri)
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )


def sweep_parent(uri: str, config: ExperimentConfig) -> SimpleNamespace:
    """The sweep's parent run, looked up read-only (open_sweep would set it RUNNING again)."""
    experiment_id = (
        tracking_client(uri).get_experiment_by_name(config.tracking.experiment).experiment_id
    )
    session = TrackingSession(config.tracking, experiment_id=experiment_id)
    parents = [
        r
        for r in find_runs_by_tag(session, TAGS.sweep, sweep_name(config))
        if r.data.tags.get(TAGS.role) == "sweep"
    ]
    assert len(parents) == 1, f"expected one parent run, found {len(parents)}"
    return SimpleNamespace(
        session=session,
        experiment_id=experiment_id,
        parent_run_id=parents[0].info.run_id,
        sweep=sweep_name(config),
        code_version=parents[0].data.tags[TAGS.code_version],
    )


def max_overlap(runs: list) -> int:
    """Most child runs whose [start, end] intervals overlap at one instant."""
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    best = live = 0
    for _, step in events:
        live += step
        best = max(best, live)
    return best


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance (2 CPUs) for the module; run_sweep reuses it."""
    import ray

    for attempt in (1, 2):  # a raylet can miss Ray's 30 s start window on a loaded machine
        try:
            ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def postgres_server(postgres_uri, tmp_path_factory):
    name = f"deeppert_platform_{uuid.uuid4().hex[:10]}"
    db_uri = postgres_uri.rsplit("/", 1)[0] + f"/{name}"
    assert ensure_database(db_uri)
    try:
        config = ServerConfig(
            data_dir=str(tmp_path_factory.mktemp("mlflow-pg")), backend_store_uri=db_uri, port=0
        )
        with TrackingServer(config) as srv:
            yield srv
    finally:
        conn = psycopg2.connect(postgres_uri)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    config = parse_config(sweep_raw("http://unused", "pairs"))
    out = tmp_path_factory.mktemp("synth") / "synth"
    write_synthetic(make_synthetic(config.datasets[0].synthetic), out)
    return out / "target_pairs"


def run_platform(server: TrackingServer, backend: str, tmp: Path, pairs: Path) -> dict:
    """Sweep -> ensemble -> targets on ``server``; returns what the checks need."""
    raw = sweep_raw(server.url, f"platform-{backend}")
    config = parse_config(raw)
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    t0 = time.perf_counter()
    table = sweep_job.run_sweep(config, storage_path=str(tmp / "tune"))
    sweep_s = time.perf_counter() - t0
    ctx = sweep_parent(server.url, config)
    t0 = time.perf_counter()
    row, ensemble = ensemble_job.ensemble_dataset(
        TrackingSession(config.tracking).connect(),
        config,
        config.datasets[0].name,
        ctx.sweep,
        with_ensemble=True,
    )
    ensemble_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rc = targets_job.main(
        ["--config", str(config_path), "--disease", DISEASE, "--pairs-dir", str(pairs)]
    )
    targets_s = time.perf_counter() - t0
    print(
        f"\nMEASURE platform {backend}: sweep {sweep_s:.1f}s ({len(table)} trials), "
        f"ensemble {ensemble_s:.1f}s, targets {targets_s:.1f}s"
    )
    return {
        "config": config,
        "config_path": config_path,
        "table": table,
        "ctx": ctx,
        "row": row,
        "ensemble": ensemble,
        "targets_rc": rc,
    }


@pytest.fixture(scope="module")
def sqlite_platform(ray_cluster, sqlite_server, tmp_path_factory, pairs_dir):
    return run_platform(sqlite_server, "sqlite", tmp_path_factory.mktemp("sqlite"), pairs_dir)


@pytest.fixture(scope="module")
def postgres_platform(ray_cluster, postgres_server, tmp_path_factory, pairs_dir):
    return run_platform(postgres_server, "postgres", tmp_path_factory.mktemp("pg"), pairs_dir)


def check_contract(server: TrackingServer, out: dict) -> None:
    """Every artifact of the contract is there for every grid point, and consistent."""
    uri, config, ctx = server.url, out["config"], out["ctx"]
    client = tracking_client(uri)
    dataset = config.datasets[0]
    signatures = load_dataset(dataset)
    prepared = prepare(signatures, config)

    assert len(out["table"]) == 8, "one Tune trial per grid point (seeds_per_trial: 1)"
    parent = client.get_run(ctx.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[TAGS.role] == "sweep"
    pca = PCAModel.from_frames(
        *(
            load_parquet(ctx.session, ctx.parent_run_id, f"pca/{dataset.name}/{n}.parquet")
            for n in ("components", "center", "explained_variance")
        )
    )
    np.testing.assert_allclose(pca.components, prepared.pca.components, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pca.mean, prepared.pca.mean, rtol=0, atol=1e-12)
    assert pca.genes == prepared.pca.genes
    check_report(client, uri, config, ctx, parent)

    runs = child_runs(uri, ctx.experiment_id, ctx.parent_run_id)
    # Each trial's encoder is a logged model of that trial, in the sweep's experiment; the
    # Default experiment holds none (MLflow's log_model(run_id=...) alone put them there).
    assert client.search_logged_models(experiment_ids=["0"]) == []
    for run in runs:
        outputs = client.get_run(run.info.run_id).outputs.model_outputs
        assert len(outputs) == 1, run.info.run_name
        encoder = client.get_logged_model(outputs[0].model_id)
        assert (encoder.name, encoder.experiment_id) == ("encoder", ctx.experiment_id)
        tags = run.data.tags
        assert run.info.run_name == (
            f"{tags[TAGS.model]} d{tags[TAGS.latent_dim]} r{tags[TAGS.run]}"
        )
        assert tags["mlflow.note.content"].startswith(f"{tags[TAGS.model]} autoencoder")
        assert tags["mlflow.source.name"] and tags["mlflow.user"]
    assert sorted(r.data.tags[TAGS.grid_key] for r in runs) == sorted(expected_keys(config))
    assert {r.info.status for r in runs} == {"FINISHED"}
    # The signature matrix is recorded as an MLflow dataset input, once per run, same digest.
    digests = set()
    for run in [parent, *runs]:
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert [i.dataset.name for i in inputs] == [dataset.name]
        digests.add(inputs[0].dataset.digest)
    assert len(digests) == 1
    sha = data_sha256(signatures)
    versions = {
        v.run_id: v
        for v in client.search_model_versions(f"tags.sweep = '{ctx.sweep}'")
        if v.name.startswith(f"{dataset.name}-encoder-")
    }
    assert len(versions) == 8
    x = torch.as_tensor(prepared.x_train, dtype=torch.float32)
    for run in runs:
        tags, params = run.data.tags, run.data.params
        kind, dim, r = tags[TAGS.model], int(tags[TAGS.latent_dim]), int(tags[TAGS.run])
        assert tags[TAGS.role] == "trial" and tags[TAGS.sweep] == ctx.sweep
        assert tags[TAGS.cell_line] == dataset.name
        assert tags[TAGS.data_sha] == sha
        assert tags[TAGS.config_sha] == config.sha256()
        assert tags[TAGS.code_version] == ctx.code_version
        assert params["model"] == kind and int(params["latent_dim"]) == dim
        assert int(params["run"]) == r and int(params["seed"]) == 123456 * r
        assert int(params["epochs"]) == EPOCHS
        assert int(params["pca_components"]) == config.preprocess.n_components
        assert params["pca_artifact"] == f"runs:/{ctx.parent_run_id}/pca/{dataset.name}"
        for name in ("r2_pca", "r2_genes"):
            assert np.isfinite(run.data.metrics[name])
        # No latents are stored: the encoder gives them again where the ensemble runs.
        assert "latents.parquet" not in {a.path for a in client.list_artifacts(run.info.run_id)}
        # A trial of one run (seeds_per_trial: 1) has no other run to agree with.
        assert "seed_agreement_in_trial" not in run.data.metrics
        weights = load_parquet(ctx.session, run.info.run_id, "gene_weights.parquet")
        assert weights.shape == (len(signatures.genes), dim)
        assert weights.index.tolist() == list(signatures.genes)
        width = len(str(dim - 1))
        assert list(weights.columns) == [f"{kind}_d{dim}_run{r}_z{k:0{width}d}" for k in range(dim)]
        version = versions[run.info.run_id]
        assert version.tags["model"] == kind and int(version.tags["dim"]) == dim
        assert int(version.tags["run"]) == r and version.tags["sweep"] == ctx.sweep
        assert tags["deeppert.encoder_version"] == version.version
        # The registered encoder embeds the training rows: the run's latents.
        assert version.name == f"{dataset.name}-encoder-{kind}-d{dim}"
        encoder = load_torch_model(ctx.session, f"models:/{version.name}/{version.version}")
        with torch.no_grad():
            z = encoder(x).numpy()
        assert z.shape == (len(prepared.train_ids), dim) and np.isfinite(z).all()


def check_report(client, uri: str, config: ExperimentConfig, ctx, parent) -> None:
    """The sweep report on the parent: summary metrics, figures, summary.md, config.yaml."""
    metrics, tags = parent.data.metrics, parent.data.tags
    dataset = config.datasets[0].name
    trials = child_runs(uri, ctx.experiment_id, ctx.parent_run_id)
    for kind in config.grid.models:
        for dim in config.grid.latent_dims:
            r2 = [
                r.data.metrics["r2_genes"]
                for r in trials
                if r.data.tags[TAGS.model] == kind and int(r.data.tags[TAGS.latent_dim]) == dim
            ]
            shape = f"{dataset}/{kind}_d{dim}"
            assert metrics[f"{METRICS['r2_genes_best']}/{shape}"] == pytest.approx(max(r2))
            assert metrics[f"{METRICS['r2_genes_mean']}/{shape}"] == pytest.approx(np.mean(r2))
            sd = np.std(r2, ddof=1)
            assert metrics[f"{METRICS['r2_genes_sd']}/{shape}"] == pytest.approx(sd)
            # every trial trained one run (seeds_per_trial: 1): no pair to agree
            assert f"{METRICS['seed_agreement']}/{shape}" not in metrics
    means = [m for m in metrics if m.startswith(f"{METRICS['r2_genes_mean']}/")]
    best = max(means, key=lambda m: metrics[m])
    assert metrics[METRICS["best"]] == pytest.approx(metrics[best])
    margin = metrics.get(f"{METRICS['margin']}/{dataset}")
    if config.grid.baselines:
        assert tags[TAGS.baseline_beats_models] == str(margin >= 0).lower()
    else:
        assert margin is None and TAGS.baseline_beats_models not in tags
    kind, dim = best.rsplit("/", 1)[1].split("_d")
    assert tags["deeppert.best_shape"] == f"{dataset}/{kind}/d{dim}"
    assert "Best by mean held-out gene-space R^2" in tags["mlflow.note.content"]
    report = {a.path for a in client.list_artifacts(ctx.parent_run_id, "report")}
    assert report >= {
        "report/r2_vs_latent_dim.png",
        "report/final_loss_per_trial.png",
        "report/seed_agreement.png",
        "report/summary.md",
        "report/trials.csv",
    }
    config_yaml = client.download_artifacts(ctx.parent_run_id, "config.yaml")
    assert parse_config(yaml.safe_load(Path(config_yaml).read_text())) == config
    # Each shape's registered encoder points @best at its best run of this sweep.
    for kind in config.grid.models:
        for dim in config.grid.latent_dims:
            best = client.get_model_version_by_alias(f"{dataset}-encoder-{kind}-d{dim}", "best")
            assert float(best.tags["r2_genes"]) == pytest.approx(
                metrics[f"{METRICS['r2_genes_best']}/{dataset}/{kind}_d{dim}"], abs=1e-4
            )
    experiment = client.get_experiment(ctx.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def check_concurrency(server: TrackingServer, out: dict, backend: str) -> None:
    """Every per-epoch metric of every child run has exactly EPOCHS rows, steps 0..EPOCHS-1."""
    uri, ctx = server.url, out["ctx"]
    client = tracking_client(uri)
    runs = child_runs(uri, ctx.experiment_id, ctx.parent_run_id)
    total = 0
    for run in runs:
        for name in PER_EPOCH:
            history = client.get_metric_history(run.info.run_id, name)
            assert sorted(m.step for m in history) == list(range(EPOCHS)), (run.info.run_id, name)
            assert all(np.isfinite(m.value) for m in history)
            total += len(history)
    assert total == len(runs) * len(PER_EPOCH) * EPOCHS == 8 * 8 * EPOCHS
    overlap = max_overlap(runs)
    log = server.log_tail(400)
    print(
        f"\nMEASURE concurrency {backend}: {len(runs)} trials at 0.25 CPU, "
        f"{overlap} child runs open at once, {total} per-epoch metric rows counted back "
        f"(expected {8 * 8 * EPOCHS})"
    )
    assert overlap >= 4, "trials should have logged concurrently"
    assert "Traceback" not in log, log[-3000:]


def check_registry_handoff(server: TrackingServer, out: dict) -> None:
    """Ensemble registered under @current; a reader gets the job's frames back exactly."""
    uri, ctx = server.url, out["ctx"]
    dataset = out["config"].datasets[0].name
    ensemble = out["ensemble"]
    outputs = load_ensemble_outputs(ctx.session, f"{dataset}-ensemble@current")
    pd.testing.assert_frame_equal(outputs.weights, ensemble.weights)
    pd.testing.assert_frame_equal(outputs.embedding, ensemble.embedding)
    pd.testing.assert_frame_equal(outputs.labels, ensemble.labels)
    assert outputs.version.alias == "current"
    assert out["row"]["registered"].endswith(f"v{outputs.version.version}")
    client = tracking_client(uri)
    ens_run = client.get_run(outputs.version.run_id)
    assert ens_run.data.tags[TAGS.role] == "ensemble"
    assert ens_run.data.tags[TAGS.sweep] == ctx.sweep
    used = versions_from_ranges(ens_run.data.tags["deeppert.encoder_versions"])
    assert len(used) == len(set(used)) == 8
    # The job logs the files `deeppert ensemble` writes (one writer), beside its pyfunc.
    logged = {a.path for a in client.list_artifacts(outputs.version.run_id)}
    assert {"members.json", "summary.json", "stability.json", "selection.csv"} <= logged
    # Lineage: the targets job's run names the version it consumed.
    assert out["targets_rc"] == 0
    targets = client.search_runs(
        [ctx.experiment_id], filter_string=f"tags.`{TAGS.role}` = 'targets'"
    )
    assert len(targets) == 1
    tags = targets[0].data.tags
    assert targets[0].info.status == "FINISHED"
    assert tags["deeppert.input_model"] == f"{dataset}-ensemble/{outputs.version.version}"
    assert tags["deeppert.input_run"] == outputs.version.run_id
    assert tags["deeppert.input_alias"] == f"{dataset}-ensemble@current"
    metrics = targets[0].data.metrics
    assert {"match_rate_top_10", "known_pairs_in_top_10", "perm_p_top_10"} <= set(metrics)
    assert "match_rate" not in metrics
    note = tags["mlflow.note.content"]
    assert f"{dataset}-ensemble/{outputs.version.version}" in note and "match_rate_top_" in note
    assert "stability_half_a_n_programs" in ens_run.data.metrics
    assert "stability_half_a_n_programs" in ens_run.data.tags["mlflow.note.content"]
    # Reading the sweep never reopened its parent run.
    assert client.get_run(ctx.parent_run_id).info.status == "FINISHED"
    # The job's path (latents recomputed from each encoder one run at a time, per-run
    # components as Ray tasks) gives the ensemble of the in-process step on a DataFrame.
    config = out["config"]
    signatures = load_dataset(config.datasets[0])
    prepared = prepare(signatures, config)
    encoders = load_sweep_encoders(
        ctx.session, dataset, ctx.sweep, x_pca=prepared.x_train,
        sample_ids=prepared.train_ids, data_sha=data_sha256(signatures),
    )  # fmt: skip
    assert encoders.gene_weights is None  # the consensus mode reads none
    step = ensemble_step(
        encoders.latents.to_frame(), None, config=config.ensemble, x_pca=prepared.x_train,
        pca=encoders.pca,
    )  # fmt: skip
    pd.testing.assert_frame_equal(step.ensemble.weights, ensemble.weights)
    pd.testing.assert_frame_equal(step.ensemble.embedding, ensemble.embedding)
    pd.testing.assert_frame_equal(step.ensemble.labels, ensemble.labels)


def test_registered_ensemble_pyfunc_embeds_new_signatures(sqlite_server, sqlite_platform):
    import mlflow.pyfunc

    from deeppert.tracking.client import global_uris

    out = sqlite_platform
    config = out["config"]
    signatures = load_dataset(config.datasets[0])
    prepared = prepare(signatures, config)
    frame = pd.DataFrame(
        signatures.values[prepared.train_idx[:16]],
        index=pd.Index(prepared.train_ids[:16], name="sample_id"),
        columns=list(signatures.genes),
    )
    with global_uris(sqlite_server.url):
        model = mlflow.pyfunc.load_model(f"models:/{config.datasets[0].name}-ensemble@current")
    embedded = model.predict(frame)
    expected = out["ensemble"].embedding.loc[frame.index]
    np.testing.assert_allclose(embedded.to_numpy(), expected.to_numpy(), rtol=1e-4, atol=1e-4)


def test_sqlite_sweep_logs_every_artifact_of_the_contract(sqlite_server, sqlite_platform):
    check_contract(sqlite_server, sqlite_platform)


def test_sqlite_eight_concurrent_trials_lose_no_metric(sqlite_server, sqlite_platform):
    check_concurrency(sqlite_server, sqlite_platform, "sqlite")


def test_sqlite_ensemble_by_alias_and_targets_lineage(sqlite_server, sqlite_platform):
    check_registry_handoff(sqlite_server, sqlite_platform)


def test_ensemble_of_other_data_names_both_hashes(sqlite_server, sqlite_platform) -> None:
    """Data whose hash is not the sweep's is refused in one line naming both hashes."""
    ctx, config = sqlite_platform["ctx"], sqlite_platform["config"]
    dataset = config.datasets[0]
    signatures = load_dataset(dataset)
    prepared = prepare(signatures, config)
    other = "0" * 64
    with pytest.raises(DeeppertError) as info:
        load_sweep_encoders(
            ctx.session, dataset.name, ctx.sweep, x_pca=prepared.x_train,
            sample_ids=prepared.train_ids, data_sha=other,
        )  # fmt: skip
    message = str(info.value)
    assert "\n" not in message and other in message and data_sha256(signatures) in message


def test_targets_job_missing_alias_exits_2_naming_it(
    sqlite_server, sqlite_platform, pairs_dir, capsys
):
    out = sqlite_platform
    dataset = out["config"].datasets[0].name
    ref = f"{dataset}-ensemble@prod"  # the model exists; this alias does not
    rc = targets_job.main(
        [
            "--config",
            str(out["config_path"]),
            "--ensemble",
            ref,
            "--disease",
            DISEASE,
            "--pairs-dir",
            str(pairs_dir),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "'prod'" in err and ref in err and "current->v" in err, err


def test_rerunning_a_finished_sweep_trains_nothing(sqlite_server, sqlite_platform):
    out = sqlite_platform
    before = child_runs(sqlite_server.url, out["ctx"].experiment_id, out["ctx"].parent_run_id)
    table = sweep_job.run_sweep(out["config"])
    after = child_runs(sqlite_server.url, out["ctx"].experiment_id, out["ctx"].parent_run_id)
    assert table.empty
    assert sorted(r.info.run_id for r in after) == sorted(r.info.run_id for r in before)


@pytest.mark.postgres
def test_postgres_sweep_logs_every_artifact_of_the_contract(postgres_server, postgres_platform):
    check_contract(postgres_server, postgres_platform)


@pytest.mark.postgres
def test_postgres_eight_concurrent_trials_lose_no_metric(postgres_server, postgres_platform):
    check_concurrency(postgres_server, postgres_platform, "postgres")


@pytest.mark.postgres
def test_postgres_ensemble_by_alias_and_targets_lineage(postgres_server, postgres_platform):
    check_registry_handoff(postgres_server, postgres_platform)


# --- bad input: clear message, exit 2, fast --------------------------------------------------


def test_sweep_unknown_config_key_exits_2_naming_it(tmp_path: Path, capsys) -> None:
    raw = sweep_raw("http://127.0.0.1:1", "bad")
    raw["sweep"]["cpus_per_trail"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert sweep_job.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "sweep.cpus_per_trail: unknown key" in err, err


@pytest.mark.parametrize("job", [sweep_job, ensemble_job], ids=["sweep", "ensemble"])
def test_unreachable_tracking_server_exits_2_naming_the_uri(job, tmp_path: Path, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.perf_counter()
    rc = job.main(["--config", str(SMOKE), "--tracking-uri", url])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2
    assert url in err and "unreachable" in err, err
    assert elapsed < 10, f"took {elapsed:.1f}s to give up on a closed port"


def test_targets_job_unreachable_server_exits_2(tmp_path: Path, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    rc = targets_job.main(
        [
            "--config",
            str(SMOKE),
            "--tracking-uri",
            url,
            "--disease",
            DISEASE,
            "--pairs-dir",
            str(tmp_path),
        ]
    )
    assert rc == 2
    assert url in capsys.readouterr().err


def test_cli_targets_reads_weights_by_registry_alias(
    sqlite_server, sqlite_platform, pairs_dir, tmp_path
):
    """`deeppert targets --weights NAME@ALIAS` gives the same pairs as the in-memory ensemble."""
    from deeppert.cli import main
    from deeppert.targets import TargetConfig, load_known_pairs, predict_targets

    out = sqlite_platform
    dataset = out["config"].datasets[0].name
    rc = main(
        [
            "targets",
            "--weights",
            f"{dataset}-ensemble@current",
            "--tracking-uri",
            sqlite_server.url,
            "--pairs-dir",
            str(pairs_dir),
            "--disease",
            DISEASE,
            "--out",
            str(tmp_path / "t"),
            "--no-plots",
            "--permutations",
            "20",
        ]
    )
    assert rc == 0
    written = pd.read_csv(tmp_path / "t" / "target_combinations.csv")
    config = TargetConfig(plots=False, permutations=20)
    expected = predict_targets(
        out["ensemble"].weights, config=config, known=load_known_pairs(pairs_dir), disease=DISEASE
    )
    assert list(written["GeneA"]) == list(expected.pairs["GeneA"])
    np.testing.assert_allclose(written["Total_Score"], expected.pairs["Total_Score"], rtol=1e-9)


def test_distributed_components_feed_tasks_as_others_finish_and_match_in_process(ray_cluster):
    """More tasks than the 2 a CPU kept in flight (10 tasks on 2 CPUs): every model run's
    rotation and loadings come back, equal to components_by_run in this process."""
    from deeppert.ensemble.config import EnsembleConfig
    from deeppert.ensemble.modes import components_by_run
    from deeppert.preprocess import fit_pca
    from ray_jobs._distributed import distributed_components

    if not ray_cluster.is_initialized():  # a job's main() run by an earlier test shut it down
        ray_cluster.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
    rng = np.random.default_rng(0)
    x = rng.laplace(size=(300, 4)) @ rng.standard_normal((4, 40))
    pca = fit_pca(x, [f"g{i}" for i in range(40)], 10)
    x_pca = pca.transform(x)
    codes = {
        f"AE_d3_run{r}_z{k}": col
        for r in range(10)
        for k, col in enumerate((x_pca[:, :4] @ rng.standard_normal((4, 3))).T)
    }
    latents = pd.DataFrame(codes)
    config = EnsembleConfig()
    found = distributed_components(latents, x_pca, pca, config, tasks=10)
    local = components_by_run(latents, x_pca, pca, config)
    assert list(found) == list(local) == [f"AE_d3_run{r}" for r in range(10)]
    for key, part in local.items():
        np.testing.assert_allclose(found[key].rotation, part.rotation)
        np.testing.assert_allclose(found[key].loadings_pca, part.loadings_pca)


def test_ray_map_runs_the_consensus_pieces_as_tasks_with_the_in_process_result(ray_cluster):
    """ray_map runs each piece in a Ray worker (not this process) and yields in order, taking
    items only as it yields; the consensus over it (density filter segments, L scan and
    embedding pieces as tasks, reading the shared arrays from the object store) is the
    in-process one."""
    import os

    from deeppert.ensemble.config import EnsembleConfig
    from deeppert.ensemble.modes import consensus_ensemble
    from deeppert.preprocess import fit_pca
    from ray_jobs._distributed import ray_map

    if not ray_cluster.is_initialized():  # a job's main() run by an earlier test shut it down
        ray_cluster.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
    found = list(ray_map(lambda i: (i, os.getpid()), range(6)))
    assert [i for i, _ in found] == list(range(6))
    assert os.getpid() not in {pid for _, pid in found}
    taken = []  # items are taken as results are yielded, 2 a CPU ahead: not all at once

    def items():
        for i in range(20):
            taken.append(i)
            yield i

    results = ray_map(lambda i: i * i, items())
    assert next(results) == 0
    assert len(taken) == 2 * int(ray_cluster.cluster_resources()["CPU"]) < 20
    assert list(results) == [i * i for i in range(1, 20)]
    rng = np.random.default_rng(1)
    x = rng.laplace(size=(400, 3)) @ rng.standard_normal((3, 40)) + 0.3 * rng.normal(size=(400, 40))
    pca = fit_pca(x, [f"g{i}" for i in range(40)], 10)
    x_pca = pca.transform(x)
    latents = pd.DataFrame(
        {
            f"AE_d4_run{r}_z{k}": col
            for r in range(6)
            for k, col in enumerate((x_pca[:, :3] @ rng.standard_normal((3, 4))).T)
        }
    )
    config = EnsembleConfig(l_max=5)
    local = consensus_ensemble(latents, x_pca, pca, config=config)
    tasks = consensus_ensemble(latents, x_pca, pca, config=config, mapper=ray_map)
    for table in ("loadings", "labels", "selection", "embedding"):
        pd.testing.assert_frame_equal(getattr(local, table), getattr(tasks, table))
    assert local.n_clusters >= 2
