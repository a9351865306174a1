"""``deeppert attribute``: Integrated Gradients gene weights, the step after ``deeppert train``.

``attribute RUN_DIR`` writes ``RUN_DIR/gene_weights/<KIND>_d<dim>_run<r>.parquet`` (rows =
genes, columns = node names), ``completeness.csv`` and ``ig_config.json``, atomically.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from deeppert.cli._flags import add_config_flag, apply_flags, config_section
from deeppert.cli._inputs import require_dir
from deeppert.ig_config import IGConfig
from deeppert.schema import add_flags

__all__ = ["register", "run_attribute"]

log = logging.getLogger(__name__)

# IGConfig fields of `deeppert attribute` and their flags; help and defaults come from IGConfig.
_IG_FLAGS = {
    "n_steps": "--steps",
    "method": "--method",
    "chunk_size": "--chunk-size",
    "algorithm": "--algorithm",
    "max_samples": "--max-samples",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attribute",
        help="Integrated Gradients gene weights of every trained latent node",
        description="Write RUN_DIR/gene_weights/<model>_run<r>.parquet (genes x nodes).",
    )
    p.add_argument("run_dir", type=Path)
    add_config_flag(p, "attribution")
    add_flags(p, IGConfig, _IG_FLAGS)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(func=run_attribute)


def run_attribute(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    require_dir(run_dir, "run folder")
    from deeppert import tl

    config = apply_flags(config_section(args, "attribution", IGConfig), args, _IG_FLAGS)
    table = tl.attribute(run_dir, config=config, device=args.device)
    print(f"wrote {run_dir / 'gene_weights'} ({len(table)} nodes)")
    return 0
