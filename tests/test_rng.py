"""Counter-based random streams: the hash against a numpy reference, distributions, independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from deeppert.rng import dropout_mask, mix32, normal, random_bits, replica_keys, uniform


def _lowbias32_numpy(x: np.ndarray) -> np.ndarray:
    """Wellons' lowbias32 in uint32 arithmetic (numpy wraps uint32 products by definition)."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def test_mix32_is_lowbias32_on_uint32_bit_patterns():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.integers(0, 2**32, 10_000, dtype=np.uint64), [0, 1, 2**31 - 1, 2**31, 2**32 - 1]]
    ).astype(np.uint32)
    got = mix32(torch.from_numpy(x.view(np.int32).copy())).numpy().view(np.uint32)
    np.testing.assert_array_equal(got, _lowbias32_numpy(x))
    assert _lowbias32_numpy(np.array([1]))[0] != 1  # the reference is not the identity


def test_a_stream_depends_on_its_key_step_and_index_only():
    keys = replica_keys([0, 123456, 246912, 370368])
    block = random_bits(keys, 10, 4, 500)  # steps 10..13 drawn at once
    assert block.shape == (4, 4, 500) and block.dtype == torch.int32
    alone = random_bits(replica_keys([246912]), 12, 1, 700)  # one replica, one step, more words
    assert torch.equal(block[2, 2], alone[0, 0, :500])
    assert torch.equal(keys[1:2], replica_keys([123456]))
    # different replicas, steps and elements give different words
    assert not torch.equal(block[0, 0], block[1, 0])
    assert not torch.equal(block[0, 0], block[0, 1])
    assert len(torch.unique(block)) > 0.999 * block.numel()


def _uniforms(seeds, steps=2, n=50_000) -> np.ndarray:
    return uniform(random_bits(replica_keys(seeds), 0, steps, n), torch.float64).numpy()


def test_uniforms_are_uniform():
    u = _uniforms([0, 1, 123456], steps=2).ravel()  # 300,000 numbers
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / u.size)
    assert abs(u.var() - 1 / 12) < 0.002
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    # every one of the 32 bits is set half of the time
    bits = random_bits(replica_keys([7]), 0, 1, 200_000).numpy().view(np.uint32)
    freq = ((bits[..., None] >> np.arange(32, dtype=np.uint32)) & 1).mean(axis=(0, 1, 2))
    assert np.abs(freq - 0.5).max() < 0.005


def test_streams_are_independent_across_replicas_steps_and_elements():
    # neighbouring seeds (0, 1), the run seeds 123456 * r, and keys from adjacent steps
    u = _uniforms([0, 1, 123456, 246912], steps=2, n=100_000)
    n = u.shape[-1]
    bound = 4.5 / np.sqrt(n)  # |r| of independent samples: sd 1 / sqrt(n)
    series = [u[r, t] for r in range(4) for t in range(2)]
    for a in range(len(series)):
        assert abs(np.corrcoef(series[a][:-1], series[a][1:])[0, 1]) < bound  # lag 1
        for b in range(a + 1, len(series)):
            assert abs(np.corrcoef(series[a], series[b])[0, 1]) < bound
    # joint uniformity of two replicas' numbers at the same position: 10 x 10 chi-square
    counts, _, _ = np.histogram2d(u[0, 0], u[1, 0], bins=10, range=[[0, 1], [0, 1]])
    assert stats.chisquare(counts.ravel()).pvalue > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_muller_normals_match_the_standard_normal(dtype):
    bits = random_bits(replica_keys([5, 6]), 0, 1, 200_000)
    z = normal(bits[..., :100_000], bits[..., 100_000:], dtype)
    assert z.dtype == dtype and torch.isfinite(z).all()
    for r in range(2):
        zr = z[r, 0].double().numpy()
        assert abs(zr.mean()) < 0.015 and abs(zr.var() - 1) < 0.015
        assert abs(stats.skew(zr)) < 0.03 and abs(stats.kurtosis(zr)) < 0.06
        assert stats.kstest(zr, "norm").pvalue > 1e-3
    assert abs(np.corrcoef(z[0, 0].double().numpy(), z[1, 0].double().numpy())[0, 1]) < 0.015


def test_dropout_mask_keeps_with_the_given_probability():
    mask = dropout_mask(random_bits(replica_keys([9]), 0, 1, 400_000), 0.9, torch.float64)
    assert set(torch.unique(mask).tolist()) == {0.0, 1 / 0.9}
    kept = (mask > 0).double().mean().item()
    assert abs(kept - 0.9) < 4 * np.sqrt(0.09 / 400_000)
    assert dropout_mask(random_bits(replica_keys([9]), 0, 1, 1000), 0.5, torch.float32).mean() == (
        pytest.approx(1.0, abs=0.15)
    )
