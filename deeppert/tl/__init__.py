"""The pipeline's steps as functions, for notebooks and scripts (``import deeppert as dp``).

Each step takes and returns the project's own objects, reads and writes the same run folder
as the ``deeppert`` command of the same name (which calls these functions)::

    import deeppert as dp

    sig = dp.load("signatures.parquet")                          # Signatures
    run = dp.tl.train(sig, "runs/A549", config=config)           # TrainedRun (run folder)
    dp.tl.attribute(run)                                         # completeness table
    step = dp.tl.ensemble(run)                                   # EnsembleStep
    result = dp.tl.targets(step, known=pairs, disease="...")     # TargetResult
    adata = dp.export(run)                                       # AnnData

Importing this module loads nothing heavy: each function's module (and torch, pandas) is
imported on first use.
"""

from __future__ import annotations

import importlib

# name -> private module under deeppert/tl that defines it
_EXPORTS = {
    "train": "_train",
    "attribute": "_attribute",
    "ensemble": "_ensemble",
    "ensemble_of": "_ensemble",
    "targets": "_targets",
    "all_diseases": "_targets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"deeppert.tl.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'deeppert.tl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
