"""Synthetic-data settings (:class:`SynthConfig`), in a module without numpy.

:mod:`deeppert.data.synthetic` re-exports it beside the generator; the command line and the
config reader take the knobs and their defaults from this dataclass without importing numpy
or pandas (``deeppert synth --help``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from deeppert.errors import DeeppertError
from deeppert.schema import check_choices, knob

__all__ = ["Activity", "Signs", "Response", "N_LANDMARKS", "SynthConfig"]

Activity = Literal["gaussian", "laplace", "student_t"]
Signs = Literal["random", "balanced"]
Response = Literal["linear", "saturating", "mixed"]
# Rows of deeppert/data/landmark_genes_978.txt (tests/test_synthetic.py checks the two agree).
N_LANDMARKS = 978


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of :func:`deeppert.data.make_synthetic`; invalid values raise :class:`DeeppertError`.

    Attributes
    ----------
    n_samples, n_programs, module_size
        Rows, hidden programs K, and genes per planted module.
    module_overlap
        Genes each module shares with the next (0: disjoint modules).
    signal_fraction
        Target trace cov(signal) / trace cov(matrix); met exactly on the drawn data.
    module_loading, background_loading
        Mean |loading| of a program on its own module genes; std of its dense loadings
        on all other genes. Keep module loadings clearly dominant.
    activity, student_df
        Distribution of program activities (unit variance): gaussian, or heavy-tailed
        laplace / Student t with ``student_df`` (> 2) degrees of freedom.
    signs
        Signs of module loadings: ``"random"`` per gene, or ``"balanced"`` (half of each
        module's genes, seeded, load negatively).
    response, interaction
        How module genes respond to their program (``"linear"``, ``"saturating"``,
        ``"mixed"``; see the module docstring) and whether the last module responds to the
        product of the last two programs.
    seed
        Seeds every random draw (matrix, metadata and pair tables use separate streams).
    disease, decoy_disease
        Made-up disease names of the known pairs (within a module) and the decoy pairs.
    n_known_pairs, n_disease_programs, n_decoy_pairs
        Known pairs are drawn from the modules of the first ``n_disease_programs``
        programs (round robin); decoys join genes of different modules / background.
    cell_line
        Name put in the metadata's ``cell_iname`` column.
    """

    n_samples: int = knob(5000, "rows (signatures)")
    n_programs: int = knob(5, "hidden programs K")
    module_size: int = knob(40, "genes per planted module")
    module_overlap: int = knob(0, "genes each module shares with the next")
    signal_fraction: float = knob(0.6, "trace cov(signal) / trace cov(matrix), in (0, 1)")
    module_loading: float = knob(1.0, "mean |loading| of a program on its module genes")
    background_loading: float = knob(0.15, "std of a program's loadings on other genes")
    activity: Activity = knob("gaussian", "distribution of program activities")
    student_df: float = 4.0
    signs: Signs = knob("random", "signs of module loadings: per gene, or half negative")
    response: Response = knob("linear", "how module genes respond to their program")
    interaction: bool = knob(False, "the last module responds to the last two programs' product")
    seed: int = knob(0, "seeds every random draw")
    disease: str = knob("Synthetic Disease", "disease name of the known pairs")
    decoy_disease: str = "Synthetic Decoy Disease"
    n_known_pairs: int = knob(40, "known target pairs, within the disease programs' modules")
    n_disease_programs: int = knob(1, "programs whose modules hold the known pairs")
    n_decoy_pairs: int = knob(20, "decoy pairs across modules")
    cell_line: str = "SYN1"

    def __post_init__(self) -> None:
        check_choices(self, "synthetic")
        n_genes = N_LANDMARKS
        checks = [
            (self.n_samples >= 10, "n_samples must be at least 10"),
            (self.n_programs >= 1, "n_programs must be at least 1"),
            (self.module_size >= 2, "module_size must be at least 2"),
            (
                0 <= self.module_overlap < self.module_size,
                "module_overlap must lie in [0, module_size)",
            ),
            (
                self.n_module_genes <= n_genes,
                f"the modules cover {self.n_module_genes} genes, more than the {n_genes} genes",
            ),
            (
                0.0 < self.signal_fraction < 1.0,
                f"signal_fraction must lie in (0, 1), got {self.signal_fraction}",
            ),
            (self.module_loading > 0, "module_loading must be positive"),
            (self.background_loading >= 0, "background_loading must be >= 0"),
            (self.student_df > 2, "student_df must exceed 2 (finite variance)"),
            (
                not self.interaction or self.n_programs >= 2,
                "interaction needs at least 2 programs",
            ),
            (
                1 <= self.n_disease_programs <= self.n_programs,
                "n_disease_programs must lie in [1, n_programs]",
            ),
            (
                0 <= self.n_known_pairs <= self.n_disease_programs * math.comb(self.module_size, 2),
                "n_known_pairs must lie in [0, n_disease_programs * module_size * (module_size - 1) / 2]",
            ),
            (self.n_decoy_pairs >= 0, "n_decoy_pairs must be >= 0"),
            (self.disease != self.decoy_disease, "disease and decoy_disease must differ"),
        ]
        for ok, message in checks:
            if not ok:
                raise DeeppertError(f"synthetic config: {message}")

    @property
    def n_module_genes(self) -> int:
        """Genes in at least one module."""
        return self.n_programs * (self.module_size - self.module_overlap) + self.module_overlap

    @property
    def linear(self) -> bool:
        """Every gene responds linearly (the signal is ``activities @ loadings``)."""
        return self.response == "linear" and not self.interaction

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
