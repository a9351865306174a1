"""One parameterised autoencoder covering AE, DAE and VAE (docs/method.md section 2).

The module holds ``R`` replicas of the same architecture side by side: every weight has a
leading replica axis and every layer is a batched matmul, so R seeds train in one pass.
``R = 1`` is an ordinary single model. The module is pure math (scvi-tools style): it
draws no random numbers itself. Initial weights come from each replica's own
``torch.Generator`` (:func:`init_parameters`, once per fit); dropout masks, DAE input noise
and VAE reparameterisation noise come from the counter-based streams of
:mod:`deeppert.rng`, drawn for all replicas (and several steps) in one batched operation
(:func:`draw_noise`). Either way replica ``r`` trained in a group of R is the same model as
replica ``r`` trained alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from deeppert import rng
from deeppert.train_config import ModelConfig, ModelKind, hidden_sizes

__all__ = [
    "ModelKind",
    "ModelConfig",
    "hidden_sizes",
    "Noise",
    "LossOutput",
    "StackedLinear",
    "StackedBatchNorm",
    "PerturbationAutoencoder",
    "init_parameters",
    "noise_width",
    "draw_noise",
    "MeanEncoder",
    "ReplicaEncoder",
]


@dataclass
class Noise:
    """Random tensors for R replicas, each ``(R, batch, width)``; None when unused.

    :func:`draw_noise` returns a block of several steps, each field ``(R, steps, batch,
    width)``; :meth:`step` cuts out one minibatch.
    """

    input_noise: torch.Tensor | None = None
    encoder_dropout: torch.Tensor | None = None
    decoder_dropout: torch.Tensor | None = None
    eps: torch.Tensor | None = None

    def step(self, k: int, rows: int) -> Noise:
        """Step ``k`` of a block, first ``rows`` rows (a short last minibatch): views, no copies."""
        return Noise(
            **{name: None if t is None else t[:, k, :rows] for name, t in vars(self).items()}
        )


@dataclass
class LossOutput:
    """Per-replica loss terms, each of shape ``(R,)``: loss = reconstruction + beta * kl."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


class StackedLinear(nn.Module):
    """R independent ``Linear(n_in, n_out)`` layers applied as one batched matmul.

    ``weight`` is ``(R, n_in, n_out)`` (x @ W, Keras layout), ``bias`` is ``(R, 1, n_out)``.
    """

    def __init__(self, replicas: int, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(replicas, n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(replicas, 1, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class StackedBatchNorm(nn.Module):
    """R independent ``BatchNorm1d`` layers (torch's defaults: eps 1e-5, momentum 0.1).

    Training normalises with the batch's biased variance and updates running estimates with
    the unbiased one, exactly like :class:`torch.nn.BatchNorm1d`; eval uses the running ones.
    """

    def __init__(self, replicas: int, n: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(replicas, 1, n))
        self.bias = nn.Parameter(torch.zeros(replicas, 1, n))
        self.register_buffer("running_mean", torch.zeros(replicas, 1, n))
        self.register_buffer("running_var", torch.ones(replicas, 1, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's fused batch_norm kernel over R * n channels: the batch axis first, then
        # (replica, feature) flattened into channels, a copy of x; the result is handed back
        # as an (R, B, n) view. Each channel's statistics are those of its own replica.
        R, B, n = x.shape
        y = F.batch_norm(
            x.transpose(0, 1).reshape(B, R * n),
            self.running_mean.view(R * n),
            self.running_var.view(R * n),
            self.weight.view(R * n),
            self.bias.view(R * n),
            training=self.training,
            momentum=self.momentum,
            eps=self.eps,
        )
        return y.view(B, R, n).transpose(0, 1)


def _dropout(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return h if mask is None else h * mask


class PerturbationAutoencoder(nn.Module):
    """R replicas of the AE / DAE / VAE of docs/method.md section 2, as one module.

    Inputs are ``(R, batch, p)``: replica ``r`` sees ``x[r]``. Use :meth:`encode_mean` for the
    embedding (the VAE's posterior mean, never a sample) and :meth:`replica` to cut one model out.
    """

    def __init__(self, config: ModelConfig, replicas: int = 1) -> None:
        super().__init__()
        self.config = config
        self.replicas = replicas
        p, d = config.n_inputs, config.latent_dim
        h1, h2 = config.hidden
        R = replicas
        if config.kind == "VAE":
            self.encoder = nn.ModuleList(
                [
                    StackedLinear(R, p, h1),
                    StackedBatchNorm(R, h1),
                    StackedLinear(R, h1, h2),
                    StackedBatchNorm(R, h2),
                ]
            )
            self.mean_head = StackedLinear(R, h2, d)
            self.logvar_head = StackedLinear(R, h2, d)
            widths = [d, h2, h1, p] if config.vae_decoder == "mirrored" else [d, h1, h2, p]
            self.decoder = nn.ModuleList(
                StackedLinear(R, a, b) for a, b in zip(widths[:-1], widths[1:])
            )
        else:
            self.encoder = nn.ModuleList([StackedLinear(R, p, h1), StackedBatchNorm(R, h1)])
            self.mean_head = StackedLinear(R, h1, d)
            self.logvar_head = None
            self.decoder = nn.ModuleList([StackedLinear(R, d, h1), StackedLinear(R, h1, p)])

    # -- the network ------------------------------------------------------------------
    def inference(self, x: torch.Tensor, noise: Noise | None = None) -> dict[str, torch.Tensor]:
        """Encode ``x`` (R, B, p) -> ``z_mean`` (and ``z_logvar``, ``z`` for the VAE)."""
        noise = noise or Noise()
        if noise.input_noise is not None:
            x = x + noise.input_noise
        h = x
        for i in range(0, len(self.encoder), 2):
            h = torch.relu(self.encoder[i + 1](self.encoder[i](h)))
        h = _dropout(h, noise.encoder_dropout)
        out = {"z_mean": self.mean_head(h)}
        if self.logvar_head is not None:
            out["z_logvar"] = self.logvar_head(h)
            z = out["z_mean"]
            if noise.eps is not None:
                z = z + torch.exp(0.5 * out["z_logvar"]) * noise.eps
            out["z"] = z
        else:
            out["z"] = out["z_mean"]
        return out

    def generative(self, z: torch.Tensor, noise: Noise | None = None) -> dict[str, torch.Tensor]:
        """Decode a code ``z`` (R, B, d) -> ``x_hat`` (R, B, p)."""
        noise = noise or Noise()
        h = z
        for layer in self.decoder[:-1]:
            h = torch.relu(layer(h))
        h = _dropout(h, noise.decoder_dropout)
        return {"x_hat": self.decoder[-1](h)}

    def loss(
        self,
        x: torch.Tensor,
        inference: dict[str, torch.Tensor],
        generative: dict[str, torch.Tensor],
        beta: float = 1.0,
    ) -> LossOutput:
        """p * MSE (= squared error summed over features, averaged over the batch) + beta * KL."""
        reconstruction = (generative["x_hat"] - x).pow(2).sum(-1).mean(-1)
        if self.logvar_head is not None:
            mu, logvar = inference["z_mean"], inference["z_logvar"]
            kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)).mean(-1)
        else:
            kl = torch.zeros_like(reconstruction)
        return LossOutput(reconstruction + beta * kl, reconstruction, kl)

    def forward(self, x: torch.Tensor, noise: Noise | None = None) -> dict[str, torch.Tensor]:
        inf = self.inference(x, noise)
        return {**inf, **self.generative(inf["z"], noise)}

    # -- evaluation helpers -------------------------------------------------------------
    @torch.no_grad()
    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic embedding (R, B, d): the code (AE/DAE) or posterior mean (VAE), eval mode."""
        was = self.training
        self.eval()
        try:
            return self.inference(x)["z_mean"]
        finally:
            self.train(was)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction (R, B, p) through the mean code, eval mode."""
        was = self.training
        self.eval()
        try:
            return self.generative(self.inference(x)["z_mean"])["x_hat"]
        finally:
            self.train(was)

    def replica(self, r: int) -> PerturbationAutoencoder:
        """A standalone single-model copy (R = 1) of replica ``r``, in eval mode."""
        single = PerturbationAutoencoder(self.config, replicas=1).to(
            dtype=next(self.parameters()).dtype
        )
        state = {k: v[r : r + 1].clone() for k, v in self.state_dict().items()}
        single.load_state_dict(state)
        return single.eval()

    def encoder_layers(self) -> list[nn.Module]:
        """The encoder as an ordered list (Linear, BN[, Linear, BN], mean head), for attribution."""
        return [*self.encoder, self.mean_head]


def _glorot_(weight: torch.Tensor, generator: torch.Generator) -> None:
    fan_in, fan_out = weight.shape
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound, generator=generator)


def init_parameters(module: PerturbationAutoencoder, generators: Sequence[torch.Generator]) -> None:
    """Glorot-uniform weights, zero biases; replica ``r`` draws from ``generators[r]`` only."""
    if len(generators) != module.replicas:
        raise ValueError(f"{len(generators)} generators for {module.replicas} replicas")
    linears = [m for m in module.modules() if isinstance(m, StackedLinear)]
    for r, gen in enumerate(generators):
        for layer in linears:
            _glorot_(layer.weight.data[r], gen)
    with torch.no_grad():
        for layer in linears:
            layer.bias.zero_()


def _noise_fields(config: ModelConfig) -> list[tuple[str, int]]:
    """(field, width) in the fixed order their bits sit in a row of the random block."""
    p, d = config.n_inputs, config.latent_dim
    h1, _ = config.hidden
    dropout = config.kind in ("AE", "DAE") and config.dropout > 0
    fields = []
    if config.kind == "DAE":
        fields.append(("input_noise", p))
    if dropout:
        fields.append(("encoder_dropout", h1))
    if config.kind == "VAE":
        fields.append(("eps", d))
    if dropout:
        fields.append(("decoder_dropout", h1))
    return fields


def noise_width(config: ModelConfig) -> int:
    """Random 32-bit words per training row (a normal takes two: Box-Muller)."""
    return sum(2 * w if name in ("input_noise", "eps") else w for name, w in _noise_fields(config))


def draw_noise(
    config: ModelConfig,
    keys: torch.Tensor,
    first_step: int,
    n_steps: int,
    batch_size: int,
    *,
    dtype: torch.dtype = torch.float32,
) -> Noise:
    """Training-time random tensors for ``n_steps`` minibatches of R replicas, one batched draw.

    ``keys`` (R,) int32 are the replicas' stream keys (:func:`deeppert.rng.replica_keys`);
    the tensors live on ``keys.device``, each field ``(R, n_steps, batch_size, width)``.
    Row ``i`` of step ``t`` uses words ``[i * W, (i + 1) * W)`` of that step's stream (W =
    :func:`noise_width`), so the numbers of a replica depend neither on its neighbours nor
    on how many steps are drawn at once.
    """
    width = noise_width(config)
    if width == 0:
        return Noise()
    bits = rng.random_bits(keys, first_step, n_steps, batch_size * width)
    bits = bits.view(len(keys), n_steps, batch_size, width)
    keep = 1.0 - config.dropout
    out: dict[str, torch.Tensor] = {}
    col = 0
    for name, w in _noise_fields(config):
        if name in ("input_noise", "eps"):
            z = rng.normal(bits[..., col : col + w], bits[..., col + w : col + 2 * w], dtype)
            if name == "input_noise" and config.dae_noise_std != 1.0:
                z = z.mul_(config.dae_noise_std)
            out[name] = z
            col += 2 * w
        else:
            out[name] = rng.dropout_mask(bits[..., col : col + w], keep, dtype)
            col += w
    return Noise(**out)


class MeanEncoder(nn.Module):
    """One replica as a plain ``(batch, p) -> (batch, d)`` embedding module (eval mode).

    This is what gets logged and registered as "the encoder": the code of an AE/DAE or the
    posterior mean of a VAE. It carries the whole replica so it reloads without surgery.
    """

    def __init__(self, autoencoder: PerturbationAutoencoder, replica: int = 0) -> None:
        super().__init__()
        self.autoencoder = autoencoder.replica(replica)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.autoencoder.eval()
        return self.autoencoder.inference(x.unsqueeze(0))["z_mean"][0]


class ReplicaEncoder:
    """Replica ``r`` of a stacked autoencoder used as its :class:`MeanEncoder`, without a copy.

    Calling it builds that replica's MeanEncoder for the call; pickling it (a Ray task's
    argument) sends that MeanEncoder alone, not the stack. Many of these over one stack hold
    the stack once, where one MeanEncoder per replica would hold every replica a second time.
    """

    def __init__(self, autoencoder: PerturbationAutoencoder, replica: int) -> None:
        self.autoencoder = autoencoder
        self.replica = replica

    def encoder(self) -> MeanEncoder:
        return MeanEncoder(self.autoencoder, self.replica)

    def parameters(self):
        return self.autoencoder.parameters()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder()(x)

    def __reduce__(self):
        return _same, (self.encoder(),)


def _same(obj: object) -> object:
    return obj
