"""Deep-pert: stable, interpretable embeddings of drug-induced transcriptional perturbations.

The pure-compute path (no Ray, no MLflow imports)::

    data -> preprocess -> models -> train -> attribution -> ensemble -> targets / downstream

For notebooks, ``import deeppert as dp`` gives the steps as functions on the project's own
objects, the same functions the ``deeppert`` commands call:

- :func:`dp.load <deeppert._io.load>` -> :class:`Signatures`;
- ``dp.tl``: :func:`~deeppert.tl.train` -> :class:`TrainedRun` (a run folder),
  :func:`~deeppert.tl.attribute`, :func:`~deeppert.tl.ensemble` -> :class:`EnsembleStep`,
  :func:`~deeppert.tl.targets` -> :class:`TargetResult`, :func:`~deeppert.tl.all_diseases`;
- :func:`dp.export <deeppert._io.export>` -> AnnData.

The steps live in ``dp.tl`` (as scanpy's ``sc.tl``) because ``deeppert.train``,
``deeppert.ensemble.modes`` and ``deeppert.targets`` are the modules that compute them.
Everything here is imported on first use, so ``import deeppert`` loads neither torch nor
pandas. Orchestration lives beside it: :mod:`deeppert.tracking` (MLflow) and ``ray_jobs/`` (Ray).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it, imported on first access (PEP 562)
_EXPORTS = {
    "load": "deeppert._io",
    "export": "deeppert._io",
    "to_anndata": "deeppert._io",
    "Signatures": "deeppert.data",
    "TrainedRun": "deeppert.workspace",
    "Ensemble": "deeppert.ensemble.modes",
    "EnsembleModel": "deeppert.ensemble.modes",
    "EnsembleStep": "deeppert.ensemble.stability",
    "TargetResult": "deeppert.targets",
    "ExperimentConfig": "deeppert.config",
    "DataConfig": "deeppert.config",
    "IGConfig": "deeppert.ig_config",
    "EnsembleConfig": "deeppert.ensemble.config",
    "TargetConfig": "deeppert.target_config",
    "write_ensemble_outputs": "deeppert.ensemble.outputs",
}

__all__ = ["__version__", "tl", *_EXPORTS]


def __getattr__(name: str):
    if name == "tl":
        return importlib.import_module("deeppert.tl")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deeppert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
