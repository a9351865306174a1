"""How much a match rate means: chance rates, hypergeometric tails and a permutation null.

The reference reports a match rate alone. Here every run also reports how often a random
pair of candidate genes is a known pair (in the chosen cluster and overall), the
hypergeometric probability of at least the observed matches among the top N when N pairs
are drawn at random, and an empirical p-value from rerunning steps 4-7 with the gene labels
of the weight matrix permuted (seeded).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import hypergeom

from deeppert.targets._algorithm import PairSelection, PreparedWeights, n_pairs_of, select_pairs

__all__ = [
    "known_matrix",
    "chance_rate",
    "hypergeom_pvalue",
    "matches_at",
    "permutation_null",
    "empirical_pvalues",
]


def known_matrix(names: list[str], known_keys: frozenset[tuple[str, str]]) -> np.ndarray:
    """``(n, n)`` symmetric bool matrix: is (names[i], names[j]) a known pair (case-insensitive)."""
    upper = [str(n).strip().upper() for n in names]
    index = {g: i for i, g in enumerate(upper)}
    out = np.zeros((len(upper), len(upper)), dtype=bool)
    for a, b in known_keys:
        if a in index and b in index:
            out[index[a], index[b]] = out[index[b], index[a]] = True
    return out


def chance_rate(known: np.ndarray, members: np.ndarray | None = None) -> tuple[int, int, float]:
    """Known pairs among all unordered pairs of the candidates (or of ``members`` only).

    Returns (known pairs, all pairs, rate); the rate is NaN when there is no pair.
    """
    sub = known if members is None else known[np.ix_(members, members)]
    total = n_pairs_of(sub.shape[0])
    hits = int(np.triu(sub, k=1).sum())
    return hits, total, (hits / total if total else float("nan"))


def hypergeom_pvalue(matched: int, drawn: int, population: int, successes: int) -> float:
    """P(X >= matched) for X ~ Hypergeom(population, successes, drawn); NaN if undefined."""
    if population <= 0 or drawn <= 0 or drawn > population:
        return float("nan")
    return float(hypergeom.sf(matched - 1, population, successes, drawn))


def matches_at(
    selection: PairSelection | None, known: np.ndarray, ids: np.ndarray, top_ns: tuple[int, ...]
) -> np.ndarray:
    """Matched pairs among the first N selected pairs, for every N of ``top_ns``.

    ``ids`` maps the positions used by ``selection`` to rows/columns of ``known``.
    """
    if selection is None or len(selection.first) == 0:
        return np.zeros(len(top_ns), dtype=np.int64)
    hits = known[ids[selection.first], ids[selection.second]]
    cum = np.concatenate([[0], np.cumsum(hits)])
    return cum[np.minimum(np.asarray(top_ns), len(hits))]


def permutation_null(
    prepared: PreparedWeights,
    n_candidates: int,
    known: np.ndarray,
    *,
    threshold: float,
    n_pairs: int,
    top_ns: tuple[int, ...],
    permutations: int,
    seed: int,
    chunk: int = 256,
) -> np.ndarray:
    """Matches at each top N after permuting the gene labels of the weight matrix.

    A label permutation hands the ``n_candidates`` candidate genes ``n_candidates`` distinct
    random rows; the random rows are drawn for a chunk of permutations at once (argsort of
    uniform noise), and steps 4-7 then run on precomputed assignments, correlations and
    scores. Returns an int array ``(permutations, len(top_ns))``; deterministic given ``seed``.
    """
    rng = np.random.default_rng(seed)
    n_rows = len(prepared.table)
    out = np.zeros((permutations, len(top_ns)), dtype=np.int64)
    for start in range(0, permutations, chunk):
        size = min(chunk, permutations - start)
        rows = np.argsort(rng.random((size, n_rows)), axis=1)[:, :n_candidates]
        for k in range(size):
            ids = np.argsort(rows[k])  # candidates in row order, as the observed run sees them
            sel = select_pairs(prepared, rows[k][ids], threshold=threshold, n_pairs=n_pairs)
            out[start + k] = matches_at(sel, known, ids, top_ns)
    return out


def empirical_pvalues(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """(1 + #{null >= observed}) / (1 + permutations) per column; NaN without permutations."""
    if null.shape[0] == 0:
        return np.full(len(observed), np.nan)
    return (1.0 + (null >= np.asarray(observed)[None, :]).sum(axis=0)) / (1.0 + null.shape[0])
