"""Headline downstream table from ``deeppert downstream`` output folders: honest splits first.

Usage: ``.venv/bin/python bench/downstream_table.py OUT.md [--keep OLD.md] RUN_DIR[=LABEL] ...``.
Reads each run's ``scores.csv``; one row per task x metric x feature set x setting x model with
the two honest splits (synergy: one drug unseen, both unseen; toxicity: structure, scaffold) as
the headline and the leaky split in a separate column, mean +- sd over seeds (one seed: no sd),
with the pair/compound counts.

``RUN_DIR=LABEL`` names that run's single feature set LABEL, so two ensembles (say consensus and
the GMeans reference) get rows of their own. ``--keep OLD.md`` keeps the table rows of an
earlier table whose runs are gone; a new row with the same key replaces the kept one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from deeppert.downstream import summarize

COLUMNS = {
    "synergy": ("one_unseen", "both_unseen", "random_leaky"),
    "toxicity": ("structure", "scaffold", "given_leaky"),
}
METRICS = ("pearson_r", "roc_auc")


def _cell(row: pd.Series | None) -> str:
    if row is None:
        return ""
    sd = "" if np.isnan(row["sd"]) else f" +- {row['sd']:.3f}"
    n = f"{row['n']:.0f}" if row["n_min"] == row["n_max"] else f"{row['n_min']}-{row['n_max']}"
    return f"{row['mean']:.3f}{sd} (n {n})"


HEADER = (
    "| task | metric | features | setting | model | honest: one unseen / structure "
    "| honest: both unseen / scaffold | leaky (comparison only) |\n"
    "|---|---|---|---|---|---|---|---|"
)
N_KEYS = 5  # task, metric, features, setting, model


def _rows(scores: pd.DataFrame) -> dict[tuple[str, ...], str]:
    """Table line of every task x metric x feature set x setting x model, by that key."""
    summary = summarize(scores)
    summary = summary[summary["metric"].isin(METRICS)]
    keys = ["task", "metric", "feature_set", "setting", "model"]
    rows = {}
    for key, part in summary.groupby(keys, sort=True):
        kind = "synergy" if str(key[0]).startswith("synergy") else "toxicity"
        by = {r["split"]: r for _, r in part.iterrows()}
        cells = [_cell(by.get(s)) for s in COLUMNS[kind]]
        rows[tuple(str(k) for k in key)] = (
            "| " + " | ".join(str(k) for k in key) + " | " + " | ".join(cells) + " |"
        )
    return rows


def kept_rows(path: Path) -> dict[tuple[str, ...], str]:
    """Table lines of an earlier table (its rows below HEADER), by key."""
    lines = path.read_text().splitlines()
    start = lines.index(HEADER.splitlines()[0]) + 2
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows[tuple(c.strip() for c in line.strip("|").split("|")[:N_KEYS])] = line
    return rows


def table(scores: pd.DataFrame, kept: dict[tuple[str, ...], str] | None = None) -> str:
    rows = {**(kept or {}), **_rows(scores)}
    return HEADER + "\n" + "\n".join(rows[k] for k in sorted(rows)) + "\n"


def _scores(arg: str) -> pd.DataFrame:
    """scores.csv of RUN_DIR, its one feature set renamed LABEL when given as RUN_DIR=LABEL."""
    run, _, label = arg.partition("=")
    scores = pd.read_csv(Path(run) / "scores.csv")
    if label:
        sets = scores["feature_set"].unique()
        if len(sets) != 1:
            raise SystemExit(f"{run} holds feature sets {list(sets)}; =LABEL needs exactly one")
        scores["feature_set"] = label
    return scores


def main(argv: list[str]) -> int:
    kept = None
    if "--keep" in argv:
        i = argv.index("--keep")
        kept = kept_rows(Path(argv[i + 1]))
        argv = argv[:i] + argv[i + 2 :]
    if len(argv) < 2:
        print(__doc__)
        return 2
    out = Path(argv[0])
    scores = pd.concat([_scores(a) for a in argv[1:]], ignore_index=True)
    text = table(scores, kept)
    out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
