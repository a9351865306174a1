"""The replicated AE / DAE / VAE module: layers against torch's, docs/method.md widths, init, noise."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deeppert.errors import DeeppertError
from deeppert.models import (
    MeanEncoder,
    ModelConfig,
    Noise,
    PerturbationAutoencoder,
    ReplicaEncoder,
    StackedBatchNorm,
    StackedLinear,
    draw_noise,
    hidden_sizes,
    init_parameters,
    noise_width,
)
from deeppert.rng import replica_keys

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def _linears(module: nn.Module) -> list[StackedLinear]:
    return [m for m in module.modules() if isinstance(m, StackedLinear)]


# -- layers against torch.nn ------------------------------------------------------------
def test_stacked_linear_with_one_replica_is_nn_linear():
    torch.manual_seed(0)
    ref = nn.Linear(7, 4).double()
    stacked = StackedLinear(1, 7, 4).double()
    with torch.no_grad():
        stacked.weight.copy_(ref.weight.T.unsqueeze(0))  # x @ W layout
        stacked.bias.copy_(ref.bias.view(1, 1, 4))
    x = torch.randn(9, 7, dtype=torch.float64, requires_grad=True)
    x1 = x.detach().clone().requires_grad_(True)
    out_ref, out = ref(x), stacked(x1.unsqueeze(0))[0]
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-12)
    out_ref.pow(2).sum().backward()
    out.pow(2).sum().backward()
    torch.testing.assert_close(stacked.weight.grad[0], ref.weight.grad.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(stacked.bias.grad.view(4), ref.bias.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(x1.grad, x.grad, rtol=0, atol=1e-12)


def test_stacked_batchnorm_with_one_replica_is_batchnorm1d():
    torch.manual_seed(1)
    ref = nn.BatchNorm1d(6).double()
    stacked = StackedBatchNorm(1, 6).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2.0)
        ref.bias.normal_()
        stacked.weight.copy_(ref.weight.view(1, 1, 6))
        stacked.bias.copy_(ref.bias.view(1, 1, 6))
    ref.train()
    stacked.train()
    for step in range(4):  # several updates of the running estimates, varying batch sizes
        x = torch.randn(5 + 3 * step, 6, dtype=torch.float64) * 3 + 1
        torch.testing.assert_close(stacked(x.unsqueeze(0))[0], ref(x), rtol=0, atol=1e-12)
        torch.testing.assert_close(
            stacked.running_mean.view(6), ref.running_mean, rtol=0, atol=1e-12
        )
        torch.testing.assert_close(stacked.running_var.view(6), ref.running_var, rtol=0, atol=1e-12)
    # the running estimates have moved away from their (0, 1) start
    assert stacked.running_mean.abs().max() > 0.1
    ref.eval()
    stacked.eval()
    x = torch.randn(3, 6, dtype=torch.float64)
    before = stacked.running_mean.clone()
    torch.testing.assert_close(stacked(x.unsqueeze(0))[0], ref(x), rtol=0, atol=1e-12)
    assert torch.equal(stacked.running_mean, before)  # eval does not update


def test_stacked_layers_keep_replicas_independent():
    """Replica r's output depends only on replica r's input and parameters."""
    torch.manual_seed(2)
    lin, bn = StackedLinear(3, 5, 4).double(), StackedBatchNorm(3, 4).double()
    init_gen = torch.Generator().manual_seed(0)
    lin.weight.data.uniform_(-1, 1, generator=init_gen)
    x = torch.randn(3, 8, 5, dtype=torch.float64)
    full = bn(lin(x))
    x2 = x.clone()
    x2[0] += 100.0  # disturb replica 0 only
    bn2 = StackedBatchNorm(3, 4).double()
    part = bn2(lin(x2))
    torch.testing.assert_close(part[1:], full[1:], rtol=0, atol=1e-12)
    assert not torch.allclose(bn2.running_mean[0], bn.running_mean[0])


# -- architecture (docs/method.md section 2) --------------------------------------------------
@pytest.mark.parametrize(
    "d, expected",
    [(5, (100, 25)), (10, (250, 50)), (25, (250, 100)), (50, (250, 100)), (2, (250, 100))],
)
def test_hidden_sizes_follow_method(d, expected):
    assert hidden_sizes(d) == expected
    assert ModelConfig(latent_dim=d).hidden == expected


def _shapes(layers) -> list[tuple[int, int]]:
    return [tuple(m.weight.shape[1:]) for m in layers if isinstance(m, StackedLinear)]


@pytest.mark.parametrize("kind", ["AE", "DAE"])
@pytest.mark.parametrize("d", [5, 10, 50])
def test_ae_has_one_hidden_encoder_layer(kind, d):
    p, (h1, _) = 30, hidden_sizes(d)
    m = PerturbationAutoencoder(ModelConfig(kind=kind, latent_dim=d, n_inputs=p), replicas=2)
    assert [type(x) for x in m.encoder] == [StackedLinear, StackedBatchNorm]
    assert _shapes(m.encoder) == [(p, h1)]
    assert m.encoder[1].weight.shape == (2, 1, h1)
    assert tuple(m.mean_head.weight.shape) == (2, h1, d)
    assert m.logvar_head is None
    assert _shapes(m.decoder) == [(d, h1), (h1, p)]
    assert [type(x) for x in m.decoder] == [StackedLinear, StackedLinear]


@pytest.mark.parametrize("d", [5, 10, 50])
@pytest.mark.parametrize("decoder", ["mirrored", "reference"])
def test_vae_widths_and_decoder_order(d, decoder):
    p, (h1, h2) = 30, hidden_sizes(d)
    m = PerturbationAutoencoder(
        ModelConfig(kind="VAE", latent_dim=d, n_inputs=p, vae_decoder=decoder), replicas=3
    )
    assert [type(x) for x in m.encoder] == [StackedLinear, StackedBatchNorm] * 2
    assert _shapes(m.encoder) == [(p, h1), (h1, h2)]
    assert tuple(m.mean_head.weight.shape) == (3, h2, d)
    assert tuple(m.logvar_head.weight.shape) == (3, h2, d)
    widths = [d, h2, h1, p] if decoder == "mirrored" else [d, h1, h2, p]
    assert _shapes(m.decoder) == list(zip(widths[:-1], widths[1:]))


def test_default_vae_decoder_is_mirrored():
    assert ModelConfig().vae_decoder == "mirrored"
    assert ModelConfig().kind == "VAE"


def _sequential_reference(m: PerturbationAutoencoder, r: int):
    """Plain torch.nn encoder/decoder built from docs/method.md, holding replica r's weights."""

    def lin(s: StackedLinear) -> nn.Linear:
        out = nn.Linear(s.weight.shape[1], s.weight.shape[2]).double()
        out.weight.data = s.weight.data[r].T.clone()
        out.bias.data = s.bias.data[r, 0].clone()
        return out

    def bn(s: StackedBatchNorm) -> nn.BatchNorm1d:
        out = nn.BatchNorm1d(s.weight.shape[2]).double()
        out.weight.data = s.weight.data[r, 0].clone()
        out.bias.data = s.bias.data[r, 0].clone()
        out.running_mean.data = s.running_mean[r, 0].clone()
        out.running_var.data = s.running_var[r, 0].clone()
        return out

    enc = [m.encoder[i] for i in range(len(m.encoder))]
    body = []
    for i in range(0, len(enc), 2):
        body += [lin(enc[i]), bn(enc[i + 1]), nn.ReLU()]
    encoder = nn.Sequential(*body, lin(m.mean_head))
    dec = []
    for layer in m.decoder[:-1]:
        dec += [lin(layer), nn.ReLU()]
    decoder = nn.Sequential(*dec, lin(m.decoder[-1]))
    return encoder.eval(), decoder.eval()


@pytest.mark.parametrize("kind", ["AE", "VAE"])
def test_eval_forward_equals_plain_torch_network(kind):
    cfg = ModelConfig(kind=kind, latent_dim=5, n_inputs=12)
    m = PerturbationAutoencoder(cfg, replicas=2).double()
    init_parameters(m, _gens(3, 4))
    with torch.no_grad():  # non-trivial biases and BN state
        for name, t in m.named_parameters():
            if name.endswith("bias"):
                t.normal_(0, 0.1)
        for b in m.buffers():
            b.uniform_(0.5, 1.5)
    x = torch.randn(2, 10, 12, dtype=torch.float64)
    z = m.encode_mean(x)
    x_hat = m.reconstruct(x)
    for r in range(2):
        encoder, decoder = _sequential_reference(m, r)
        torch.testing.assert_close(z[r], encoder(x[r]), rtol=0, atol=1e-12)
        torch.testing.assert_close(x_hat[r], decoder(encoder(x[r])), rtol=0, atol=1e-12)


def test_ae_dropout_sits_after_the_hidden_layers():
    """A zero encoder mask cuts the code to the head's bias; a zero decoder mask the output."""
    cfg = ModelConfig(kind="AE", latent_dim=5, n_inputs=12)
    m = PerturbationAutoencoder(cfg).double()
    init_parameters(m, _gens(0))
    with torch.no_grad():
        m.mean_head.bias.fill_(0.25)
        m.decoder[-1].bias.fill_(-0.5)
    x = torch.randn(1, 8, 12, dtype=torch.float64)
    zeros = torch.zeros(1, 8, 100, dtype=torch.float64)
    out = m(x, Noise(encoder_dropout=zeros))
    assert torch.all(out["z_mean"] == 0.25)
    out = m(x, Noise(decoder_dropout=zeros))
    assert torch.all(out["x_hat"] == -0.5)
    ones = torch.ones_like(zeros)
    torch.testing.assert_close(
        m(x, Noise(encoder_dropout=ones, decoder_dropout=ones))["x_hat"], m(x)["x_hat"]
    )


def test_model_config_rejects_bad_values():
    with pytest.raises(DeeppertError, match="kind"):
        ModelConfig(kind="GAN")
    with pytest.raises(DeeppertError, match="dropout"):
        ModelConfig(dropout=1.0)
    with pytest.raises(DeeppertError, match="vae_decoder"):
        ModelConfig(vae_decoder="flipped")
    with pytest.raises(DeeppertError, match="latent_dim"):
        ModelConfig(latent_dim=0)


# -- initialisation and noise ------------------------------------------------------------
def test_glorot_uniform_init_and_zero_biases():
    m = PerturbationAutoencoder(ModelConfig(kind="VAE", latent_dim=10, n_inputs=100), replicas=2)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(7.0)
    init_parameters(m, _gens(0, 1))
    for layer in _linears(m):
        _, fan_in, fan_out = layer.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = layer.weight.detach()
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.9 * bound  # fills the interval, not a narrower one
        # uniform(-b, b) has std b / sqrt(3)
        assert abs(w.std().item() - bound / math.sqrt(3)) < 0.1 * bound
        assert abs(w.mean().item()) < 0.1 * bound
        assert torch.all(layer.bias == 0)
        assert not torch.equal(w[0], w[1])  # replicas draw different weights


def test_init_of_a_replica_does_not_depend_on_its_neighbours():
    cfg = ModelConfig(kind="DAE", latent_dim=5, n_inputs=20)
    group = PerturbationAutoencoder(cfg, replicas=3)
    init_parameters(group, _gens(0, 123456, 246912))
    alone = PerturbationAutoencoder(cfg, replicas=1)
    init_parameters(alone, _gens(123456))
    for a, g in zip(_linears(alone), _linears(group)):
        assert torch.equal(a.weight[0], g.weight[1])
    with pytest.raises(ValueError, match="generators"):
        init_parameters(group, _gens(0))


@pytest.mark.parametrize("kind", ["AE", "DAE", "VAE"])
def test_draw_noise_of_a_replica_does_not_depend_on_its_neighbours(kind):
    cfg = ModelConfig(kind=kind, latent_dim=5, n_inputs=20)
    # steps 3..5 for three replicas in one draw vs step 4 of the middle one alone
    group = draw_noise(cfg, replica_keys([11, 22, 33]), 3, 3, 16, dtype=torch.float64)
    alone = draw_noise(cfg, replica_keys([22]), 4, 1, 16, dtype=torch.float64)
    fields = ("input_noise", "encoder_dropout", "decoder_dropout", "eps")
    present = [f for f in fields if getattr(group, f) is not None]
    expected = {
        "AE": ["encoder_dropout", "decoder_dropout"],
        "DAE": ["input_noise", "encoder_dropout", "decoder_dropout"],
        "VAE": ["eps"],
    }[kind]
    assert present == expected
    g_step, a_step = group.step(1, 10), alone.step(0, 10)
    for f in present:
        g, a = getattr(group, f), getattr(alone, f)
        assert g.shape[:3] == (3, 3, 16) and a.shape[:3] == (1, 1, 16)
        assert getattr(g_step, f).shape[:2] == (3, 10)
        assert torch.equal(getattr(g_step, f)[1], getattr(a_step, f)[0])
        assert not torch.equal(g[0, 1], g[1, 1])  # replicas differ
        assert not torch.equal(g[1, 0], g[1, 1])  # steps differ


def test_noise_distributions():
    cfg = ModelConfig(kind="DAE", latent_dim=5, n_inputs=50, dropout=0.1, dae_noise_std=2.0)
    assert noise_width(cfg) == 2 * 50 + 100 + 100
    noise = draw_noise(cfg, replica_keys([5]), 0, 1, 2000, dtype=torch.float64).step(0, 2000)
    # DAE input noise: N(0, 2.0^2) on the PCA inputs
    assert noise.input_noise.shape == (1, 2000, 50)
    assert abs(noise.input_noise.std().item() - 2.0) < 0.04
    assert abs(noise.input_noise.mean().item()) < 0.04
    # inverted dropout masks: values 0 or 1/0.9, kept with probability 0.9, width h1 = 100
    for mask in (noise.encoder_dropout, noise.decoder_dropout):
        assert mask.shape == (1, 2000, 100)
        values = set(torch.unique(mask).tolist())
        assert values == {0.0, 1 / 0.9}
        assert abs((mask > 0).double().mean().item() - 0.9) < 0.01
    assert not torch.equal(noise.encoder_dropout, noise.decoder_dropout)
    vae = draw_noise(ModelConfig(kind="VAE", latent_dim=7), replica_keys([5]), 0, 1, 4000)
    assert vae.eps.shape == (1, 1, 4000, 7) and vae.eps.dtype == torch.float32
    assert abs(vae.eps.std().item() - 1.0) < 0.02
    none = draw_noise(
        ModelConfig(kind="AE", latent_dim=5, n_inputs=50, dropout=0.0), replica_keys([5]), 0, 1, 4
    )
    assert none.encoder_dropout is None and none.decoder_dropout is None


def test_replica_cuts_out_one_model():
    cfg = ModelConfig(kind="VAE", latent_dim=5, n_inputs=12)
    m = PerturbationAutoencoder(cfg, replicas=3).double()
    init_parameters(m, _gens(1, 2, 3))
    x = torch.randn(3, 6, 12, dtype=torch.float64)
    single = m.replica(2)
    assert single.replicas == 1 and not single.training
    assert next(single.parameters()).dtype == torch.float64
    torch.testing.assert_close(single.encode_mean(x[2:3])[0], m.encode_mean(x)[2], rtol=0, atol=0)


def test_replica_encoder_is_its_mean_encoder_and_pickles_alone():
    import pickle

    torch.manual_seed(0)
    stack = PerturbationAutoencoder(ModelConfig(kind="VAE", latent_dim=5, n_inputs=20), replicas=6)
    with torch.no_grad():
        for p in stack.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(30, 20)
    view = ReplicaEncoder(stack, 4)
    torch.testing.assert_close(view(x), MeanEncoder(stack, 4)(x), rtol=0, atol=0)
    assert not torch.equal(view(x), MeanEncoder(stack, 3)(x))
    assert next(view.parameters()) is next(stack.parameters())  # no copy held
    sent = pickle.loads(pickle.dumps(view))
    assert isinstance(sent, MeanEncoder)
    torch.testing.assert_close(sent(x), view(x), rtol=0, atol=0)
    # what a Ray task receives is one replica, not the stack of six
    assert len(pickle.dumps(view)) < len(pickle.dumps(stack)) / 3
