"""``dp.tl.attribute``: Integrated Gradients gene weights of every latent node of a run folder."""

from __future__ import annotations

import json
import os

import pandas as pd
import torch

from deeppert.atomic import atomic_dir
from deeppert.attribution import attribute_genes
from deeppert.ig_config import IGConfig
from deeppert.progress import Progress
from deeppert.workspace import TrainedRun, load_pca, load_trained, run_folder, training_inputs

__all__ = ["attribute"]


def attribute(
    run: TrainedRun | str | os.PathLike,
    *,
    config: IGConfig | None = None,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Integrated Gradients gene weights of every trained run, on the training rows.

    Writes ``<run>/gene_weights/`` atomically: ``<KIND>_d<dim>_run<r>.parquet`` (genes x
    latent nodes), ``completeness.csv`` (the table returned) and ``ig_config.json``.

    Parameters
    ----------
    run
        A run folder (:func:`deeppert.tl.train`).
    config
        Quadrature and algorithm (``IGConfig()`` when None).
    device
        Where the attribution runs, e.g. ``"cuda"``.

    Returns
    -------
    Completeness per latent node: ``model``, ``run``, ``node``, ``max_abs_delta``,
    ``output_range``, ``relative_delta``.
    """
    run_dir = run_folder(run)
    config = config or IGConfig()
    pca = load_pca(run_dir)
    x_pca, _ = training_inputs(run_dir)
    device = torch.device(device)
    rows = []
    models = load_trained(run_dir)
    with (
        atomic_dir(run_dir / "gene_weights") as tmp,
        Progress(sum(len(t.runs) for t in models), "attributing", unit="run") as bar,
    ):
        for trained in models:
            trained.module.to(
                device=device,
                dtype=torch.float32 if trained.train_config.dtype == "float32" else torch.float64,
            )
            result = attribute_genes(trained, x_pca, pca, config=config)
            for r, run_index in enumerate(result.runs):
                result.frame(r).to_parquet(tmp / f"{trained.name}_run{run_index}.parquet")
                for k, node in enumerate(result.node_names[r]):
                    rows.append(
                        {
                            "model": trained.name,
                            "run": run_index,
                            "node": node,
                            "max_abs_delta": result.max_abs_delta[r, k],
                            "output_range": result.output_range[r, k],
                            "relative_delta": result.relative_delta[r, k],
                        }
                    )
            bar.update(
                len(result.runs),
                model=trained.name,
                max_rel_error=float(result.relative_delta.max()),
            )
        table = pd.DataFrame(rows)
        table.to_csv(tmp / "completeness.csv", index=False)
        (tmp / "ig_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return table
