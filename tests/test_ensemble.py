"""Ensembling: GMeans, KMeans labels, sign alignment, ensemble model, stability, ground truth."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import anderson
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from deeppert.attribution import attribute_genes
from deeppert.ensemble.modes import (
    EnsembleConfig,
    EnsembleModel,
    anderson_critical_value,
    apply_rotation,
    build_ensemble,
    gmeans,
    parse_variable_name,
    rotate_code,
)
from deeppert.ensemble.stability import ensemble_step, match_rows, stability_report
from deeppert.errors import DeeppertError
from deeppert.models import ModelConfig
from deeppert.preprocess import fit_pca
from deeppert.train import TrainConfig, fit


@pytest.mark.parametrize("n", [8, 13, 40, 1000])
def test_critical_value_is_scipys(n):
    x = np.random.default_rng(n).normal(size=n)
    with pytest.warns(FutureWarning):
        crit = anderson(x).critical_values
    for s in range(5):
        assert anderson_critical_value(n, s) == crit[s]  # rounded as scipy rounds


@pytest.mark.parametrize("k", [1, 3, 6, 10])
def test_gmeans_finds_planted_blobs(k):
    """2-D Gaussian blobs of 200 points. (At the reference's 2.5 % level GMeans over-splits
    small blobs in many dimensions: the 2-means direction of a Gaussian sample is not a
    Gaussian projection. 10-D blobs of 60 points gave 13 leaves for 6 blobs.)"""
    X, truth = make_blobs(
        n_samples=200 * k,
        centers=k,
        n_features=2,
        cluster_std=1.0,
        center_box=(-20, 20),
        random_state=k,
    )
    res = gmeans(X, seed=0)
    assert abs(res.n_clusters - k) <= 1
    if k > 1:
        assert adjusted_rand_score(truth, res.labels) > 0.9
    again = gmeans(X, seed=0)
    np.testing.assert_array_equal(res.labels, again.labels)  # deterministic


def test_gmeans_depth_limit_and_tiny_inputs():
    X, _ = make_blobs(n_samples=400, centers=16, n_features=5, random_state=0, center_box=(-50, 50))
    assert gmeans(X, max_depth=1).n_clusters == 1
    res = gmeans(X, max_depth=3)  # root = depth 1: at most 2 ** 2 leaves
    assert res.n_clusters <= 4 and max(res.depths) <= 3
    assert gmeans(X[:3]).n_clusters == 1
    with pytest.raises(DeeppertError):
        gmeans(np.empty((0, 3)))


def _frames(rng, n_samples=300):
    """Three latent 'factors'; variables are noisy copies, some negated."""
    f = rng.normal(size=(n_samples, 3))
    cols, data, truth, sign = [], [], [], []
    for run in range(4):
        for k in range(3):
            s = -1.0 if (run + k) % 2 else 1.0
            data.append(s * f[:, k] * (1 + run) + 0.1 * rng.normal(size=n_samples))
            cols.append(f"VAE_d3_run{run}_z{k}")
            truth.append(k)
            sign.append(s)
    latents = pd.DataFrame(np.stack(data, 1), columns=cols)
    genes = [f"g{j}" for j in range(12)]
    gw = pd.DataFrame(rng.random((12, len(cols))), index=genes, columns=cols)
    return latents, gw, np.array(truth), np.array(sign)


def test_sign_alignment_merges_negated_copies():
    latents, gw, truth, sign = _frames(np.random.default_rng(1))
    plain = build_ensemble(latents, gw, config=EnsembleConfig(method="gmeans", n_clusters=3))
    aligned = build_ensemble(
        latents, gw, config=EnsembleConfig(method="gmeans", n_clusters=3, sign_alignment="centroid")
    )
    assert adjusted_rand_score(truth, aligned.labels["cluster"]) == 1.0
    assert adjusted_rand_score(truth, plain.labels["cluster"]) < 1.0  # v and -v kept apart
    s = aligned.labels["sign"].to_numpy()
    for k in range(
        3
    ):  # within a cluster the chosen signs agree with the planted ones up to one flip
        prod = s[truth == k] * sign[truth == k]
        assert abs(prod.sum()) == prod.size
    # GMeans on the aligned variables finds the three factors
    auto = build_ensemble(
        latents, gw, config=EnsembleConfig(method="gmeans", sign_alignment="centroid")
    )
    assert auto.gmeans_n_clusters == 3


def test_weights_and_embedding_are_member_means():
    latents, gw, _, _ = _frames(np.random.default_rng(2))
    ens = build_ensemble(
        latents, gw, config=EnsembleConfig(method="gmeans", n_clusters=4, sign_alignment="centroid")
    )
    assert ens.weights.shape == (4, 12) and ens.embedding.shape == (300, 4)
    assert ens.sizes.is_monotonic_decreasing
    for name, members in ens.members.items():
        np.testing.assert_allclose(ens.weights.loc[name].to_numpy(), gw[members].mean(1).to_numpy())
        signed = latents[members] * ens.labels.loc[members, "sign"].to_numpy()
        np.testing.assert_allclose(ens.embedding[name].to_numpy(), signed.mean(1).to_numpy())
    assert parse_variable_name("VAE_d10_run3_z07") == ("VAE_d10", 3, 7)


def test_match_rows_recovers_permutation():
    rng = np.random.default_rng(0)
    A = rng.random((6, 50))
    perm = rng.permutation(6)
    m = match_rows(A, A[perm] + 0.01 * rng.random((6, 50)))
    np.testing.assert_array_equal(perm[m.cols], m.rows)
    assert m.median > 0.99


# -- planted modules through the whole pipeline ----------------------------------------------
N, G, M, SIZE = 1200, 150, 4, 20


@pytest.fixture(scope="module")
def planted():
    """Sparse module activities (one active module per signature), VAE d=5, 8 runs."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    member = np.zeros((M, G), bool)
    for m in range(M):
        member[m, m * SIZE : (m + 1) * SIZE] = True
    load = member * rng.uniform(0.5, 1.5, size=(M, G))
    act = (
        rng.normal(size=(N, M)) * np.array([3.0, 2.4, 1.8, 1.3]) * np.eye(M)[rng.integers(0, M, N)]
    )
    X = act @ load + rng.normal(scale=0.5, size=(N, G))
    genes = [f"g{j}" for j in range(G)]
    pca = fit_pca(X[:1000], genes, 20)
    x = pca.transform(X[:1000]).astype(np.float32)
    tm = fit(
        x,
        ModelConfig(kind="VAE", latent_dim=5, n_inputs=20),
        TrainConfig(epochs=40, batch_size=32, kl_kappa=0.1),
        runs=range(8),
    )
    ga = attribute_genes(tm, x, pca)
    z = tm.embed(x)
    latents = pd.concat([pd.DataFrame(z[r], columns=tm.node_names(r)) for r in range(8)], axis=1)
    gw = pd.concat([ga.frame(r) for r in range(8)], axis=1)
    return dict(member=member, X=X, genes=genes, pca=pca, tm=tm, latents=latents, gw=gw)


def _module_auroc(member, weights: pd.DataFrame) -> np.ndarray:
    return np.array(
        [max(roc_auc_score(member[m], w) for w in weights.to_numpy()) for m in range(M)]
    )


@pytest.mark.slow
def test_planted_modules_recovered(planted):
    """The consensus mode recovers every planted module, the weakest (activity sd 1.3) included;
    the GMeans reference mode, even at the true L, does no better (0.87 on the weakest here)."""
    x = planted["pca"].transform(planted["X"][:1000]).astype(np.float32)
    ens = build_ensemble(
        planted["latents"],
        planted["gw"],
        config=EnsembleConfig(method="consensus"),
        x_pca=x,
        pca=planted["pca"],
    )
    auroc = _module_auroc(planted["member"], ens.weights)
    assert auroc.min() >= 0.9, auroc
    reference = build_ensemble(
        planted["latents"],
        planted["gw"],
        config=EnsembleConfig(method="gmeans", n_clusters=M),
        cluster_on="gene_weights",
    )
    assert auroc.min() >= _module_auroc(planted["member"], reference.weights).min()
    # a random gene-weight matrix of the same shape does not pass: the test can fail
    noise = pd.DataFrame(np.random.default_rng(0).random(ens.weights.shape))
    assert _module_auroc(planted["member"], noise).min() < 0.9


@pytest.mark.slow
def test_ensemble_model_embeds_new_signatures(planted, tmp_path):
    ens = build_ensemble(
        planted["latents"],
        planted["gw"],
        config=EnsembleConfig(method="gmeans", sign_alignment="centroid"),
    )
    model = EnsembleModel.from_ensemble(ens, [planted["tm"]], planted["pca"])
    train = pd.DataFrame(planted["X"][:1000], columns=planted["genes"])
    np.testing.assert_allclose(
        model.embed(train).to_numpy(), ens.embedding.to_numpy(), rtol=1e-5, atol=1e-5
    )
    model.save(tmp_path / "ens")
    again = EnsembleModel.load(tmp_path / "ens")
    new = pd.DataFrame(planted["X"][1000:], columns=planted["genes"])[planted["genes"][::-1]]
    out = again.embed(new)
    assert out.shape == (N - 1000, ens.n_clusters)
    np.testing.assert_allclose(out.to_numpy(), model.embed(new).to_numpy())
    with pytest.raises(DeeppertError, match="genes"):
        again.embed(new.iloc[:, 1:])


@pytest.mark.slow
def test_stability_ensembles_beat_single_models(planted):
    """Both medians equal an expectation computed apart (np.corrcoef + brute-force matching)."""
    from itertools import permutations

    def best_matching(A: np.ndarray, B: np.ndarray) -> list[float]:
        """Correlations of the one-to-one row matching with the largest total; all are tried."""
        c = np.corrcoef(A, B)[: len(A), len(A) :]
        c = c if c.shape[0] >= c.shape[1] else c.T
        best = max(
            permutations(range(c.shape[0]), c.shape[1]),
            key=lambda rows: sum(c[r, j] for j, r in enumerate(rows)),
        )
        return [c[r, j] for j, r in enumerate(best)]

    latents, gw = planted["latents"], planted["gw"]
    rep = stability_report(latents, gw, config=EnsembleConfig(method="gmeans"))
    assert rep.runs_a == [0, 2, 4, 6] and rep.runs_b == [1, 3, 5, 7]
    # (b) single models: run 0 vs 1, 2 vs 3, ... of VAE_d5, five nodes each, all 120 matchings tried
    single = []
    for ra, rb in zip(rep.runs_a, rep.runs_b, strict=True):
        a = gw[[c for c in gw.columns if f"_run{ra}_" in c]].to_numpy().T
        b = gw[[c for c in gw.columns if f"_run{rb}_" in c]].to_numpy().T
        single += best_matching(a, b)
    assert len(rep.single_corr["VAE_d5"]) == len(single) == 4 * 5
    assert rep.single_median == pytest.approx(float(np.median(single)), abs=1e-12)
    # (a) ensembles of the even and the odd runs
    halves = [
        build_ensemble(
            latents[[c for c in latents.columns if parse_variable_name(c)[1] in runs]],
            gw[[c for c in gw.columns if parse_variable_name(c)[1] in runs]],
            config=EnsembleConfig(method="gmeans"),
        ).weights.to_numpy()
        for runs in (rep.runs_a, rep.runs_b)
    ]
    assert max(len(h) for h in halves) <= 8  # brute force stays small
    expected = float(np.median(best_matching(*halves)))
    assert rep.ensemble_median == pytest.approx(expected, abs=1e-12)
    assert rep.ensemble_median > rep.single_median  # DeepProfile's claim holds on planted data
    d = rep.to_dict()
    assert {"ensemble_median", "single_median"} <= set(d)


@pytest.mark.realdata
def test_a549_latents_gmeans_is_deterministic(seed_data):
    path = seed_data / "a549_vae" / "latent_5L_run0.tsv"
    frame = pd.read_csv(path, sep="\t", index_col=0)
    assert frame.shape[1] == 5 and frame.index.has_duplicates
    V = (frame.to_numpy().T - frame.to_numpy().mean(0)[:, None]) / frame.to_numpy().std(0)[:, None]
    a, b = gmeans(V, seed=3), gmeans(V, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)


# -- the consensus mode ---------------------------------------------------------------------
def _mixed_codes(seed=0, n=800, G=120, K=4, size=15, runs=6, activity="laplace"):
    """Planted modules; each 'model' is an arbitrary invertible mixture of the programs plus
    noise (what an autoencoder's code is, up to nonlinearity), dims K and K + 2. Program
    activities are Laplace (heavy-tailed) or Gaussian."""
    rng = np.random.default_rng(seed)
    member = np.zeros((K, G), bool)
    for k in range(K):
        member[k, k * size : (k + 1) * size] = True
    sign = rng.choice([-1.0, 1.0], (K, G))
    load = np.where(member, rng.uniform(0.8, 1.2, (K, G)) * sign, rng.normal(0, 0.1, (K, G)))
    A = rng.laplace(size=(n, K)) if activity == "laplace" else rng.normal(size=(n, K))
    X = A @ load + rng.normal(size=(n, G))
    genes = [f"g{j}" for j in range(G)]
    pca = fit_pca(X, genes, 20)
    x = pca.transform(X)
    cols, data = [], []
    for run in range(runs):
        for d in (K, K + 2):
            code = A @ rng.normal(size=(K, d)) + 0.3 * rng.normal(size=(n, d))
            data.append(code)
            cols += [f"AE_d{d}_run{run}_z{k:02d}" for k in range(d)]
    return pd.DataFrame(np.hstack(data), columns=cols), x, pca, member


def _top_precision(member, weights: np.ndarray) -> np.ndarray:
    """Hungarian-matched top-k precision per module (k = module size)."""
    from scipy.optimize import linear_sum_assignment

    prec = np.array(
        [[m[np.argsort(-np.abs(w))[: m.sum()]].mean() for w in weights] for m in member]
    )
    rows, cols = linear_sum_assignment(-prec)
    out = np.zeros(len(member))
    out[rows] = prec[rows, cols]
    return out


def test_consensus_recovers_mixed_programs_deterministically():
    latents, x, pca, member = _mixed_codes()
    config = EnsembleConfig(method="consensus", l_max=10)
    ens = build_ensemble(latents, config=config, x_pca=x, pca=pca)
    assert ens.n_clusters == 4  # the selection curve finds K
    assert ens.selection.loc[ens.selection["chosen"], "L"].tolist() == [4]
    prec = _top_precision(member, ens.weights.to_numpy())
    assert prec.min() >= 0.8, prec
    # raw nodes are mixtures: the same pipeline without the rotation does worse
    raw = build_ensemble(
        latents,
        config=EnsembleConfig(
            method="consensus", n_clusters=4, rotation="none", density_threshold=1.5
        ),
        x_pca=x,
        pca=pca,
    )
    assert _top_precision(member, raw.weights.to_numpy()).min() < 0.8
    again = build_ensemble(latents, config=config, x_pca=x, pca=pca)
    pd.testing.assert_frame_equal(ens.weights, again.weights)
    pd.testing.assert_frame_equal(ens.labels, again.labels)
    # the embedding is the per-cluster mean of the sign-aligned rotated components
    name = ens.labels.index[0]
    key, k = name.rsplit("_ic", 1)
    z = latents[[c for c in latents.columns if c.startswith(key + "_z")]].to_numpy()
    comp = apply_rotation(z, ens.rotations[key])[:, int(k)]
    assert np.isclose(comp.std(), 1.0)
    assert (
        np.corrcoef(
            comp * ens.labels.loc[name, "sign"],
            ens.embedding.iloc[:, ens.labels.loc[name, "cluster"]],
        )[0, 1]
        > 0.9
    )


def test_cluster_loadings_are_member_medians_of_gene_loadings_a_block_at_a_time(monkeypatch):
    """Step 5's gene loadings are the per-cluster median of the members' sign-aligned gene
    loadings; they are formed a few genes at a time (never components x genes at once, 0.8 GB
    at DeepProfile scale) and must equal the median over the whole matrix."""
    import deeppert.ensemble.modes as modes

    latents, x, pca, _ = _mixed_codes()
    config = EnsembleConfig(method="consensus", l_max=6)
    monkeypatch.setattr(modes, "_BLOCK_ELEMENTS", 50)  # ~1 gene a block for these clusters
    ens = build_ensemble(latents, config=config, x_pca=x, pca=pca)
    comp = modes.model_components(latents, x, pca, config)
    genes = comp.gene_loadings(pca)  # the whole matrix, as a reference
    for c in range(ens.n_clusters):
        members = ens.labels[ens.labels["cluster"] == c]
        median = (genes[members.index] * members["sign"].to_numpy()).median(axis=1)
        np.testing.assert_allclose(ens.loadings.iloc[c], median, atol=1e-12)
    key = next(iter(comp.rotations))
    np.testing.assert_allclose(
        comp.run_gene_loadings(key, pca), genes.filter(like=f"{key}_ic").T.to_numpy()
    )


def test_a_large_l_scan_logs_its_progress(monkeypatch, caplog):
    """The rotations (1,200 model runs at DeepProfile scale: tens of minutes on one core), the
    density filter (every component against every other) and the L scan (one KMeans per L
    over about 50,000 components) log how far they are above _SCAN_PROGRESS_ROWS latent
    variables or components; below, quiet."""
    import deeppert.ensemble.modes as modes
    import deeppert.progress

    monkeypatch.setattr(deeppert.progress, "interactive", lambda: False)  # log lines, no bar
    latents, x, pca, _ = _mixed_codes()
    config = EnsembleConfig(method="consensus", l_max=6)
    with caplog.at_level("INFO", logger="deeppert.progress"):
        quiet = build_ensemble(latents, config=config, x_pca=x, pca=pca)
    assert not [r for r in caplog.records if "scanning L" in r.getMessage()]
    assert not [r for r in caplog.records if "rotating model runs" in r.getMessage()]
    monkeypatch.setattr(modes, "_SCAN_PROGRESS_ROWS", 1)
    with caplog.at_level("INFO", logger="deeppert.progress"):
        logged = build_ensemble(latents, config=config, x_pca=x, pca=pca)
    lines = [r.getMessage() for r in caplog.records if "scanning L" in r.getMessage()]
    assert lines[0].endswith(": 0/5 Ls") and "5/5 Ls (100%)" in lines[-1], lines
    assert f", L {config.l_min}, stability " in lines[-1]  # largest first: the last is the least
    m = len(quiet.labels) + quiet.n_dropped
    lines = [r.getMessage() for r in caplog.records if "neighbours of" in r.getMessage()]
    assert lines[0].endswith(f": 0/{m} components") and f"{m}/{m} components (100%)" in lines[-1]
    lines = [r.getMessage() for r in caplog.records if "rotating model runs" in r.getMessage()]
    assert lines[0].endswith(": 0/12 runs") and "12/12 runs (100%)" in lines[-1], lines
    pd.testing.assert_frame_equal(quiet.weights, logged.weights)  # progress changes nothing


def test_local_density_is_the_mean_distance_to_the_nearest_rows_of_other_groups():
    """The density filter's distances, worked out in row segments and blocks (chunk 7 over
    101 rows: blocks straddle the segments' ends), equal the brute-force answer over the
    whole sign-aligned distance matrix, with a row's own group left out."""
    from deeppert.ensemble.modes import local_density

    rng = np.random.default_rng(3)
    profiles = rng.normal(size=(101, 6))
    groups = rng.integers(0, 9, size=101)
    U = profiles / np.linalg.norm(profiles, axis=1, keepdims=True)
    dist = np.sqrt(np.clip(2 - 2 * np.abs(U @ U.T), 0, None))
    dist[groups[:, None] == groups[None]] = np.inf
    expected = np.sort(dist, axis=1)[:, :5].mean(1)
    found = local_density(profiles, 5, groups=groups, chunk=7)
    np.testing.assert_allclose(found, expected, atol=1e-12)
    np.testing.assert_allclose(local_density(profiles, 5, groups=groups), expected, atol=1e-12)


def test_the_consensus_is_the_same_whichever_order_its_pieces_run_in(monkeypatch):
    """The density filter's row segments, the L scan's clusterings and the embedding's pieces
    of model runs are independent pieces that a Mapper may run anywhere (Ray tasks in the
    ensemble job, finishing in any order): run last-first, they give the ensemble and the
    stability report of the builtin map. The mapper gets every piece: for the ensemble and each
    half of the stability report, row segments that cover every component once, then every L
    of the scan; for the ensemble, pieces of the embedding that hold every model run once."""
    from deeppert.ensemble import modes

    monkeypatch.setattr(modes, "_EMBEDDING_RUNS", 5)  # 12 model runs: pieces of 5, 5, 2
    latents, x, pca, _ = _mixed_codes()
    config = EnsembleConfig(method="consensus", l_max=6)
    seen = []

    def last_first(fn, items):
        items = list(items)
        seen.append(items)
        return reversed([fn(item) for item in reversed(items)])

    ref = ensemble_step(latents, None, config=config, x_pca=x, pca=pca)
    got = ensemble_step(latents, None, config=config, x_pca=x, pca=pca, mapper=last_first)
    for table in ("weights", "loadings", "labels", "embedding", "selection"):
        pd.testing.assert_frame_equal(getattr(ref.ensemble, table), getattr(got.ensemble, table))
    assert ref.stability == got.stability and ref.stability["ensemble_median"] > 0.9
    assert len(seen) == 7  # (segments, Ls) x (ensemble, half A, half B) + the embedding
    whole = len(ref.ensemble.labels) + ref.ensemble.n_dropped
    segments, scan, embedding = seen[0], seen[1], seen[2]
    assert [a for a, _ in segments] == [0] + [b for _, b in segments[:-1]]
    assert segments[-1][1] == whole and len(segments) > 1
    assert scan == list(range(6, config.l_min - 1, -1)) == seen[4] == seen[6]  # largest first
    runs = [key for piece in embedding for key in piece.components.rotations]
    assert sorted(runs) == sorted({n.rsplit("_ic", 1)[0] for n in ref.ensemble.labels.index})
    assert sorted(n for piece in embedding for n in piece.names) == sorted(
        ref.ensemble.labels.index
    )
    assert [len(piece.components.rotations) for piece in embedding] == [5, 5, 2]
    # summed over pieces, the embedding is the per-cluster mean of all members' aligned values
    labels = ref.ensemble.labels
    members = {}
    for name, row in labels.iterrows():
        key, k = name.rsplit("_ic", 1)
        z = latents[[c for c in latents.columns if c.startswith(key + "_z")]].to_numpy()
        members.setdefault(row["cluster"], []).append(
            apply_rotation(z, ref.ensemble.rotations[key])[:, int(k)] * row["sign"]
        )
    expected = np.column_stack([np.mean(members[c], axis=0) for c in sorted(members)])
    np.testing.assert_allclose(ref.ensemble.embedding.to_numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("activity", ["laplace", "gaussian"])
def test_default_consensus_finds_as_many_programs_as_were_planted(activity):
    """K = 4 planted programs, 6 runs of codes of dims K and K + 2 under the default
    ensemble: L = K. The two extra dims hold noise, and with Gaussian activities the ICA half
    of the pooled components is arbitrary; neither becomes a program: the clusters the curve
    adds beyond K explain no more than average residual directions, so L stops at K."""
    latents, x, pca, member = _mixed_codes(activity=activity, n=600, runs=6)
    ens = build_ensemble(latents, config=EnsembleConfig(), x_pca=x, pca=pca)
    assert ens.n_clusters == len(member)
    assert _top_precision(member, ens.weights.to_numpy()).min() >= 0.9
    curve = ens.selection.set_index("L")
    assert curve.loc[len(member), "explains"] and not curve.loc[len(member) + 1 :, "explains"].any()


def test_near_copies_of_one_program_are_joined():
    """Two clusters whose medians point the same way (one of them negated) are one program;
    a third, orthogonal one stays apart. Joined members are flipped to the larger part's sign."""
    from deeppert.ensemble.modes import _merge_duplicates

    rng = np.random.default_rng(0)
    a, b = np.eye(6)[0], np.eye(6)[1]
    P = np.vstack([a + 0.05 * rng.normal(size=(5, 6)), -a + 0.05 * rng.normal(size=(3, 6))])
    P = np.vstack([P, b + 0.05 * rng.normal(size=(4, 6))])
    labels = np.repeat([0, 1, 2], [5, 3, 4])
    signs, joined = _merge_duplicates(P, np.ones(12), labels, 0.9)
    assert joined.tolist() == [0] * 8 + [1] * 4
    assert signs.tolist() == [1.0] * 5 + [-1.0] * 3 + [1.0] * 4
    _, apart = _merge_duplicates(P, np.ones(12), labels, 0.999)
    assert len(np.unique(apart)) == 3


def test_rotate_code_unmixes_from_a_row_sample_deterministically():
    """FastICA fitted on 5,000 of 20,000 rows still unmixes every planted source, the map
    applies to all rows (unit variance there) and depends only on the seed."""
    rng = np.random.default_rng(3)
    S = rng.laplace(size=(20_000, 4))
    mix = rng.normal(size=(4, 6))
    z = S @ mix + 0.05 * rng.normal(size=(20_000, 6)) + 5.0
    rot = rotate_code(z, "ica", seed=1, max_rows=5000)
    comp = apply_rotation(z, rot)
    assert comp.shape == (20_000, 6)
    assert np.allclose(comp.std(0), 1.0)
    corr = np.abs(np.corrcoef(S.T, comp.T)[:4, 4:])
    assert corr.max(1).min() > 0.98, corr  # each source is one component
    np.testing.assert_array_equal(rot, rotate_code(z, "ica", seed=1, max_rows=5000))
    assert not np.allclose(rot, rotate_code(z, "ica", seed=2, max_rows=5000))
    # the raw axes are mixtures: without the rotation no component is a source
    raw = (z - z.mean(0)) @ rotate_code(z, "none")[1:]
    assert np.abs(np.corrcoef(S.T, raw.T)[:4, 4:]).max(1).min() < 0.98


def test_varimax_finds_gaussian_programs_with_sparse_loadings_where_ica_cannot():
    """Gaussian activities, sparse 15-gene loadings: a code's ICA axes are arbitrary (a white
    Gaussian code looks the same under every rotation), so neither one model's components
    nor their consensus are the programs; varimax on the components' gene loadings finds
    each program in each model run and the consensus recovers every module."""
    latents, x, pca, member = _mixed_codes(activity="gaussian", n=600)
    worst = {"ica": [], "varimax": []}  # per model run: its worst module's precision
    for key in sorted({c.rsplit("_z", 1)[0] for c in latents.columns}):
        z = latents[[c for c in latents.columns if c.startswith(key + "_z")]].to_numpy()
        for rot, out in worst.items():
            comp = apply_rotation(z, rotate_code(z, rot, x_pca=x, pca=pca))
            genes = pca.components.T @ (x - x.mean(0)).T @ comp / len(z)
            out.append(_top_precision(member, genes.T).min())
    assert min(worst["varimax"]) >= 0.9, worst  # every run holds every program
    assert np.mean(np.array(worst["ica"]) < 0.9) >= 0.75, worst  # most runs miss one
    prec = {}
    for rot in ("ica", "varimax"):
        ens = build_ensemble(
            latents, config=EnsembleConfig(rotation=rot, l_max=10), x_pca=x, pca=pca
        )
        prec[rot] = _top_precision(member, ens.weights.to_numpy())
        if rot == "varimax":
            assert ens.n_clusters == 4
    assert prec["varimax"].min() >= 0.9, prec
    assert prec["ica"].mean() < 0.8, prec
    with pytest.raises(DeeppertError, match="needs the PCA scores"):
        rotate_code(z, "varimax")
    # a code of rank 1 has one component per rotation, a constant code none
    rank1 = np.column_stack([z[:, 0], 2 * z[:, 0], np.ones(len(z))])
    assert rotate_code(rank1, "ica+varimax", x_pca=x, pca=pca).shape == (4, 2)
    assert rotate_code(np.ones((len(z), 3)), "ica+varimax", x_pca=x, pca=pca).shape == (4, 0)


def test_more_programs_than_the_largest_latent_dim():
    """Eight programs; each d6 model run holds a random 6 of them (each program recurs in
    about 4 of the 6 d6 runs), each d3 run an unidentifiable mixture of 5. The density filter
    counts neighbours per shape's runs, so programs that only some runs of the largest dim
    hold are kept: L = 8 > 6 under ICA, varimax and their pool, and every program is
    recovered. (With neighbours counted over all 12 model runs one program is dropped.)"""
    rng = np.random.default_rng(0)
    n, G, K, size = 1000, 160, 8, 15
    member = np.zeros((K, G), bool)
    for k in range(K):
        member[k, k * size : (k + 1) * size] = True
    sign = rng.choice([-1.0, 1.0], (K, G))
    load = np.where(member, rng.uniform(0.8, 1.2, (K, G)) * sign, rng.normal(0, 0.1, (K, G)))
    A = rng.laplace(size=(n, K))
    X = A @ load + rng.normal(size=(n, G))
    pca = fit_pca(X, [f"g{j}" for j in range(G)], 20)
    cols, codes = [], []
    for run in range(6):
        for d, held in ((3, 5), (6, 6)):
            sub = rng.choice(K, held, replace=False)
            codes.append(A[:, sub] @ rng.normal(size=(held, d)) + 0.3 * rng.normal(size=(n, d)))
            cols += [f"AE_d{d}_run{run}_z{k:02d}" for k in range(d)]
    latents = pd.DataFrame(np.hstack(codes), columns=cols)
    for rotation in ("ica", "varimax", "ica+varimax"):
        config = EnsembleConfig(l_max=12, rotation=rotation)
        ens = build_ensemble(latents, config=config, x_pca=pca.transform(X), pca=pca)
        # round(0.3 x 6 runs of a shape x 2 components of a program per run under the pool)
        assert ens.density_filter["neighbours"] == (4 if rotation == "ica+varimax" else 2)
        assert ens.n_clusters == K, rotation
        assert _top_precision(member, ens.weights.to_numpy()).min() >= 0.9, rotation


def test_rotate_code_leaves_out_duplicate_and_constant_directions():
    """A code with a duplicated and a constant column has rank 2 of 4: the map has 2
    components (unit variance, centred, independent sources found) under either rotation
    that sees the rank, and a consensus over such codes runs."""
    rng = np.random.default_rng(0)
    S = rng.laplace(size=(600, 2))
    z = np.column_stack([S[:, 0], S[:, 1] + 0.5 * S[:, 0], np.full(600, 3.0), S[:, 0]]) + 1.0
    rot = rotate_code(z, "ica", seed=0)
    assert rot.shape == (5, 2)
    comp = apply_rotation(z, rot)
    np.testing.assert_allclose(comp.mean(0), 0.0, atol=1e-10)
    np.testing.assert_allclose(comp.std(0), 1.0)
    assert np.abs(np.corrcoef(S.T, comp.T)[:2, 2:]).max(1).min() > 0.99
    assert rotate_code(z, "none").shape == (5, 3)  # only the constant column has no variance
    latents, x, pca, member = _mixed_codes(runs=4)
    first = [c for c in latents.columns if c.startswith("AE_d6_run0_")]
    latents[first[-1]] = latents[first[0]]  # an exact duplicate node
    latents[first[-2]] = 0.25  # a dead node
    ens = build_ensemble(latents, config=EnsembleConfig(l_max=8), x_pca=x, pca=pca)
    assert ens.rotations["AE_d6_run0"].shape == (7, 8)  # ICA and varimax of rank 4
    assert _top_precision(member, ens.weights.to_numpy()).min() >= 0.8


def test_consensus_over_a_vae_with_dead_directions_embeds(tmp_path):
    """A VAE with d = 100 codes on 8 PCA inputs leaves directions without variance (the code
    has rank < d): the consensus runs over it, and the saved EnsembleModel reproduces the
    ensemble embedding from gene values; a rotations.npz of another layout is refused."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    load = np.zeros((2, 40))
    load[0, :10], load[1, 10:20] = 1.0, 1.0
    X = rng.laplace(size=(200, 2)) @ load + 0.3 * rng.normal(size=(200, 40))
    genes = [f"g{j}" for j in range(40)]
    pca = fit_pca(X, genes, 8)
    x = pca.transform(X).astype(np.float32)
    tm = fit(
        x,
        ModelConfig(kind="VAE", latent_dim=100, n_inputs=8),
        TrainConfig(epochs=3, batch_size=64),
        runs=range(2),
    )
    z = tm.embed(x).astype(np.float64)
    for r in range(2):
        evals = np.linalg.eigvalsh(np.cov(z[r], rowvar=False))
        assert (evals <= 1e-8 * evals.max()).sum() >= 1  # a direction with ~0 variance
    latents = pd.concat([pd.DataFrame(z[r], columns=tm.node_names(r)) for r in range(2)], axis=1)
    ens = build_ensemble(latents, config=EnsembleConfig(ica_max_iter=50, l_max=4), x_pca=x, pca=pca)
    # ICA and varimax components of fewer than 100 directions each
    assert all(rot.shape[1] < 2 * 100 for rot in ens.rotations.values())
    model = EnsembleModel.from_ensemble(ens, [tm], pca)
    model.save(tmp_path / "ens")
    again = EnsembleModel.load(tmp_path / "ens")
    embedded = again.embed(pd.DataFrame(X, columns=genes))
    np.testing.assert_allclose(embedded.to_numpy(), ens.embedding.to_numpy(), atol=1e-4)
    np.savez(tmp_path / "ens" / "rotations.npz", **ens.rotations)  # no layout mark
    with pytest.raises(DeeppertError, match="rotation layout"):
        EnsembleModel.load(tmp_path / "ens")


def test_warnings_say_when_not_to_trust_the_ensemble(caplog):
    """Codes of independent noise recur nowhere: the step says so (warnings logged and kept);
    a single model run is refused, naming what to change; a clean planted world gives no warning."""
    import logging

    from deeppert.ensemble.stability import ensemble_step, ensemble_warnings

    latents, x, pca, _ = _mixed_codes(runs=4)
    clean = ensemble_step(latents, None, config=EnsembleConfig(l_max=8), x_pca=x, pca=pca)
    assert clean.warnings == []
    f = clean.ensemble.density_filter  # the d6 models' two noise components recur nowhere
    assert 0 < f["dropped"] <= f["components"] / 2
    noise = pd.DataFrame(
        np.random.default_rng(1).laplace(size=latents.shape), columns=latents.columns
    )
    config = EnsembleConfig(l_max=8, density_threshold=1.5)  # keep everything: nothing recurs
    with caplog.at_level(logging.WARNING, logger="deeppert.ensemble.stability"):
        step = ensemble_step(noise, None, config=config, x_pca=x, pca=pca)
    assert any("silhouette" in w for w in step.warnings), step.warnings
    assert [r.getMessage() for r in caplog.records] == [f"ensemble: {w}" for w in step.warnings]
    assert step.summary()["warnings"] == step.warnings
    low = ensemble_warnings(clean.ensemble, {"ensemble_median": 0.3, "single_median": 0.6})
    assert len(low) == 1 and "split-half stability of the ensemble is 0.30 < 0.5" in low[0]
    flat = replace(clean.ensemble, selection=clean.ensemble.selection.assign(explains=False))
    assert ensemble_warnings(flat, {}) == [
        "no L of the curve explains more of the data than as many average residual "
        "directions x 3.0: no program stands out from noise"
    ]
    worse = ensemble_warnings(clean.ensemble, {"ensemble_median": 0.7, "single_median": 0.8})
    assert worse == ["the ensemble is less stable (0.70) than single models (0.80)"]
    # L = 20 fits the 31 recurring ICA components of all runs, not the ~15 of half of them
    # (and stays within the PCA's 20 dimensions, which the baselines at L need)
    config = EnsembleConfig(l_min=20, l_max=20, rotation="ica", merge_threshold=1.0)
    halves = ensemble_step(latents, None, config=config, x_pca=x, pca=pca)
    assert halves.ensemble.n_clusters == 20 and halves.stability["failed"]
    assert any("split-half stability could not be computed" in w for w in halves.warnings)
    f = {**clean.ensemble.density_filter, "components": 40, "kept": 8, "dropped": 32}
    most = ensemble_warnings(replace(clean.ensemble, density_filter=f), {})
    assert len(most) == 1 and "dropped 32 of 40 components" in most[0]
    one_run = latents[[c for c in latents.columns if c.startswith("AE_d4_run0_")]]
    with pytest.raises(DeeppertError, match="train at least 2 runs"):
        build_ensemble(one_run, config=EnsembleConfig(), x_pca=x, pca=pca)


def test_consensus_needs_pca_scores_and_reports_sparse_components():
    latents, x, pca, _ = _mixed_codes(runs=2)
    with pytest.raises(DeeppertError, match="PCA scores"):
        build_ensemble(latents, config=EnsembleConfig(method="consensus"))
    with pytest.raises(DeeppertError, match="density_threshold"):
        build_ensemble(
            latents,
            config=EnsembleConfig(method="consensus", density_threshold=1e-6),
            x_pca=x,
            pca=pca,
        )


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"l_min": 8, "l_max": 3}, "ensemble.l_min..l_max is empty"),
        ({"n_init": -1}, "ensemble.n_init"),
        ({"l_max": 0}, "ensemble.l_max"),
        ({"n_clusters": -2}, "ensemble.n_clusters"),
        ({"max_depth": 0}, "ensemble.max_depth"),
        ({"density_threshold": -0.1}, "ensemble.density_threshold"),
        ({"neighbourhood": 0}, "ensemble.neighbourhood"),
        ({"merge_threshold": 1.5}, "ensemble.merge_threshold"),
        ({"gain_factor": -1}, "ensemble.gain_factor"),
        ({"method": "icasso"}, "ensemble.method"),
    ],
)
def test_bad_ensemble_config_names_the_key(raw, key):
    from deeppert.config import parse_config

    with pytest.raises(DeeppertError, match=key.replace(".", r"\.")):
        parse_config({"ensemble": raw})


@pytest.mark.slow
def test_cli_consensus_writes_curve_and_a_model_that_embeds(tmp_path, capsys):
    """train -> attribute -> `deeppert ensemble --method consensus`: the selection table and
    PNG are written, the saved model (with its rotations) reproduces the ensemble embedding,
    and a bad flag value exits 2 naming the key, leaving no ensemble folder."""
    from deeppert.cli import main
    from deeppert.workspace import training_inputs

    torch.set_num_threads(1)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "name: tiny\ndatasets:\n  - name: s\n    synthetic: {n_samples: 400}\n"
        "preprocess: {n_components: 20}\n"
    )
    args = ["--models", "AE", "--dims", "5", "--runs", "4", "--epochs", "3"]
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "out"), *args]) == 0
    run_dir = tmp_path / "out" / "s"
    assert main(["attribute", str(run_dir), "--steps", "8"]) == 0
    bad = ["ensemble", str(run_dir), "--method", "consensus", "--l-min", "9", "--l-max", "3"]
    assert main(bad) == 2
    assert "ensemble.l_min..l_max is empty" in capsys.readouterr().err
    assert not (run_dir / "ensemble").exists()
    assert (
        main(["ensemble", str(run_dir), "--method", "consensus", "--density-threshold", "1.5"]) == 0
    )
    out = run_dir / "ensemble"
    curve = pd.read_csv(out / "selection.csv")
    assert {"L", "stability", "error", "chosen"} <= set(curve.columns)
    assert curve["chosen"].sum() == 1 and (out / "selection.png").is_file()
    assert (out / "model" / "rotations.npz").is_file()
    # the linear programs of the same matrix at the same L, beside the ensemble
    base = pd.read_parquet(out / "program_baselines.parquet")
    assert list(base["method"]) == ["ensemble", "PCA", "FastICA", "NMF"]
    assert (base["L"] == base["L"].iloc[0]).all() and (out / "program_baselines.png").is_file()
    assert base["heldout_r2"].between(0, 1).all()
    stability = json.loads((out / "stability.json").read_text())
    assert stability["config"]["method"] == "consensus"  # stability on the same clustering
    model = EnsembleModel.load(out / "model")
    x_pca, _ = training_inputs(run_dir)
    embedding = pd.read_parquet(out / "ensemble_embedding.parquet")
    np.testing.assert_allclose(model.embed_pca(x_pca).to_numpy(), embedding.to_numpy(), atol=1e-4)
    # the report: L, components used and dropped (and why), stability; summary.json the same
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    f = summary["density_filter"]
    assert f["kept"] + f["dropped"] == f["components"] and f["dropped"] == summary["n_dropped"]
    assert f"components: {f['kept']} of {f['components']} used, {f['dropped']} dropped" in printed
    assert f"L = {summary['n_clusters']} clusters" in printed and "stability" in printed
    assert all(f"WARNING: {w}" in printed for w in summary["warnings"])
    # another method does not silently replace the consensus ensemble
    assert main(["ensemble", str(run_dir), "--method", "gmeans", "--no-stability"]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["method"] == "consensus"
    assert main(["ensemble", str(run_dir), "--method", "gmeans", "--no-stability", "--force"]) == 0
    assert json.loads((out / "summary.json").read_text())["method"] == "gmeans"
    importance = pd.read_parquet(out / "ensemble_weights.parquet")  # mean IG: >= 0
    loadings = pd.read_parquet(out / "ensemble_loadings.parquet")  # of the embedding: signed
    assert (importance.to_numpy() >= 0).all() and (loadings.to_numpy() < 0).any()
    assert importance.shape == loadings.shape
