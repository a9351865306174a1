"""The training grid on local files, and the folder it writes (a *run folder*).

The training step itself (split + PCA, one shape's runs) is :mod:`deeppert.grid`, shared
with the MLflow sweep.

``deeppert train`` writes one run folder per dataset; ``deeppert attribute`` and
``deeppert ensemble`` read it back. Layout::

    run_dir/
      config.json            the resolved experiment config and the dataset's name
      signatures.parquet     the input matrix (sample ids, genes, values)
      split.json             train / validation row positions, "split": grouped_by_id or rows
      pca/                   components.parquet (p x genes), center.parquet (mean, scale per gene),
                             explained_variance.parquet
      models/<KIND>_d<dim>/  TrainedModels.save(): config.json, state.pt, history.csv
      latents/<KIND>_d<dim>_run<r>.parquet   training samples x latent nodes
      baselines/<B>_d<dim>_{embedding,gene_weights}.parquet
      metrics.csv            held-out metrics, one row per model and run
      training_curves.png    loss per epoch, one line per model and run

The folder is written atomically: it appears whole when training succeeds, never half.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deeppert.atomic import atomic_dir, read_json, read_parquet
from deeppert.baselines import BASELINE_KINDS, fit_baseline
from deeppert.config import DataConfig, ExperimentConfig
from deeppert.data import Signatures
from deeppert.errors import DeeppertError
from deeppert.grid import Prepared, baseline_frame, prepare, train_shape
from deeppert.preprocess import PCAModel
from deeppert.progress import Progress
from deeppert.train import TrainedModels

__all__ = [
    "TrainedRun",
    "run_folder",
    "ensemble_section",
    "train_dataset",
    "load_pca",
    "load_trained",
    "load_signatures_of",
    "load_split",
    "training_inputs",
    "read_member_frames",
    "check_output_dir",
]

log = logging.getLogger(__name__)


def train_dataset(
    signatures: Signatures,
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    dataset: DataConfig | None = None,
) -> pd.DataFrame:
    """Train the whole grid of ``config`` on one dataset and write a run folder at ``out_dir``.

    Returns the held-out metrics table (one row per model and run, baselines included).
    """
    dataset = dataset or config.datasets[0]
    check_output_dir(out_dir)
    prepared = prepare(signatures, config)
    _check_latent_dims(config.grid.latent_dims, prepared.pca.n_components)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_dir(out_dir))
        _write_inputs(tmp, dataset.name, config, prepared)
        shapes = [(k, d) for k in config.grid.models for d in config.grid.latent_dims]
        bar = stack.enter_context(
            Progress(len(shapes) * config.train.epochs, f"training {dataset.name}", unit="epoch")
        )
        all_metrics, histories = _train_shapes(tmp, prepared, config, shapes, bar)
        if config.grid.baselines:
            all_metrics += _fit_baselines(tmp, prepared, config.grid.latent_dims)
        metrics = pd.concat(all_metrics, ignore_index=True)
        metrics.to_csv(tmp / "metrics.csv", index=False)
        _plot_curves(pd.concat(histories, ignore_index=True), tmp / "training_curves.png")
    return metrics


def _check_latent_dims(dims: Sequence[int], n_components: int) -> None:
    too_big = [d for d in dims if d > n_components]
    if too_big:
        raise DeeppertError(
            f"grid.latent_dims {too_big} exceed preprocess.n_components={n_components}"
        )


def _write_inputs(tmp: Path, name: str, config: ExperimentConfig, prepared: Prepared) -> None:
    """``config.json``, ``signatures.parquet``, ``split.json`` and ``pca/``: what the runs saw."""
    (tmp / "config.json").write_text(
        json.dumps({"dataset": name, "experiment": config.to_dict()}, indent=2) + "\n"
    )
    prepared.signatures.to_frame().to_parquet(tmp / "signatures.parquet")
    split = {
        "split": prepared.split,
        "train": prepared.train_idx.tolist(),
        "val": prepared.val_idx.tolist(),
    }
    (tmp / "split.json").write_text(json.dumps(split) + "\n")
    prepared.pca.save(tmp / "pca")


def _train_shapes(
    tmp: Path,
    prepared: Prepared,
    config: ExperimentConfig,
    shapes: list[tuple[str, int]],
    bar: Progress,
) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """Train every shape's runs; write ``models/`` and ``latents/``; (metrics, histories)."""
    runs = list(range(config.grid.runs))
    all_metrics, histories = [], []
    for kind, dim in shapes:
        trained, metrics = train_shape(
            prepared,
            config,
            kind,
            dim,
            runs,
            on_epoch=lambda _, frame, name=f"{kind}_d{dim}": bar.update(
                1, model=name, loss=float(frame["loss"].mean())
            ),
        )
        trained.save(tmp / "models" / trained.name)
        (tmp / "latents").mkdir(exist_ok=True)
        for run, frame in zip(
            trained.runs, trained.latents_frames(prepared.x_train, prepared.train_ids)
        ):
            frame.to_parquet(tmp / "latents" / f"{trained.name}_run{run}.parquet")
        all_metrics.append(metrics)
        histories.append(trained.history.assign(model=trained.name))
    return all_metrics, histories


def _fit_baselines(tmp: Path, prepared: Prepared, dims: Sequence[int]) -> list[pd.DataFrame]:
    """Fit every linear baseline at every latent dim into ``baselines/``; their held-out
    metrics (none without validation rows)."""
    (tmp / "baselines").mkdir()
    metrics = []
    for kind in BASELINE_KINDS:
        for dim in dims:
            base = fit_baseline(
                kind, prepared.x_train, prepared.pca, dim, sample_ids=prepared.train_ids
            )
            base.embedding.to_parquet(tmp / "baselines" / f"{base.name}_embedding.parquet")
            base.gene_weights.to_parquet(tmp / "baselines" / f"{base.name}_gene_weights.parquet")
            if len(prepared.val_idx):
                metrics.append(baseline_frame(base, prepared))
    return metrics


def _plot_curves(history: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for (name, run), frame in history.groupby(["model", "run"]):
        ax.plot(frame["epoch"] + 1, frame["loss"], lw=0.8, label=f"{name} run {run}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title("training loss per model and run")
    if history.groupby(["model", "run"]).ngroups <= 12:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# -- reading a run folder back ----------------------------------------------------------
def _require(run_dir: Path, rel: str) -> Path:
    path = Path(run_dir) / rel
    if not path.exists():
        raise DeeppertError(
            f"{run_dir}: not a run folder written by `deeppert train` (missing {rel})"
        )
    return path


def check_output_dir(out_dir: str | Path) -> None:
    """Fail before any work when ``out_dir`` cannot become a folder: it, or a parent, is a
    file, or the nearest existing parent is not writable."""
    out_dir = Path(out_dir)
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DeeppertError(
            f"cannot write run folder {out_dir}: {existing} exists and is a file, not a folder"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".deeppert-write-check-", dir=existing)
    except OSError as exc:
        raise DeeppertError(
            f"cannot write run folder {out_dir}: {existing} is not writable ({exc.strerror})"
        ) from exc
    os.close(fd)
    os.unlink(probe)


def read_member_frames(run_dir: str | Path, sub: str, what: str) -> pd.DataFrame:
    """The per-run frames ``run_dir/<sub>/<KIND>_d<dim>_run<r>.parquet`` of every trained run,
    side by side (same rows). Every run listed under ``models/`` must have its file: a missing
    one is an error naming it, never a silently smaller ensemble."""
    frames = [read_parquet(f) for f in member_files(run_dir, sub, what).values()]
    n = {len(f) for f in frames}
    if len(n) != 1:
        raise DeeppertError(
            f"{Path(run_dir) / sub}: {what} files have different row counts {sorted(n)}"
        )
    index = frames[0].index
    return pd.concat([f.set_axis(index, axis=0) for f in frames], axis=1)


def member_files(run_dir: str | Path, sub: str, what: str) -> dict[str, Path]:
    """Model run (``<KIND>_d<dim>_run<r>``) -> its file ``run_dir/<sub>/<model run>.parquet``,
    for every trained run (in a stable order); a missing file is an error naming it."""
    run_dir = Path(run_dir)
    folder = run_dir / sub
    if not folder.is_dir():
        raise DeeppertError(f"{folder}: no {what} folder (run the previous step first)")
    expected = []
    for model in sorted(p for p in _require(run_dir, "models").iterdir() if p.is_dir()):
        meta = read_json(_require(model, "config.json"))
        expected += [folder / f"{model.name}_run{r}.parquet" for r in meta["runs"]]
    missing = [str(p) for p in expected if not p.is_file()]
    if missing:
        raise DeeppertError(
            f"{run_dir}: {len(missing)} of {len(expected)} {what} files missing: "
            f"{', '.join(missing[:5])}; rerun the step that writes them"
        )
    if not expected:
        raise DeeppertError(f"{folder}: no {what} Parquet files (run the previous step first)")
    return {path.stem: path for path in expected}


def load_pca(run_dir: str | Path) -> PCAModel:
    """The PCA model of a run folder (``pca/``), or of a folder :meth:`PCAModel.save` wrote."""
    run_dir = Path(run_dir)
    return PCAModel.load(run_dir / "pca" if (run_dir / "pca").is_dir() else run_dir)


def load_trained(run_dir: str | Path) -> list[TrainedModels]:
    """Every trained (kind, dim) group of a run folder, in a stable order."""
    models = _require(Path(run_dir), "models")
    return [TrainedModels.load(p) for p in sorted(models.iterdir()) if p.is_dir()]


def load_signatures_of(run_dir: str | Path) -> Signatures:
    """The input matrix a run folder was trained on."""
    frame = read_parquet(_require(Path(run_dir), "signatures.parquet"))
    return Signatures(
        frame.to_numpy(), frame.index.to_numpy(), list(frame.columns), source=str(run_dir)
    )


def load_split(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row positions of a run folder."""
    split = read_json(_require(Path(run_dir), "split.json"))
    return np.asarray(split["train"], dtype=int), np.asarray(split["val"], dtype=int)


def training_inputs(run_dir: str | Path) -> tuple[np.ndarray, list[str]]:
    """PCA scores of the training rows and their sample ids, as the models saw them."""
    sig = load_signatures_of(run_dir)
    train_idx, _ = load_split(run_dir)
    pca = load_pca(run_dir)
    return pca.transform(sig.values[train_idx]), sig.sample_ids[train_idx].tolist()


def ensemble_section(run_dir: str | Path) -> dict:
    """The ``ensemble`` section of a run folder's experiment config (empty when it has none)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return {}
    return dict(read_json(path).get("experiment", {}).get("ensemble") or {})


class TrainedRun:
    """A run folder (``deeppert train`` / :func:`deeppert.tl.train`), as the later steps take it.

    A thin handle on the folder: each accessor reads the files it names, so the object stays
    valid while :func:`deeppert.tl.attribute` and :func:`deeppert.tl.ensemble` add to the
    folder. It is path-like (``os.fspath(run)`` is the folder).
    """

    def __init__(self, path: str | os.PathLike, metrics: pd.DataFrame | None = None) -> None:
        self.path = Path(path)
        _require(self.path, "models")
        self._metrics = metrics

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"TrainedRun({str(self.path)!r})"

    @property
    def dataset(self) -> str:
        """The dataset's name (``config.json``)."""
        return read_json(_require(self.path, "config.json"))["dataset"]

    @property
    def metrics(self) -> pd.DataFrame:
        """Held-out metrics, one row per model and run (``metrics.csv``)."""
        if self._metrics is None:
            self._metrics = pd.read_csv(_require(self.path, "metrics.csv"))
        return self._metrics

    def signatures(self) -> Signatures:
        """The input matrix the runs were trained on."""
        return load_signatures_of(self.path)

    def pca(self) -> PCAModel:
        return load_pca(self.path)

    def models(self) -> list[TrainedModels]:
        """Every trained (kind, dim) group, each with all its runs."""
        return load_trained(self.path)

    def latents(self) -> pd.DataFrame:
        """Training samples x every latent variable of every run."""
        return read_member_frames(self.path, "latents", "latent")

    def gene_weights(self) -> pd.DataFrame:
        """Genes x every latent variable (after :func:`deeppert.tl.attribute`)."""
        return read_member_frames(self.path, "gene_weights", "gene-weight")


def run_folder(run: TrainedRun | str | os.PathLike) -> Path:
    """The folder of ``run`` (a :class:`TrainedRun` or a path), checked to be one."""
    path = Path(os.fspath(run))
    if not path.is_dir():
        state = "is a file, not a folder" if path.is_file() else "folder not found"
        raise DeeppertError(f"run folder {path}: {state}")
    return path
