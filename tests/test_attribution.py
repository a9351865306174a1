"""Integrated Gradients: the fast exact path against captum, completeness, gene mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deeppert.attribution import (
    IGConfig,
    attribute_genes,
    attribute_rotated_components,
    gene_weights,
    integrated_gradients,
    quadrature,
)
from deeppert.errors import DeeppertError
from deeppert.models import ModelConfig
from deeppert.train import TrainConfig, fit

P, GENES, N = 20, 60, 80


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(400, P)) * np.linspace(3, 0.3, P)).astype(np.float32)
    comps = np.linalg.qr(rng.normal(size=(GENES, P)))[0].T  # orthonormal (p, genes)
    return x, comps


@pytest.fixture(scope="module", params=["AE", "VAE"])
def trained(request, data):
    """Two replicas trained briefly so the BatchNorm running statistics are not the defaults."""
    x, _ = data
    tm = fit(
        x,
        ModelConfig(kind=request.param, latent_dim=5, n_inputs=P),
        TrainConfig(epochs=4),
        runs=[0, 1],
    )
    bn = tm.module.encoder[1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    return tm


@pytest.mark.parametrize(
    "method",
    ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"],
)
@pytest.mark.parametrize("n_steps", [2, 7, 50])
def test_quadrature_is_captums(method, n_steps):
    """Our copy of captum's quadrature equals the installed captum's (a private API of it:
    this test is what notices when a captum release changes its nodes)."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters(method)
    a, w = quadrature(n_steps, method)
    np.testing.assert_array_equal(a.numpy(), np.asarray(alphas(n_steps)))
    np.testing.assert_array_equal(w.numpy(), np.asarray(step_sizes(n_steps)))
    assert 0.0 < float(w.sum()) <= 1.0 + 1e-12  # captum's trapezoid weights sum to 1 - 1/n


def test_fast_matches_captum_gene_weights(trained, data):
    x, comps = data
    xs = torch.as_tensor(x[:N])
    fast, delta = integrated_gradients(trained, xs, replica=1, return_convergence_delta=True)
    cap, cap_delta = integrated_gradients(
        trained, xs, replica=1, return_convergence_delta=True, algorithm="captum"
    )
    assert fast.shape == cap.shape == (N, P, 5)
    gw, gw_cap = gene_weights(fast, comps), gene_weights(cap, comps)
    assert gw.shape == (GENES, 5)
    rel = np.abs(gw - gw_cap) / gw_cap.max(0, keepdims=True)
    assert rel.max() <= 1e-4
    torch.testing.assert_close(delta, cap_delta, atol=1e-4, rtol=0)
    # the other replica is a different model: the replica index is honoured
    other = integrated_gradients(trained, xs, replica=0)
    assert (other - fast).abs().max() > 1e-2


def test_autograd_fallback_matches_captum(trained, data):
    x, _ = data
    xs = torch.as_tensor(x[:40])
    auto = integrated_gradients(trained, xs, replica=0, algorithm="autograd", n_steps=20)
    cap = integrated_gradients(trained, xs, replica=0, n_steps=20, algorithm="captum")
    torch.testing.assert_close(auto, cap, atol=2e-5 * cap.abs().max().item(), rtol=0)


def test_callable_model_uses_autograd():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).double()
    x = torch.randn(10, 4, dtype=torch.float64)
    ig, delta = integrated_gradients(net, x, n_steps=200, return_convergence_delta=True)
    cap = integrated_gradients(net, x, n_steps=200, algorithm="captum")
    torch.testing.assert_close(ig, cap)
    assert delta.abs().max() < 1e-8  # smooth network: Gauss-Legendre converges fast
    with pytest.raises(DeeppertError, match="exact IG path"):
        integrated_gradients(net, x, algorithm="exact")


def test_completeness_at_1000_steps(trained, data):
    """Zero baseline (the PCA mean), the float32 model as trained."""
    x, _ = data
    module = trained.module
    xs = torch.as_tensor(x[:N])
    x0 = None
    _, delta = integrated_gradients(
        module, xs, baselines=x0, replica="all", n_steps=1000, return_convergence_delta=True
    )
    z = module.encode_mean(xs.unsqueeze(0).expand(2, -1, -1)).numpy()  # (R, n, d)
    out_range = z.max(1) - z.min(1)  # (R, d)
    rel = delta.abs().amax(1).numpy() / out_range
    assert rel.max() <= 1e-3
    # at 50 steps the ReLU kinks leave a visible quadrature error: completeness is a
    # property of the quadrature, not of the code
    _, d50 = integrated_gradients(
        module, xs, baselines=x0, replica="all", return_convergence_delta=True
    )
    assert d50.abs().max() > delta.abs().max()


def test_streaming_gene_weights_match_full(trained, data):
    x, comps = data
    ig = integrated_gradients(trained, x[:N], replica="all")
    full = gene_weights(ig, comps)  # (R, genes, d)
    res = attribute_genes(trained, x[:N], comps, config=IGConfig(chunk_size=17))
    np.testing.assert_allclose(res.weights, full, rtol=1e-5, atol=1e-7)
    frame = res.frame(1)
    assert list(frame.columns) == trained.node_names(1)
    assert frame.shape == (GENES, 5)
    assert res.relative_delta.shape == (2, 5)
    # captum gives the same gene weights through the same interface
    cap = attribute_genes(trained, x[:30], comps, config=IGConfig(algorithm="captum"))
    fast = attribute_genes(trained, x[:30], comps)
    assert (np.abs(cap.weights - fast.weights) / cap.weights.max(1, keepdims=True)).max() <= 1e-4


def test_max_samples_explains_a_seeded_subset_that_estimates_the_mean(trained, data):
    x, comps = data
    full = attribute_genes(trained, x, comps)
    sub = attribute_genes(trained, x, comps, config=IGConfig(max_samples=100))
    # exactly IG over the rows numpy's seed 0 draws (sorted), the same rows on every call
    rows = np.sort(np.random.default_rng(0).choice(len(x), size=100, replace=False))
    np.testing.assert_allclose(sub.weights, attribute_genes(trained, x[rows], comps).weights)
    np.testing.assert_array_equal(
        sub.weights, attribute_genes(trained, x, comps, config=IGConfig(max_samples=100)).weights
    )
    # a quarter of the samples estimates every node's gene weights (a mean over samples) ...
    for r in range(2):
        for k in range(5):
            assert np.corrcoef(sub.weights[r, :, k], full.weights[r, :, k])[0, 1] > 0.85
    # ... but is not the full mean; as many samples as there are is
    assert not np.allclose(sub.weights, full.weights)
    same = attribute_genes(trained, x, comps, config=IGConfig(max_samples=len(x)))
    np.testing.assert_array_equal(same.weights, full.weights)
    rot = attribute_rotated_components(
        trained, x, comps, [np.eye(5), np.eye(5)], config=IGConfig(max_samples=100)
    )
    np.testing.assert_allclose(rot.frames[0].to_numpy(), sub.weights[0], rtol=1e-4, atol=1e-7)
    with pytest.raises(DeeppertError, match="max_samples must be positive"):
        IGConfig(max_samples=0)


def test_rotated_components_are_captum_ig_of_the_composed_model(trained, data):
    """IG of c = (z - m) @ W equals captum's IG of the encoder followed by that linear map,
    and completeness carries over; a rotation may drop directions (k < d)."""
    from deeppert.ensemble.modes import rotate_code

    x, comps = data
    xs = torch.as_tensor(x[:30])
    z = trained.embed(x)  # (R, n, d)
    rotations = [rotate_code(z[0], "ica"), rotate_code(z[1], "ica")[:, :3]]
    res = attribute_rotated_components(trained, xs, comps, [rot[1:] for rot in rotations])
    assert [f.shape for f in res.frames] == [(GENES, 5), (GENES, 3)]
    assert list(res.frames[1].columns) == [f"{trained.name}_run1_ic{k:02d}" for k in range(3)]
    for r, rot in enumerate(rotations):
        single = trained.module.replica(r).eval()
        m = torch.as_tensor(z[r].mean(0), dtype=torch.float32)
        W = torch.as_tensor(rot[1:], dtype=torch.float32)

        def composed(t: torch.Tensor, single=single, m=m, W=W) -> torch.Tensor:
            return (single.inference(t.unsqueeze(0))["z_mean"][0] - m) @ W

        cap, delta = integrated_gradients(
            composed, xs, algorithm="captum", return_convergence_delta=True
        )
        ref = gene_weights(cap, comps)
        got = res.frames[r].to_numpy()
        assert (np.abs(got - ref) / ref.max(0, keepdims=True)).max() <= 1e-4
        np.testing.assert_allclose(res.max_abs_delta[r], delta.abs().amax(0).numpy(), atol=1e-4)
    assert max(d.max() for d in res.relative_delta) < 0.05
    # IG with respect to the genes the PCA keeps: captum on genes -> PCA -> encoder -> W
    on_genes = attribute_rotated_components(
        trained, xs, comps, [rot[1:] for rot in rotations], space="genes"
    )
    C = torch.as_tensor(comps, dtype=torch.float32)
    single = trained.module.replica(0).eval()
    W = torch.as_tensor(rotations[0][1:], dtype=torch.float32)

    def from_genes(g: torch.Tensor) -> torch.Tensor:
        return single.inference((g @ C.T).unsqueeze(0))["z_mean"][0] @ W

    cap = integrated_gradients(from_genes, xs @ C, algorithm="captum")  # (n, genes, k)
    ref = cap.abs().mean(0).numpy()
    got = on_genes.frames[0].to_numpy()
    assert (np.abs(got - ref) / ref.max(0, keepdims=True)).max() <= 1e-3
    assert (np.abs(got - res.frames[0].to_numpy()) / ref.max(0, keepdims=True)).max() > 0.05
    with pytest.raises(DeeppertError, match="2 model replicas"):
        attribute_rotated_components(trained, xs, comps, [rotations[0][1:]])
    with pytest.raises(DeeppertError, match="expected finite"):
        attribute_rotated_components(trained, xs, comps, rotations)


def test_gene_weights_definition():
    """Hand computation: mean over samples of |IG @ components|."""
    ig = np.array([[[1.0], [2.0]], [[-3.0], [1.0]]])  # (n=2, p=2, d=1)
    comps = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]])  # (p=2, genes=3)
    expected = np.array([[(1 + 3) / 2], [(2 + 1) / 2], [(1 + 4) / 2]])
    np.testing.assert_allclose(gene_weights(ig, comps), expected)


def test_input_checks(trained, data):
    x, _ = data
    with pytest.raises(DeeppertError, match="replica"):
        integrated_gradients(trained, x[:5])
    with pytest.raises(DeeppertError, match="n_steps"):
        IGConfig(n_steps=0)
    with pytest.raises(DeeppertError, match="method"):
        integrated_gradients(trained, x[:5], replica=0, method="simpson")
