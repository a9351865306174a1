"""Ensemble job: build each cell line's ensemble from a sweep's registered encoders.

    ray job submit --working-dir . -- python ray_jobs/ensemble.py --config configs/demo.yaml

Selects the sweep's encoder versions from the registry (``<dataset>-encoder``, tag sweep),
pulls their latents and IG gene weights as Parquet, runs the ensemble step
(:func:`deeppert.stability.ensemble_step`, the same function as ``deeppert ensemble``, with the
config's ``ensemble`` section), logs an ensemble run with ``labels``, ``ensemble_weights``
(gene importances, what the targets job reads), ``ensemble_loadings`` (signed),
``ensemble_embedding`` (Parquet), ``stability.json`` (and the consensus mode's
``selection.parquet`` / ``selection.png``), the density filter's counts and the step's
warnings (logged, and tag ``deeppert.warning``), and registers an embedding pyfunc as
``<dataset>-ensemble@current``. Cell lines are ensembled in parallel as Ray tasks.
"""

from __future__ import annotations

import logging
import sys

import pandas as pd

from deeppert.config import ExperimentConfig
from deeppert.ensemble import Ensemble, EnsembleModel
from deeppert.errors import DeeppertError
from deeppert.grid import load_dataset, prepare
from deeppert.stability import ensemble_step
from deeppert.tracking.contract import ENSEMBLE_ALIAS
from deeppert.tracking.registry import ensemble_model_name, load_sweep_encoders, log_ensemble
from deeppert.tracking.session import TrackingSession
from deeppert.tracking.sweep import sweep_name
from ray_jobs._common import connect_ray, job_config, job_parser, run_job

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
    :class:`~deeppert.ensemble.Ensemble` whose frames were logged (tests compare them with
    what a reader fetches by alias).
    """
    encoders = load_sweep_encoders(session, dataset, sweep, train_config=config.train)
    log.info(
        "%s: %d encoders, %d latent variables",
        dataset,
        len(encoders.versions),
        encoders.latents.shape[1],
    )
    # the signed loadings (and the consensus mode) need the training PCA scores
    x_pca = prepare(load_dataset(config.dataset(dataset)), config).x_train
    if len(x_pca) != len(encoders.latents):
        raise DeeppertError(
            f"{dataset}: {len(x_pca)} training rows now, {len(encoders.latents)} in the "
            "sweep's latents: the data or the split changed since the sweep"
        )
    step = ensemble_step(
        encoders.latents,
        encoders.gene_weights,
        config=config.ensemble,
        x_pca=x_pca,
        pca=encoders.pca,
    )
    ensemble, stability = step.ensemble, step.stability
    for line in step.report():
        log.info("%s: %s", dataset, line)
    model = EnsembleModel.from_ensemble(ensemble, list(encoders.groups.values()), encoders.pca)
    version = log_ensemble(
        session,
        dataset=dataset,
        sweep=sweep,
        step=step,
        model=model,
        encoders=encoders,
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


def main(argv: list[str] | None = None) -> int:
    args = job_parser(__doc__).parse_args(argv)

    def body() -> int:
        config = job_config(args)
        session = TrackingSession(config.tracking).connect()
        sweep = sweep_name(config)  # read only: never reopen the sweep's parent run
        if len(config.datasets) > 1:
            import ray

            connect_ray(config)
            task = ray.remote(ensemble_dataset)
            rows = ray.get([task.remote(session, config, d.name, sweep) for d in config.datasets])
        else:
            rows = [ensemble_dataset(session, config, config.datasets[0].name, sweep)]
        print(pd.DataFrame(rows).to_string(index=False))
        return 0

    return run_job("ensemble", body)


if __name__ == "__main__":
    sys.exit(main())
