"""Seeded L1000-like synthetic data with planted gene modules, and its ground truth.

Model: ``X = A @ L + sigma * E`` over the 978 real landmark symbols. ``K`` hidden programs
(activities ``A``, samples x K, unit variance) each load strongly on their own module of
``module_size`` genes (|loading| ~ U(0.8, 1.2) * ``module_loading``, random sign, or exactly
half negative with ``signs="balanced"``; consecutive modules share ``module_overlap`` genes)
and weakly and densely on every other gene (N(0, ``background_loading``^2)).

Nonlinear worlds (``response``, ``interaction``): a module gene responds to its program
through a shape ``f`` instead of linearly, ``X = sum_k f_kg(a_k) L_kg + noise``, each shape
standardised to unit variance over the samples: ``"saturating"`` gives every module gene
``tanh(2a)``; ``"mixed"`` gives the genes of each module, in a seeded order, linear,
``tanh(2a)`` and threshold ``max(a - 0.5, 0)`` responses in turn (a third each);
``interaction`` makes the last module respond to the product of the last two programs'
activities. Background loadings stay linear. ``SyntheticData.responses`` names each
loading's shape.
``sigma`` is solved so that the realised signal fraction, trace cov(A L) / trace cov(X),
equals ``signal_fraction`` exactly on the drawn matrix; then everything is rescaled so the
average gene variance is 1 (the scale of level-5 z-scores). A known-target-pair table set,
in the layout of the real TargetPair tables, pairs genes of the same planted module for a
made-up disease, plus cross-module decoy pairs for a second made-up disease, so the whole
pipeline, target combination included, runs without ../shared.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppert.atomic import atomic_dir, write_json, write_parquet
from deeppert.data._io import save_signatures
from deeppert.data._signatures import Signatures, landmark_genes
from deeppert.errors import DeeppertError
from deeppert.synth_config import Activity, Response, Signs, SynthConfig

__all__ = [
    "Activity",
    "Response",
    "Signs",
    "SynthConfig",
    "SyntheticData",
    "make_synthetic",
    "write_synthetic",
    "TARGET_PAIR_FILES",
    "SHAPES",
    "module_recovery",
]

SHAPES = ("linear", "tanh", "threshold", "product")

# File names of the three known-target-pair tables (as in target_combination/ of the reference).
TARGET_PAIR_FILES = (
    "TargetPair_Information.txt",
    "TargetPair_DrugCombination_Mapping_Table.txt",
    "Drug_Combination_Clinicaltrial_Phase_Information.txt",
)
_DOSES = (0.04, 0.12, 0.37, 1.11, 3.33, 10.0)


@dataclass
class SyntheticData:
    """A synthetic matrix and everything that was planted in it.

    Attributes
    ----------
    signatures
        Samples x 978 landmark genes, ids ``SYN000001``...; metadata ``pert_id``, ``dose``,
        ``cell_iname``, ``dominant_program``.
    membership
        Genes x programs, bool: the planted modules.
    loadings
        Programs x genes, as used to build the matrix (after rescaling): the signal is
        ``activities @ loadings`` in a linear world, else each entry multiplies its
        response (``responses``).
    activities
        Samples x programs (index = sample ids).
    signal_fraction
        Realised trace cov(signal) / trace cov(matrix).
    noise_std
        Standard deviation of the added Gaussian noise (after rescaling).
    known_pairs
        ``tpid, genename1, genename2, disease, program`` (program empty for decoys).
    target_tables
        The three tables named in :data:`TARGET_PAIR_FILES`.
    responses
        Programs x genes: each loading's response shape, one of :data:`SHAPES`
        (``"linear"`` everywhere in a linear world and off the modules).
    """

    signatures: Signatures
    membership: pd.DataFrame
    loadings: pd.DataFrame
    activities: pd.DataFrame
    signal_fraction: float
    noise_std: float
    known_pairs: pd.DataFrame
    target_tables: dict[str, pd.DataFrame]
    config: SynthConfig = field(default_factory=SynthConfig)
    responses: pd.DataFrame | None = None

    def module_genes(self, program: int | str) -> list[str]:
        """Genes of one planted module (by position or name), in landmark order."""
        col = self.membership.columns[program] if isinstance(program, int) else program
        return list(self.membership.index[self.membership[col]])

    def summary(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "n_samples": self.signatures.n_samples,
            "n_genes": self.signatures.n_genes,
            "programs": list(self.membership.columns),
            "modules": {p: self.module_genes(p) for p in self.membership.columns},
            "signal_fraction": self.signal_fraction,
            "target_signal_fraction": self.config.signal_fraction,
            "noise_std": self.noise_std,
            "n_known_pairs": int((self.known_pairs["disease"] == self.config.disease).sum()),
            "n_decoy_pairs": int((self.known_pairs["disease"] == self.config.decoy_disease).sum()),
        }


def _activities(rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    shape = (cfg.n_samples, cfg.n_programs)
    if cfg.activity == "gaussian":
        return rng.standard_normal(shape)
    if cfg.activity == "laplace":
        return rng.laplace(scale=1 / math.sqrt(2), size=shape)
    return rng.standard_t(cfg.student_df, size=shape) * math.sqrt(
        (cfg.student_df - 2) / cfg.student_df
    )


def _standardise(v: np.ndarray) -> np.ndarray:
    sd = v.std(0)
    return (v - v.mean(0)) / np.where(sd > 0, sd, 1.0)


def _shaped_signal(act: np.ndarray, loadings: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """``sum_k f_kg(a_k) L_kg`` with ``f`` named per entry by ``shape`` (programs x genes);
    ``"product"`` is the product of the last two programs' activities, standardised."""
    prod = _standardise(act[:, -1:] * act[:, -2:-1])
    responses = {
        "linear": act,
        "tanh": _standardise(np.tanh(2 * act)),
        "threshold": _standardise(np.maximum(act - 0.5, 0)),
        "product": np.repeat(prod, act.shape[1], axis=1),
    }
    signal = np.zeros((act.shape[0], loadings.shape[1]))
    for name, f in responses.items():
        signal += f @ np.where(shape == name, loadings, 0.0)
    return signal


def _pairs(
    rng: np.random.Generator, cfg: SynthConfig, modules: list[np.ndarray], genes: np.ndarray
) -> pd.DataFrame:
    rows = []
    per_module = [cfg.n_known_pairs // cfg.n_disease_programs] * cfg.n_disease_programs
    for k in range(cfg.n_known_pairs % cfg.n_disease_programs):
        per_module[k] += 1
    for k, n in enumerate(per_module):
        combos = list(itertools.combinations(sorted(genes[modules[k]]), 2))
        for i in np.sort(rng.choice(len(combos), size=n, replace=False)):
            rows.append((*combos[i], cfg.disease, f"P{k + 1}"))
    member = np.zeros((len(genes), len(modules)), dtype=bool)
    for k, m in enumerate(modules):
        member[m, k] = True
    seen: set[tuple[str, str]] = set()
    while len(seen) < cfg.n_decoy_pairs:
        a, b = rng.choice(len(genes), size=2, replace=False)
        if (member[a] & member[b]).any():
            continue
        pair = tuple(sorted((str(genes[a]), str(genes[b]))))
        if pair not in seen:
            seen.add(pair)
            rows.append((*pair, cfg.decoy_disease, ""))
    frame = pd.DataFrame(rows, columns=["genename1", "genename2", "disease", "program"])
    frame.insert(0, "tpid", [f"TP{i + 1:05d}" for i in range(len(frame))])
    return frame


def _target_tables(pairs: pd.DataFrame, cfg: SynthConfig) -> dict[str, pd.DataFrame]:
    n = len(pairs)
    info = pd.DataFrame(
        {
            "tpid": pairs["tpid"],
            "tp_name": pairs["genename1"] + ";" + pairs["genename2"],
            "genename1": pairs["genename1"],
            "genename2": pairs["genename2"],
            "tp_moatype": "CIT+CIT",
            "tp_tcrd_tdl": "Tclin+Tclin",
            "gosemsinbp": 0.5,
            "gosemsincc": 0.5,
            "gosemsinmf": 0.5,
            "tp_keggpathways_no": 0,
            "tp_reactomepathways_no": 0,
            "tp_wikipathways_no": 0,
            "tp_associateddrugs_no": 1,
            "tp_associateddiseases_no": 1,
        }
    )
    dcid = [f"DC{i + 1:05d}" for i in range(n)]
    mapping = pd.DataFrame({"dcid": dcid, "tpid": pairs["tpid"]})
    is_decoy = (pairs["disease"] == cfg.decoy_disease).to_numpy()
    trials = pd.DataFrame(
        {
            "dcid": dcid,
            "dc_name": [f"SYNDRUG{2 * i + 1:04d};SYNDRUG{2 * i + 2:04d}" for i in range(n)],
            "dc_sourcetype": "Synthetic",
            "fdid": np.where(is_decoy, "FD90002", "FD90001"),
            "fd_name": pairs["disease"].to_numpy(),
            "md_name": pairs["disease"].to_numpy(),
            "maxphase": "Phase 2",
        }
    )
    return dict(zip(TARGET_PAIR_FILES, (info, mapping, trials), strict=True))


def make_synthetic(config: SynthConfig | None = None) -> SyntheticData:
    """Draw a synthetic matrix with planted modules (deterministic given ``config.seed``)."""
    cfg = config or SynthConfig()
    genes = np.array(landmark_genes())
    n, g, k = cfg.n_samples, len(genes), cfg.n_programs
    r_mod, r_load, r_act, r_noise, r_meta, r_pair, r_shape = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(7)
    )

    order = r_mod.permutation(g)
    step = cfg.module_size - cfg.module_overlap
    modules = [np.sort(order[i * step : i * step + cfg.module_size]) for i in range(k)]
    member = np.zeros((g, k), dtype=bool)
    for j, m in enumerate(modules):
        member[m, j] = True

    loadings = r_load.normal(0.0, cfg.background_loading, size=(k, g))
    for j, m in enumerate(modules):
        mag = r_load.uniform(0.8, 1.2, size=len(m)) * cfg.module_loading
        if cfg.signs == "random":
            sign = r_load.choice([-1.0, 1.0], size=len(m))
        else:
            half = len(m) // 2
            sign = r_load.permutation(np.repeat([-1.0, 1.0], [half, len(m) - half]))
        loadings[j, m] = mag * sign

    shape = np.full((k, g), "linear", dtype=object)
    for j, m in enumerate(modules):
        if cfg.response == "saturating":
            shape[j, m] = "tanh"
        elif cfg.response == "mixed":
            shape[j, r_shape.permutation(m)] = np.resize(["linear", "tanh", "threshold"], len(m))
    if cfg.interaction:
        shape[k - 1, modules[k - 1]] = "product"

    act = _activities(r_act, cfg)
    # Two n x g float64 buffers at most (15,000 x 978 is 112 MiB each): centre in place and
    # form x in the noise buffer; einsum sums products without a temporary.
    signal = act @ loadings if cfg.linear else _shaped_signal(act, loadings, shape)
    noise = r_noise.standard_normal((n, g))
    s_mean, e_mean = signal.mean(0), noise.mean(0)
    signal -= s_mean
    noise -= e_mean
    v_s = float(np.einsum("ij,ij->", signal, signal))
    v_e = float(np.einsum("ij,ij->", noise, noise))
    cross = float(np.einsum("ij,ij->", signal, noise))
    # Solve ||sc + s*ec||^2 = v_s / f for the noise scale s >= 0.
    f = cfg.signal_fraction
    sigma = (-cross + math.sqrt(cross * cross + v_e * (v_s / f - v_s))) / v_e
    x = noise
    x *= sigma
    x += signal  # centred x = centred signal + sigma * centred noise
    del signal, noise
    v_x = float(np.einsum("ij,ij->", x, x))
    scale = math.sqrt(n * g / v_x)
    realised = v_s / v_x  # invariant under the common rescaling
    x += s_mean + sigma * e_mean
    x *= scale
    loadings *= scale

    ids = np.array([f"SYN{i + 1:06d}" for i in range(n)])
    programs = [f"P{j + 1}" for j in range(k)]
    n_cpd = max(1, n // 4)
    meta = pd.DataFrame(
        {
            "pert_id": [f"SYNCPD{c + 1:05d}" for c in r_meta.integers(0, n_cpd, size=n)],
            "dose": r_meta.choice(_DOSES, size=n),
            "cell_iname": cfg.cell_line,
            "dominant_program": np.array(programs)[np.abs(act).argmax(1)],
        }
    )
    sig = Signatures(x, ids, list(genes), meta, source="synthetic")
    pairs = _pairs(r_pair, cfg, modules, genes)
    return SyntheticData(
        signatures=sig,
        membership=pd.DataFrame(member, index=pd.Index(genes, name="gene"), columns=programs),
        loadings=pd.DataFrame(loadings, index=pd.Index(programs, name="program"), columns=genes),
        activities=pd.DataFrame(act, index=pd.Index(ids, name="sample_id"), columns=programs),
        signal_fraction=realised,
        noise_std=sigma * scale,
        known_pairs=pairs,
        target_tables=_target_tables(pairs, cfg),
        config=cfg,
        responses=pd.DataFrame(
            shape.astype(str), index=pd.Index(programs, name="program"), columns=genes
        ),
    )


def write_synthetic(data: SyntheticData, out_dir: str | os.PathLike) -> Path:
    """Write ``data`` to ``out_dir`` atomically (the folder appears whole or not at all).

    Layout: ``signatures.parquet``; ``ground_truth/`` with ``module_membership.parquet``
    (genes x programs), ``loadings.parquet`` and ``responses.parquet`` (programs x genes:
    each loading's response shape), ``activities.parquet``
    (samples x programs), ``known_pairs.parquet`` and ``summary.json``; ``target_pairs/``
    with the three tab-separated tables of :data:`TARGET_PAIR_FILES`. An existing earlier
    output is replaced; any other non-empty folder is refused.
    """
    out = Path(out_dir)
    if out.exists() and (
        not out.is_dir()
        or (any(out.iterdir()) and not (out / "ground_truth" / "summary.json").is_file())
    ):
        raise DeeppertError(
            f"{out}: exists and is not an earlier synth output; refusing to replace it"
        )
    with atomic_dir(out) as tmp:
        save_signatures(data.signatures, tmp / "signatures.parquet")
        gt = tmp / "ground_truth"
        write_parquet(data.membership, gt / "module_membership.parquet")
        write_parquet(data.loadings, gt / "loadings.parquet")
        if data.responses is not None:
            write_parquet(data.responses, gt / "responses.parquet")
        write_parquet(data.activities, gt / "activities.parquet")
        write_parquet(data.known_pairs.set_index("tpid"), gt / "known_pairs.parquet")
        write_json(data.summary(), gt / "summary.json")
        (tmp / "target_pairs").mkdir()
        for name, table in data.target_tables.items():
            table.to_csv(tmp / "target_pairs" / name, sep="\t", index=False)
    return out


def module_recovery(weights: pd.DataFrame, membership: pd.DataFrame) -> pd.DataFrame:
    """How well programs (rows of ``weights``, programs x genes) recover planted modules.

    For every planted module (a column of ``membership``, genes x modules, bool) and program:
    the top-k precision of the program's ``|weight|``, k = the module's size. Modules and
    programs are matched one-to-one (Hungarian, maximising precision); the frame has one row
    per module with its matched ``program`` (None when there are fewer programs) and
    ``precision``, and the full module x program precision matrix as ``attrs["matrix"]``.
    """
    from scipy.optimize import linear_sum_assignment

    genes = [g for g in membership.index if g in weights.columns]
    if not genes:
        raise DeeppertError("the programs share no gene with the planted modules")
    member = membership.loc[genes].to_numpy(dtype=bool)  # genes x modules
    w = np.abs(weights[genes].to_numpy(dtype=np.float64))  # programs x genes
    order = np.argsort(-w, axis=1, kind="stable")
    precision = np.zeros((member.shape[1], len(w)))
    for m in range(member.shape[1]):
        k = int(member[:, m].sum())
        precision[m] = member[order[:, :k], m].mean(1) if k else 0.0
    rows, cols = linear_sum_assignment(-precision)
    matched = dict(zip(rows, cols, strict=True))
    out = pd.DataFrame(
        {
            "module": list(membership.columns),
            "program": [
                weights.index[matched[m]] if m in matched else None for m in range(member.shape[1])
            ],
            "precision": [
                precision[m, matched[m]] if m in matched else 0.0 for m in range(member.shape[1])
            ],
        }
    )
    out.attrs["matrix"] = pd.DataFrame(precision, index=membership.columns, columns=weights.index)
    return out
