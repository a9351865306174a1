"""How latent variables are clustered into an ensemble: :class:`EnsembleConfig`.

A module of its own (no numpy, scikit-learn or torch) so the command line can derive the
``deeppert ensemble`` flags from it without loading the compute stack;
:mod:`deeppert.ensemble.modes` re-exports it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from deeppert.errors import DeeppertError
from deeppert.schema import check_choices, knob

__all__ = ["EnsembleConfig"]

# scipy.stats.anderson's normal-case critical values (15, 10, 5, 2.5, 1 %) before the
# small-sample correction; scipy deprecates returning them, so they are kept here.
_AD_NORMAL = (0.561, 0.631, 0.752, 0.873, 1.035)


@dataclass(frozen=True)
class EnsembleConfig:
    """How latent variables are clustered into an ensemble.

    Parameters
    ----------
    method
        ``"consensus"`` (the default): make nodes identifiable first (rotate each model's code
        to identifiable axes), then take a cNMF-style consensus of their signed gene loadings
        with L chosen from a stability-versus-error curve (see :func:`consensus_ensemble`); it
        needs the PCA scores and model. ``"gmeans"``: the reference mode (docs/method.md
        section 4: GMeans chooses L, KMeans(L) labels the raw latent variables). The default
        follows bench/results/recovery.md: on four planted worlds the consensus recovers every
        module (matched top-30 precision 0.97-1.00), the reference 0.37-0.56.
    cluster_on
        gmeans mode: cluster the variables' latent values (docs/method.md section 4) or their IG gene-weight
        vectors (``"gene_weights"``).
    seed
        ``random_state`` of every KMeans (GMeans splits, final labelling) and of FastICA.
    n_init
        KMeans restarts.
    strictness
        Index into Anderson-Darling critical values (15/10/5/2.5/1 %); 3 = 2.5 % (reference).
    max_depth
        GMeans depth limit; the root counts as depth 1.
    n_clusters
        Fix ``L`` instead of choosing it (GMeans, or the consensus curve).
    labelling
        ``"kmeans"`` (KMeans(L), DeepProfile) or ``"gmeans"`` (the GMeans leaves, reference).
    scaling
        ``"standardize"`` each variable over samples before clustering (Euclidean distance
        then measures correlation; variables of models with different scales mix) or ``"none"``.
    sign_alignment
        ``"none"`` or ``"centroid"`` (see the module docstring). The consensus mode always
        aligns signs.
    max_sign_iter
        Rounds of sign flipping before giving up (a warning-free cap; converges in a few).
    rotation
        consensus mode, how each model run's whitened code is rotated to components
        (:func:`deeppert.ensemble.modes.rotate_code`): ``"ica"`` (FastICA: programs with
        non-Gaussian activities), ``"varimax"`` (raw varimax of the components' gene loadings:
        programs with sparse loadings, Gaussian activities included), ``"ica+varimax"`` (the
        default: both sets pooled, the density filter keeps what recurs across runs) or
        ``"none"`` (raw nodes). The default was chosen on world seed 1 of
        bench/bench_programs.py (docs/method.md): ICA alone misses Gaussian-activity programs,
        varimax alone misses overlapping modules, the pool meets the bar in every world.
    l_min, l_max
        consensus mode: the range of L scanned for the selection curve (inclusive).
    neighbourhood
        consensus mode: neighbours counted for a component's local density, as a fraction of
        the number of runs of a model shape (cNMF's ``local_neighborhood_size`` of its
        ``n_iter`` replicates): a program that only the runs of the larger latent dims hold
        still counts as recurring. Under the pooled rotation ``"ica+varimax"`` the count is
        doubled (a program has two components per run): two neighbours for 3-4 runs a
        shape, where one chance coincidence would keep a noise component. With
        ``density_threshold`` 0.4 chosen on world seed 1 of bench/bench_programs.py and the
        demo world (docs/method.md).
    density_threshold
        consensus mode: components whose mean distance to those neighbours (Euclidean between
        sign-aligned unit vectors, 0..sqrt 2) exceeds this are dropped as unreproducible.
    merge_threshold
        consensus mode: clusters of the chosen L whose median loadings have ``|cosine|`` at
        least this are joined into one program (near-copies of one program that KMeans split).
    gain_factor
        consensus mode: L is not chosen beyond the last L whose added clusters explain more
        of the PCA-score variance than this many average residual directions (noise and
        duplicate clusters explain about one or none); 0 lets any gain count.
    ica_max_iter
        FastICA iterations per model run (a cap: trained codes converge in far fewer; the
        planted worlds of bench/results/recovery.md score the same at 200 and 1000).
    ica_max_rows
        FastICA's unmixing is fitted on at most this many rows (a subsample seeded by ``seed``)
        of the code whitened over all rows, then applied to all rows: the cost per model run
        does not grow with the number of samples (:func:`rotate_code`).
    """

    method: Literal["gmeans", "consensus"] = knob(
        "consensus",
        "consensus (identifiable components, L by stability) or gmeans (the reference)",
    )
    cluster_on: Literal["latents", "gene_weights"] = knob(
        "latents", "gmeans mode: latent values or IG gene-weight vectors"
    )
    seed: int = knob(0, "seed of every KMeans and FastICA")
    n_init: int = 10
    strictness: int = 3
    max_depth: int = 10
    n_clusters: int | None = knob(None, "fix L instead of choosing it")
    labelling: Literal["kmeans", "gmeans"] = knob(
        "kmeans", "gmeans mode: KMeans(L) or the GMeans leaves"
    )
    scaling: Literal["standardize", "none"] = knob(
        "standardize", "gmeans mode: standardise each variable before clustering"
    )
    sign_alignment: Literal["none", "centroid"] = knob(
        "none", "gmeans mode: flip variables to their cluster's sign"
    )
    max_sign_iter: int = 50
    rotation: Literal["ica", "varimax", "ica+varimax", "none"] = knob(
        "ica+varimax", "consensus: per-model rotation"
    )
    l_min: int = knob(2, "consensus: smallest L scanned")
    l_max: int = knob(30, "consensus: largest L scanned")
    neighbourhood: float = 0.3
    density_threshold: float = knob(0.4, "consensus: outlier filter")
    merge_threshold: float = knob(
        0.9, "consensus: join clusters whose medians have |cos| at or above this"
    )
    gain_factor: float = knob(
        3.0, "consensus: an added cluster must explain this many average residual directions"
    )
    ica_max_iter: int = 200
    ica_max_rows: int = 5000

    def __post_init__(self) -> None:
        check_choices(self, "ensemble")
        if not 0 <= self.strictness < len(_AD_NORMAL):
            raise DeeppertError(f"ensemble.strictness must be 0..4, got {self.strictness}")
        for key in (
            "n_init",
            "max_depth",
            "max_sign_iter",
            "ica_max_iter",
            "ica_max_rows",
            "l_min",
            "l_max",
        ):
            if getattr(self, key) < 1:
                raise DeeppertError(f"ensemble.{key} must be positive, got {getattr(self, key)}")
        if self.n_clusters is not None and self.n_clusters < 1:
            raise DeeppertError(f"ensemble.n_clusters must be positive, got {self.n_clusters}")
        if self.l_max < self.l_min:
            raise DeeppertError(
                f"ensemble.l_min..l_max is empty: l_min = {self.l_min} > l_max = {self.l_max}"
            )
        if not 0 < self.neighbourhood <= 1:
            raise DeeppertError(
                f"ensemble.neighbourhood must lie in (0, 1], got {self.neighbourhood}"
            )
        if not 0 < self.merge_threshold <= 1:
            raise DeeppertError(
                f"ensemble.merge_threshold must lie in (0, 1], got {self.merge_threshold}"
            )
        if self.gain_factor < 0:
            raise DeeppertError(f"ensemble.gain_factor must be >= 0, got {self.gain_factor}")
        if self.density_threshold <= 0:
            raise DeeppertError(
                f"ensemble.density_threshold must be positive, got {self.density_threshold}"
            )

    def to_dict(self) -> dict:
        return asdict(self)
