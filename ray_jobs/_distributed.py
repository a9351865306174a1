"""The ensemble step's independent work as Ray tasks on the cluster's workers.

:func:`distributed_components` is :func:`deeppert.ensemble.modes.components_by_run` (each model run's
rotation and loadings, independent of the others) split over Ray tasks; the ensemble step then
clusters with them (``ensemble_step(..., precomputed=...)``), the same result as in process.
:func:`ray_map` is the :data:`~deeppert.ensemble.modes.Mapper` that runs the clustering's own
independent pieces (the density filter's row segments, one clustering per L, for the ensemble
and each half of the stability report; the embedding a few model runs at a time) as Ray tasks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from deeppert.ensemble.config import EnsembleConfig
from deeppert.ensemble.modes import RunComponents, components_by_run, run_groups
from deeppert.latent_store import LatentStore
from deeppert.preprocess import PCAModel
from deeppert.progress import Progress

__all__ = ["distributed_components", "ray_map"]


def ray_map(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
    """``fn(item)`` for each item as Ray tasks of 1 CPU, yielded in order.

    ``fn`` (a :func:`functools.partial` holding the shared arrays: the components, the PCA
    scores) goes to the object store once; every task reads it from there (numpy arrays without
    a copy on the node that holds them), so the items alone travel per task. Items are taken
    (and tasks submitted) as results are yielded, 2 a CPU ahead: items that carry data (a few
    runs' encoders) then wait in the object store a few at a time, not all at once.
    """
    import ray

    fn_ref = ray.put(fn)
    call = ray.remote(num_cpus=1)(_call)
    ahead = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending: deque = deque()
    for item in items:
        pending.append(call.remote(fn_ref, item))
        if len(pending) >= ahead:
            yield ray.get(pending.popleft())
    while pending:
        yield ray.get(pending.popleft())


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


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
    files), so a task's memory does not grow with the number of runs, and tasks are submitted
    as others finish (2 a CPU in flight), so the object store holds a few tasks' inputs, not
    every run's.
    """
    import ray

    groups = run_groups(latents.columns)
    keys = list(groups)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    n = max(tasks or 4 * cpus, -(-len(keys) // runs_per_task))
    chunks = [keys[i::n] for i in range(min(n, len(keys)))]
    task = ray.remote(num_cpus=1)(components_by_run)
    x_ref = ray.put(np.asarray(x_pca))

    def submit(chunk: list[str]):
        if isinstance(latents, LatentStore):
            part = latents.runs(chunk)
        else:
            part = latents[[c for key in chunk for c in groups[key]]]
        return task.remote(part, x_ref, pca, config, keys=chunk)

    # At most 2 tasks a CPU are submitted at a time: a task's arguments (its runs' encoders or
    # code) wait in the object store until it runs, so submitting all at once would copy every
    # run's inputs there (and into this process's memory) before the first task starts.
    found: dict[str, RunComponents] = {}
    queue, pending = list(reversed(chunks)), {}
    with Progress(len(keys), "rotating model runs (Ray tasks)", unit="run") as bar:
        while queue or pending:
            while queue and len(pending) < 2 * cpus:
                chunk = queue.pop()
                pending[submit(chunk)] = len(chunk)
            ready, _ = ray.wait(list(pending), num_returns=1)
            found.update(ray.get(ready[0]))
            bar.update(pending.pop(ready[0]))
    return {key: found[key] for key in keys}
