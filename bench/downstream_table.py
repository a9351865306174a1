"""Headline downstream table from ``deeppert downstream`` output folders: honest splits first.

Usage: ``.venv/bin/python bench/downstream_table.py OUT.md RUN_DIR [RUN_DIR ...]``. Reads each
run's ``scores.csv``; one row per task x metric x feature set x setting x model with the two
honest splits (synergy: one drug unseen, both unseen; toxicity: structure, scaffold) as the
headline and the leaky split in a separate column, mean +- sd over seeds (one seed: no sd),
with the pair/compound counts.
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


def table(scores: pd.DataFrame) -> str:
    summary = summarize(scores)
    summary = summary[summary["metric"].isin(METRICS)]
    keys = ["task", "metric", "feature_set", "setting", "model"]
    lines = [
        "| task | metric | features | setting | model | honest: one unseen / structure "
        "| honest: both unseen / scaffold | leaky (comparison only) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, part in summary.groupby(keys, sort=True):
        kind = "synergy" if str(key[0]).startswith("synergy") else "toxicity"
        by = {r["split"]: r for _, r in part.iterrows()}
        cells = [_cell(by.get(s)) for s in COLUMNS[kind]]
        lines.append("| " + " | ".join(str(k) for k in key) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    out, runs = Path(argv[0]), [Path(a) for a in argv[1:]]
    scores = pd.concat([pd.read_csv(r / "scores.csv") for r in runs], ignore_index=True)
    text = table(scores)
    out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
