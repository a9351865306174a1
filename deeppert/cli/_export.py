"""``deeppert export``: a run folder's ensemble, or a registered one, as an AnnData ``.h5ad``.

``export RUN_DIR --h5ad OUT`` embeds the run folder's signatures (or ``--signatures FILE``)
with ``RUN_DIR/ensemble/model``; ``export --ensemble NAME@ALIAS --tracking-uri URI
--signatures FILE --h5ad OUT`` does the same with a registered ensemble. The file holds ``X``
(signatures), ``obs`` (their metadata), ``obsm["X_deeppert"]``, ``varm["deeppert_weights"]``
(gene importances, non-negative), ``varm["deeppert_loadings"]`` (signed gene loadings, when the
ensemble has them) and ``uns["deeppert"]`` (see :mod:`deeppert.data._anndata`); it is written
atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from deeppert.cli._data import add_load_arguments, load_from_args
from deeppert.errors import DeeppertError

if TYPE_CHECKING:
    from deeppert.data import Signatures

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


def _signatures(args: argparse.Namespace, run_dir: Path | None) -> Signatures:
    if args.path is not None:
        return load_from_args(args, min_rows=1, min_genes=1)
    if run_dir is None:
        raise DeeppertError("export --ensemble needs --signatures FILE (the signatures to embed)")
    from deeppert.workspace import load_signatures_of

    return load_signatures_of(run_dir)


def run_export(args: argparse.Namespace) -> int:
    if (args.run_dir is None) == (args.ensemble is None):
        raise DeeppertError("export needs exactly one of RUN_DIR or --ensemble NAME@ALIAS")
    if args.h5ad.suffix != ".h5ad":
        raise DeeppertError(f"{args.h5ad}: --h5ad must name a .h5ad file")
    if args.run_dir is not None and not (args.run_dir / "ensemble" / "model").is_dir():
        raise DeeppertError(
            f"{args.run_dir}: no ensemble/model (run `deeppert ensemble {args.run_dir}` first)"
        )
    import numpy as np

    from deeppert.atomic import read_json, read_parquet
    from deeppert.data._anndata import signatures_to_anndata, write_h5ad
    from deeppert.ensemble import EnsembleModel
    from deeppert.tracking.contract import ARTIFACTS

    if args.run_dir is not None:
        run_dir: Path = args.run_dir
        folder = run_dir / "ensemble"
        model = EnsembleModel.load(folder / "model")
        weights = read_parquet(folder / ARTIFACTS.ensemble_weights)
        path = folder / ARTIFACTS.ensemble_loadings
        loadings = read_parquet(path) if path.is_file() else None
        config = read_json(run_dir / "config.json")
        summary = read_json(folder / "summary.json")
        info = {
            "source": str(run_dir),
            "config": json.dumps(config),
            "ensemble": json.dumps(summary),
            "model_versions": {"run_folder": str(folder / "model")},
            "members": sorted(model.models),
        }
    else:
        if not args.tracking_uri:
            raise DeeppertError("--ensemble needs --tracking-uri")
        from deeppert.tracking.registry import load_ensemble_model, load_ensemble_outputs

        outputs = load_ensemble_outputs(args.tracking_uri, args.ensemble)
        model = load_ensemble_model(args.tracking_uri, outputs.version)
        weights, loadings = outputs.weights, outputs.loadings
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
    sig = _signatures(args, args.run_dir)
    info["gene_tables"] = {
        "deeppert_weights": "gene importances (>= 0), the input of deeppert targets",
        "deeppert_loadings": "signed gene loadings (covariance per SD of the cluster)",
    }
    adata = signatures_to_anndata(sig, weights=weights, info=info)
    if loadings is not None:
        missing = [g for g in sig.genes if g not in loadings.columns]
        if missing:
            raise DeeppertError(
                f"ensemble loadings lack {len(missing)} genes of the signatures, e.g. {missing[:3]}"
            )
        adata.varm["deeppert_loadings"] = loadings[sig.genes].T.to_numpy(dtype=np.float32)
    model.embed(adata)  # obsm["X_deeppert"], uns["deeppert"]["clusters"]
    write_h5ad(adata, args.h5ad)
    print(
        f"wrote {args.h5ad}: X {adata.n_obs} x {adata.n_vars}, "
        f"obsm['X_deeppert'] {adata.obsm['X_deeppert'].shape}, "
        f"varm['deeppert_weights'] {adata.varm['deeppert_weights'].shape}"
    )
    return 0
