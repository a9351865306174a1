"""The artifact contract: every name one job writes to MLflow and the next one reads.

Tags, role values, params, metrics, artifact paths, registered-model names, model-version
tags and the registry alias live here and nowhere else; jobs import these constants instead
of spelling the strings. ``docs/architecture.md`` ("Artifact contract") describes the same
names, and ``tests/test_contract.py`` checks that the two list the same ones.
"""

from __future__ import annotations

from deeppert.train_config import PCA_TABLES  # the PCA model's own format, one table a file

__all__ = [
    "TAGS",
    "ROLES",
    "ARTIFACTS",
    "VERSION_TAGS",
    "ENSEMBLE_ALIAS",
    "ENSEMBLE_TABLES",
    "ENSEMBLE_FILES",
    "BEST_ALIAS",
    "PCA_TABLES",
    "TRIAL_PARAMS",
    "EPOCH_METRICS",
    "HELD_OUT_METRICS",
    "IG_METRIC",
    "AGREEMENT_METRIC",
    "STABILITY_METRICS",
    "TARGETS_METRICS",
    "targets_metric",
    "grid_key",
    "dataset_sha_tag",
    "pca_folder",
    "pca_artifact",
    "encoder_model_prefix",
    "encoder_model_name",
    "ensemble_model_name",
    "version_ranges",
    "versions_from_ranges",
    "tag_names",
    "role_names",
    "artifact_names",
]


class TAGS:
    """Run tag names (all under the ``deeppert.`` prefix)."""

    # every run the platform starts
    role = "deeppert.role"
    failure = "deeppert.failure"  # the reason a run was marked FAILED
    # sweep parent and trial runs
    sweep = "deeppert.sweep"
    config_sha = "deeppert.config_sha256"
    code_version = "deeppert.code_version"
    grid_key = "deeppert.grid_key"
    cell_line = "deeppert.cell_line"
    data_sha = "deeppert.data_sha256"  # parent: one tag per dataset, see dataset_sha_tag
    worker = "deeppert.worker"
    model = "deeppert.model"
    latent_dim = "deeppert.latent_dim"
    run = "deeppert.run"
    encoder_version = "deeppert.encoder_version"
    heartbeat = "deeppert.heartbeat"  # epoch ms, renewed while a trial attempt lives (its claim)
    # the run of the same trial whose deeppert.heartbeat stands for this run's (one beat a trial)
    heartbeat_run = "deeppert.heartbeat_run"
    driver = "deeppert.driver"  # parent: host:pid of the sweep driver that last opened it
    ray_node_id = "deeppert.ray_node_id"  # the Ray node a trial ran on
    best_shape = "deeppert.best_shape"  # parent: the sweep report's best <dataset>/<MODEL>/d<dim>
    # parent: "true" when a linear baseline's held-out R^2 beats every model's, on some dataset
    baseline_beats_models = "deeppert.baseline_beats_models"
    # model-search runs (ray_jobs/search.py)
    tune_trial = "deeppert.tune_trial"
    stop_reason = "deeppert.stop_reason"
    best_config = "deeppert.best_config"
    # ensemble runs
    encoder_versions = "deeppert.encoder_versions"
    sweep_parent_run = "deeppert.sweep_parent_run"
    ensemble_version = "deeppert.ensemble_version"
    warning = "deeppert.warning"  # why not to trust the ensemble ("; "-joined), when any
    # downstream runs (targets, downstream): the ensemble version they consumed
    input_model = "deeppert.input_model"
    input_alias = "deeppert.input_alias"
    input_run = "deeppert.input_run"
    disease = "deeppert.disease"
    task = "deeppert.task"
    feature_set = "deeppert.feature_set"


class ROLES:
    """Values of :attr:`TAGS.role`."""

    sweep = "sweep"
    trial = "trial"
    ensemble = "ensemble"
    targets = "targets"
    downstream = "downstream"
    search = "search"  # a model search's parent run (ray_jobs/search.py)
    search_trial = "search_trial"  # one Tune trial of a model search


class ARTIFACTS:
    """Artifact paths inside a run (files, logged models and folders)."""

    # trial runs (no latents: the encoder on the training PCA scores gives them)
    gene_weights = "gene_weights.parquet"
    encoder = "encoder"  # logged PyTorch model
    # ensemble runs
    labels = "labels.parquet"
    ensemble_weights = "ensemble_weights.parquet"  # gene importances (>= 0): downstream input
    ensemble_loadings = "ensemble_loadings.parquet"  # signed gene loadings, beside them
    ensemble_embedding = "ensemble_embedding.parquet"
    # PCA, FastICA and NMF programs at the ensemble's L beside the ensemble: split-half
    # stability and held-out R^2 (deeppert.ensemble.baselines), + program_baselines.png
    program_baselines = "program_baselines.parquet"
    stability = "stability.json"
    ensemble_model = "ensemble"  # logged pyfunc model
    # targets runs
    targets = "targets"  # folder of the target-combination outputs
    # downstream runs
    scores = "scores.parquet"
    predictions = "predictions.parquet"


class VERSION_TAGS:
    """Tags on registered model versions (encoder versions: all but run_id; ensemble: sweep, run_id)."""

    sweep = "sweep"
    model = "model"
    dim = "dim"
    run = "run"
    grid_key = "grid_key"
    r2_genes = "r2_genes"  # encoder versions: held-out gene-space R^2 of the run
    run_id = "run_id"


# EnsembleStep.tables() role -> artifact file (on the ensemble run and in RUN_DIR/ensemble/)
ENSEMBLE_TABLES = {
    "labels": ARTIFACTS.labels,
    "weights": ARTIFACTS.ensemble_weights,
    "loadings": ARTIFACTS.ensemble_loadings,
    "embedding": ARTIFACTS.ensemble_embedding,
    "baselines": ARTIFACTS.program_baselines,
}


class ENSEMBLE_FILES:
    """The other files of an ensemble's outputs (``RUN_DIR/ensemble/``, written by
    :func:`deeppert.ensemble.outputs.write_ensemble_outputs`); the ensemble run logs the same
    files (but ``model/``: its pyfunc model is :attr:`ARTIFACTS.ensemble_model`)."""

    members = "members.json"  # cluster -> its latent variables
    summary = "summary.json"  # L, what chose it, the density filter, warnings
    selection = "selection.csv"  # consensus mode: the L-selection curve
    selection_plot = "selection.png"
    top_genes = "top_genes.csv"  # top 20 genes per cluster
    baselines_plot = "program_baselines.png"
    model = "model"  # EnsembleModel.save(): embeds new signatures


ENSEMBLE_ALIAS = "current"  # MLflow reserves "latest"
BEST_ALIAS = "best"  # encoder versions: each shape's best held-out R^2 in the latest sweep

TRIAL_PARAMS = (
    "model",
    "latent_dim",
    "run",
    "seed",
    "pca_components",
    "epochs",
    "batch_size",
    "lr_max",
    "lr_min",
    "lr_cycle_epochs",
    "beta_start",
    "kl_kappa",
    "dropout",
    "dae_noise_std",
    "vae_decoder",
    "pca_artifact",
)
# per-epoch series; the val_* terms are on the held-out rows (train.held_out_loss)
EPOCH_METRICS = (
    "loss",
    "reconstruction",
    "kl",
    "beta",
    "lr",
    "val_loss",
    "val_reconstruction",
    "val_kl",
)
HELD_OUT_METRICS = ("r2_pca", "r2_genes", "val_sse_plus_kl")
IG_METRIC = "ig_max_rel_completeness_error"
# mean best-match |r| of a run's latent nodes with each other run its trial trained (>= 2 runs)
AGREEMENT_METRIC = "seed_agreement_in_trial"


# ensemble runs: stability.json key -> metric. Split-half stability splits the model runs into
# two halves, builds an ensemble of each and matches their programs (docs/method.md).
STABILITY_METRICS = {
    "ensemble_median": "stability_ensemble_median",  # median |r| of matched programs
    "single_median": "stability_single_model_median",  # the same for single-model nodes
    "n_clusters_a": "stability_half_a_n_programs",  # programs the first half's ensemble found
    "n_clusters_b": "stability_half_b_n_programs",  # and the second half's
}
# targets runs, one metric of each per reported TOP_N (targets_metric): known pairs among the
# top N predicted pairs, that count / the pairs in the top N, and its permutation p-value
TARGETS_METRICS = ("known_pairs_in_top", "match_rate_top", "perm_p_top")


def targets_metric(kind: str, top_n: int) -> str:
    """A targets run's metric for one TOP_N, e.g. ``match_rate_top_20`` (kind of
    :data:`TARGETS_METRICS`)."""
    if kind not in TARGETS_METRICS:
        raise ValueError(f"unknown targets metric {kind!r}; one of {TARGETS_METRICS}")
    return f"{kind}_{top_n}"


def grid_key(dataset: str, kind: str, latent_dim: int, run: int) -> str:
    """The deterministic key of one grid point, e.g. ``A549/VAE/d10/run3``."""
    return f"{dataset}/{kind}/d{latent_dim}/run{run}"


def dataset_sha_tag(dataset: str) -> str:
    """The sweep parent's tag holding one dataset's content hash."""
    return f"{TAGS.data_sha}.{dataset}"


def pca_folder(dataset: str) -> str:
    """Folder of one dataset's PCA tables on the sweep parent run."""
    return f"pca/{dataset}"


def pca_artifact(dataset: str, table: str) -> str:
    """Path of one PCA table (one of :data:`PCA_TABLES`) on the sweep parent run."""
    return f"{pca_folder(dataset)}/{table}.parquet"


def encoder_model_prefix(dataset: str) -> str:
    """What the registered encoder names of one cell line start with (they sort together)."""
    return f"{dataset}-encoder-"


def encoder_model_name(dataset: str, kind: str, latent_dim: int) -> str:
    """Registered model of one shape, e.g. ``A549-encoder-VAE-d10``: one version per run and
    sweep, alias ``best`` on the best held-out R^2 of the latest sweep (docs/architecture.md)."""
    return f"{encoder_model_prefix(dataset)}{kind}-d{latent_dim}"


def ensemble_model_name(dataset: str) -> str:
    """Registered model holding the ensembles of one cell line."""
    return f"{dataset}-ensemble"


def version_ranges(versions: list[str]) -> str:
    """``<name>/<version>`` items as ``name/1-100;other/3,5-7`` (tag ``deeppert.encoder_versions``).

    One by one, the 1,200 versions of a DeepProfile grid are about 30,000 characters; MLflow
    keeps at most 8,000 in a tag. As ranges per registered model they are a few hundred.
    :func:`versions_from_ranges` reads them back.
    """
    by_name: dict[str, list[int]] = {}
    for item in versions:
        name, _, version = item.rpartition("/")
        by_name.setdefault(name, []).append(int(version))
    parts = []
    for name, numbers in by_name.items():
        numbers, spans = sorted(set(numbers)), []
        for n in numbers:
            if spans and n == spans[-1][1] + 1:
                spans[-1][1] = n
            else:
                spans.append([n, n])
        ranges = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
        parts.append(f"{name}/{ranges}")
    return ";".join(parts)


def versions_from_ranges(text: str) -> list[str]:
    """The ``<name>/<version>`` items that :func:`version_ranges` wrote, in its order."""
    versions = []
    for part in filter(None, text.split(";")):
        name, _, ranges = part.rpartition("/")
        for span in ranges.split(","):
            first, _, last = span.partition("-")
            versions += [f"{name}/{n}" for n in range(int(first), int(last or first) + 1)]
    return versions


def _values(cls: type) -> set[str]:
    return {v for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, str)}


def tag_names() -> set[str]:
    """Every run tag name of the contract."""
    return _values(TAGS)


def role_names() -> set[str]:
    """Every role value."""
    return _values(ROLES)


def artifact_names() -> set[str]:
    """Every artifact file name of the contract (``.parquet`` / ``.json``), PCA tables included."""
    names = [*_values(ARTIFACTS), *_values(ENSEMBLE_FILES)]
    files = {a for a in names if a.endswith((".parquet", ".json"))}
    return files | {f"{t}.parquet" for t in PCA_TABLES}
