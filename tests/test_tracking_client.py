"""Tracking helpers against real server processes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest
import torch
from mlflow.entities import Param

from deeppert.errors import DeeppertError
from deeppert.tracking import (
    ServerConfig,
    TrackingServer,
    find_runs_by_tag,
    finish_run,
    get_or_create_experiment,
    load_parquet,
    load_torch_model,
    log_parquet,
    log_torch_model,
    mark_run_failed,
    register_logged_model,
    resolve_alias,
    set_alias,
    start_run,
    tracked_run,
    tracking_client,
)
from deeppert.tracking.client import code_version, dataset_entity
from deeppert.tracking.session import TrackingSession

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(600)]

N_WRITERS = 8
N_STEPS = 50


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """URL of a tracking server on a fresh SQLite file or a fresh PostgreSQL database."""
    data_dir = tmp_path_factory.mktemp(f"mlflow-{request.param}")
    backend = None
    db_name = None
    admin_uri = None
    if request.param == "postgres":
        admin_uri = request.getfixturevalue("postgres_uri")
        db_name = f"deeppert_test_{uuid.uuid4().hex[:10]}"
        backend = admin_uri.rsplit("/", 1)[0] + f"/{db_name}"
    srv = TrackingServer(
        ServerConfig(data_dir=str(data_dir), backend_store_uri=backend, port=0, workers=1)
    )
    try:
        srv.start()
        print(f"\nMEASURE start_seconds {request.param} {srv.startup_seconds:.2f}")
        srv.backend_name = request.param  # type: ignore[attr-defined]
        yield srv.url
    finally:
        srv.stop()
        if db_name is not None:
            conn = psycopg2.connect(admin_uri)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            conn.close()


@pytest.fixture
def session(server: str) -> TrackingSession:
    """A session connected to a fresh experiment of ``server``."""
    return TrackingSession.for_uri(server, f"exp-{uuid.uuid4().hex[:8]}").connect()


def _frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    samples = pd.Index([f"sig_{i:03d}" for i in range(40)], name="sample_id")
    genes = pd.Index([f"GENE{i}" for i in range(25)], name="gene")
    nodes = [f"node_{j}" for j in range(6)]
    return {
        "latents.parquet": pd.DataFrame(
            rng.normal(size=(40, 6)).astype(np.float32), index=samples, columns=nodes
        ),
        "gene_weights.parquet": pd.DataFrame(rng.normal(size=(25, 6)), index=genes, columns=nodes),
        "ensemble/labels.parquet": pd.DataFrame(
            {
                "cluster": rng.integers(0, 3, size=6).astype(np.int64),
                "member": [f"m{j}" for j in range(6)],
                "kept": [True, False] * 3,
            },
            index=pd.Index(nodes, name="latent"),
        ),
    }


def test_run_logs_params_metrics_and_parquet_that_read_back_identically(
    server: str, session: TrackingSession
) -> None:
    run_id = start_run(
        session,
        run_name="trial",
        tags={"deeppert.grid_key": "A375/vae/8/0"},
        params={"model": "vae", "latent_dim": 8, "lr": 1e-3},
    )
    client = tracking_client(server)
    for step in range(5):
        client.log_metric(run_id, "train_loss", 1.0 / (step + 1), step=step)
    frames = _frames()
    for path, frame in frames.items():
        assert log_parquet(session, run_id, frame, path) == path
    finish_run(session, run_id)

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"model": "vae", "latent_dim": "8", "lr": "0.001"}
    # Standard source tags (the UI's Source / User / Git commit) and the model-training view.
    assert run.data.tags["mlflow.source.type"] == "JOB" and run.data.tags["mlflow.user"]
    assert run.data.tags["mlflow.source.name"]
    assert run.data.tags["mlflow.source.git.commit"] == code_identity_commit()
    kind = client.get_experiment(session.experiment_id).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"
    assert run.data.tags["deeppert.grid_key"] == "A375/vae/8/0"
    history = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(5)]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served, not a local path
    for path, frame in frames.items():
        back = load_parquet(session, run_id, path)
        pd.testing.assert_frame_equal(back, frame, check_exact=True)


def code_identity_commit() -> str:
    """HEAD of this checkout, as git itself reports it."""
    import subprocess

    return subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_description_and_code_version(server: str, session: TrackingSession) -> None:
    run_id = start_run(session, run_name="VAE d10 r2", description="one trial")
    run = tracking_client(server).get_run(run_id)
    assert run.data.tags["mlflow.note.content"] == "one trial"
    assert run.info.run_name == "VAE d10 r2"
    # A real code version: the checkout's commit, not the bare package version.
    assert code_version().split("+g")[1][:12] == code_identity_commit()[:12]


def test_parquet_bad_input_is_named(server: str, session: TrackingSession) -> None:
    run_id = start_run(session)
    frame = pd.DataFrame(np.ones((2, 2)), columns=[0, 1])
    with pytest.raises(DeeppertError, match="string column names"):
        log_parquet(session, run_id, frame, "x.parquet")
    with pytest.raises(DeeppertError, match="relative path ending in .parquet"):
        log_parquet(session, run_id, frame.rename(columns=str), "../x.parquet")
    with pytest.raises(DeeppertError, match="no artifact 'missing.parquet'"):
        load_parquet(session, run_id, "missing.parquet")


def test_dataset_entity_equals_mlflows_own() -> None:
    """The public-API entity matches MLflow's private ``_to_mlflow_entity`` (the assumption)."""
    import mlflow.data

    frame = pd.DataFrame({"g1": [0.5, 1.5], "g2": [2.0, -1.0]}, index=["a", "b"]).reset_index()
    ds = mlflow.data.from_pandas(frame, source="/data/x.parquet", name="X")
    ours, theirs = dataset_entity(ds), ds._to_mlflow_entity()
    assert ours.to_dictionary() == theirs.to_dictionary()
    assert ours.name == "X" and ours.schema and ours.profile


def test_tracked_run_finishes_or_fails_and_reraises(server: str, session: TrackingSession) -> None:
    client = tracking_client(server)
    with tracked_run(session, tags={"deeppert.grid_key": "ok"}, params={"a": 1}) as ok:
        assert client.get_run(ok).info.status == "RUNNING"
    done = client.get_run(ok)
    assert done.info.status == "FINISHED" and done.data.params == {"a": "1"}

    with pytest.raises(KeyError, match="boom"):
        with tracked_run(session, run_name="bad") as bad:
            raise KeyError("boom")
    failed = client.get_run(bad)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["deeppert.failure"] == "KeyError: 'boom'"


def test_find_runs_by_tag_status_and_parent(server: str, session: TrackingSession) -> None:
    parent = start_run(session, run_name="sweep", tags={"deeppert.sweep": "s1"})
    key = "deeppert.grid_key"
    failed = start_run(session, tags={key: "g1"}, parent_run_id=parent)
    mark_run_failed(session, failed, reason="worker died")
    done = start_run(session, tags={key: "g1"}, parent_run_id=parent)
    finish_run(session, done)
    other = start_run(session, tags={key: "g2"})

    assert {r.info.run_id for r in find_runs_by_tag(session, key, "g1")} == {
        failed,
        done,
    }

    def ids(value: str, **narrow) -> list[str]:
        return [r.info.run_id for r in find_runs_by_tag(session, key, value, **narrow)]

    assert ids("g1", status="FINISHED") == [done]
    (failed_run,) = find_runs_by_tag(session, key, "g1", status="FAILED")
    assert failed_run.info.run_id == failed
    assert failed_run.data.tags["deeppert.failure"] == "worker died"
    assert ids("g1", status="RUNNING") == []
    assert ids("g2", parent_run_id=parent) == []
    assert ids("g2") == [other]
    assert set(ids("g1", parent_run_id=parent)) == {done, failed}
    with pytest.raises(DeeppertError, match="quotes"):
        find_runs_by_tag(session, key, "it's")
    with pytest.raises(DeeppertError, match="unknown run status"):
        find_runs_by_tag(session, key, "g1", status="DONE")  # type: ignore[arg-type]


def test_get_or_create_experiment_is_idempotent_under_races(server: str) -> None:
    name = f"race-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(6) as pool:
        ids = list(
            pool.map(
                lambda _: get_or_create_experiment(TrackingSession.for_uri(server), name), range(6)
            )
        )
    assert len(set(ids)) == 1
    assert tracking_client(server).get_experiment_by_name(name).experiment_id == ids[0]


def test_torch_models_logged_from_threads_at_once_each_reload_as_their_own(
    session: TrackingSession,
) -> None:
    """A trial logs its runs' encoders from several threads: nothing process-global is shared."""
    x = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32)
    models = []
    for seed in range(4):
        torch.manual_seed(seed)
        models.append(torch.nn.Sequential(torch.nn.Linear(5, 2), torch.nn.Tanh()))
    run_ids = [start_run(session, run_name=f"trial {i}") for i in range(len(models))]
    with ThreadPoolExecutor(len(models)) as pool:
        logged = list(
            pool.map(
                lambda i: log_torch_model(
                    session, run_ids[i], models[i], name="encoder", input_example=x
                ),
                range(len(models)),
            )
        )
    for model, run_id, ref in zip(models, run_ids, logged):
        stored = session.client.get_logged_model(ref.model_id)
        assert stored.source_run_id == run_id and str(stored.status).endswith("READY")
        loaded = load_torch_model(session, ref.model_uri)
        with torch.no_grad():
            np.testing.assert_array_equal(
                loaded(torch.from_numpy(x)).numpy(), model(torch.from_numpy(x)).numpy()
            )


def test_torch_model_registered_alias_resolves_to_same_version(
    server: str, session: TrackingSession, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    import mlflow

    uris_before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    run_id = start_run(session, run_name="trial")
    logged = log_torch_model(session, run_id, model, name="encoder", input_example=x)
    finish_run(session, run_id)
    assert logged.model_uri == f"models:/{logged.model_id}"
    # The logged model lives in the run's experiment (MLflow's log_model(run_id=...) alone
    # put it in Default), is READY, and the run lists it as an output.
    client = tracking_client(server)
    stored = client.get_logged_model(logged.model_id)
    assert stored.experiment_id == session.experiment_id and stored.source_run_id == run_id
    assert str(stored.status) in ("READY", "LoggedModelStatus.READY")
    outputs = client.get_run(run_id).outputs
    assert [m.model_id for m in outputs.model_outputs] == [logged.model_id]
    in_default = client.search_logged_models(experiment_ids=["0"])
    assert logged.model_id not in {m.model_id for m in in_default}

    name = f"A375-encoder-{uuid.uuid4().hex[:6]}"
    v1 = register_logged_model(session, logged.model_uri, name, tags={"model": "ae", "dim": 4})
    v2 = register_logged_model(session, logged.model_uri, name, run_id=run_id)
    assert (v1.version, v2.version) == ("1", "2")
    # the registered model is created once per process; deleted since, it is made again
    client.delete_registered_model(name)
    assert register_logged_model(session, logged.model_uri, name).version == "1"
    assert v1.run_id == run_id and v1.tags == {"model": "ae", "dim": "4"}
    set_alias(session, name, "current", v1.version)

    resolved = resolve_alias(session, f"{name}@current")
    assert (resolved.version, resolved.run_id, resolved.source) == (v1.version, run_id, v1.source)
    assert resolved.model_id == logged.model_id and resolved.alias == "current"

    loaded = load_torch_model(session, f"models:/{name}@current")
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == uris_before  # no leak
    with torch.no_grad():
        np.testing.assert_array_equal(
            loaded(torch.from_numpy(x)).numpy(), model(torch.from_numpy(x)).numpy()
        )
    import yaml

    location = tracking_client(server).get_logged_model(logged.model_id).artifact_location
    assert location.startswith("mlflow-artifacts:")  # served through the server
    mlmodel = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{location}/MLmodel", tracking_uri=server, dst_path=str(tmp_path)
    )
    signature = yaml.safe_load(Path(mlmodel).read_text())["signature"]
    assert '"shape": [-1, 5]' in signature["inputs"]

    with pytest.raises(DeeppertError, match=r"no alias 'gone'.*current->v1"):
        resolve_alias(session, f"{name}@gone")
    with pytest.raises(DeeppertError, match=rf"no registered model 'absent-model'.*{name}"):
        resolve_alias(session, "absent-model@current")
    with pytest.raises(DeeppertError, match="reserved"):
        set_alias(session, name, "latest", v1.version)
    with pytest.raises(DeeppertError, match="logged model URI"):
        register_logged_model(session, "runs:/abc/encoder", name)


@pytest.mark.slow
def test_concurrent_writers_lose_no_metric(server: str, session: TrackingSession) -> None:
    """8 writers, each its own run, 50 steps x 2 metrics as single requests, all at once."""
    barrier = threading.Barrier(N_WRITERS)
    client = tracking_client(server)

    def writer(i: int) -> str:
        run_id = start_run(session, tags={"deeppert.grid_key": f"w{i}"})
        barrier.wait()
        for step in range(N_STEPS):
            client.log_metric(run_id, "loss", i + step / 1000, step=step)
            client.log_metric(run_id, "r2", -i - step / 1000, step=step)
        finish_run(session, run_id)
        return run_id

    t0 = time.perf_counter()
    with ThreadPoolExecutor(N_WRITERS) as pool:
        run_ids = list(pool.map(writer, range(N_WRITERS)))
    seconds = time.perf_counter() - t0

    rows = 0
    for i, run_id in enumerate(run_ids):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        for name, sign in (("loss", 1), ("r2", -1)):
            history = sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)
            expected = [(s, sign * (i + s / 1000)) for s in range(N_STEPS)]
            assert [(m.step, m.value) for m in history] == expected
            rows += len(history)
    assert rows == N_WRITERS * N_STEPS * 2
    print(
        f"\nMEASURE concurrency writers={N_WRITERS} rows_back={rows}/{N_WRITERS * N_STEPS * 2} "
        f"seconds={seconds:.1f} metrics_per_s={rows / seconds:.0f}"
    )


def test_tag_writes_to_one_run_from_many_writers_all_land(
    server: str, session: TrackingSession
) -> None:
    """Two sweep drivers write the same tags of their shared parent at the same moment.

    MLflow's store reads a tag, misses it, and inserts; two writers that both miss collide on
    the (run, key) unique index and one gets a 400 "UNIQUE constraint failed". With a plain
    ``MlflowClient`` this setup lost 5 of 200 writes on SQLite; ours retries the loser, whose
    retry updates the row. Every write must land and every key hold one writer's value.
    """
    n_writers, keys = 4, [f"k{j}" for j in range(50)]
    run_id = start_run(session)
    barrier = threading.Barrier(n_writers)

    def writer(i: int) -> None:
        client = tracking_client(server)
        barrier.wait()
        for key in keys:
            client.set_tag(run_id, key, f"writer{i}")
            client.log_batch(run_id, params=[Param(f"p_{key}", "same")])

    with ThreadPoolExecutor(n_writers) as pool:
        list(pool.map(writer, range(n_writers)))  # re-raises a lost write
    data = tracking_client(server).get_run(run_id).data
    assert {data.tags[k] for k in keys} <= {f"writer{i}" for i in range(n_writers)}
    assert all(data.params[f"p_{k}"] == "same" for k in keys)


def test_only_a_lost_write_race_is_retried(monkeypatch) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    calls = []

    def flaky(self, run_id, key, value, synchronous=None):
        calls.append(key)
        if key == "race" and len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: tags.key")
        if key == "denied":
            raise MlflowException("Permission denied")

    monkeypatch.setattr(MlflowClient, "set_tag", flaky)
    client = tracking_client("http://127.0.0.1:9")
    client.set_tag("r", "race", "v")
    assert calls == ["race", "race"]
    with pytest.raises(MlflowException, match="Permission denied"):
        client.set_tag("r", "denied", "v")
    assert calls == ["race", "race", "denied"]
