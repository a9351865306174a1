"""How much a match rate means: chance rates, hypergeometric tails and a permutation null.

The reference reports a match rate alone. Here every run also reports how often a random
pair of candidate genes is a known pair (in the chosen cluster and overall), the
hypergeometric probability of at least the observed matches among the top N when N pairs
are drawn at random, and an empirical p-value from a label permutation among the candidates
(seeded): the candidates and the selected pairs stay fixed, and the disease's gene labels are
shuffled among the candidate genes, which moves the known pairs around the candidates.

Why not permute the rows of the whole weight matrix (rerunning steps 4-7 on random genes)?
Candidate genes of one disease often resemble each other; random rows do not, so far fewer of
their pairs pass |r| >= threshold and the null's match counts collapse towards zero, which
makes any observed count look significant. Relabelling the candidates keeps everything the
algorithm saw (profiles, correlations, the chosen cluster, the ranked pairs) and asks only
whether the known pairs sit among the selected pairs more often than among random
relabellings of the same candidates. It also keeps the shape of the known-pair graph (a hub
gene stays a hub), which the hypergeometric tail ignores.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import hypergeom

from deeppert.targets._algorithm import PairSelection, n_pairs_of

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
    selection: PairSelection | None,
    known: np.ndarray,
    *,
    top_ns: tuple[int, ...],
    permutations: int,
    seed: int,
    chunk: int = 1024,
) -> np.ndarray:
    """Matches at each top N when the candidates' gene labels are permuted among themselves.

    ``known`` is the candidates' known-pair matrix (candidate positions x positions) and
    ``selection`` the observed pairs, which stay fixed: permutation ``p`` counts the
    selected pairs ``(i, j)`` for which ``known[p[i], p[j]]`` holds. The null expectation is
    therefore the overall chance rate of the candidates times N, and the known-pair graph keeps
    its degrees. Returns an int array ``(permutations, len(top_ns))``; deterministic given
    ``seed``.
    """
    out = np.zeros((permutations, len(top_ns)), dtype=np.int64)
    if selection is None or len(selection.first) == 0 or permutations == 0:
        return out
    rng = np.random.default_rng(seed)
    n = known.shape[0]
    cut = np.minimum(np.asarray(top_ns), len(selection.first))
    for start in range(0, permutations, chunk):
        size = min(chunk, permutations - start)
        perm = np.argsort(rng.random((size, n)), axis=1)
        hits = known[perm[:, selection.first], perm[:, selection.second]]
        cum = np.concatenate([np.zeros((size, 1), dtype=np.int64), np.cumsum(hits, axis=1)], axis=1)
        out[start : start + size] = cum[:, cut]
    return out


def empirical_pvalues(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """(1 + #{null >= observed}) / (1 + permutations) per column; NaN without permutations."""
    if null.shape[0] == 0:
        return np.full(len(observed), np.nan)
    return (1.0 + (null >= np.asarray(observed)[None, :]).sum(axis=0)) / (1.0 + null.shape[0])
