"""The ensemble step's per-run work as Ray tasks on the cluster's workers.

:func:`distributed_components` is :func:`deeppert.ensemble.modes.components_by_run` (each model run's
rotation and loadings, independent of the others) split over Ray tasks; the ensemble step then
clusters with them (``ensemble_step(..., precomputed=...)``), the same result as in process.
"""

from __future__ import annotations

import numpy as np

from deeppert.ensemble.config import EnsembleConfig
from deeppert.ensemble.modes import RunComponents, components_by_run, run_groups
from deeppert.latent_store import LatentStore
from deeppert.preprocess import PCAModel
from deeppert.progress import Progress

__all__ = ["distributed_components"]


def distributed_components(
    latents,
    x_pca: np.ndarray,
    pca: PCAModel,
    config: EnsembleConfig,
    *,
    tasks: int | None = None,
    runs_per_task: int = 8,
) -> dict[str, RunComponents]:
    """Every model run's :class:`~deeppert.ensemble.modes.RunComponents`, computed by Ray tasks of
    1 CPU each over interleaved runs: ``tasks`` of them (default 4 per CPU of the cluster),
    or more so that none has over ``runs_per_task`` runs.

    The PCA scores go to the object store once; each task is sent only its own runs' part of
    ``latents`` (the columns of a DataFrame, or :meth:`LatentStore.runs`: their encoders or
    files), so a task's memory does not grow with the number of runs.
    """
    import ray

    groups = run_groups(latents.columns)
    keys = list(groups)
    n = tasks or max(1, 4 * int(ray.cluster_resources().get("CPU", 1)))
    n = max(n, -(-len(keys) // runs_per_task))
    chunks = [keys[i::n] for i in range(min(n, len(keys)))]
    task = ray.remote(num_cpus=1)(components_by_run)
    x_ref = ray.put(np.asarray(x_pca))

    def part(chunk: list[str]):
        if isinstance(latents, LatentStore):
            return latents.runs(chunk)
        return latents[[c for key in chunk for c in groups[key]]]

    refs = [task.remote(part(c), x_ref, pca, config, keys=c) for c in chunks]
    runs_of = {ref: len(c) for ref, c in zip(refs, chunks, strict=True)}
    with Progress(len(keys), "rotating model runs (Ray tasks)", unit="run") as bar:
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            bar.update(runs_of[ready[0]])
    parts = ray.get(refs)
    found = {key: part[key] for part in parts for key in part}
    return {key: found[key] for key in keys}
