"""The ensemble step's per-run work as Ray tasks on the cluster's workers.

:func:`distributed_components` is :func:`deeppert.ensemble.modes.components_by_run` (each model run's
rotation and loadings, independent of the others) split over Ray tasks; the ensemble step then
clusters with them (``ensemble_step(..., precomputed=...)``), the same result as in process.
"""

from __future__ import annotations

import numpy as np

from deeppert.ensemble.modes import EnsembleConfig, RunComponents, components_by_run, run_groups
from deeppert.preprocess import PCAModel

__all__ = ["distributed_components"]


def distributed_components(
    latents,
    x_pca: np.ndarray,
    pca: PCAModel,
    config: EnsembleConfig,
    *,
    tasks: int | None = None,
) -> dict[str, RunComponents]:
    """Every model run's :class:`~deeppert.ensemble.modes.RunComponents`, computed by ``tasks`` Ray
    tasks (default 4 per CPU of the cluster) of 1 CPU each over interleaved runs.

    ``latents`` (a DataFrame, or a :class:`~deeppert.latent_store.LatentStore` that reads one
    run at a time) and the PCA scores go to the object store once; each task reads only its
    own runs' codes.
    """
    import ray

    keys = list(run_groups(latents.columns))
    n = tasks or max(1, 4 * int(ray.cluster_resources().get("CPU", 1)))
    chunks = [keys[i::n] for i in range(min(n, len(keys)))]
    task = ray.remote(num_cpus=1)(components_by_run)
    latents_ref, x_ref = ray.put(latents), ray.put(np.asarray(x_pca))
    parts = ray.get([task.remote(latents_ref, x_ref, pca, config, keys=chunk) for chunk in chunks])
    found = {key: part[key] for part in parts for key in part}
    return {key: found[key] for key in keys}
