"""Counter-based random numbers for R replicas at once: a hash of (replica key, step, element).

Training draws dropout masks, DAE input noise and VAE reparameterisation noise for all R
replicas in one batched operation instead of R calls into R ``torch.Generator`` objects (R
small kernel launches per layer per step on a GPU). Every random number is a pure function

    bits(replica seed, step, element index) = mix(mix(index ^ k1(seed, step)) ^ k2(seed, step))

written in plain torch int32 ops, so it runs on any device, vectorised over replicas and
steps, and the stream of one replica does not depend on which replicas are drawn beside
it: a replica trained among R sees exactly the numbers it sees alone. ``mix`` is Chris
Wellons' ``lowbias32`` integer hash (a bijection on 32 bits with near-ideal avalanche);
two rounds with independent keys keep streams of different keys from being shifted copies
of each other. Integers are held as int32 bit patterns (torch's int32 multiply wraps
modulo 2**32 on CPU and CUDA); logical right shifts are emulated with a mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["mix32", "replica_keys", "random_bits", "uniform", "normal", "dropout_mask"]

_M32 = 0xFFFFFFFF
_MUL1, _MUL2 = 0x7FEB352D, 0x846CA68B  # lowbias32 multipliers
_STEP_SALT, _KEY2_SALT = 0x9E3779B9, 0x85EBCA6B
_U24 = 1.0 / (1 << 24)


def _as_int32(c: int) -> int:
    """The int32 with the same bit pattern as the uint32 ``c``."""
    c &= _M32
    return c - (1 << 32) if c >= 1 << 31 else c


def mix32(x: torch.Tensor) -> torch.Tensor:
    """``lowbias32`` on int32 bit patterns, in place (``x`` must be a fresh int32 tensor)."""
    x.bitwise_xor_((x >> 16) & 0xFFFF)
    x.mul_(_as_int32(_MUL1))
    x.bitwise_xor_((x >> 15) & 0x1FFFF)
    x.mul_(_as_int32(_MUL2))
    return x.bitwise_xor_((x >> 16) & 0xFFFF)


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def replica_keys(seeds: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """One 32-bit key per replica (R,) int32, from its (up to 64-bit) integer seed."""
    return torch.tensor(
        [_as_int32(_splitmix64(int(s)) >> 32) for s in seeds], dtype=torch.int32, device=device
    )


def random_bits(keys: torch.Tensor, first_step: int, n_steps: int, n: int) -> torch.Tensor:
    """Random 32-bit patterns (R, n_steps, n) int32: replica r, step first_step + k, element i.

    One batched computation for all replicas and steps; entry ``[r, k, i]`` depends only on
    ``keys[r]``, the absolute step and ``i``.
    """
    device = keys.device
    steps = torch.arange(first_step, first_step + n_steps, dtype=torch.int32, device=device)
    step_key = mix32(steps + _as_int32(_STEP_SALT))  # (K,)
    k1 = mix32(keys.view(-1, 1) ^ step_key)  # (R, K)
    k2 = mix32(k1 + _as_int32(_KEY2_SALT))
    index = torch.arange(n, dtype=torch.int32, device=device)
    bits = mix32(index ^ k1.unsqueeze(-1))  # (R, K, n)
    return mix32(bits.bitwise_xor_(k2.unsqueeze(-1)))


def _top24(bits: torch.Tensor) -> torch.Tensor:
    return (bits >> 8) & 0xFFFFFF


def uniform(bits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform numbers on [0, 1) with 24-bit resolution (exact in float32)."""
    return _top24(bits).to(dtype).mul_(_U24)


def normal(bits_a: torch.Tensor, bits_b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Standard normals by Box-Muller: ``sqrt(-2 ln u1) * cos(2 pi u2)``, u1 in (0, 1]."""
    u1 = (_top24(bits_a) + 1).to(dtype).mul_(_U24)
    u2 = uniform(bits_b, dtype).mul_(2 * math.pi)
    return u1.log_().mul_(-2.0).sqrt_().mul_(u2.cos_())


def dropout_mask(bits: torch.Tensor, keep: float, dtype: torch.dtype) -> torch.Tensor:
    """Inverted-dropout mask: ``1 / keep`` with probability ``keep`` (to 2**-32), else 0.

    The int32 patterns are uniform on [-2**31, 2**31), so one signed comparison decides.
    """
    threshold = round(keep * (1 << 32)) - (1 << 31)
    return (bits < threshold).to(dtype).mul_(1.0 / keep)
