"""The one writer of an ensemble's outputs: ``RUN_DIR/ensemble/`` of ``deeppert ensemble`` and
:func:`deeppert.tl.ensemble`.

Every name comes from the artifact contract (:data:`~deeppert.tracking.contract.ENSEMBLE_TABLES`,
:class:`~deeppert.tracking.contract.ARTIFACTS`, :class:`~deeppert.tracking.contract.ENSEMBLE_FILES`;
that module imports no MLflow). Files:

- the step's tables (``labels``, ``ensemble_weights``, ``ensemble_loadings``,
  ``ensemble_embedding``, ``program_baselines``), one Parquet file each;
- ``members.json`` (cluster -> latent variables), ``summary.json`` (:meth:`EnsembleStep.summary`),
  ``stability.json``;
- consensus mode: ``selection.csv`` and ``selection.png`` (the L-selection curve);
- ``model/`` (:meth:`EnsembleModel.save`) when a model is given;
- the figures of :mod:`deeppert.ensemble.figures`, ``top_genes.csv`` and, with program
  baselines, ``program_baselines.png``.

The folder is written atomically: it appears whole, replacing an earlier one, or not at all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from deeppert.atomic import atomic_dir, read_json
from deeppert.errors import DeeppertError
from deeppert.tracking.contract import ARTIFACTS, ENSEMBLE_FILES, ENSEMBLE_TABLES

if TYPE_CHECKING:
    from deeppert.ensemble.modes import Ensemble, EnsembleModel
    from deeppert.ensemble.stability import EnsembleStep

__all__ = ["write_ensemble_outputs", "check_replace", "TOP_GENES"]

TOP_GENES = 20  # genes per cluster in top_genes.csv


def write_ensemble_outputs(
    folder: str | os.PathLike, step: EnsembleStep, *, model: EnsembleModel | None = None
) -> Path:
    """Write ``step`` (and ``model``, when given) into ``folder``, replacing it whole."""
    from deeppert.ensemble.stability import plot_selection

    ens = step.ensemble
    with atomic_dir(folder) as tmp:
        for role, frame in step.tables().items():
            frame.to_parquet(tmp / ENSEMBLE_TABLES[role])
        _write_json(tmp / ENSEMBLE_FILES.members, ens.members)
        _write_json(tmp / ENSEMBLE_FILES.summary, step.summary())
        _write_json(tmp / ARTIFACTS.stability, step.stability, default=float)
        if step.selection is not None:
            step.selection.to_csv(tmp / ENSEMBLE_FILES.selection)
            plot_selection(step.selection, tmp / ENSEMBLE_FILES.selection_plot)
        if model is not None:
            model.save(tmp / ENSEMBLE_FILES.model)
        _write_figures(ens, step.stability, tmp)
        if step.baselines is not None:
            from deeppert.ensemble.baselines import comparison_figure

            comparison_figure(step.baselines).savefig(tmp / ENSEMBLE_FILES.baselines_plot, dpi=120)
    return Path(folder)


def check_replace(folder: str | os.PathLike, method: str, force: bool) -> None:
    """Refuse to replace an ensemble of another method unless ``force`` (same method: replace)."""
    folder = Path(folder)
    summary = folder / ENSEMBLE_FILES.summary
    if force or not summary.is_file():
        return
    old = read_json(summary).get("method")
    if old != method:
        raise DeeppertError(
            f"{folder} holds a {old} ensemble; --method {method} would replace it: "
            "pass --force to replace it (or copy it elsewhere first)"
        )


def _write_json(path: Path, value, **kwargs) -> None:
    path.write_text(json.dumps(value, indent=2, **kwargs) + "\n")


def _write_figures(ens: Ensemble, stability: dict | None, folder: Path) -> None:
    """The ensemble's figures (:mod:`deeppert.ensemble.figures`) and top-genes table."""
    import matplotlib.pyplot as plt

    from deeppert.ensemble.figures import ensemble_figures, top_genes

    for name, fig in ensemble_figures(ens, stability).items():
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)
    top_genes(ens, TOP_GENES).to_csv(folder / ENSEMBLE_FILES.top_genes, index=False)
