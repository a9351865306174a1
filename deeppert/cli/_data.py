"""``deeppert synth`` (make synthetic data with ground truth) and ``deeppert info`` (describe a file)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields

__all__ = ["register"]

log = logging.getLogger(__name__)

# SynthConfig fields exposed as --flags (name -> type); the rest keep their defaults.
_SYNTH_FLAGS = (
    "n_samples",
    "n_programs",
    "module_size",
    "signal_fraction",
    "module_loading",
    "background_loading",
    "activity",
    "seed",
    "disease",
    "n_known_pairs",
    "n_disease_programs",
    "n_decoy_pairs",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``synth`` and ``info``."""
    synth = subparsers.add_parser(
        "synth",
        help="write a synthetic L1000-like matrix with planted modules and its ground truth",
        description="Write DIR/signatures.parquet, DIR/ground_truth/ and DIR/target_pairs/ atomically.",
    )
    synth.add_argument("--out", required=True, metavar="DIR", help="output folder")
    from deeppert.data.synthetic import SynthConfig

    defaults = SynthConfig()
    types = {f.name: f.type for f in fields(SynthConfig)}
    for name in _SYNTH_FLAGS:
        default = getattr(defaults, name)
        kwargs: dict = {"default": default, "help": f"(default: {default})"}
        if name == "activity":
            kwargs["choices"] = ["gaussian", "laplace", "student_t"]
        else:
            kwargs["type"] = type(default)
        assert name in types, name
        synth.add_argument("--" + name.replace("_", "-"), dest=name, **kwargs)
    synth.set_defaults(func=_synth)

    info = subparsers.add_parser(
        "info", help="describe a signature file (rows, genes, ids, value range)"
    )
    info.add_argument("path", help="CSV, TSV, Parquet, h5ad or GCTX file")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument("--format", choices=["csv", "tsv", "parquet", "h5ad", "gctx"], default=None)
    info.add_argument("--id-column", default=None)
    info.add_argument("--fill-missing", action="store_true", help="fill missing values with 0")
    info.add_argument("--cell-line", default=None, help="LINCS cell line (needs --siginfo)")
    info.add_argument("--siginfo", default=None, help="siginfo_beta.txt / sig_info.txt")
    info.add_argument("--geneinfo", default=None, help="geneinfo_beta.txt / gene_info.txt")
    info.add_argument("--compoundinfo", default=None, help="compoundinfo_beta.txt / pert_info.txt")
    info.set_defaults(func=_info)


def _synth(args: argparse.Namespace) -> int:
    from deeppert.data import SynthConfig, make_synthetic, write_synthetic

    cfg = SynthConfig(**{name: getattr(args, name) for name in _SYNTH_FLAGS})
    data = make_synthetic(cfg)
    out = write_synthetic(data, args.out)
    print(
        f"wrote {out}: {data.signatures.n_samples} x {data.signatures.n_genes}, "
        f"{cfg.n_programs} programs of {cfg.module_size} genes, "
        f"signal fraction {data.signal_fraction:.4f}, {len(data.known_pairs)} target pairs"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from deeppert.data import describe, load_signatures

    sig = load_signatures(
        args.path,
        format=args.format,
        id_column=args.id_column,
        fill_missing=args.fill_missing,
        min_rows=1,
        min_genes=1,
        cell_line=args.cell_line,
        siginfo=args.siginfo,
        geneinfo=args.geneinfo,
        compoundinfo=args.compoundinfo,
    )
    d = describe(sig)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"{d['source']}")
    print(
        f"  rows             {d['rows']} ({d['unique_ids']} unique ids, {d['duplicated_id_rows']} rows share an id)"
    )
    print(
        f"  genes            {d['genes']} ({d['landmark_genes']} L1000 landmarks, coverage {d['landmark_coverage']:.1%})"
    )
    print(
        f"  values           min {d['value_min']:.4g}, max {d['value_max']:.4g}, mean {d['value_mean']:.4g}, std {d['value_std']:.4g}"
    )
    print(f"  metadata columns {', '.join(d['metadata_columns']) or '(none)'}")
    return 0
