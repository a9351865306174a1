"""Integrated Gradients of every latent node, mapped to genes (docs/method.md section 3).

For latent node ``k`` and sample ``x`` with baseline ``x0`` (0 = the PCA mean)::

    IG_k(x) = (x - x0) * integral_0^1 dz_k(x0 + a (x - x0)) / dx da

approximated with captum's quadrature nodes and weights (``method="gausslegendre"`` by
default, ``n_steps=50``). Three interchangeable algorithms compute it:

``"exact"`` (the fast path)
    With BatchNorm folded into the linear layers (eval mode) the encoders are piecewise
    linear; the only nonlinearity is the ReLU masks along the path. The path-averaged
    Jacobian of the whole code is, for one hidden layer (AE/DAE),
    ``W1 diag(sum_a w_a m1(a)) W2`` and, for two (VAE, to the mean head),
    ``W1 (W2 * sum_a w_a m1(a) m2(a)^T) W3`` (``*`` elementwise; weights in the ``x @ W``
    layout). All nodes at once, no backward pass, chunked over samples.
``"autograd"``
    Batched Jacobians with :func:`torch.func.jacrev` at every quadrature node: any
    differentiable encoder (the fallback for shapes the exact path does not know).
``"captum"``
    captum's :class:`captum.attr.IntegratedGradients`, looped over latent nodes: the
    implementation the other algorithms are tested against.

Completeness, ``sum_j IG_kj(x) = z_k(x) - z_k(x0)``, holds only up to the quadrature error
(ReLU kinks make 50 steps inexact); every algorithm returns that error on request.

Genes: ``G = IG (n x p) @ components (p x genes)``; a node's gene weight vector is the mean
over samples of ``|G|`` (docs/method.md's definition; with a standardised PCA the ``scale``
vector is not applied). :func:`attribute_genes` streams this per chunk of samples, so
``(n, p, d)`` is never held in full.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from deeppert.errors import DeeppertError
from deeppert.ig_config import (
    _DEFAULT_CHUNK,
    IGAlgorithm,
    IGConfig,
    IGMethod,
)
from deeppert.models import PerturbationAutoencoder, StackedBatchNorm, StackedLinear
from deeppert.preprocess import PCAModel
from deeppert.train import TrainedModels

__all__ = [
    "IGMethod",
    "IGAlgorithm",
    "IGConfig",
    "GeneAttribution",
    "quadrature",
    "integrated_gradients",
    "gene_weights",
    "attribute_genes",
    "gene_loadings",
    "RotatedAttribution",
    "attribute_rotated_components",
]

Encoder = PerturbationAutoencoder | TrainedModels | Callable[[torch.Tensor], torch.Tensor]
ReplicaSel = int | Literal["all"] | None


def quadrature(
    n_steps: int, method: IGMethod = "gausslegendre", *, dtype=torch.float64, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """captum's quadrature (alphas, weights) on [0, 1], each ``(n_steps,)``.

    The same nodes and weights captum's ``IntegratedGradients`` uses (its builders are not
    public API, so they are written out here; ``tests/test_attribution.py`` checks they agree
    with the installed captum): Gauss-Legendre from :func:`numpy.polynomial.legendre.leggauss`
    mapped from [-1, 1], Riemann rules as ``torch.linspace`` in the default dtype, as captum
    computes them.
    """
    IGConfig(n_steps=n_steps, method=method)  # validates the knobs
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        alphas, steps = 0.5 * (1.0 + nodes), 0.5 * weights
    else:
        if n_steps < 2:
            raise DeeppertError(f"ig.n_steps must be >= 2 for {method}, got {n_steps}")
        n = n_steps
        rule = method.removeprefix("riemann_")
        lo, hi = {
            "trapezoid": (0.0, 1.0),
            "left": (0.0, 1.0 - 1.0 / n),
            "middle": (1.0 / (2 * n), 1.0 - 1.0 / (2 * n)),
            "right": (1.0 / n, 1.0),
        }[rule]
        alphas = np.asarray(torch.linspace(lo, hi, n).tolist())
        steps = np.full(n, 1.0 / n)
        if rule == "trapezoid":
            steps[[0, -1]] /= 2
    a = torch.as_tensor(np.asarray(alphas, dtype=np.float64), dtype=dtype, device=device)
    w = torch.as_tensor(np.asarray(steps, dtype=np.float64), dtype=dtype, device=device)
    return a, w


# -- the encoder, as plain tensors ------------------------------------------------------
@dataclass
class _Layer:
    weight: torch.Tensor  # (R, in, out)
    bias: torch.Tensor  # (R, 1, out)
    bn: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float] | None = None

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """Linear (+ eval BatchNorm) exactly as the module computes it (same float ops)."""
        h = torch.baddbmm(self.bias, x, self.weight)
        if self.bn is not None:
            w, b, mean, var, eps = self.bn
            h = (h - mean) * torch.rsqrt(var + eps) * w + b
        return h

    def folded_weight(self) -> torch.Tensor:
        """The weight with eval BatchNorm folded in: W * gamma / sqrt(var + eps)."""
        if self.bn is None:
            return self.weight
        w, _, _, var, eps = self.bn
        return self.weight * (w * torch.rsqrt(var + eps))


def _unwrap(model: Encoder) -> PerturbationAutoencoder | Callable[[torch.Tensor], torch.Tensor]:
    return model.module if isinstance(model, TrainedModels) else model


def _piecewise_layers(module: PerturbationAutoencoder, rows: slice) -> list[_Layer] | None:
    """[Linear+BN, (Linear+BN,) head] with replicas ``rows``, or None for another shape."""
    layers = module.encoder_layers()
    body, head = layers[:-1], layers[-1]
    if len(body) not in (2, 4) or not isinstance(head, StackedLinear):
        return None
    out: list[_Layer] = []
    for lin, bn in zip(body[0::2], body[1::2], strict=True):
        if not isinstance(lin, StackedLinear) or not isinstance(bn, StackedBatchNorm):
            return None
        stats = (
            bn.weight[rows],
            bn.bias[rows],
            bn.running_mean[rows],
            bn.running_var[rows],
            bn.eps,
        )
        out.append(_Layer(lin.weight[rows], lin.bias[rows], stats))
    out.append(_Layer(head.weight[rows], head.bias[rows]))
    return out


def _replica_rows(model: Encoder, replica: ReplicaSel) -> tuple[slice, bool]:
    """Which replicas to attribute and whether the output keeps a replica axis."""
    module = _unwrap(model)
    R = module.replicas if isinstance(module, PerturbationAutoencoder) else 1
    if replica == "all":
        return slice(0, R), True
    if replica is None:
        if R != 1:
            raise DeeppertError(
                f"the encoder holds {R} replicas: pass replica=<index> or replica='all'"
            )
        return slice(0, 1), False
    if not 0 <= int(replica) < R:
        raise DeeppertError(f"replica {replica} out of range for {R} replicas")
    return slice(int(replica), int(replica) + 1), False


def _forward_fn(model: Encoder, rows: slice) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function (R', B, p) -> (R', B, d) in eval mode (dropout and noise off)."""
    module = _unwrap(model)
    if isinstance(module, PerturbationAutoencoder):
        parts = _piecewise_layers(module, rows)
        if parts is not None:
            return lambda x: _forward_layers(parts, x)
        device = next(module.parameters()).device
        singles = [module.replica(r).to(device) for r in range(rows.start, rows.stop)]
        return lambda x: torch.cat(
            [s.inference(x[i : i + 1])["z_mean"] for i, s in enumerate(singles)]
        )
    return lambda x: torch.stack([module(xi) for xi in x])


def _forward_layers(layers: list[_Layer], x: torch.Tensor) -> torch.Tensor:
    h = x
    for layer in layers[:-1]:
        h = torch.relu(layer.pre(h))
    return layers[-1].pre(h)


def _as_inputs(model: Encoder, inputs, baselines) -> tuple[torch.Tensor, torch.Tensor]:
    module = _unwrap(model)
    param = next(module.parameters()) if isinstance(module, torch.nn.Module) else None
    dtype = param.dtype if param is not None else None
    device = param.device if param is not None else None
    if isinstance(inputs, torch.Tensor):
        x = inputs.detach().to(dtype=dtype or inputs.dtype, device=device or inputs.device)
    else:
        x = torch.as_tensor(np.asarray(inputs), dtype=dtype or torch.float32, device=device)
    if x.ndim != 2:
        raise DeeppertError(f"inputs must be (samples, features), got shape {tuple(x.shape)}")
    if baselines is None:
        x0 = torch.zeros_like(x)
    else:
        x0 = torch.as_tensor(baselines, dtype=x.dtype, device=x.device)
        if x0.ndim == 1:
            x0 = x0.expand_as(x)
        if x0.shape != x.shape:
            raise DeeppertError(
                f"baselines of shape {tuple(x0.shape)} do not match inputs {tuple(x.shape)}"
            )
    return x, x0


def _explained_rows(
    x: torch.Tensor, x0: torch.Tensor, config: IGConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows IG explains: all of them, or ``config.max_samples`` drawn with numpy seed 0
    (sorted, the same rows for every encoder given the same number of inputs)."""
    n, k = x.shape[0], config.max_samples
    if k is None or n <= k:
        return x, x0
    rows = np.sort(np.random.default_rng(0).choice(n, size=k, replace=False))
    index = torch.as_tensor(rows, device=x.device)
    return x[index], x0[index]


# -- the three algorithms, on one chunk -------------------------------------------------
def _ig_exact_chunk(
    layers: list[_Layer],
    x: torch.Tensor,
    x0: torch.Tensor,
    alphas: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """IG (R, B, p, d) of all nodes for one chunk (B, p), via path-averaged ReLU masks."""
    R = layers[0].weight.shape[0]
    S, (B, p) = alphas.shape[0], x.shape
    diff = x - x0
    pts = x0.unsqueeze(0) + alphas.view(S, 1, 1) * diff.unsqueeze(0)  # (S, B, p)
    h = pts.reshape(1, S * B, p).expand(R, -1, -1)
    masks = []
    for layer in layers[:-1]:
        pre = layer.pre(h)
        masks.append((pre > 0).to(x.dtype).view(R, S, B, -1))
        h = torch.relu(pre)
    w1 = layers[0].folded_weight()  # (R, p, h1)
    head = layers[-1].weight  # (R, h_last, d)
    wq = weights.view(1, S, 1, 1)
    if len(masks) == 1:
        avg = (masks[0] * wq).sum(1)  # (R, B, h1)
        inner = avg.unsqueeze(-1) * head.unsqueeze(1)  # (R, B, h1, d)
    elif len(masks) == 2:
        m1 = (masks[0] * wq).permute(0, 2, 3, 1)  # (R, B, h1, S)
        m2 = masks[1].permute(0, 2, 1, 3)  # (R, B, S, h2)
        avg = torch.matmul(m1, m2)  # (R, B, h1, h2) = sum_a w_a m1(a) m2(a)^T
        w2 = layers[1].folded_weight()  # (R, h1, h2)
        inner = torch.matmul(avg * w2.unsqueeze(1), head.unsqueeze(1))  # (R, B, h1, d)
    else:  # pragma: no cover - guarded by _piecewise_layers
        raise AssertionError("exact path supports one or two hidden layers")
    jac = torch.matmul(w1.unsqueeze(1), inner)  # (R, B, p, d)
    return diff.view(1, B, p, 1) * jac


def _ig_autograd_chunk(
    forward: Callable[[torch.Tensor], torch.Tensor],
    R: int,
    x: torch.Tensor,
    x0: torch.Tensor,
    alphas: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """IG (R, B, p, d) by batched Jacobians at every quadrature node."""
    S, (B, p) = alphas.shape[0], x.shape
    diff = x - x0
    pts = (x0.unsqueeze(0) + alphas.view(S, 1, 1) * diff.unsqueeze(0)).reshape(S * B, p)
    pts = pts.unsqueeze(0).expand(R, -1, -1)

    def one(point: torch.Tensor) -> torch.Tensor:  # (R, p) -> (R, d)
        return forward(point.unsqueeze(1)).squeeze(1)

    jac = torch.func.vmap(torch.func.jacrev(one), in_dims=1, out_dims=1)(pts)  # (R, S*B, d, R, p)
    jac = torch.diagonal(jac, dim1=0, dim2=3).movedim(-1, 0)  # (R, S*B, d, p)
    jac = jac.reshape(R, S, B, -1, p)
    avg = (jac * weights.view(1, S, 1, 1, 1)).sum(1)  # (R, B, d, p)
    return diff.view(1, B, p, 1) * avg.transpose(-1, -2)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def integrated_gradients(
    model: Encoder,
    inputs: torch.Tensor | np.ndarray,
    *,
    baselines: torch.Tensor | np.ndarray | None = None,
    n_steps: int = 50,
    method: IGMethod = "gausslegendre",
    internal_batch_size: int | None = None,
    return_convergence_delta: bool = False,
    replica: ReplicaSel = None,
    algorithm: IGAlgorithm = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Integrated Gradients of every latent node for every sample, in captum's shape.

    Parameters
    ----------
    model
        A :class:`PerturbationAutoencoder` or :class:`TrainedModels` (attributed in eval
        mode: BatchNorm running statistics, no dropout, VAE posterior mean), or any
        function ``(B, p) -> (B, d)`` (autograd / captum only).
    inputs
        ``(n, p)`` PCA scores, on the device of the model.
    baselines
        ``(n, p)`` or ``(p,)``; zeros (the PCA mean) by default.
    n_steps, method
        captum's quadrature; the same nodes and weights as captum.
    internal_batch_size
        As in captum: the most ``sample x step`` rows evaluated at once; the exact and
        autograd paths process ``internal_batch_size // n_steps`` samples per chunk
        (default 256 samples, so memory stays bounded however many samples there are).
    return_convergence_delta
        Also return the completeness error ``sum_j IG_kj - (z_k(x) - z_k(x0))``, ``(n, d)``.
    replica
        Which replica of a multi-replica module: an index, ``"all"`` (adds a leading
        replica axis) or None (the module must hold one replica).
    algorithm
        ``"auto"`` (exact where possible), ``"exact"``, ``"autograd"`` or ``"captum"``.

    Returns
    -------
    torch.Tensor
        ``(n, p, d)`` attributions (``(R, n, p, d)`` with ``replica="all"``), and the delta
        ``(n, d)`` (``(R, n, d)``) when asked for.
    """
    IGConfig(n_steps=n_steps, method=method, algorithm=algorithm)  # validates the knobs
    rows, keep_axis = _replica_rows(model, replica)
    x, x0 = _as_inputs(model, inputs, baselines)
    if algorithm == "captum":
        ig, delta = _captum_ig(
            model, rows, x, x0, n_steps, method, internal_batch_size, return_convergence_delta
        )
    else:
        chunk = (
            _DEFAULT_CHUNK
            if internal_batch_size is None
            else max(1, internal_batch_size // n_steps)
        )
        config = IGConfig(n_steps=n_steps, method=method, chunk_size=chunk, algorithm=algorithm)
        parts = list(_ig_chunks(model, rows, x, x0, config, with_delta=return_convergence_delta))
        ig = torch.cat([part[0] for part in parts], dim=1)
        delta = torch.cat([part[1] for part in parts], dim=1) if return_convergence_delta else None
    if not keep_axis:
        ig = ig[0]
        delta = delta[0] if delta is not None else None
    return (ig, delta) if return_convergence_delta else ig


def _ig_chunks(
    model: Encoder,
    rows: slice,
    x: torch.Tensor,
    x0: torch.Tensor,
    config: IGConfig,
    *,
    with_delta: bool,
):
    """Yield (IG (R, B, p, d), delta (R, B, d) or None, outputs (R, B, d)) per chunk of samples.

    ``rows`` selects the replicas, ``x``/``x0`` are the inputs and baselines; ``config`` gives
    the quadrature, the chunk size (samples per chunk) and the algorithm.
    """
    algorithm = config.algorithm
    module = _unwrap(model)
    layers = (
        _piecewise_layers(module, rows) if isinstance(module, PerturbationAutoencoder) else None
    )
    if algorithm == "exact" and layers is None:
        raise DeeppertError(
            "the exact IG path needs an encoder Linear-BN-ReLU(-Linear-BN-ReLU)-Linear"
        )
    use_exact = layers is not None and algorithm in ("auto", "exact")
    forward = _forward_fn(model, rows)
    R = rows.stop - rows.start
    alphas, weights = quadrature(config.n_steps, config.method, dtype=x.dtype, device=x.device)
    was_training = isinstance(module, torch.nn.Module) and module.training
    if isinstance(module, torch.nn.Module):
        module.eval()
    try:
        for sl in _chunks(x.shape[0], config.chunk_size):
            xb, x0b = x[sl], x0[sl]
            if use_exact:
                with torch.no_grad():
                    ig = _ig_exact_chunk(layers, xb, x0b, alphas, weights)
            else:
                ig = _ig_autograd_chunk(forward, R, xb, x0b, alphas, weights).detach()
            with torch.no_grad():
                out = forward(xb.unsqueeze(0).expand(R, -1, -1))
                delta = None
                if with_delta:
                    base = forward(x0b.unsqueeze(0).expand(R, -1, -1))
                    delta = ig.sum(2) - (out - base)
            yield ig, delta, out
    finally:
        if was_training:
            module.train()


def _captum_ig(
    model: Encoder,
    rows: slice,
    x: torch.Tensor,
    x0: torch.Tensor,
    n_steps: int,
    method: IGMethod,
    internal_batch_size: int | None,
    with_delta: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """captum's :class:`captum.attr.IntegratedGradients`, looped over latent
    nodes, for each replica of ``rows``; ``(R, n, p, d)`` and the delta ``(R, n, d)``."""
    from captum.attr import IntegratedGradients

    module = _unwrap(model)
    was_training = isinstance(module, torch.nn.Module) and module.training
    if isinstance(module, torch.nn.Module):
        module.eval()
    try:
        per_replica, per_delta = [], []
        for r in range(rows.start, rows.stop):
            if isinstance(module, PerturbationAutoencoder):
                single = module.replica(r).to(x.device)

                def forward(t: torch.Tensor, single=single) -> torch.Tensor:
                    return single.inference(t.unsqueeze(0))["z_mean"][0]
            else:
                forward = module
            with torch.no_grad():
                d = forward(x[:1]).shape[-1]
            ig = IntegratedGradients(forward)
            nodes, deltas = [], []
            for k in range(d):
                res = ig.attribute(
                    x,
                    baselines=x0,
                    target=k,
                    n_steps=n_steps,
                    method=method,
                    internal_batch_size=internal_batch_size,
                    return_convergence_delta=with_delta,
                )
                if with_delta:
                    res, delta = res
                    deltas.append(delta.detach())
                nodes.append(res.detach())
            per_replica.append(torch.stack(nodes, dim=-1))
            if with_delta:
                per_delta.append(torch.stack(deltas, dim=-1))
    finally:
        if was_training:
            module.train()
    return torch.stack(per_replica), torch.stack(per_delta) if with_delta else None


# -- genes --------------------------------------------------------------------------------
def _components(pca: PCAModel | np.ndarray | torch.Tensor) -> np.ndarray:
    return pca.components if isinstance(pca, PCAModel) else np.asarray(pca)


def gene_weights(attributions: torch.Tensor | np.ndarray, pca: PCAModel | np.ndarray) -> np.ndarray:
    """Gene weights ``(genes, d)``: mean over samples of ``|IG (n, p, d) @ components|``.

    ``attributions`` is ``(n, p, d)`` as :func:`integrated_gradients` returns it (or
    ``(R, n, p, d)``, giving ``(R, genes, d)``); ``pca`` a :class:`PCAModel` or the
    ``(p, genes)`` components.
    """
    ig = torch.as_tensor(attributions)
    comps = torch.as_tensor(_components(pca), dtype=ig.dtype, device=ig.device)
    if ig.shape[-2] != comps.shape[0]:
        raise DeeppertError(
            f"attributions over {ig.shape[-2]} inputs, PCA has {comps.shape[0]} components"
        )
    genes = torch.matmul(ig.transpose(-1, -2), comps)  # (..., n, d, genes)
    return genes.abs().mean(-3).transpose(-1, -2).cpu().numpy().astype(np.float64)


@dataclass
class GeneAttribution:
    """Gene weights of every node of R replicas, with completeness diagnostics.

    Attributes
    ----------
    weights
        ``(R, genes, d)`` mean |gene attribution| over samples.
    genes
        Gene names (rows of :meth:`frame`).
    node_names
        ``R`` lists of ``d`` latent-variable names (columns of :meth:`frame`).
    runs
        Run number of each replica.
    max_abs_delta
        ``(R, d)`` largest completeness error over the samples.
    output_range
        ``(R, d)`` max - min of each node's output over the samples.
    config
        The :class:`IGConfig` used.
    """

    weights: np.ndarray
    genes: list[str]
    node_names: list[list[str]]
    runs: list[int]
    max_abs_delta: np.ndarray
    output_range: np.ndarray
    config: IGConfig

    @property
    def relative_delta(self) -> np.ndarray:
        """``(R, d)`` completeness error relative to each node's output range."""
        return self.max_abs_delta / np.where(self.output_range > 0, self.output_range, 1.0)

    def frame(self, r: int) -> pd.DataFrame:
        """Replica ``r``'s weights: rows = genes, columns = node names."""
        return pd.DataFrame(
            self.weights[r], index=pd.Index(self.genes, name="gene"), columns=self.node_names[r]
        )


def _pca_map(
    pca, x: torch.Tensor, dtype: torch.dtype, genes: list[str] | None
) -> tuple[torch.Tensor, list[str]]:
    """The PCA components (p x genes) as a tensor beside ``x``, checked against its p columns,
    and the gene names (the PCA model's, or ``g0..`` for a bare components array)."""
    comps = torch.as_tensor(_components(pca), dtype=dtype, device=x.device)
    if comps.shape[0] != x.shape[1]:
        raise DeeppertError(
            f"inputs have {x.shape[1]} PCA scores, PCA has {comps.shape[0]} components"
        )
    if genes is None:
        genes = (
            list(pca.genes)
            if isinstance(pca, PCAModel)
            else [f"g{j}" for j in range(comps.shape[1])]
        )
    return comps, list(genes)


def attribute_genes(
    model: PerturbationAutoencoder | TrainedModels,
    inputs: torch.Tensor | np.ndarray,
    pca: PCAModel | np.ndarray,
    *,
    config: IGConfig | None = None,
    baselines: torch.Tensor | np.ndarray | None = None,
    genes: list[str] | None = None,
) -> GeneAttribution:
    """Gene weights of every node of every replica, streamed over chunks of samples.

    Neither ``(n, p, d)`` nor ``(n, genes, d)`` is held in full: each chunk's IG is mapped
    to genes, its absolute value summed and dropped. Completeness errors and node output
    ranges are tracked along the way.
    """
    config = config or IGConfig()
    module = _unwrap(model)
    if not isinstance(module, PerturbationAutoencoder):
        raise DeeppertError("attribute_genes needs a PerturbationAutoencoder or TrainedModels")
    x, x0 = _explained_rows(*_as_inputs(model, inputs, baselines), config)
    comps, genes = _pca_map(pca, x, x.dtype, genes)
    R, n = module.replicas, x.shape[0]
    d = module.config.latent_dim
    if config.algorithm == "captum":  # captum: not streamed, small inputs only
        ig, delta = _captum_ig(model, slice(0, R), x, x0, config.n_steps, config.method, None, True)
        with torch.no_grad():
            out = _forward_fn(model, slice(0, R))(x.unsqueeze(0).expand(R, -1, -1))
        weights = gene_weights(ig, comps.cpu().numpy())
        names, runs = _names_runs(model, R, d)
        return GeneAttribution(
            weights,
            list(genes),
            names,
            runs,
            delta.abs().amax(1).double().cpu().numpy(),
            (out.amax(1) - out.amin(1)).double().cpu().numpy(),
            config,
        )
    total = torch.zeros(R, d, comps.shape[1], dtype=torch.float64, device=x.device)
    max_delta = torch.zeros(R, d, dtype=torch.float64, device=x.device)
    lo = torch.full((R, d), float("inf"), dtype=torch.float64, device=x.device)
    hi = torch.full((R, d), float("-inf"), dtype=torch.float64, device=x.device)
    for ig, delta, out in _ig_chunks(model, slice(0, R), x, x0, config, with_delta=True):
        with torch.no_grad():
            for r in range(R):  # one replica at a time keeps (B, d, genes) the largest tensor
                total[r] += torch.matmul(ig[r].transpose(-1, -2), comps).abs().sum(0).double()
            max_delta = torch.maximum(max_delta, delta.abs().amax(1).double())
            lo = torch.minimum(lo, out.amin(1).double())
            hi = torch.maximum(hi, out.amax(1).double())
    weights = (total / n).transpose(-1, -2).cpu().numpy()
    names, runs = _names_runs(model, R, d)
    return GeneAttribution(
        weights, list(genes), names, runs, max_delta.cpu().numpy(), (hi - lo).cpu().numpy(), config
    )


def _names_runs(model: Encoder, R: int, d: int) -> tuple[list[list[str]], list[int]]:
    if isinstance(model, TrainedModels):
        return [model.node_names(r) for r in range(R)], list(model.runs)
    return [[f"r{r}_z{k}" for k in range(d)] for r in range(R)], list(range(R))


def gene_loadings(codes: np.ndarray, x_pca: np.ndarray, pca: PCAModel | np.ndarray) -> np.ndarray:
    """Signed gene-space weights ``(genes, d)`` of codes ``(n, d)`` through the linear PCA map.

    Column ``k`` is the covariance of every gene with the standardised code ``k`` over the
    samples: ``components.T @ cov(x_pca, z_k / sd(z_k))``. The PCA map is linear, so this is
    exact for the gene values the PCA keeps (``x_pca @ components``), costs one ``(p, d)``
    product, and keeps a program's direction (a gene that falls when the program rises gets a
    negative weight), which mean ``|IG|`` loses. Units: gene value per standard deviation of
    the code (in the PCA's scaled units when it standardises genes).
    """
    z = np.asarray(codes, dtype=np.float64)
    x = np.asarray(x_pca, dtype=np.float64)
    comps = _components(pca)
    if z.ndim != 2 or x.ndim != 2 or z.shape[0] != x.shape[0]:
        raise DeeppertError(
            f"codes {z.shape} and PCA scores {x.shape} must be (n, d) and (n, p) with the same n"
        )
    if x.shape[1] != comps.shape[0]:
        raise DeeppertError(f"PCA scores have {x.shape[1]} columns, PCA has {comps.shape[0]}")
    z = z - z.mean(0)
    sd = z.std(0)
    z = z / np.where(sd > 0, sd, 1.0)
    cov = (x - x.mean(0)).T @ z / len(z)  # (p, d)
    return comps.T @ cov


@dataclass
class RotatedAttribution:
    """Gene weights of every model run's rotated components, by Integrated Gradients.

    Attributes
    ----------
    frames
        One ``genes x components`` frame per replica (components of one run can be fewer than
        its nodes: a rotation leaves out collapsed directions). Columns are
        ``<model>_run<r>_ic<k>`` (the consensus ensemble's component names) for
        :class:`TrainedModels`, else ``r<r>_ic<k>``.
    max_abs_delta, output_range
        Per replica ``(components,)``: the largest completeness error over the samples and the
        range (max - min) of each component over them.
    """

    frames: list[pd.DataFrame]
    max_abs_delta: list[np.ndarray]
    output_range: list[np.ndarray]

    @property
    def relative_delta(self) -> list[np.ndarray]:
        """Completeness error relative to each component's output range."""
        return [
            d / np.where(r > 0, r, 1.0)
            for d, r in zip(self.max_abs_delta, self.output_range, strict=True)
        ]


def attribute_rotated_components(
    model: PerturbationAutoencoder | TrainedModels,
    inputs: torch.Tensor | np.ndarray,
    pca: PCAModel | np.ndarray,
    maps: list[np.ndarray],
    *,
    config: IGConfig | None = None,
    baselines: torch.Tensor | np.ndarray | None = None,
    genes: list[str] | None = None,
    space: Literal["pca", "genes"] = "pca",
) -> RotatedAttribution:
    """Gene weights of rotated components ``c = (z - m) @ W`` through Integrated Gradients.

    ``maps[r]`` is replica ``r``'s ``(d, k)`` map ``W`` (the rows after the mean in what
    :func:`deeppert.ensemble.modes.rotate_code` returns; the shift ``m`` has no gradient and is not
    needed). IG is linear in the output, so ``IG_c(x) = IG_z(x) @ W`` exactly and
    completeness carries over: ``sum_j IG_c,j(x) = c(x) - c(x0)``. A
    component's gene weight vector is then the nodes' definition (docs/method.md section 3):
    the mean over samples of ``|IG_c(x) @ components|``. Streamed over chunks of samples as
    :func:`attribute_genes`.

    ``space="genes"`` takes IG with respect to the genes the PCA keeps instead: with the
    path-averaged Jacobian ``J_c = (IG_z / (x - x0)) @ W`` (p, k) and orthonormal components
    ``C``, gene ``g`` gets ``((x - x0) @ C)_g * (J_c^T @ C)_g``; these sum over genes to
    ``c(x) - c(x0)`` (``C C^T = I``), and a PC's contributions keep their signs, which the
    per-sample ``|IG_c @ C|`` of the default loses. A PCA input equal to its baseline
    contributes no gradient (0 / 0 is taken as 0).
    """
    config = config or IGConfig()
    module = _unwrap(model)
    if not isinstance(module, PerturbationAutoencoder):
        raise DeeppertError(
            "attribute_rotated_components needs a PerturbationAutoencoder or TrainedModels"
        )
    R, d = module.replicas, module.config.latent_dim
    if len(maps) != R:
        raise DeeppertError(f"{len(maps)} rotation maps for {R} model replicas")
    for r, W in enumerate(maps):
        if np.ndim(W) != 2 or np.shape(W)[0] != d or not np.isfinite(W).all():
            raise DeeppertError(
                f"rotation map {r} has shape {np.shape(W)} or non-finite values; "
                f"expected finite (latent dim = {d}, k)"
            )
    if space not in ("pca", "genes"):
        raise DeeppertError(f"unknown attribution space {space!r}; valid: pca, genes")
    if config.algorithm == "captum":
        raise DeeppertError(
            "attribute_rotated_components streams the exact or autograd path; "
            "algorithm = captum is for tests of single nodes"
        )
    x, x0 = _explained_rows(*_as_inputs(model, inputs, baselines), config)
    comps, genes = _pca_map(pca, x, torch.float64, genes)
    maps = [torch.as_tensor(np.asarray(W), dtype=torch.float64, device=x.device) for W in maps]
    totals = [
        torch.zeros(W.shape[1], comps.shape[1], dtype=torch.float64, device=x.device) for W in maps
    ]
    deltas = [torch.zeros(W.shape[1], dtype=torch.float64, device=x.device) for W in maps]
    lo = [
        torch.full((W.shape[1],), float("inf"), dtype=torch.float64, device=x.device) for W in maps
    ]
    hi = [
        torch.full((W.shape[1],), float("-inf"), dtype=torch.float64, device=x.device) for W in maps
    ]
    start = 0
    for ig, delta, out in _ig_chunks(model, slice(0, R), x, x0, config, with_delta=True):
        B = ig.shape[1]
        diff = (x[start : start + B] - x0[start : start + B]).double()  # (B, p)
        start += B
        with torch.no_grad():
            for r, W in enumerate(maps):
                if space == "pca":
                    igc = ig[r].double() @ W  # (B, p, k): IG of the rotated components
                    totals[r] += torch.matmul(igc.transpose(-1, -2), comps).abs().sum(0)
                else:
                    safe = torch.where(diff != 0, diff, torch.ones_like(diff)).unsqueeze(-1)
                    jac = torch.where(diff.unsqueeze(-1) != 0, ig[r].double() / safe, 0.0) @ W
                    grad_genes = torch.matmul(jac.transpose(-1, -2), comps)  # (B, k, genes)
                    totals[r] += ((diff @ comps).unsqueeze(1) * grad_genes).abs().sum(0)
                deltas[r] = torch.maximum(deltas[r], (delta[r].double() @ W).abs().amax(0))
                c = out[r].double() @ W
                lo[r] = torch.minimum(lo[r], c.amin(0))
                hi[r] = torch.maximum(hi[r], c.amax(0))
    names, _ = _names_runs(model, R, d)
    frames = []
    for r, total in enumerate(totals):
        key = names[r][0].rsplit("_z", 1)[0]
        frames.append(
            pd.DataFrame(
                (total / x.shape[0]).T.cpu().numpy(),
                index=pd.Index(genes, name="gene"),
                columns=[f"{key}_ic{k:02d}" for k in range(total.shape[0])],
            )
        )
    return RotatedAttribution(
        frames,
        [t.cpu().numpy() for t in deltas],
        [(h - l_).cpu().numpy() for h, l_ in zip(hi, lo, strict=True)],
    )
