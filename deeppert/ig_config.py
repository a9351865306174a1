"""Integrated Gradients settings (:class:`IGConfig`), in a module without torch.

:mod:`deeppert.attribution` re-exports everything here; the command line reads the knobs and
their defaults from this dataclass without importing torch (``deeppert attribute --help``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from deeppert.errors import DeeppertError
from deeppert.schema import check_choices, knob

__all__ = ["IGMethod", "IGAlgorithm", "IGConfig"]

IGMethod = Literal[
    "gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"
]
IGAlgorithm = Literal["auto", "exact", "autograd", "captum"]

_DEFAULT_CHUNK = 256


@dataclass(frozen=True)
class IGConfig:
    """Integrated Gradients settings.

    Parameters
    ----------
    n_steps
        Quadrature nodes along the path (reference: 50).
    method
        captum's quadrature rule; the default is captum's default.
    chunk_size
        Samples per chunk: bounds memory (the exact path holds ``chunk x h1 x h2`` path
        averages and ``chunk x genes x d`` gene attributions at a time).
    algorithm
        ``"auto"`` (exact where the encoder shape allows, else autograd), ``"exact"``,
        ``"autograd"`` or ``"captum"``.
    max_samples
        Explain at most this many samples: a random subset of the rows (numpy seed 0, the same
        rows for every encoder given the same inputs), drawn when there are more. ``None``
        (default) explains every sample, as the method does. Gene weights are a mean over
        samples, so a subset estimates them; it bounds the gene mapping's cost
        (samples x d x p x genes), which dominates attribution at DeepProfile scale.
    """

    n_steps: int = knob(50, "quadrature steps")
    method: IGMethod = knob("gausslegendre", "captum's quadrature rule")
    chunk_size: int = knob(_DEFAULT_CHUNK, "samples per chunk")
    algorithm: IGAlgorithm = knob(
        "auto", "exact (fast path), autograd or captum; auto = exact where possible"
    )
    max_samples: int | None = knob(
        None, "explain a seeded random subset of this many samples (default: all)", metavar="N"
    )

    def __post_init__(self) -> None:
        check_choices(self, "ig")
        if self.n_steps < 1:
            raise DeeppertError(f"ig.n_steps must be positive, got {self.n_steps}")
        if self.chunk_size < 1:
            raise DeeppertError(f"ig.chunk_size must be positive, got {self.chunk_size}")
        if self.max_samples is not None and self.max_samples < 1:
            raise DeeppertError(f"ig.max_samples must be positive, got {self.max_samples}")

    def to_dict(self) -> dict:
        return asdict(self)
