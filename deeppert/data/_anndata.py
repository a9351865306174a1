"""AnnData out, for scverse users (scanpy / pertpy conventions).

One AnnData per export: ``X`` the signatures (samples x genes, float32), ``obs`` their
metadata (``sample_id`` keeps the ids, repeats included; ``obs_names`` are made unique),
``var`` the genes with a ``landmark`` flag, ``obsm["X_deeppert"]`` the ensemble embedding
(samples x clusters), ``varm["deeppert_weights"]`` the ensemble gene weights (genes x
clusters) and ``uns["deeppert"]`` where they came from (config, model versions, clusters).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppert.atomic import atomic_path
from deeppert.data._signatures import Signatures, landmark_genes
from deeppert.errors import DeeppertError

__all__ = ["signatures_to_anndata", "write_h5ad"]


def _h5_safe(value: Any) -> Any:
    """``uns`` values h5ad can store: dicts of str / numbers / lists; None and mixed -> JSON text."""
    if isinstance(value, dict):
        return {str(k): _h5_safe(v) for k, v in value.items()}
    if value is None:
        return ""
    if isinstance(value, (str, int, float, bool, np.integer, np.floating)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return json.dumps(value, default=str)


def gene_table(table: pd.DataFrame, genes: Sequence[str], what: str) -> np.ndarray:
    """``table`` (clusters x genes) as a genes x clusters float32 array in ``genes`` order, for
    ``varm``; DeeppertError when it lacks some of ``genes``."""
    missing = [g for g in genes if g not in table.columns]
    if missing:
        raise DeeppertError(
            f"{what} lack {len(missing)} genes of the signatures, e.g. {missing[:3]}"
        )
    return table[list(genes)].T.to_numpy(dtype=np.float32)


def signatures_to_anndata(
    sig: Signatures,
    *,
    embedding: pd.DataFrame | None = None,
    weights: pd.DataFrame | None = None,
    info: dict[str, Any] | None = None,
):
    """An AnnData of ``sig`` with the ensemble ``embedding`` (samples x clusters, rows in
    ``sig`` order) and gene ``weights`` (clusters x genes, as ``ensemble_weights.parquet``)."""
    import anndata

    ids = pd.Index(sig.sample_ids.astype(str))
    obs = (
        sig.metadata.reset_index(drop=True).copy()
        if sig.metadata is not None
        else pd.DataFrame(index=range(sig.n_samples))
    )
    obs.columns = [str(c) for c in obs.columns]
    if "sample_id" in obs.columns:
        raise DeeppertError(f"{sig.source}: metadata column 'sample_id' clashes with the ids")
    obs.insert(0, "sample_id", ids.to_numpy())
    for name in obs.columns:  # text columns as categoricals of str (missing kept), as scanpy does
        col = obs[name]
        if col.dtype == object:
            obs[name] = col.where(col.isna(), col.astype(str)).astype("category")
    obs.index = anndata.utils.make_index_unique(ids.copy())
    lm = set(landmark_genes())
    var = pd.DataFrame({"landmark": [g in lm for g in sig.genes]}, index=pd.Index(sig.genes))
    adata = anndata.AnnData(X=np.asarray(sig.values, dtype=np.float32), obs=obs, var=var)
    uns = dict(info or {})
    if embedding is not None:
        if len(embedding) != sig.n_samples:
            raise DeeppertError(
                f"embedding has {len(embedding)} rows for {sig.n_samples} signatures"
            )
        adata.obsm["X_deeppert"] = embedding.to_numpy(dtype=np.float32)
        uns["clusters"] = [str(c) for c in embedding.columns]
    if weights is not None:
        adata.varm["deeppert_weights"] = gene_table(weights, sig.genes, "ensemble weights")
        uns.setdefault("clusters", [str(c) for c in weights.index])
    adata.uns["deeppert"] = _h5_safe(uns)
    return adata


def write_h5ad(adata, path: str | os.PathLike) -> Path:
    """Write ``adata`` atomically (the file appears whole or not at all)."""
    path = Path(path)
    if path.suffix != ".h5ad":
        raise DeeppertError(f"{path}: an AnnData file must end in .h5ad")
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return path
