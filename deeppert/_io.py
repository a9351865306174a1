"""``dp.load`` and ``dp.export``: signatures in, AnnData out (``deeppert export`` calls them)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import pandas as pd

from deeppert.atomic import read_json, read_parquet
from deeppert.config import DataConfig
from deeppert.data import Signatures
from deeppert.data._anndata import gene_table, signatures_to_anndata, write_h5ad
from deeppert.ensemble.modes import EnsembleModel
from deeppert.errors import DeeppertError
from deeppert.tracking.contract import ARTIFACTS, ENSEMBLE_FILES
from deeppert.workspace import TrainedRun, load_signatures_of, run_folder

if TYPE_CHECKING:
    import anndata

__all__ = ["load", "export", "to_anndata"]

#: What ``uns["deeppert"]["gene_tables"]`` says of the two gene tables in ``varm``.
GENE_TABLES = {
    "deeppert_weights": "gene importances (>= 0), the input of deeppert targets",
    "deeppert_loadings": "signed gene loadings (covariance per SD of the cluster)",
}


def load(source: str | os.PathLike | DataConfig, **options: Any) -> Signatures:
    """Read a signature matrix: a file (CSV/TSV/Parquet/h5ad/GCT/GCTX) or a dataset entry.

    ``options`` are those of :func:`deeppert.data.load_signatures` (``cell_line``,
    ``pert_type``, ``id_column``, ``gene_columns``, ``siginfo``, ...); a
    :class:`~deeppert.config.DataConfig` carries its own (and may describe synthetic data).
    """
    if isinstance(source, DataConfig):
        if options:
            raise DeeppertError(
                f"load: a DataConfig carries its own options; got {sorted(options)}"
            )
        from deeppert.grid import load_dataset

        return load_dataset(source)
    from deeppert.data import load_signatures

    return load_signatures(source, **options)


def export(
    run: TrainedRun | str | os.PathLike,
    *,
    signatures: Signatures | None = None,
    h5ad: str | os.PathLike | None = None,
) -> anndata.AnnData:
    """A run folder's ensemble as AnnData: ``signatures`` (default: the run's own) embedded
    with ``<run>/ensemble/model``.

    ``X`` signatures, ``obs`` their metadata, ``obsm["X_deeppert"]`` the embedding,
    ``varm["deeppert_weights"]`` gene importances, ``varm["deeppert_loadings"]`` signed
    loadings (when the ensemble has them), ``uns["deeppert"]`` the config, ensemble summary
    and clusters. With ``h5ad``, also written there atomically.
    """
    run_dir = run_folder(run)
    folder = run_dir / "ensemble"
    if not (folder / ENSEMBLE_FILES.model).is_dir():
        raise DeeppertError(
            f"{run_dir}: no ensemble/model (run `deeppert ensemble {run_dir}` first)"
        )
    model = EnsembleModel.load(folder / ENSEMBLE_FILES.model)
    weights = read_parquet(folder / ARTIFACTS.ensemble_weights)
    path = folder / ARTIFACTS.ensemble_loadings
    loadings = read_parquet(path) if path.is_file() else None
    info = {
        "source": str(run_dir),
        "config": json.dumps(read_json(run_dir / "config.json")),
        "ensemble": json.dumps(read_json(folder / ENSEMBLE_FILES.summary)),
        "model_versions": {"run_folder": str(folder / ENSEMBLE_FILES.model)},
        "members": sorted(model.models),
    }
    if signatures is None:
        signatures = load_signatures_of(run_dir)
    adata = to_anndata(signatures, model, weights=weights, loadings=loadings, info=info)
    if h5ad is not None:
        write_h5ad(adata, h5ad)
    return adata


def to_anndata(
    signatures: Signatures,
    model: EnsembleModel,
    *,
    weights: pd.DataFrame,
    loadings: pd.DataFrame | None = None,
    info: dict[str, Any] | None = None,
) -> anndata.AnnData:
    """AnnData of ``signatures`` embedded by ``model`` (``obsm["X_deeppert"]``), with the
    ensemble's gene tables in ``varm`` and ``info`` under ``uns["deeppert"]``."""
    info = {**(info or {}), "gene_tables": dict(GENE_TABLES)}
    adata = signatures_to_anndata(signatures, weights=weights, info=info)
    if loadings is not None:
        adata.varm["deeppert_loadings"] = gene_table(
            loadings, signatures.genes, "ensemble loadings"
        )
    model.embed(adata)  # obsm["X_deeppert"], uns["deeppert"]["clusters"]
    return adata
