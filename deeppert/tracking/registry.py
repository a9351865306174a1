"""Registry-driven hand-offs between jobs: sweep encoders -> ensemble -> downstream.

The ensemble job reads the sweep's encoder versions from the registry (never hand-copied
paths), rebuilds the ensemble, and registers it as ``<dataset>-ensemble`` with alias
``current``: an MLflow pyfunc model that embeds new signatures (PCA -> member encoders ->
cluster means), with ``labels.parquet``, ``ensemble_weights.parquet`` (gene importances, the
downstream input), ``ensemble_loadings.parquet`` (signed loadings) and
``ensemble_embedding.parquet`` on the ensemble run. Downstream jobs resolve the alias,
read those Parquet files, and tag their own runs with the version they used.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from deeppert.ensemble.modes import EnsembleModel
from deeppert.ensemble.outputs import write_ensemble_outputs
from deeppert.ensemble.stability import EnsembleStep
from deeppert.errors import DeeppertError
from deeppert.latent_store import LatentStore
from deeppert.models import ReplicaEncoder
from deeppert.preprocess import PCAModel
from deeppert.tracking.client import (
    REQUEST_THREADS,
    ModelVersionRef,
    global_uris,
    load_parquet,
    load_torch_model,
    register_logged_model,
    resolve_alias,
    set_alias,
    tracked_run,
)
from deeppert.tracking.contract import (
    ARTIFACTS,
    ENSEMBLE_ALIAS,
    PCA_TABLES,
    ROLES,
    TAGS,
    VERSION_TAGS,
    dataset_sha_tag,
    encoder_model_prefix,
    ensemble_model_name,
    pca_artifact,
    version_ranges,
)
from deeppert.tracking.notes import ensemble_description, stability_metrics
from deeppert.tracking.report import log_figure_images
from deeppert.tracking.session import TrackingSession
from deeppert.train import TrainConfig, TrainedModels

__all__ = [
    "ensemble_model_name",
    "SweepEncoders",
    "load_sweep_encoders",
    "EnsemblePyfunc",
    "check_signature_frame",
    "gene_signature",
    "log_ensemble",
    "log_ensemble_outputs",
    "pyfunc_requirements",
    "EnsembleOutputs",
    "load_ensemble_outputs",
    "load_ensemble_model",
    "lineage_tags",
]

log = logging.getLogger(__name__)


@dataclass
class SweepEncoders:
    """Everything the ensemble step needs, from one sweep's registered encoders.

    ``latents`` is a :class:`~deeppert.latent_store.LatentStore` that computes each model
    run's code from its encoder on the training PCA scores when asked, one run at a time
    (a DataFrame also serves). ``gene_weights`` are the IG gene weights, downloaded only
    when asked for (the gmeans mode reads them; the consensus mode does not)."""

    latents: LatentStore | pd.DataFrame  # training samples x latent variables (all encoders)
    gene_weights: pd.DataFrame | None  # genes x latent variables
    groups: dict[str, TrainedModels]  # by shape name (e.g. VAE_d10), runs stacked
    pca: PCAModel
    versions: list[str]  # encoder model versions used, as <name>/<version>
    parent_run_id: str


def load_sweep_encoders(
    session: TrackingSession,
    dataset: str,
    sweep: str,
    *,
    x_pca: np.ndarray,
    sample_ids: Sequence[str],
    data_sha: str,
    gene_weights: bool = False,
    train_config: TrainConfig | None = None,
) -> SweepEncoders:
    """Collect the encoders a sweep registered for ``dataset``; no latents are downloaded.

    ``x_pca`` (rows ``sample_ids``) are the training PCA scores of the data whose hash is
    ``data_sha`` (:func:`~deeppert.tracking.sweep.data_sha256`): it must equal the sweep parent's
    ``deeppert.data_sha256.<dataset>`` tag, else a one-line DeeppertError names both hashes.
    The latents are the encoders' codes of ``x_pca``, computed on demand. ``gene_weights``:
    also download every run's ``gene_weights.parquet`` (the gmeans mode's input).
    """
    client = session.client
    prefix = encoder_model_prefix(dataset)
    versions = [
        v
        for v in client.search_model_versions(
            f"name LIKE '{prefix}%' and tags.{VERSION_TAGS.sweep} = '{sweep}'"
        )
        if v.name.startswith(prefix)
    ]
    if not versions:
        raise DeeppertError(
            f"no encoder versions of registered models {prefix}* carry sweep tag {sweep!r} on {session.uri}"
        )
    vt = VERSION_TAGS
    versions.sort(key=lambda v: (v.tags[vt.model], int(v.tags[vt.dim]), int(v.tags[vt.run])))
    # Each version costs a few small requests: REQUEST_THREADS of them in flight (results in
    # version order) instead of one at a time, which left the job waiting on round trips.
    with ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="deeppert-load") as pool:
        runs = pool.map(lambda v: client.get_run(v.run_id), versions)
        parents = {run.data.tags.get("mlflow.parentRunId") for run in runs}
        if len(parents) != 1:
            raise DeeppertError(
                f"sweep {sweep!r}: encoder versions come from {len(parents)} parent runs; "
                "expected one"
            )
        parent = parents.pop()
        tag = dataset_sha_tag(dataset)
        sweep_sha = client.get_run(parent).data.tags.get(tag)
        if sweep_sha != data_sha:
            raise DeeppertError(
                f"{dataset}: the data's sha256 is {data_sha}, the sweep's ({tag} on parent run "
                f"{parent}) is {sweep_sha}: the data changed since the sweep"
            )

        def fetch(v) -> tuple[Any, pd.DataFrame | None]:
            # the version's source (models:/m-...) is in the search result: no model-versions/get
            source = (
                v.source if v.source.startswith("models:/m-") else f"models:/{v.name}/{v.version}"
            )
            encoder = load_torch_model(session, source, map_location="cpu")
            table = ARTIFACTS.gene_weights
            weight = load_parquet(session, v.run_id, table) if gene_weights else None
            return encoder, weight

        # Versions are sorted by shape: each shape's downloaded encoders are stacked once its
        # last one arrives, then dropped; run codes read replicas of the stack
        # (ReplicaEncoder), so the job holds each encoder once, not twice.
        weights, groups, codes = [], {}, {}
        fetched = zip(versions, pool.map(fetch, versions), strict=True)
        for shape, items in itertools.groupby(
            fetched, key=lambda item: f"{item[0].tags[vt.model]}_d{item[0].tags[vt.dim]}"
        ):
            runs, replicas = [], []
            for v, (encoder, weight) in items:
                if weight is not None:
                    weights.append(weight)
                runs.append(int(v.tags[vt.run]))
                replicas.append(encoder.autoencoder)
            group = TrainedModels.from_replicas(replicas, runs, train_config or TrainConfig())
            groups[shape] = group
            for r, run in enumerate(runs):
                codes[f"{shape}_run{run}"] = (group.node_names(r), ReplicaEncoder(group.module, r))
    pca = PCAModel.from_frames(
        *(load_parquet(session, parent, pca_artifact(dataset, n)) for n in PCA_TABLES)
    )
    return SweepEncoders(
        LatentStore.from_encoders(x_pca, sample_ids, codes),
        pd.concat(weights, axis=1) if gene_weights else None,
        groups,
        pca,
        [f"{v.name}/{v.version}" for v in versions],
        parent,
    )


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: gene values (rows = signatures, columns = genes) -> ensemble embedding."""

    def load_context(self, context) -> None:
        self.model = EnsembleModel.load(context.artifacts["ensemble"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Embed ``model_input``; a malformed request raises MLflow's INVALID_PARAMETER_VALUE,
        which ``mlflow models serve`` answers with HTTP 400 and the message (not a 500)."""
        return self.model.embed(check_signature_frame(model_input, self.model.pca.genes))


def check_signature_frame(frame: object, genes: list[str]) -> pd.DataFrame:
    """``frame`` as a float frame over ``genes``, or MlflowException(INVALID_PARAMETER_VALUE)
    naming what is wrong: not a table, missing genes, non-numeric or non-finite values."""
    import numpy as np
    from mlflow.exceptions import MlflowException

    from deeppert.data._io import MAX_SIGNATURE_VALUE

    def bad(message: str) -> MlflowException:
        return MlflowException.invalid_parameter_value(f"ensemble input: {message}")

    if isinstance(frame, np.ndarray):
        if frame.ndim != 2 or frame.shape[1] != len(genes):
            raise bad(f"expected a (n, {len(genes)}) array of gene values, got {frame.shape}")
        frame = pd.DataFrame(frame, columns=genes)
    if not isinstance(frame, pd.DataFrame):
        raise bad(f"expected a table of signatures x genes, got {type(frame).__name__}")
    repeated = frame.columns[frame.columns.duplicated()].unique()
    if len(repeated):
        shown = ", ".join(map(str, repeated[:10])) + (", ..." if len(repeated) > 10 else "")
        raise bad(f"{len(repeated)} column name(s) given more than once: {shown}")
    missing = [g for g in genes if g not in frame.columns]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        if len(missing) == len(genes):  # e.g. unnamed columns, which MLflow's schema drops
            raise bad(
                f"none of the {len(genes)} genes given; columns must be gene symbols: {shown}"
            )
        raise bad(f"{len(missing)} of {len(genes)} genes missing: {shown}")
    if len(frame) == 0:
        raise bad("no signatures (0 rows)")
    try:
        values = frame[genes].astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise bad(f"gene values must be numbers: {exc}") from exc
    finite = np.isfinite(values.to_numpy())
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise bad(
            f"{int((~finite).sum())} non-finite values (NaN/inf), first at row {values.index[row]!r},"
            f" gene {genes[col]!r}"
        )
    too_large = np.abs(values.to_numpy()) > MAX_SIGNATURE_VALUE
    if too_large.any():
        row, col = np.argwhere(too_large)[0]
        raise bad(
            f"{int(too_large.sum())} values beyond +-{MAX_SIGNATURE_VALUE:.1e} (the largest the "
            f"models compute with), first at row {values.index[row]!r}, gene {genes[col]!r}"
        )
    return values


def gene_signature(output: pd.DataFrame):
    """The pyfunc's MLflow signature: ``output``'s columns, and no input schema.

    MLflow enforces an input schema before ``predict`` and answers a frame it cannot match
    (missing genes, a column given twice) with a dump of the data and all 978 columns;
    without one, every request reaches :func:`check_signature_frame`, which names the problem
    in one line. The genes the model reads are the PCA's genes, in the model's artifacts."""
    from mlflow.models import ModelSignature, infer_signature

    return ModelSignature(inputs=None, outputs=infer_signature(output).inputs)


def log_ensemble(
    session: TrackingSession,
    *,
    dataset: str,
    sweep: str,
    step: EnsembleStep,
    model: EnsembleModel,
    encoders: SweepEncoders,
    alias: str = ENSEMBLE_ALIAS,
) -> ModelVersionRef:
    """Log an ensemble run with its outputs and register its pyfunc model under ``alias``.

    The run holds the files ``deeppert ensemble`` writes (:func:`log_ensemble_outputs`: the
    tables, members, summary, stability, selection curve, figures), the embedding model as a
    pyfunc (in place of ``model/``), and says what the density filter
    did (params ``density.*``, metric ``n_components_dropped``), the chosen L's ``silhouette``,
    the split-half stability (:data:`~deeppert.tracking.contract.STABILITY_METRICS`), a
    description that says how to read them (:func:`~deeppert.tracking.notes.ensemble_description`)
    and, under tag ``deeppert.warning``, every warning of the step."""
    ensemble, stability = step.ensemble, step.stability
    tags = {
        TAGS.role: ROLES.ensemble,
        TAGS.sweep: sweep,
        TAGS.cell_line: dataset,
        TAGS.encoder_versions: version_ranges(encoders.versions),
        TAGS.sweep_parent_run: encoders.parent_run_id,
    }
    if step.warnings:
        tags[TAGS.warning] = "; ".join(step.warnings)
    density = ensemble.density_filter or {}
    description = ensemble_description(
        step,
        dataset=dataset,
        sweep=sweep,
        versions=encoders.versions,
        parent_run_id=encoders.parent_run_id,
    )
    with tracked_run(
        session,
        run_name=f"ensemble {dataset}",
        tags=tags,
        description=description,
        params={
            **{f"ensemble.{k}": v for k, v in ensemble.config.to_dict().items()},
            **{f"density.{k}": v for k, v in density.items()},
            "n_latent_variables": encoders.latents.shape[1],
            "n_members": len(encoders.versions),
        },
    ) as run_id:
        client = session.client
        client.log_metric(run_id, "n_clusters", ensemble.n_clusters)
        client.log_metric(run_id, "n_components_dropped", ensemble.n_dropped)
        chosen = step.summary()["chosen"]
        if chosen is not None:
            client.log_metric(run_id, "silhouette", chosen["silhouette"])
        for name, value in stability_metrics(stability).items():
            client.log_metric(run_id, name, value)
        with tempfile.TemporaryDirectory() as tmp:
            log_ensemble_outputs(session, run_id, step, Path(tmp) / "outputs")
            model_dir = model.save(Path(tmp) / "ensemble_model")
            example = pd.DataFrame(encoders.pca.mean[None, :], columns=encoders.pca.genes)
            # pyfunc.log_model has no run_id argument: resume the run fluently.
            with global_uris(session.uri), mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(
                    name=ARTIFACTS.ensemble_model,
                    python_model=EnsemblePyfunc(),
                    artifacts={"ensemble": str(model_dir)},
                    input_example=example,
                    signature=gene_signature(model.embed(example)),
                    pip_requirements=pyfunc_requirements(),
                )
        name = ensemble_model_name(dataset)
        version = register_logged_model(
            session,
            info.model_uri,
            name,
            tags={VERSION_TAGS.sweep: sweep, VERSION_TAGS.run_id: run_id},
        )
        set_alias(session, name, alias, version.version)
        client.set_tag(run_id, TAGS.ensemble_version, f"{name}/{version.version}")
    return version


def log_ensemble_outputs(
    session: TrackingSession, run_id: str, step: EnsembleStep, folder: Path
) -> Path:
    """Write ``step``'s outputs into ``folder`` with the one writer of ``deeppert ensemble``
    (:func:`~deeppert.ensemble.outputs.write_ensemble_outputs`, no ``model/``) and log them at
    the run's artifact root, each figure also as a keyed image (the run's image panel)."""
    write_ensemble_outputs(folder, step)
    session.client.log_artifacts(run_id, str(folder))
    log_figure_images(session, run_id, folder)
    return folder


def pyfunc_requirements() -> list[str]:
    """The ensemble pyfunc's pip requirements: deeppert and the torch release running here."""
    import torch

    return ["deeppert", f"torch=={torch.__version__.split('+')[0]}"]


@dataclass
class EnsembleOutputs:
    """An ensemble resolved from the registry: its version and Parquet products.

    ``weights`` are the gene importances (non-negative, what targets and downstream read),
    ``loadings`` the signed gene loadings (None when the run has none)."""

    version: ModelVersionRef
    weights: pd.DataFrame
    embedding: pd.DataFrame
    labels: pd.DataFrame
    loadings: pd.DataFrame | None = None


def load_ensemble_outputs(session: TrackingSession, ref: str) -> EnsembleOutputs:
    """Resolve ``name@alias`` and read its run's ensemble Parquet files."""
    version = resolve_alias(session, ref)
    if version.run_id is None:
        raise DeeppertError(
            f"{ref}: model version {version.version} has no source run to read products from"
        )
    present = {a.path for a in session.client.list_artifacts(version.run_id)}
    return EnsembleOutputs(
        version,
        load_parquet(session, version.run_id, ARTIFACTS.ensemble_weights),
        load_parquet(session, version.run_id, ARTIFACTS.ensemble_embedding),
        load_parquet(session, version.run_id, ARTIFACTS.labels),
        load_parquet(session, version.run_id, ARTIFACTS.ensemble_loadings)
        if ARTIFACTS.ensemble_loadings in present
        else None,
    )


def lineage_tags(outputs: EnsembleOutputs) -> dict[str, str]:
    """Tags a downstream run carries to name the ensemble version it consumed."""
    v = outputs.version
    return {
        TAGS.input_model: f"{v.name}/{v.version}",
        TAGS.input_alias: f"{v.name}@{v.alias}" if v.alias else "",
        TAGS.input_run: v.run_id or "",
    }


def load_ensemble_model(session: TrackingSession, ref: str | ModelVersionRef) -> EnsembleModel:
    """The :class:`EnsembleModel` behind a registered ensemble pyfunc (``name@alias`` or a version).

    Loads ``models:/<name>/<version>`` (pinned, so a moving alias cannot swap it mid-job)
    through ``mlflow.pyfunc`` and unwraps the :class:`EnsemblePyfunc`.
    """
    version = resolve_alias(session, ref) if isinstance(ref, str) else ref
    with global_uris(session.uri):
        pyfunc = mlflow.pyfunc.load_model(version.uri)
    inner = pyfunc.unwrap_python_model()
    if not isinstance(getattr(inner, "model", None), EnsembleModel):
        raise DeeppertError(
            f"{version.uri}: not a deeppert ensemble pyfunc ({type(inner).__name__})"
        )
    return inner.model
