"""``deeppert synth`` (make synthetic data with ground truth) and ``deeppert info`` (describe a file)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from deeppert.cli._inputs import require_file
from deeppert.config import LOAD_OPTIONS, DataConfig
from deeppert.errors import DeeppertError
from deeppert.schema import add_flags, given
from deeppert.synth_config import SynthConfig

if TYPE_CHECKING:
    from deeppert.data import Signatures

__all__ = [
    "register",
    "add_load_arguments",
    "data_config_from_args",
    "load_from_args",
    "gene_list",
]

log = logging.getLogger(__name__)

# SynthConfig fields exposed as --flags (``--n-samples`` for ``n_samples``); the rest keep
# their defaults. Help, choices and defaults come from SynthConfig.
_SYNTH_FLAGS = (
    "n_samples",
    "n_programs",
    "module_size",
    "signal_fraction",
    "module_loading",
    "background_loading",
    "activity",
    "module_overlap",
    "signs",
    "response",
    "interaction",
    "seed",
    "disease",
    "n_known_pairs",
    "n_disease_programs",
    "n_decoy_pairs",
)
# `deeppert synth` writes heavy-tailed (sparse) programs unless told otherwise, as real gene
# programs are; SynthConfig's own default (config files, the demo) is unchanged.
_SYNTH_DEFAULTS = {"activity": "laplace"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``synth`` and ``info``."""
    synth = subparsers.add_parser(
        "synth",
        help="write a synthetic L1000-like matrix with planted modules and its ground truth",
        description="Write DIR/signatures.parquet, DIR/ground_truth/ and DIR/target_pairs/ atomically.",
    )
    synth.add_argument("--out", required=True, metavar="DIR", help="output folder")
    _add_synth_flags(synth)
    synth.set_defaults(func=_synth)

    info = subparsers.add_parser(
        "info",
        help="describe a signature file (rows, genes, ids, value range, metadata fields)",
    )
    info.add_argument("path", help="CSV, TSV, Parquet, h5ad, GCT or GCTX file")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument("--top", type=int, default=3, help="most frequent values shown per field")
    add_load_arguments(info)
    info.set_defaults(func=_info)


def _add_synth_flags(synth: argparse.ArgumentParser) -> None:
    """One flag per name in ``_SYNTH_FLAGS`` (:func:`deeppert.schema.add_flags`)."""
    add_flags(synth, SynthConfig, _SYNTH_FLAGS, defaults=_SYNTH_DEFAULTS)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`deeppert.data.load_signatures` (:data:`deeppert.config.LOAD_OPTIONS`,
    fields of :class:`~deeppert.config.DataConfig`), shared by commands that read files."""
    add_flags(parser, DataConfig, LOAD_OPTIONS, types={"gene_columns": str})


def gene_list(spec: str | None) -> list[str] | None:
    """``--gene-columns``: ``A,B,C`` or ``@file`` (one name per line)."""
    if spec is None:
        return None
    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.is_file():
            raise DeeppertError(f"{path}: gene list file not found (--gene-columns @FILE)")
        names = [ln.strip() for ln in path.read_text().splitlines()]
    else:
        names = [g.strip() for g in spec.split(",")]
    names = [g for g in names if g]
    if not names:
        raise DeeppertError(f"--gene-columns {spec!r}: no gene names")
    return names


def _load_options(args: argparse.Namespace) -> dict:
    """The options of :func:`add_load_arguments` by field name (the ``DataConfig`` default when
    not given), ``gene_columns`` as a list; the files they name are checked here, before
    anything heavy is imported."""
    options = DataConfig().load_options()
    options.update(given(args, DataConfig, [n for n in LOAD_OPTIONS if n != "gene_columns"]))
    options["gene_columns"] = gene_list(args.gene_columns)  # a list, or @FILE
    for name in ("siginfo", "geneinfo", "compoundinfo"):
        require_file(options[name], f"--{name}")
    return options


def data_config_from_args(args: argparse.Namespace, path: str) -> DataConfig:
    """The dataset entry the options of :func:`add_load_arguments` describe for ``path``."""
    options = _load_options(args)
    genes = options["gene_columns"]
    options["gene_columns"] = tuple(genes) if genes else None
    return DataConfig(name=Path(path).stem, path=str(path), **options)


def load_from_args(args: argparse.Namespace, **kwargs) -> Signatures:
    """:func:`load_signatures` with the options of :func:`add_load_arguments`.

    Missing files are reported before numpy/pandas load."""
    if not Path(args.path).is_file():
        state = "is a folder, not a file" if Path(args.path).is_dir() else "file not found"
        raise DeeppertError(f"{args.path}: {state}")
    options = _load_options(args)
    from deeppert.data import load_signatures

    return load_signatures(args.path, **options, **kwargs)


def _synth(args: argparse.Namespace) -> int:
    cfg = SynthConfig(
        **{**_SYNTH_DEFAULTS, **given(args, SynthConfig, _SYNTH_FLAGS)}
    )  # checks first
    from deeppert.data import make_synthetic, write_synthetic

    data = make_synthetic(cfg)
    out = write_synthetic(data, args.out)
    print(
        f"wrote {out}: {data.signatures.n_samples} x {data.signatures.n_genes}, "
        f"{cfg.n_programs} programs of {cfg.module_size} genes, "
        f"signal fraction {data.signal_fraction:.4f}, {len(data.known_pairs)} target pairs"
    )
    return 0


def _renamed_landmarks(args: argparse.Namespace) -> dict[str, str]:
    """``{previous: current}`` symbols of the landmarks a GCT/GCTX names by its symbol field
    (as :func:`load_signatures` does when no gene list or gene table is given); else {}."""
    from deeppert.data import infer_format, landmark_genes
    from deeppert.data._cmap import landmark_rows, open_gctx, read_gct

    fmt = args.format or infer_format(Path(args.path))
    if fmt not in ("gct", "gctx") or args.gene_columns or args.geneinfo:
        return {}
    opener = open_gctx if fmt == "gctx" else read_gct
    landmarks = set(landmark_genes())
    with opener(args.path, gene_hint=landmarks) as matrix:
        if landmarks.intersection(matrix.gene_ids):
            return {}  # named by their ids
        rows = landmark_rows(matrix)
    return {} if rows is None else rows[2]


def _info(args: argparse.Namespace) -> int:
    sig = load_from_args(args, min_rows=1, min_genes=1)
    from deeppert.data import describe, landmark_genes

    d = describe(sig, top=args.top)
    d["renamed_landmarks"] = _renamed_landmarks(args)
    landmarks = set(landmark_genes())
    d["other_genes"] = [g for g in sig.genes if g not in landmarks]
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"{d['source']}")
    print(
        f"  rows             {d['rows']} ({d['unique_ids']} unique ids, {d['duplicated_id_rows']} rows share an id)"
    )
    print(
        f"  genes            {d['genes']} ({d['landmark_genes']} L1000 landmarks, coverage {d['landmark_coverage']:.1%}); "
        f"first {', '.join(d['first_genes'])}"
    )
    print(
        f"  values           min {d['value_min']:.4g}, max {d['value_max']:.4g}, mean {d['value_mean']:.4g}, std {d['value_std']:.4g}"
    )
    if d["renamed_landmarks"]:
        pairs = ", ".join(f"{old} -> {new}" for old, new in d["renamed_landmarks"].items())
        print(f"  renamed          {len(d['renamed_landmarks'])} previous symbols: {pairs}")
    if d["other_genes"]:
        others = d["other_genes"]
        shown = ", ".join(others[:10]) + (", ..." if len(others) > 10 else "")
        print(f"  not landmarks    {len(others)}: {shown}")
    if d["level_warning"]:
        print(f"  warning          {d['level_warning']}")
    fields = d["metadata"]
    print(f"  metadata fields  {len(fields) or '(none)'}")
    width = max((len(k) for k in fields), default=0)
    for name, f in fields.items():
        top = ", ".join(f"{v} ({c})" for v, c in f["top"])
        missing = f", {f['missing']} missing" if f["missing"] else ""
        print(f"    {name:<{width}}  {f['distinct']} distinct{missing}: {top}")
    return 0
