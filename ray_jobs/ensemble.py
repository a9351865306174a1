"""Ensemble job: build each cell line's ensemble from a sweep's registered encoders.

    ray job submit --working-dir . -- python ray_jobs/ensemble.py --config configs/demo.yaml

Selects the sweep's encoder versions from the registry (``<dataset>-encoder``, tag sweep),
checks that the data is the sweep's (its sha256 against the parent's
``deeppert.data_sha256.<dataset>`` tag), and runs the ensemble step
(:func:`deeppert.tl.ensemble_of`, what ``deeppert ensemble`` runs, with the config's
``ensemble`` section) on latents recomputed here from each encoder, one model run at a
time: no latents are downloaded, and IG gene weights only in the gmeans mode. On a Ray cluster
(``ray job submit``, or ``sweep.ray_address``) the consensus mode's per-run rotations and
loadings run as Ray tasks (:func:`ray_jobs._distributed.distributed_components`), and so do
the clustering's independent pieces (:func:`ray_jobs._distributed.ray_map`: the density
filter's row segments, one clustering per L, the embedding 16 model runs a task). It logs an
ensemble run holding the files ``deeppert ensemble`` writes, by the same writer
(:func:`deeppert.tracking.registry.log_ensemble_outputs`: ``labels``, ``ensemble_weights``
(gene importances, what the targets job reads), ``ensemble_loadings`` (signed),
``ensemble_embedding``, ``members.json``, ``summary.json``, ``stability.json``, the consensus
mode's ``selection.csv`` / ``selection.png``, the figures), the density filter's counts and the
step's warnings (logged, and tag ``deeppert.warning``), and registers an embedding pyfunc as
``<dataset>-ensemble@current``. Cell lines are ensembled in parallel as Ray tasks.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from typing import TYPE_CHECKING

from ray_jobs._common import connect_ray, job_config, job_parser, run_job

if TYPE_CHECKING:
    from deeppert.config import ExperimentConfig
    from deeppert.ensemble.modes import Ensemble
    from deeppert.tracking.session import TrackingSession

log = logging.getLogger("deeppert.ensemble_job")


def ensemble_dataset(
    session: TrackingSession,
    config: ExperimentConfig,
    dataset: str,
    sweep: str,
    *,
    with_ensemble: bool = False,
) -> dict | tuple[dict, Ensemble]:
    """Build, log and register one cell line's ensemble in the connected ``session``'s
    experiment; returns a summary row.

    With ``with_ensemble=True`` returns ``(row, ensemble)``: the in-memory
    :class:`~deeppert.ensemble.modes.Ensemble` whose frames were logged (tests compare them with
    what a reader fetches by alias).
    """
    from deeppert import tl
    from deeppert.grid import load_dataset, prepare
    from deeppert.tracking.contract import ENSEMBLE_ALIAS
    from deeppert.tracking.registry import ensemble_model_name, load_sweep_encoders, log_ensemble
    from deeppert.tracking.sweep import data_sha256
    from ray_jobs._distributed import distributed_components, ray_map

    signatures = load_dataset(config.dataset(dataset))
    prepared = prepare(signatures, config)
    gmeans = config.ensemble.method == "gmeans"
    encoders = load_sweep_encoders(
        session,
        dataset,
        sweep,
        x_pca=prepared.x_train,
        sample_ids=prepared.train_ids,
        data_sha=data_sha256(signatures),
        gene_weights=gmeans,
        train_config=config.train,
    )
    log.info(
        "%s: %d encoders, %d latent variables",
        dataset,
        len(encoders.versions),
        encoders.latents.shape[1],
    )
    latents = encoders.latents.to_frame() if gmeans else encoders.latents
    precomputed, mapper = None, map
    if not gmeans and _on_ray():
        precomputed = distributed_components(
            latents, prepared.x_train, encoders.pca, config.ensemble
        )
        mapper = ray_map
    step, model = tl.ensemble_of(
        latents,
        encoders.gene_weights,
        x_pca=prepared.x_train,
        pca=encoders.pca,
        members=list(encoders.groups.values()),
        config=config.ensemble,
        precomputed=precomputed,
        mapper=mapper,
    )
    ensemble, stability = step.ensemble, step.stability
    for line in step.report():
        log.info("%s: %s", dataset, line)
    version = log_ensemble(
        session,
        dataset=dataset,
        sweep=sweep,
        step=step,
        model=model,
        encoders=encoders,
    )
    log.info(
        "%s: registered version %s; peak memory of this process %.2f GB",
        dataset,
        version.version,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
    )
    row = {
        "dataset": dataset,
        "latent_variables": encoders.latents.shape[1],
        "clusters": ensemble.n_clusters,
        "dropped": ensemble.n_dropped,
        "stability_ensemble": stability.get("ensemble_median"),
        "stability_single": stability.get("single_median"),
        "registered": f"{ensemble_model_name(dataset)}@{ENSEMBLE_ALIAS} -> v{version.version}",
        "warnings": len(step.warnings),
    }
    return (row, ensemble) if with_ensemble else row


def _on_ray() -> bool:
    """Whether this process is connected to Ray (its tasks then run on the cluster's workers)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def main(argv: list[str] | None = None) -> int:
    args = job_parser(__doc__).parse_args(argv)

    def body() -> int:
        import pandas as pd

        from deeppert.tracking.session import TrackingSession
        from deeppert.tracking.sweep import sweep_name

        config = job_config(args)
        session = TrackingSession(config.tracking).connect()
        sweep = sweep_name(config)  # read only: never reopen the sweep's parent run
        if len(config.datasets) > 1 or config.sweep.ray_address or os.environ.get("RAY_ADDRESS"):
            connect_ray(config)
        if len(config.datasets) > 1:
            import ray

            task = ray.remote(ensemble_dataset)
            rows = ray.get([task.remote(session, config, d.name, sweep) for d in config.datasets])
        else:
            rows = [ensemble_dataset(session, config, config.datasets[0].name, sweep)]
        print(pd.DataFrame(rows).to_string(index=False))
        return 0

    return run_job("ensemble", body)


if __name__ == "__main__":
    sys.exit(main())
