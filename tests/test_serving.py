"""Serving the registered ensemble over REST with ``mlflow models serve`` (a real process).

A tiny ensemble (2 AE runs of d=3 on 400 synthetic signatures, 3 epochs, L fixed to 2) is
registered on a real tracking server as ``SYN1-ensemble@current``; ``mlflow models serve
--env-manager local`` serves it on a free port. A JSON request of signatures must come back
as the same embedding as :meth:`EnsembleModel.embed` (1e-6); malformed requests must get a
4xx with a message naming the problem, never a 500.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from deeppert.attribution import IGConfig, attribute_genes
from deeppert.config import parse_config
from deeppert.ensemble.modes import EnsembleConfig, EnsembleModel, build_ensemble
from deeppert.ensemble.stability import EnsembleStep
from deeppert.grid import load_dataset, prepare, train_shape
from deeppert.tracking.registry import (
    EnsemblePyfunc,
    SweepEncoders,
    check_signature_frame,
    gene_signature,
    log_ensemble,
)
from deeppert.tracking.server import ServerConfig, TrackingServer, free_port
from deeppert.tracking.session import TrackingSession

REPO = Path(__file__).resolve().parents[1]


def tiny_ensemble():
    """(prepared data, EnsembleModel, Ensemble, SweepEncoders) small enough to build in seconds."""
    config = parse_config(
        {
            "name": "serving",
            "datasets": [{"name": "SYN1", "synthetic": {"n_samples": 400, "seed": 0}}],
            "preprocess": {"n_components": 20, "val_fraction": 0.1},
            "train": {"epochs": 3, "batch_size": 128},
        }
    )
    prepared = prepare(load_dataset(config.datasets[0]), config)
    trained, _ = train_shape(prepared, config, "AE", 3, [0, 1])
    latents = pd.concat(trained.latents_frames(prepared.x_train, prepared.train_ids), axis=1)
    attribution = attribute_genes(
        trained, prepared.x_train, prepared.pca, config=IGConfig(n_steps=8)
    )
    weights = pd.concat([attribution.frame(r) for r in range(2)], axis=1)
    ensemble = build_ensemble(
        latents, weights, config=EnsembleConfig(method="gmeans", n_clusters=2)
    )
    model = EnsembleModel.from_ensemble(ensemble, [trained], prepared.pca)
    encoders = SweepEncoders(latents, weights, {trained.name: trained}, prepared.pca, [], "")
    return prepared, model, ensemble, encoders


def test_check_signature_frame_names_the_problem():
    genes = ["g1", "g2", "g3"]
    good = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["g3", "g1", "g2"])
    assert list(check_signature_frame(good, genes).columns) == genes
    cases = {
        "ensemble input: 1 of 3 genes missing: g3": good[["g1", "g2"]],
        "non-finite values (NaN/inf), first at row 0, gene 'g2'": good.assign(g2=np.nan),
        "expected a (n, 3) array": np.ones((2, 4)),
        "no signatures (0 rows)": good.iloc[:0],
        "none of the 3 genes given; columns must be gene symbols: g1, g2, g3": pd.DataFrame(),
        "must be numbers": good.assign(g1="x"),
        "1 column name(s) given more than once: g1": pd.concat([good, good[["g1"]]], axis=1),
        "1 values beyond +-1.8e+19": good.assign(g3=1e308),
    }
    for message, bad in cases.items():
        with pytest.raises(MlflowException, match=None) as info:
            check_signature_frame(bad, genes)
        assert message in info.value.message
        assert info.value.get_http_status_code() == 400


@pytest.mark.slow
@pytest.mark.mlflow
def test_the_logged_model_answers_bad_frames_with_the_short_message(tmp_path: Path):
    """MLflow enforces an input schema before ``predict``; the logged model has none, so a
    frame lacking genes or repeating one gets the one-line message, not MLflow's dump of data
    and schema."""
    import mlflow.pyfunc

    prepared, model, _, _ = tiny_ensemble()
    genes = list(prepared.pca.genes)
    frame = pd.DataFrame(prepared.signatures.values[:4], columns=genes)
    model.save(tmp_path / "ensemble")
    mlflow.pyfunc.save_model(
        tmp_path / "pyfunc",
        python_model=EnsemblePyfunc(),
        artifacts={"ensemble": str(tmp_path / "ensemble")},
        signature=gene_signature(model.embed(frame)),
    )
    served = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    expected = model.embed(frame)
    np.testing.assert_allclose(served.predict(frame[genes[::-1]]).to_numpy(), expected.to_numpy())
    with pytest.raises(MlflowException) as info:
        served.predict(frame.drop(columns=genes[:12]))
    shown = ", ".join(genes[:10])
    assert info.value.message == f"ensemble input: 12 of {len(genes)} genes missing: {shown}, ..."
    with pytest.raises(MlflowException) as info:
        served.predict(pd.concat([frame, frame[[genes[3]]]], axis=1))
    assert (
        info.value.message == f"ensemble input: 1 column name(s) given more than once: {genes[3]}"
    )


def _post(url: str, payload: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=payload.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.slow
@pytest.mark.mlflow
@pytest.mark.timeout(600)
def test_mlflow_models_serve_answers_the_ensemble_embedding(tmp_path: Path):
    prepared, model, ensemble, encoders = tiny_ensemble()
    with TrackingServer(ServerConfig(data_dir=str(tmp_path / "mlflow"), port=0)) as server:
        session = TrackingSession.for_uri(server.url, "serving").connect()
        version = log_ensemble(
            session,
            dataset="SYN1",
            sweep="serving",
            step=EnsembleStep(ensemble, {}),
            model=model,
            encoders=encoders,
        )
        port = free_port()
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": server.url,
            "PYTHONPATH": str(REPO),
            # the server execs `uvicorn` by name: the venv's bin must be on PATH
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        log_path = tmp_path / "serve.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "models", "serve", "-m",
                 "models:/SYN1-ensemble@current", "--env-manager", "local",
                 "-h", "127.0.0.1", "-p", str(port)],
                env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    with urllib.request.urlopen(f"{base}/ping", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(1)

            genes = list(prepared.pca.genes)
            values = prepared.signatures.values[prepared.val_idx[:12]]
            ids = prepared.signatures.sample_ids[prepared.val_idx[:12]].tolist()
            frame = pd.DataFrame(values, index=ids, columns=genes)
            # columns in a shuffled order: the model must select genes by name
            shuffled = frame[genes[::-1]]
            payload = json.dumps({"dataframe_split": shuffled.to_dict(orient="split")})
            t0 = time.perf_counter()
            status, body = _post(f"{base}/invocations", payload)
            round_trip = time.perf_counter() - t0
            assert status == 200, body
            served = pd.DataFrame(body["predictions"])
            expected = model.embed(frame)
            assert list(served.columns) == list(expected.columns) == model.cluster_names
            np.testing.assert_allclose(served.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-6)
            print(
                f"\nMEASURE serving: v{version.version}, {len(ids)} signatures x {len(genes)} "
                f"genes, round trip {round_trip * 1000:.0f} ms, max |diff| "
                f"{np.abs(served.to_numpy() - expected.to_numpy()).max():.2e}"
            )

            with_nan = frame.copy()
            with_nan.iloc[3, 7] = np.nan
            bad = {
                "missing genes": json.dumps(
                    {"dataframe_split": frame.drop(columns=genes[:5]).to_dict(orient="split")}
                ),
                "NaN": json.dumps({"dataframe_split": with_nan.to_dict(orient="split")}),
                "wrong shape": json.dumps({"inputs": [[1.0, 2.0, 3.0]]}),
                "ragged rows": json.dumps(
                    {"dataframe_split": {"columns": genes, "data": [[1.0] * 10]}}
                ),
                "not a table": json.dumps({"inputs": "hello"}),
                "duplicated column": json.dumps(
                    {
                        "dataframe_split": {
                            "columns": [*genes, genes[0]],
                            "data": [[0.5] * (len(genes) + 1)],
                        }
                    }
                ),
                "1e308": json.dumps(
                    {"dataframe_split": frame.assign(**{genes[2]: 1e308}).to_dict(orient="split")}
                ),
            }
            for what, payload in bad.items():
                status, body = _post(f"{base}/invocations", payload)
                print(
                    f"MEASURE serving bad request {what}: {status} {body.get('message', '')[:160]!r}"
                )
                assert 400 <= status < 500, (what, status, body)
                assert body.get("message"), (what, body)
            status, body = _post(f"{base}/invocations", bad["NaN"])
            assert "non-finite" in body["message"] and genes[7] in body["message"]
            status, body = _post(f"{base}/invocations", bad["duplicated column"])
            assert body["message"].endswith(f"given more than once: {genes[0]}"), body["message"]
            assert len(body["message"]) < 3000, body["message"][:300]
            status, body = _post(f"{base}/invocations", bad["1e308"])
            assert status == 400 and genes[2] in body["message"], body["message"][-300:]
            status, body = _post(f"{base}/invocations", bad["missing genes"])
            # the scoring server prefixes pandas' (truncated) repr of the data; the reason is
            # one line at the end, not MLflow's schema check listing all 978 columns (28 KB)
            missing = f"5 of {len(genes)} genes missing: {', '.join(genes[:5])}"
            message = body["message"]
            print(f"MEASURE serving missing genes: message of {len(message)} characters")
            assert message.endswith(f"\nError: ensemble input: {missing}"), message[-300:]
            assert len(message) < 3000 and "schema" not in message, message[:300]
            # The server is still healthy after the bad requests.
            assert _post(f"{base}/invocations", payload)[0] >= 400
            assert _post(f"{base}/invocations", json.dumps(
                {"dataframe_split": frame.to_dict(orient="split")}))[0] == 200  # fmt: skip
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=30)
