"""``deeppert attribute`` and ``deeppert ensemble``: the steps after ``deeppert train``.

``attribute RUN_DIR`` writes ``RUN_DIR/gene_weights/<KIND>_d<dim>_run<r>.parquet`` (rows =
genes, columns = node names) and ``completeness.csv``. ``ensemble RUN_DIR`` reads the
latents and gene weights and writes ``RUN_DIR/ensemble/``: ``labels.parquet``,
``ensemble_weights.parquet`` (clusters x genes), ``ensemble_embedding.parquet`` (samples x
clusters), ``members.json``, ``summary.json``, ``stability.json``, ``model/`` (an
:class:`EnsembleModel` that embeds new signatures) and plots; the consensus mode adds its
L-selection curve, ``selection.csv`` and ``selection.png``. The ensemble config is the run's
(``config.json``, section ``ensemble``) with the command-line flags on top; the step itself is
:func:`deeppert.stability.ensemble_step`. Each output folder is written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from deeppert.cli._flags import add_config_flag, add_dataclass_flags, apply_flags, config_section
from deeppert.cli._inputs import require_dir
from deeppert.ig_config import IGConfig

if TYPE_CHECKING:
    from deeppert.ensemble import EnsembleConfig

__all__ = ["register", "run_attribute", "run_ensemble", "ensemble_config"]

log = logging.getLogger(__name__)

# IGConfig fields of `deeppert attribute` and their flags; defaults come from IGConfig.
_IG_FLAGS = {
    "n_steps": "--steps",
    "method": "--method",
    "chunk_size": "--chunk-size",
    "algorithm": "--algorithm",
}
_IG_HELP = {
    "n_steps": "quadrature steps",
    "method": "captum's quadrature rule",
    "chunk_size": "samples per chunk",
    "algorithm": "exact (fast path), autograd or captum; auto = exact where possible",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attribute",
        help="Integrated Gradients gene weights of every trained latent node",
        description="Write RUN_DIR/gene_weights/<model>_run<r>.parquet (genes x nodes).",
    )
    p.add_argument("run_dir", type=Path)
    add_config_flag(p, "attribution")
    add_dataclass_flags(p, IGConfig, _IG_FLAGS, help=_IG_HELP)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(func=run_attribute)

    e = sub.add_parser(
        "ensemble",
        help="ensemble of all latent variables (consensus, or the GMeans reference), with stability",
        description="Write RUN_DIR/ensemble/ (labels, weights, embedding, model, stability). "
        "Flags override the run's ensemble config; unset flags keep it.",
    )
    e.add_argument("run_dir", type=Path)
    e.add_argument(
        "--method",
        choices=["consensus", "gmeans"],
        help="consensus (default) or gmeans (reference)",
    )
    e.add_argument("--seed", type=int)
    e.add_argument("--n-clusters", type=int, help="fix L instead of choosing it")
    e.add_argument("--labelling", choices=["kmeans", "gmeans"])
    e.add_argument("--scaling", choices=["standardize", "none"])
    e.add_argument("--sign-alignment", choices=["none", "centroid"])
    e.add_argument("--cluster-on", choices=["latents", "gene_weights"])
    e.add_argument("--rotation", choices=["ica", "none"], help="consensus: per-model rotation")
    e.add_argument("--l-min", type=int, help="consensus: smallest L scanned")
    e.add_argument("--l-max", type=int, help="consensus: largest L scanned")
    e.add_argument("--density-threshold", type=float, help="consensus: outlier filter")
    e.add_argument("--no-stability", action="store_true", help="skip the stability report")
    e.set_defaults(func=run_ensemble)


def run_attribute(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    require_dir(run_dir, "run folder")
    import pandas as pd
    import torch

    from deeppert.atomic import atomic_dir
    from deeppert.attribution import attribute_genes
    from deeppert.progress import Progress
    from deeppert.workspace import load_pca, load_trained, training_inputs

    config = apply_flags(config_section(args, "attribution", IGConfig), args, _IG_FLAGS)
    pca = load_pca(run_dir)
    x_pca, _ = training_inputs(run_dir)
    device = torch.device(args.device)
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
            bar.update(
                len(result.runs),
                model=trained.name,
                max_rel_error=float(result.relative_delta.max()),
            )
        pd.DataFrame(rows).to_csv(tmp / "completeness.csv", index=False)
        (tmp / "ig_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    print(f"wrote {run_dir / 'gene_weights'} ({len(rows)} nodes)")
    return 0


_FLAGS = (
    "method",
    "seed",
    "n_clusters",
    "labelling",
    "scaling",
    "sign_alignment",
    "cluster_on",
    "rotation",
    "l_min",
    "l_max",
    "density_threshold",
)


def ensemble_config(run_dir: Path, args: argparse.Namespace) -> EnsembleConfig:
    """The run's ``ensemble`` config section with the flags that were given on top."""
    from deeppert.config import build_dataclass
    from deeppert.ensemble import EnsembleConfig

    raw: dict = {}
    path = run_dir / "config.json"
    if path.is_file():
        raw = dict(json.loads(path.read_text()).get("experiment", {}).get("ensemble") or {})
    raw.update({k: getattr(args, k) for k in _FLAGS if getattr(args, k, None) is not None})
    return build_dataclass(EnsembleConfig, raw, "ensemble")


def run_ensemble(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    require_dir(run_dir, "run folder")
    from deeppert.atomic import atomic_dir
    from deeppert.ensemble import EnsembleModel
    from deeppert.stability import ensemble_step, plot_selection
    from deeppert.workspace import load_pca, load_trained, read_member_frames, training_inputs

    config = ensemble_config(run_dir, args)
    latents = read_member_frames(run_dir, "latents", "latent")
    weights = read_member_frames(run_dir, "gene_weights", "gene-weight")
    x_pca, _ = training_inputs(run_dir)
    pca = load_pca(run_dir)
    step = ensemble_step(
        latents, weights, config=config, x_pca=x_pca, pca=pca, stability=not args.no_stability
    )
    ens = step.ensemble
    model = EnsembleModel.from_ensemble(ens, load_trained(run_dir), pca)
    with atomic_dir(run_dir / "ensemble") as tmp:
        ens.labels.to_parquet(tmp / "labels.parquet")
        ens.weights.to_parquet(tmp / "ensemble_weights.parquet")
        ens.embedding.to_parquet(tmp / "ensemble_embedding.parquet")
        (tmp / "members.json").write_text(json.dumps(ens.members, indent=2) + "\n")
        (tmp / "summary.json").write_text(json.dumps(step.summary(), indent=2) + "\n")
        (tmp / "stability.json").write_text(
            json.dumps(step.stability, indent=2, default=float) + "\n"
        )
        if step.selection is not None:
            step.selection.to_csv(tmp / "selection.csv")
            plot_selection(step.selection, tmp / "selection.png")
        model.save(tmp / "model")
        _plots(ens, step.stability, tmp)
    print(
        f"wrote {run_dir / 'ensemble'}: L = {ens.n_clusters} clusters over {len(ens.labels)} "
        f"{'components' if config.method == 'consensus' else 'latent variables'}"
    )
    return 0


def _plots(ens, stability: dict | None, folder: Path) -> None:
    """The ensemble's figures (:mod:`deeppert.ensemble_figures`) and top-20 genes table."""
    import matplotlib.pyplot as plt

    from deeppert.ensemble_figures import ensemble_figures, top_genes

    for name, fig in ensemble_figures(ens, stability).items():
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)
    top_genes(ens, 20).to_csv(folder / "top_genes.csv", index=False)
