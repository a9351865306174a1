"""``deeppert targets``: predict target-gene pairs for a disease or gene list from ensemble
gene importances (``ensemble_weights.parquet``; non-negative, signed loadings are refused)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from pathlib import Path

from deeppert.cli._flags import add_config_flag, apply_flags, config_section
from deeppert.errors import DeeppertError
from deeppert.schema import add_flags
from deeppert.target_config import TargetConfig

__all__ = ["register", "parse_threshold"]

log = logging.getLogger(__name__)

#: TargetConfig fields with a flag (``--n-clusters`` for ``n_clusters``); help and defaults come
#: from the dataclass (the reference's evaluation mode).
_FLAGS = ("n_clusters", "top_genes", "threshold", "n_pairs", "mode", "permutations", "seed")


def parse_threshold(text: str) -> float | str:
    """``auto`` or a float in [0, 1] (argparse type)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 1] or 'auto', got {text!r}"
        ) from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be in [0, 1], got {value}")
    return value


def _weights(ref: str, tracking_uri: str | None):
    """``ref`` when it names a file (the step reads it), else the weights of the registered
    ensemble ``ref`` (NAME@ALIAS)."""
    if Path(ref).exists() or "@" not in ref:
        return ref
    if not tracking_uri:
        raise DeeppertError(
            f"--weights {ref!r} is a registry alias: pass --tracking-uri (or set MLFLOW_TRACKING_URI)"
        )
    from deeppert.tracking.registry import load_ensemble_outputs
    from deeppert.tracking.session import TrackingSession

    session = TrackingSession.for_uri(tracking_uri).connect(experiment=False)
    outputs = load_ensemble_outputs(session, ref)
    print(
        f"weights: {ref} -> {outputs.version.name} version {outputs.version.version} (run {outputs.version.run_id})"
    )
    return outputs.weights


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "targets",
        help="predict target-gene combinations from ensemble gene weights (docs/method.md section 5)",
        description=(
            "Cluster the top genes of an ensemble gene-importance matrix, place the candidate genes "
            "of a disease (or a gene list) in the gene clusters and rank correlated pairs. "
            "Evaluation mode of the reference: the defaults. Prediction mode: --threshold auto "
            "--n-pairs 50. Outputs are written atomically into --out."
        ),
    )
    p.add_argument(
        "--weights",
        required=True,
        metavar="FILE|NAME@ALIAS",
        help="ensemble gene importances (>= 0), clusters x genes (TSV/CSV/Parquet; 'dose' "
        "dropped), e.g. RUN_DIR/ensemble/ensemble_weights.parquet, or a registered ensemble "
        "such as A549-ensemble@current (needs --tracking-uri)",
    )
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow server for NAME@ALIAS weights (default: $MLFLOW_TRACKING_URI)",
    )
    p.add_argument(
        "--pairs-dir",
        metavar="DIR",
        help="folder with the three known-pair tables (needed with --disease / --all-diseases)",
    )
    p.add_argument("--disease", help="fd_name of the known pairs (candidates and evaluation)")
    p.add_argument(
        "--gene-list",
        metavar="FILE",
        help="candidate genes (CSV/TSV/TXT; SYMBOL column or first column)",
    )
    p.add_argument(
        "--all-diseases",
        action="store_true",
        help="run every disease with >= --min-pairs known pairs into one table",
    )
    p.add_argument(
        "--min-pairs", type=int, default=20, help="known pairs a disease needs (default 20)"
    )
    add_config_flag(p, "targets")
    add_flags(p, TargetConfig, _FLAGS, types={"threshold": parse_threshold})
    p.add_argument("--no-plots", action="store_true", help="skip the heatmap and match-rate plots")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced whole)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``deeppert targets``; bad input raises :class:`DeeppertError` before any write."""
    _check_modes(args)
    config = _config(args)
    from deeppert.targets._outputs import check_out_dir

    check_out_dir(args.out)
    start = time.perf_counter()
    weights = _weights(args.weights, args.tracking_uri)
    inputs = {
        "weights": str(args.weights),
        "pairs_dir": args.pairs_dir,
        "gene_list": args.gene_list,
    }
    if args.all_diseases:
        _run_all_diseases(args, weights, config, inputs, start)
    else:
        _run_one(args, weights, config, inputs, start)
    return 0


def _check_modes(args: argparse.Namespace) -> None:
    """Exactly one of --disease / --gene-list / --all-diseases, with --pairs-dir where needed."""
    if args.all_diseases and (args.disease or args.gene_list):
        raise DeeppertError("--all-diseases runs every disease; drop --disease / --gene-list")
    if not (args.all_diseases or args.disease or args.gene_list):
        raise DeeppertError("give --disease, --gene-list or --all-diseases")
    if (args.all_diseases or args.disease) and not args.pairs_dir:
        raise DeeppertError("--disease and --all-diseases need --pairs-dir (the known-pair tables)")


def _config(args: argparse.Namespace) -> TargetConfig:
    """The ``--config`` file's ``targets`` section (or the defaults) with the flags on top."""
    config = apply_flags(config_section(args, "targets", TargetConfig), args, _FLAGS)
    if args.no_plots:
        config = dataclasses.replace(config, plots=False)
    return config


def _run_all_diseases(args, weights, config: TargetConfig, inputs: dict, start: float) -> None:
    from deeppert import tl

    table = tl.all_diseases(
        weights,
        args.pairs_dir,
        config=config,
        min_pairs=args.min_pairs,
        out=args.out,
        inputs=inputs,
    )
    seconds = time.perf_counter() - start
    print(table.to_string(index=False, max_colwidth=40))
    print(f"wrote {args.out}/all_diseases.csv ({len(table)} diseases, {seconds:.1f} s)")


def _run_one(args, weights, config: TargetConfig, inputs: dict, start: float) -> None:
    from deeppert import tl
    from deeppert.targets import read_gene_list

    genes = read_gene_list(args.gene_list) if args.gene_list else None
    result = tl.targets(
        weights,
        config=config,
        known=args.pairs_dir,
        disease=args.disease,
        genes=genes,
        out=args.out,
        inputs=inputs,
    )
    seconds = time.perf_counter() - start
    _print_result(result)
    print(f"wrote {args.out} ({seconds:.1f} s)")


def _print_result(result) -> None:
    """The chosen cluster, target columns, the top pairs and, with a disease, the match table."""
    print(
        f"candidates in weights: {len(result.candidates)}; chosen {result.chosen_cluster} "
        f"with {len(result.cluster_candidates)}: {', '.join(result.cluster_candidates)}"
    )
    print(
        f"target columns: {result.target_columns[0]} (max), {result.target_columns[1]} (min); "
        f"threshold {result.threshold}; {len(result.pairs)} pairs"
    )
    print(result.pairs.head(5).to_string(index=False))
    tables = result.match_tables()
    if tables is None:
        return
    merged = tables[0].merge(tables[1], on="TOP_N")
    columns = [
        "TOP_N",
        "Total_Pairs",
        "Matched_Pairs",
        "Match_Rate",
        "Chance_Rate_Cluster",
        "P_Hypergeom_Cluster",
        "P_Permutation",
    ]
    print(merged[columns].to_string(index=False))
