"""``deeppert attribute`` and ``deeppert ensemble``: the steps after ``deeppert train``.

``attribute RUN_DIR`` writes ``RUN_DIR/gene_weights/<KIND>_d<dim>_run<r>.parquet`` (rows =
genes, columns = node names) and ``completeness.csv``. ``ensemble RUN_DIR`` reads the
latents and gene weights and writes ``RUN_DIR/ensemble/``: ``labels.parquet``,
``ensemble_weights.parquet`` (clusters x genes), ``ensemble_embedding.parquet`` (samples x
clusters), ``members.json``, ``stability.json``, ``model/`` (an :class:`EnsembleModel`
that embeds new signatures) and two plots. Each output folder is written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deeppert.atomic import atomic_dir
from deeppert.attribution import IGConfig, attribute_genes
from deeppert.ensemble import EnsembleConfig, EnsembleModel, build_ensemble
from deeppert.stability import split_runs, stability_report
from deeppert.workspace import load_pca, load_trained, read_member_frames, training_inputs

__all__ = ["register", "run_attribute", "run_ensemble"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attribute",
        help="Integrated Gradients gene weights of every trained latent node",
        description="Write RUN_DIR/gene_weights/<model>_run<r>.parquet (genes x nodes).",
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", type=int, default=50, help="quadrature steps (default 50)")
    p.add_argument("--method", default="gausslegendre", help="captum quadrature rule")
    p.add_argument("--chunk-size", type=int, default=256, help="samples per chunk")
    p.add_argument("--algorithm", default="auto", choices=["auto", "exact", "autograd", "captum"])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(func=run_attribute)

    e = sub.add_parser(
        "ensemble",
        help="GMeans + KMeans ensemble of all latent variables, with stability",
        description="Write RUN_DIR/ensemble/ (labels, weights, embedding, model, stability).",
    )
    e.add_argument("run_dir", type=Path)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--n-clusters", type=int, help="fix L instead of choosing it with GMeans")
    e.add_argument("--labelling", default="kmeans", choices=["kmeans", "gmeans"])
    e.add_argument("--scaling", default="standardize", choices=["standardize", "none"])
    e.add_argument("--sign-alignment", default="none", choices=["none", "centroid"])
    e.add_argument("--cluster-on", default="latents", choices=["latents", "gene_weights"])
    e.add_argument("--no-stability", action="store_true", help="skip the stability report")
    e.set_defaults(func=run_ensemble)


def run_attribute(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    config = IGConfig(
        n_steps=args.steps, method=args.method, chunk_size=args.chunk_size, algorithm=args.algorithm
    )
    pca = load_pca(run_dir)
    x_pca, _ = training_inputs(run_dir)
    device = torch.device(args.device)
    rows = []
    with atomic_dir(run_dir / "gene_weights") as tmp:
        for trained in load_trained(run_dir):
            trained.module.to(
                device=device,
                dtype=torch.float32 if trained.train_config.dtype == "float32" else torch.float64,
            )
            result = attribute_genes(trained, x_pca, pca, config=config)
            for r, run in enumerate(result.runs):
                result.frame(r).to_parquet(tmp / f"{trained.name}_run{run}.parquet")
                for k, node in enumerate(result.node_names[r]):
                    rows.append(
                        {
                            "model": trained.name,
                            "run": run,
                            "node": node,
                            "max_abs_delta": result.max_abs_delta[r, k],
                            "output_range": result.output_range[r, k],
                            "relative_delta": result.relative_delta[r, k],
                        }
                    )
            log.info(
                "%s: %d runs attributed, max relative completeness error %.2e",
                trained.name,
                len(result.runs),
                float(result.relative_delta.max()),
            )
        pd.DataFrame(rows).to_csv(tmp / "completeness.csv", index=False)
        (tmp / "ig_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    print(f"wrote {run_dir / 'gene_weights'} ({len(rows)} nodes)")
    return 0


def run_ensemble(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    config = EnsembleConfig(
        seed=args.seed,
        n_clusters=args.n_clusters,
        labelling=args.labelling,
        scaling=args.scaling,
        sign_alignment=args.sign_alignment,
    )
    latents = read_member_frames(run_dir, "latents", "latent")
    weights = read_member_frames(run_dir, "gene_weights", "gene-weight")
    ens = build_ensemble(latents, weights, config=config, cluster_on=args.cluster_on)
    model = EnsembleModel.from_ensemble(ens, load_trained(run_dir), load_pca(run_dir))
    stability = None
    if not args.no_stability:
        runs = sorted({int(c.rsplit("_run", 1)[1].split("_z")[0]) for c in latents.columns})
        if len(runs) >= 2:
            a, b = split_runs(runs)
            stability = stability_report(
                latents, weights, config=config, runs_a=a, runs_b=b
            ).to_dict()
        else:
            stability = {"skipped": f"needs at least two runs, found {runs}"}
    with atomic_dir(run_dir / "ensemble") as tmp:
        ens.labels.to_parquet(tmp / "labels.parquet")
        ens.weights.to_parquet(tmp / "ensemble_weights.parquet")
        ens.embedding.to_parquet(tmp / "ensemble_embedding.parquet")
        (tmp / "members.json").write_text(json.dumps(ens.members, indent=2) + "\n")
        summary = {
            "n_clusters": ens.n_clusters,
            "gmeans_n_clusters": ens.gmeans_n_clusters,
            "n_variables": len(ens.labels),
            "cluster_sizes": ens.sizes.to_dict(),
            "config": config.to_dict(),
            "cluster_on": args.cluster_on,
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / "stability.json").write_text(json.dumps(stability, indent=2, default=float) + "\n")
        model.save(tmp / "model")
        _plots(ens, stability, tmp)
    print(
        f"wrote {run_dir / 'ensemble'}: L = {ens.n_clusters} clusters over {len(ens.labels)} latent variables"
    )
    return 0


def _plots(ens, stability: dict | None, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 0.25 * ens.n_clusters + 2), 3))
    ax.bar(np.arange(ens.n_clusters), ens.sizes.to_numpy())
    ax.set_xlabel("ensemble cluster")
    ax.set_ylabel("latent variables")
    ax.set_title(f"L = {ens.n_clusters}")
    fig.tight_layout()
    fig.savefig(folder / "cluster_sizes.png", dpi=120)
    plt.close(fig)
    if stability and "ensemble_corr" in stability:
        fig, ax = plt.subplots(figsize=(4, 3))
        single = [c for v in stability["single_corr"].values() for c in v]
        bins = np.linspace(min([*stability["ensemble_corr"], *single, 0.0]), 1, 30)
        ax.hist(
            single,
            bins=bins,
            alpha=0.6,
            label=f"single models (median {stability['single_median']:.2f})",
        )
        ax.hist(
            stability["ensemble_corr"],
            bins=bins,
            alpha=0.6,
            label=f"ensembles (median {stability['ensemble_median']:.2f})",
        )
        ax.set_xlabel("matched gene-weight correlation")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "stability.png", dpi=120)
        plt.close(fig)
