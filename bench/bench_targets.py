"""Time ``deeppert.targets`` on the OV7 weights: one disease and the all-diseases table.

Usage: ``.venv/bin/python bench/bench_targets.py [--permutations 1000] [--repeats 3]
[--table bench/results/targets_all_diseases]``. ``--table STEM`` also writes the all-diseases
table (candidate-relabelling permutation p, hypergeometric p, Benjamini-Hochberg q) as
``STEM.csv`` and ``STEM.md``. Reads ../shared/data/deeppert-seed/target_combination; exits 0
with a message when absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SEED = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "deeppert-seed" / "target_combination"
)
OV7 = "OV7_DeepProfile_Ensemble_Gene_Importance_Weights_95L.tsv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", type=Path, help="write the all-diseases table to STEM.csv/.md")
    args = parser.parse_args(argv)
    if not (SEED / OV7).is_file():
        print(f"bench_targets: real data not found at {SEED}; nothing to time")
        return 0

    from deeppert.targets import (
        TargetConfig,
        load_known_pairs,
        load_weights,
        predict_targets,
        prepare_weights,
        run_all_diseases,
    )

    t0 = time.perf_counter()
    weights = load_weights(SEED / OV7)
    known = load_known_pairs(SEED)
    load_s = time.perf_counter() - t0
    rows = [("load weights + known pairs", load_s, "")]
    for label, make in (
        ("evaluation", TargetConfig.evaluation),
        ("prediction", TargetConfig.prediction),
    ):
        cfg = make(permutations=args.permutations, seed=args.seed)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = predict_targets(weights, config=cfg, known=known, disease="Ovarian Cancer")
            times.append(time.perf_counter() - t)
        rows.append((f"Ovarian Cancer, {label} mode", min(times), f"{len(res.pairs)} pairs"))
        t = time.perf_counter()
        prepare_weights(weights, cfg)
        rows.append(("  of which steps 1-3 (prepare)", time.perf_counter() - t, ""))
    cfg = TargetConfig.prediction(permutations=args.permutations, seed=args.seed)
    t = time.perf_counter()
    table = run_all_diseases(weights, known, config=cfg, min_pairs=20)
    rows.append(
        (
            "all diseases (>= 20 pairs), prediction mode",
            time.perf_counter() - t,
            f"{len(table)} diseases, {(table['status'] == 'ok').sum()} ok",
        )
    )

    if args.table:
        _write_table(table, args.table, args.permutations)
    print(
        f"permutations={args.permutations}, best of {args.repeats} for single runs (no plots, no writes)"
    )
    print(f"{'task':48s} {'seconds':>9s}  note")
    for name, sec, note in rows:
        print(f"{name:48s} {sec:9.3f}  {note}")
    return 0


def _write_table(table, stem: Path, permutations: int) -> None:
    """The all-diseases table as CSV and as a markdown table sorted by p_perm_100."""
    from deeppert.atomic import atomic_path

    with atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    ok = table[table["status"] == "ok"].sort_values("p_perm_100", kind="stable")
    lines = [
        f"OV7 weights, prediction mode, {permutations} permutations (candidate relabelling), "
        "BH over p_perm_100.",
        "",
        "| disease | known | cand. | in cluster | pairs | matched@10/50/100 | chance (overall) "
        "| p_hyp@50 | p_hyp@100 | p_perm@50 | p_perm@100 | q_perm@100 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ok.itertuples(index=False):
        lines.append(
            f"| {r.disease} | {r.known_pairs} | {r.candidates} | {r.cluster_candidates} | {r.pairs} "
            f"| {r.matched_10}/{r.matched_50}/{r.matched_100} | {r.chance_rate_overall:.3f} "
            f"| {r.p_hypergeom_50:.3g} | {r.p_hypergeom_100:.3g} | {r.p_perm_50:.3g} "
            f"| {r.p_perm_100:.3g} | {r.q_perm_100:.3g} |"
        )
    for r in table[table["status"] != "ok"].itertuples(index=False):
        lines.append(f"| {r.disease} | {r.known_pairs} | failed: {r.status} |" + " |" * 9)
    with atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
