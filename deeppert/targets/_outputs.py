"""Writing a run's outputs into one folder atomically: all files appear together or none does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from deeppert.atomic import atomic_dir, write_json
from deeppert.errors import DeeppertError

if TYPE_CHECKING:
    from deeppert.targets._pipeline import TargetResult

__all__ = ["write_target_outputs", "write_all_diseases", "check_out_dir"]


def check_out_dir(out: str | os.PathLike) -> Path:
    """Refuse to replace a non-empty folder that is not an earlier output (no summary.json)."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise DeeppertError(f"{out}: output path exists and is not a folder")
        if any(out.iterdir()) and not (out / "summary.json").is_file():
            raise DeeppertError(
                f"{out}: folder is not empty and holds no summary.json; refusing to replace it"
            )
    return out


def write_target_outputs(
    result: TargetResult, out: str | os.PathLike, *, extra: dict | None = None
) -> Path:
    """Write one run (a :class:`TargetResult`) into ``out``, replacing an earlier output whole.

    Files: target_combinations.csv, match_statistics.csv (docs/method.md columns) and
    match_significance.csv (chance rates, p-values) when a disease was evaluated, their TOP_N
    rows those of :meth:`TargetResult.match_tables`,
    candidate_assignments.csv, summary.json, and with ``config.plots`` the gene-cluster
    heatmap and the match-rate plot as SVG and PNG.
    """
    from deeppert.targets._plots import plot_gene_clusters, plot_match_rate

    out = check_out_dir(out)
    summary = result.summary()
    if extra:
        summary.update(extra)
    label = result.disease or "gene list"
    tables = result.match_tables()
    with atomic_dir(out) as tmp:
        result.pairs.to_csv(tmp / "target_combinations.csv", index=False)
        result.assignments.to_csv(tmp / "candidate_assignments.csv", index=False)
        if tables is not None:
            tables[0].to_csv(tmp / "match_statistics.csv", index=False)
            tables[1].to_csv(tmp / "match_significance.csv", index=False)
        if result.config.plots:
            fig = plot_gene_clusters(
                result.prepared, title=f"Gene importance across clusters ({label})"
            )
            for ext in ("svg", "png"):
                fig.savefig(tmp / f"gene_cluster_heatmap.{ext}", dpi=150, bbox_inches="tight")
            if tables is not None:
                fig = plot_match_rate(
                    *tables,
                    title=f"{label}: match rate vs TOP_N",
                )
                for ext in ("svg", "png"):
                    fig.savefig(tmp / f"match_rate.{ext}", dpi=150, bbox_inches="tight")
        write_json(summary, tmp / "summary.json")
    return out


def write_all_diseases(table: pd.DataFrame, out: str | os.PathLike, *, summary: dict) -> Path:
    """Write the all-diseases table (all_diseases.csv) and summary.json into ``out`` atomically."""
    out = check_out_dir(out)
    with atomic_dir(out) as tmp:
        table.to_csv(tmp / "all_diseases.csv", index=False)
        write_json(summary, tmp / "summary.json")
    return out
