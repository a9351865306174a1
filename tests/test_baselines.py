"""Linear baselines (PCA, FastICA, Gaussian random projection) and their exact-IG gene weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA, FastICA
from sklearn.random_projection import GaussianRandomProjection

from deeppert.baselines import fit_baseline, linear_gene_weights
from deeppert.errors import DeeppertError
from deeppert.preprocess import fit_pca

N, G, P, D = 150, 40, 10, 4


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # independent, non-Gaussian sources so that ICA has something to find
    sources = rng.laplace(size=(N, D)) * np.array([4.0, 3.0, 2.0, 1.5])
    genes = sources @ rng.standard_normal((D, G)) + 0.3 * rng.standard_normal((N, G))
    names = [f"g{i}" for i in range(G)]
    pca = fit_pca(genes, names, P)
    x = pca.transform(genes)
    ids = [f"s{i % 60}" for i in range(N)]  # repeated ids are kept apart
    return x, pca, ids


def _align_signs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flip columns of b to match the sign of a."""
    return b * np.sign((a * b).sum(0))


def test_pca_baseline_equals_sklearn_pca(data):
    x, pca, ids = data
    base = fit_baseline("PCA", x, pca, D, sample_ids=ids)
    ref = PCA(n_components=D).fit_transform(x)
    z = base.embedding.to_numpy()
    np.testing.assert_allclose(z, _align_signs(z, ref), rtol=1e-8, atol=1e-8)
    # and equals the top-D right singular directions of the centred input (independent check)
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    np.testing.assert_allclose(z, _align_signs(z, xc @ vt[:D].T), rtol=1e-8, atol=1e-8)
    # PCA scores of the training rows are already centred, so the PCA of them is a truncation
    np.testing.assert_allclose(np.abs(base.projection), np.eye(P)[:, :D], atol=1e-8)


def test_baseline_frames_keep_ids_genes_and_names(data):
    x, pca, ids = data
    for kind in ("PCA", "ICA", "RP"):
        base = fit_baseline(kind, x, pca, D, sample_ids=ids, seed=3)
        assert base.name == f"{kind}_d{D}"
        cols = [f"{kind}_d{D}_z{k:02d}" for k in range(D)]
        assert base.embedding.shape == (N, D) and list(base.embedding.columns) == cols
        assert base.embedding.index.tolist() == ids and base.embedding.index.name == "sample_id"
        assert base.gene_weights.shape == (G, D) and list(base.gene_weights.columns) == cols
        assert base.gene_weights.index.tolist() == pca.genes
        assert base.projection.shape == (P, D) and base.center.shape == (P,)
        np.testing.assert_allclose(
            base.embedding.to_numpy(), (x - base.center) @ base.projection, atol=1e-12
        )
        assert (base.gene_weights.to_numpy() >= 0).all()


def _brute_force_ig_gene_weights(x, projection, components, steps=20):
    """IG of z_k = x @ M[:, k] by a Riemann sum over autograd gradients, mapped to genes."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    m = torch.as_tensor(projection, dtype=torch.float64)
    comps = torch.as_tensor(components, dtype=torch.float64)
    d = projection.shape[1]
    out = np.zeros((components.shape[1], d))
    for k in range(d):
        grads = torch.zeros_like(xt)
        for a in (np.arange(steps) + 0.5) / steps:
            point = (a * xt).requires_grad_(True)
            (point @ m)[:, k].sum().backward()
            grads += point.grad / steps
        ig = xt * grads  # samples x p; baseline 0
        # completeness: IG sums to z_k(x) - z_k(0)
        np.testing.assert_allclose(ig.sum(1).numpy(), (xt @ m)[:, k].numpy(), atol=1e-10)
        out[:, k] = (ig @ comps).abs().mean(0).numpy()
    return out


def test_linear_gene_weights_equal_brute_force_integrated_gradients(data):
    x, pca, _ = data
    rng = np.random.default_rng(5)
    projection = rng.standard_normal((P, 3))
    expected = _brute_force_ig_gene_weights(x[:23], projection, pca.components)
    got = linear_gene_weights(x[:23], projection, pca, chunk=5)  # several chunks, ragged end
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert got.shape == (G, 3)


def test_fit_baseline_gene_weights_use_the_centred_input(data):
    x, pca, ids = data
    base = fit_baseline("ICA", x, pca, D, sample_ids=ids)
    expected = _brute_force_ig_gene_weights(x - base.center, base.projection, pca.components, 4)
    np.testing.assert_allclose(base.gene_weights.to_numpy(), expected, rtol=1e-9, atol=1e-12)


def test_ica_is_deterministic_and_unmixes(data):
    x, pca, ids = data
    a = fit_baseline("ICA", x, pca, D, sample_ids=ids, seed=0)
    b = fit_baseline("ICA", x, pca, D, sample_ids=ids, seed=0)
    assert np.array_equal(a.embedding.to_numpy(), b.embedding.to_numpy())
    assert np.array_equal(a.gene_weights.to_numpy(), b.gene_weights.to_numpy())
    # whiten="unit-variance": uncorrelated unit-variance components
    z = a.embedding.to_numpy()
    np.testing.assert_allclose(np.cov(z.T), np.eye(D), atol=0.05)
    # same estimator as scikit-learn's
    ref = FastICA(n_components=D, random_state=0, whiten="unit-variance", max_iter=1000)
    np.testing.assert_allclose(z, ref.fit_transform(x), rtol=1e-8, atol=1e-8)


def test_random_projection_is_seeded(data):
    x, pca, ids = data
    a = fit_baseline("RP", x, pca, D, sample_ids=ids, seed=1)
    b = fit_baseline("RP", x, pca, D, sample_ids=ids, seed=1)
    c = fit_baseline("RP", x, pca, D, sample_ids=ids, seed=2)
    assert np.array_equal(a.embedding.to_numpy(), b.embedding.to_numpy())
    assert not np.allclose(a.embedding.to_numpy(), c.embedding.to_numpy())
    ref = GaussianRandomProjection(n_components=D, random_state=1).fit(x)
    np.testing.assert_allclose(a.embedding.to_numpy(), ref.transform(x), rtol=1e-12)
    assert np.all(a.center == 0)
    # Gaussian entries with variance 1 / d
    big = fit_baseline("RP", x, pca, P, sample_ids=ids, seed=0).projection
    assert 0.3 / P < big.var() < 3.0 / P


def test_bad_baseline_requests(data):
    x, pca, ids = data
    with pytest.raises(DeeppertError, match="unknown baseline 'NMF'"):
        fit_baseline("NMF", x, pca, D, sample_ids=ids)
    with pytest.raises(DeeppertError, match=f"PCA: {P + 1} components from only {P} PCA inputs"):
        fit_baseline("PCA", x, pca, P + 1, sample_ids=ids)
