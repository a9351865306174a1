"""``deeppert export``: a run folder's ensemble, or a registered one, as an AnnData ``.h5ad``.

``export RUN_DIR --h5ad OUT`` embeds the run folder's signatures (or ``--signatures FILE``)
with ``RUN_DIR/ensemble/model``; ``export --ensemble NAME@ALIAS --tracking-uri URI
--signatures FILE --h5ad OUT`` does the same with a registered ensemble. The file holds ``X``
(signatures), ``obs`` (their metadata), ``obsm["X_deeppert"]``, ``varm["deeppert_weights"]``
(gene importances, non-negative), ``varm["deeppert_loadings"]`` (signed gene loadings, when the
ensemble has them) and ``uns["deeppert"]`` (see :mod:`deeppert.data._anndata`); it is written
atomically. The run-folder case is :func:`deeppert.export`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deeppert.cli._data import add_load_arguments, load_from_args
from deeppert.errors import DeeppertError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write signatures + ensemble embedding and gene weights as an AnnData .h5ad",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "run_dir", nargs="?", type=Path, help="run folder with ensemble/ (or use --ensemble)"
    )
    p.add_argument("--h5ad", required=True, type=Path, metavar="OUT", help="output .h5ad file")
    p.add_argument(
        "--ensemble", metavar="NAME@ALIAS", help="registered ensemble (needs --tracking-uri)"
    )
    p.add_argument("--tracking-uri", help="MLflow server holding --ensemble")
    p.add_argument(
        "--signatures",
        dest="path",
        default=None,
        help="signature file to embed (default: the run folder's signatures.parquet)",
    )
    add_load_arguments(p)
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    if (args.run_dir is None) == (args.ensemble is None):
        raise DeeppertError("export needs exactly one of RUN_DIR or --ensemble NAME@ALIAS")
    if args.h5ad.suffix != ".h5ad":
        raise DeeppertError(f"{args.h5ad}: --h5ad must name a .h5ad file")
    if args.run_dir is not None and not (args.run_dir / "ensemble" / "model").is_dir():
        raise DeeppertError(
            f"{args.run_dir}: no ensemble/model (run `deeppert ensemble {args.run_dir}` first)"
        )
    if args.run_dir is not None:
        from deeppert import export

        signatures = load_from_args(args, min_rows=1, min_genes=1) if args.path else None
        adata = export(args.run_dir, signatures=signatures, h5ad=args.h5ad)
    else:
        adata = _export_registered(args)
    print(
        f"wrote {args.h5ad}: X {adata.n_obs} x {adata.n_vars}, "
        f"obsm['X_deeppert'] {adata.obsm['X_deeppert'].shape}, "
        f"varm['deeppert_weights'] {adata.varm['deeppert_weights'].shape}"
    )
    return 0


def _export_registered(args: argparse.Namespace):
    """``--ensemble NAME@ALIAS``: the registered ensemble's model and gene tables embed
    ``--signatures``; written to ``--h5ad``."""
    if not args.tracking_uri:
        raise DeeppertError("--ensemble needs --tracking-uri")
    from deeppert import to_anndata
    from deeppert.data._anndata import write_h5ad
    from deeppert.tracking.registry import load_ensemble_model, load_ensemble_outputs
    from deeppert.tracking.session import TrackingSession

    session = TrackingSession.for_uri(args.tracking_uri).connect(experiment=False)
    outputs = load_ensemble_outputs(session, args.ensemble)
    model = load_ensemble_model(session, outputs.version)
    v = outputs.version
    info = {
        "source": args.tracking_uri,
        "model_versions": {
            "ensemble": f"{v.name}/{v.version}",
            "alias": args.ensemble,
            "run_id": v.run_id or "",
            **{k: str(val) for k, val in (v.tags or {}).items()},
        },
        "members": sorted(model.models),
    }
    if args.path is None:
        raise DeeppertError("export --ensemble needs --signatures FILE (the signatures to embed)")
    signatures = load_from_args(args, min_rows=1, min_genes=1)
    adata = to_anndata(
        signatures, model, weights=outputs.weights, loadings=outputs.loadings, info=info
    )
    write_h5ad(adata, args.h5ad)
    return adata
