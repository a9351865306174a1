"""Deep-pert: stable, interpretable embeddings of drug-induced transcriptional perturbations.

The pure-compute path (no Ray, no MLflow imports)::

    data -> preprocess -> models -> train -> attribution -> ensemble -> targets / downstream

Orchestration lives beside it: :mod:`deeppert.tracking` (MLflow) and ``ray_jobs/`` (Ray).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
