"""YAML experiment configs parsed into typed, validated, frozen dataclasses: the one schema.

One file in ``configs/`` describes one experiment. Every section is the config dataclass of
the component it drives (``model`` -> :class:`~deeppert.models.ModelConfig` fields, ``train``
-> :class:`~deeppert.train.TrainConfig`, ...), so a knob is declared once, on its component's
dataclass; ``to_dict()`` becomes the sweep parent run's MLflow params (flattened) and the
config hash. (Ray Tune's search space is the sweep's trial plan, not this dict.) An unknown
key, a wrong type or a bad value raises :class:`~deeppert.errors.DeeppertError` naming it,
e.g. ``config.yaml: train.epochz: unknown key``. The command-line flags of every front end
are derived from the same fields (:mod:`deeppert.schema`), and this module, like every config
module it imports, loads neither numpy, pandas nor torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from deeppert.ensemble.config import EnsembleConfig
from deeppert.errors import DeeppertError
from deeppert.file_formats import Format
from deeppert.ig_config import IGConfig
from deeppert.schema import check_choices, knob
from deeppert.synth_config import SynthConfig
from deeppert.target_config import TargetConfig
from deeppert.train_config import (
    ModelConfig,
    ModelKind,
    PreprocessConfig,
    SearchConfig,
    TrainConfig,
)

__all__ = [
    "DataConfig",
    "LOAD_OPTIONS",
    "GridConfig",
    "ArchitectureConfig",
    "SweepConfig",
    "TrackingConfig",
    "ExperimentConfig",
    "load_config",
    "parse_config",
    "build_dataclass",
]


@dataclass(frozen=True)
class DataConfig:
    """One signature matrix (one cell line): a file, or the synthetic generator when ``path`` is null.

    The fields from ``format`` on (but ``synthetic``) are :func:`deeppert.data.load_signatures`'
    options (:data:`LOAD_OPTIONS`), e.g. a GCTX's own metadata: ``pert_type: trt_cp`` and
    ``id_column: pert_iname`` need no external table; the commands that read a file take them
    as flags.
    """

    name: str = "synthetic"
    path: str | None = None
    format: Format | None = knob(None, "file format (default: from the file name)")
    cell_line: str | None = knob(None, "keep one cell line (file metadata, or --siginfo)")
    fill_missing: bool = knob(False, "fill missing values with 0")
    synthetic: SynthConfig = field(default_factory=SynthConfig)
    id_column: str | None = knob(
        None, "id column; for GCT/GCTX/h5ad a metadata field such as pert_iname or pert_id"
    )
    gene_columns: tuple[str, ...] | None = knob(
        None, "gene columns: comma-separated, or @FILE with one name per line",
        metavar="LIST|@FILE",
    )  # fmt: skip
    pert_type: str | None = knob(None, "keep one perturbation type, e.g. trt_cp")
    siginfo: str | None = knob(None, "siginfo_beta.txt / sig_info.txt")
    geneinfo: str | None = knob(None, "geneinfo_beta.txt / gene_info.txt")
    compoundinfo: str | None = knob(None, "compoundinfo_beta.txt / pert_info.txt")

    def __post_init__(self) -> None:
        check_choices(self, "datasets")

    def to_dict(self) -> dict:
        return asdict(self)

    def load_options(self) -> dict:
        """Keyword arguments of :func:`deeppert.data.load_signatures` for ``path``."""
        options = {name: getattr(self, name) for name in LOAD_OPTIONS}
        options["gene_columns"] = list(self.gene_columns) if self.gene_columns else None
        return options


#: The fields of :class:`DataConfig` that are :func:`deeppert.data.load_signatures`' options.
LOAD_OPTIONS = ("format", "id_column", "gene_columns", "fill_missing", "cell_line", "pert_type",
                "siginfo", "geneinfo", "compoundinfo")  # fmt: skip


#: DataConfig fields added after configs were hashed: left out of the hash while unset, so
#: existing sweeps keep their name and resume.
_UNHASHED_WHEN_UNSET = ("id_column", "gene_columns", "pert_type", "siginfo", "geneinfo",
                        "compoundinfo")  # fmt: skip


@dataclass(frozen=True)
class GridConfig:
    """The model x latent dim x run grid; runs are numbered 0 .. runs-1 (seed: ``seed_for_run``)."""

    models: tuple[ModelKind, ...] = knob(("AE", "DAE", "VAE"), "comma-separated models")
    latent_dims: tuple[int, ...] = knob(
        (5, 10, 25, 50), "comma-separated latent dims", metavar="D1,D2"
    )
    runs: int = knob(5, "runs (seeds) per model shape")
    baselines: bool = True

    def __post_init__(self) -> None:
        if not self.models or not self.latent_dims:
            raise DeeppertError("grid.models and grid.latent_dims must not be empty")
        check_choices(self, "grid")
        if any(d < 1 for d in self.latent_dims):
            raise DeeppertError(f"grid.latent_dims must be positive, got {list(self.latent_dims)}")
        if self.runs < 1:
            raise DeeppertError(f"grid.runs must be at least 1, got {self.runs}")

    def to_dict(self) -> dict:
        return asdict(self)


# ModelConfig fields set per grid point (by the grid and the PCA size), not in the YAML.
GRID_POINT_FIELDS = ("kind", "latent_dim", "n_inputs")


def _architecture_post_init(self) -> None:
    ModelConfig(**self.to_dict())  # ModelConfig's own validation, one place


def _architecture_build(self, kind: ModelKind, latent_dim: int, n_inputs: int) -> ModelConfig:
    """The :class:`ModelConfig` of one grid point."""
    return ModelConfig(kind=kind, latent_dim=latent_dim, n_inputs=n_inputs, **self.to_dict())


_MODEL_HINTS = typing.get_type_hints(ModelConfig)
# The ``model:`` section: every ModelConfig field but the per-grid-point ones, with the same
# types, defaults and validation, so a new architecture knob is declared once, on ModelConfig.
ArchitectureConfig = dataclasses.make_dataclass(
    "ArchitectureConfig",
    [
        (f.name, _MODEL_HINTS[f.name], field(default=f.default))
        for f in dataclasses.fields(ModelConfig)
        if f.name not in GRID_POINT_FIELDS
    ],
    frozen=True,
    namespace={
        "__module__": __name__,
        "__doc__": "Architecture knobs shared by every grid point: ModelConfig's fields but "
        f"{', '.join(GRID_POINT_FIELDS)} (set per grid point).",
        "__post_init__": _architecture_post_init,
        "to_dict": lambda self: asdict(self),
        "build": _architecture_build,
    },
)


@dataclass(frozen=True)
class SweepConfig:
    """Ray Tune resources and fault tolerance; the same file scales from a laptop to a cluster."""

    ray_address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    seeds_per_trial: int = 0
    max_failures: int = 2
    max_concurrent_trials: int = 0
    #: A trial renews tag ``deeppert.heartbeat`` on the runs it trains this often (seconds);
    #: a RUNNING run whose heartbeat is older than ``claim_stale_seconds`` (or whose worker
    #: process on this host is gone) is a dead attempt that another trial may take over.
    heartbeat_seconds: float = 10.0
    claim_stale_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise DeeppertError("sweep.cpus_per_trial must be > 0 and sweep.gpus_per_trial >= 0")
        if self.seeds_per_trial < 0 or self.max_failures < 0:
            raise DeeppertError("sweep.seeds_per_trial and sweep.max_failures must be >= 0")
        if not 0 < self.heartbeat_seconds < self.claim_stale_seconds:
            raise DeeppertError(
                "sweep.heartbeat_seconds must be > 0 and below sweep.claim_stale_seconds"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrackingConfig:
    """Where trials log: always an MLflow server URI, never a sqlite:/// file shared by writers."""

    uri: str = "http://127.0.0.1:5000"
    experiment: str = "deeppert"
    #: The client's retry budget for one request to the server (MLflow's
    #: ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``_BACKOFF_FACTOR`` / ``_TIMEOUT``): waits of
    #: factor * 2**k seconds (capped at 120) between tries; the defaults ride out about 4
    #: minutes of outage. Past it, a job ends with one line and exit code 2.
    http_max_retries: int = 7
    http_backoff_factor: int = 2
    http_timeout: int = 120

    def __post_init__(self) -> None:
        if self.http_max_retries < 0 or self.http_backoff_factor < 0 or self.http_timeout <= 0:
            raise DeeppertError(
                "tracking.http_max_retries and http_backoff_factor must be >= 0, http_timeout > 0"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: data (cell lines), preprocessing, grid, training, attribution,
    ensembling, target combination, sweep resources and tracking server."""

    name: str = "deeppert"
    datasets: tuple[DataConfig, ...] = (DataConfig(),)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    model: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    attribution: IGConfig = field(default_factory=IGConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    search: SearchConfig | None = None  # optional model search (ray_jobs/search.py)

    def __post_init__(self) -> None:
        names = [d.name for d in self.datasets]
        if not names:
            raise DeeppertError("datasets: at least one dataset is required")
        if len(set(names)) != len(names):
            raise DeeppertError(f"datasets: names must be unique, got {names}")

    def dataset(self, name: str) -> DataConfig:
        for d in self.datasets:
            if d.name == name:
                return d
        raise DeeppertError(f"no dataset named {name!r}; have {[d.name for d in self.datasets]}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def sha256(self) -> str:
        """Hash of what determines the results: the key that tells two sweeps' trials apart.

        ``tracking`` (where results are logged) and ``sweep`` (how trials are scheduled) are
        left out, so pointing the same experiment at another server or cluster resumes it.
        """
        science = {k: v for k, v in self.to_dict().items() if k not in ("tracking", "sweep")}
        if science.get("search") is None:  # configs without a search keep their hash
            science.pop("search", None)
        for dataset in science["datasets"]:
            for key in _UNHASHED_WHEN_UNSET:
                if dataset.get(key) is None:
                    dataset.pop(key, None)
        return hashlib.sha256(json.dumps(science, sort_keys=True).encode()).hexdigest()


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a YAML experiment config; errors name the file and the key.

    The file must be UTF-8 and name at least one setting: an empty file would silently run
    the full default grid. A key given twice in one mapping is an error (YAML would keep the
    last one, dropping a whole section without a word).
    """
    path = Path(path)
    if not path.is_file():
        raise DeeppertError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DeeppertError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from exc
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise DeeppertError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise DeeppertError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if raw is None:
        raise DeeppertError(
            f"{path}: empty config (no settings); write at least its datasets, or start "
            "from a file in configs/"
        )
    try:
        return parse_config(raw)
    except DeeppertError as exc:
        raise DeeppertError(f"{path}: {exc}") from exc


class _DuplicateKey(yaml.YAMLError):
    """A mapping of the config gives one key twice."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping, naming it."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(f"key {key!r} given twice (lines {seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_config(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a plain mapping (parsed YAML) into an :class:`ExperimentConfig`."""
    return build_dataclass(ExperimentConfig, raw, "")


def build_dataclass(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from mapping ``data``, checking keys and types recursively."""
    label = where or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise DeeppertError(f"{label}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise DeeppertError(
            f"{_join(where, unknown[0])}: unknown key; valid keys here: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(hints[k], v, _join(where, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except DeeppertError as exc:
        raise DeeppertError(f"{label}: {exc}") from exc


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, where)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except DeeppertError as exc:
                errors.append(str(exc))
        raise DeeppertError(errors[0])
    if origin is Literal:
        if value not in get_args(tp):
            raise DeeppertError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value]
        item_tp = get_args(tp)[0] if get_args(tp) else Any
        items = [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise DeeppertError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DeeppertError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DeeppertError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise DeeppertError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise DeeppertError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"{where}: unsupported config type {tp!r}")
