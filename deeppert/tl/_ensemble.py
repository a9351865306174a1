"""``dp.tl.ensemble``: the ensemble of a run folder's latent variables, with its stability."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from deeppert.config import build_dataclass
from deeppert.ensemble.config import EnsembleConfig
from deeppert.ensemble.modes import EnsembleModel, Mapper, RunComponents
from deeppert.ensemble.outputs import check_replace, write_ensemble_outputs
from deeppert.ensemble.stability import EnsembleStep, ensemble_step
from deeppert.errors import DeeppertError
from deeppert.latent_store import LatentStore
from deeppert.preprocess import PCAModel
from deeppert.train import TrainedModels
from deeppert.workspace import (
    TrainedRun,
    ensemble_section,
    load_pca,
    load_trained,
    member_files,
    read_member_frames,
    run_folder,
    training_inputs,
)

__all__ = ["ensemble", "ensemble_of"]


def ensemble(
    run: TrainedRun | str | os.PathLike,
    *,
    config: EnsembleConfig | None = None,
    stability: bool = True,
    force: bool = False,
) -> EnsembleStep:
    """Cluster every latent variable of a run folder into an ensemble (consensus or GMeans).

    Reads the latents (the consensus mode one model run's file at a time, through a
    :class:`~deeppert.latent_store.LatentStore`, so its memory does not grow with the runs'
    latents; the gmeans mode all at once, with the IG gene weights of
    :func:`deeppert.tl.attribute`; the consensus mode derives its gene loadings from the PCA
    map and reads no gene weights) and writes
    ``<run>/ensemble/`` (:func:`deeppert.ensemble.outputs.write_ensemble_outputs`: tables,
    members, summary, stability, figures and ``model/``, an :class:`EnsembleModel` that embeds
    new signatures), replacing an earlier ensemble of the same method.

    Parameters
    ----------
    run
        A run folder of :func:`deeppert.tl.train`; the gmeans mode also needs its
        ``gene_weights/`` (:func:`deeppert.tl.attribute`).
    config
        The ensemble config; None: the run's own (``config.json``, section ``ensemble``).
    stability
        Compute the split-half stability report (ensembles of each half of the runs).
    force
        Replace an ensemble of another method already in ``<run>/ensemble/``.

    Returns
    -------
    The step: ``.ensemble`` (:class:`~deeppert.ensemble.modes.Ensemble`), ``.stability``,
    ``.warnings``, ``.summary()``, ``.report()``.
    """
    run_dir = run_folder(run)
    if config is None:
        config = build_dataclass(EnsembleConfig, ensemble_section(run_dir), "ensemble")
    check_replace(run_dir / "ensemble", config.method, force)
    weights = None
    if config.method == "consensus":  # one model run's code at a time, as the ensemble job
        latents = LatentStore.from_files(member_files(run_dir, "latents", "latent"))
    else:  # GMeans clusters every latent variable's values at once
        latents = read_member_frames(run_dir, "latents", "latent")
    if config.method == "gmeans":
        if not (run_dir / "gene_weights").is_dir():
            raise DeeppertError(
                f"{run_dir / 'gene_weights'}: no IG gene weights; the gmeans mode averages "
                f"them: run 'deeppert attribute {run_dir}' first (the default consensus mode "
                "needs none)"
            )
        weights = read_member_frames(run_dir, "gene_weights", "gene-weight")
    x_pca, _ = training_inputs(run_dir)
    step, model = ensemble_of(
        latents,
        weights,
        x_pca=x_pca,
        pca=load_pca(run_dir),
        members=load_trained(run_dir),
        config=config,
        stability=stability,
    )
    write_ensemble_outputs(run_dir / "ensemble", step, model=model)
    return step


def ensemble_of(
    latents: pd.DataFrame,
    gene_weights: pd.DataFrame | None,
    *,
    x_pca: np.ndarray,
    pca: PCAModel,
    members: Sequence[TrainedModels],
    config: EnsembleConfig,
    stability: bool = True,
    precomputed: Mapping[str, RunComponents] | None = None,
    mapper: Mapper = map,
) -> tuple[EnsembleStep, EnsembleModel]:
    """The ensemble step on latent variables held in memory, and its embedding model.

    What :func:`ensemble` computes between reading a run folder and writing its outputs; the
    MLflow ensemble job calls it on the latents its registered encoders give.

    Parameters
    ----------
    latents, gene_weights
        Latent variables (samples x variables, or a :class:`~deeppert.latent_store.LatentStore`)
        and their IG gene weights (needed by the gmeans mode only).
    x_pca, pca
        The training rows' PCA scores and the PCA model.
    members
        The trained models the variables come from (the embedding model re-encodes with them).
    config
        The ensemble config.
    stability
        Compute the split-half stability report.
    precomputed
        The consensus mode's per-run components, when computed elsewhere (Ray tasks).
    mapper
        How the consensus mode runs its independent work
        (:data:`~deeppert.ensemble.modes.Mapper`: in process by default).
    """
    step = ensemble_step(
        latents,
        gene_weights,
        config=config,
        x_pca=x_pca,
        pca=pca,
        stability=stability,
        precomputed=precomputed,
        mapper=mapper,
    )
    return step, EnsembleModel.from_ensemble(step.ensemble, list(members), pca)
