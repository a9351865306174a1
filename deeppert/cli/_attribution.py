"""``deeppert attribute``: Integrated Gradients gene weights, the step after ``deeppert train``.

``attribute RUN_DIR`` writes ``RUN_DIR/gene_weights/<KIND>_d<dim>_run<r>.parquet`` (rows =
genes, columns = node names), ``completeness.csv`` and ``ig_config.json``, atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from deeppert.cli._flags import add_config_flag, add_dataclass_flags, apply_flags, config_section
from deeppert.cli._inputs import require_dir
from deeppert.ig_config import IGConfig

__all__ = ["register", "run_attribute"]

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
