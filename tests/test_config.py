"""Typed YAML experiment configs: unknown keys, wrong types and bad values name the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeppert.config import ExperimentConfig, GridConfig, load_config, parse_config
from deeppert.data.synthetic import SynthConfig
from deeppert.errors import DeeppertError
from deeppert.preprocess import PreprocessConfig
from deeppert.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

FULL = """\
name: tiny
datasets:
  - name: s
    synthetic: {n_samples: 300, n_programs: 3, seed: 4}
  - name: file
    path: data/x.csv
    cell_line: A549
    fill_missing: true
preprocess: {n_components: 20, val_fraction: 0.2, standardize: true}
grid: {models: [AE, VAE], latent_dims: [5, 10], runs: 3, baselines: false}
model: {dropout: 0.2, vae_decoder: reference}
train: {epochs: 7, lr_max: 1, dtype: float64}
sweep: {cpus_per_trial: 0.5}
tracking: {uri: "http://127.0.0.1:5001", experiment: t}
"""


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_full_config_parses_into_typed_dataclasses(tmp_path):
    cfg = load_config(_write(tmp_path, FULL))
    assert cfg.name == "tiny"
    s, f = cfg.datasets
    assert s.path is None and s.synthetic == SynthConfig(n_samples=300, n_programs=3, seed=4)
    assert f.path == "data/x.csv" and f.cell_line == "A549" and f.fill_missing is True
    assert f.synthetic == SynthConfig()  # defaults fill what is left out
    assert cfg.preprocess == PreprocessConfig(n_components=20, val_fraction=0.2, standardize=True)
    assert cfg.grid == GridConfig(
        models=("AE", "VAE"), latent_dims=(5, 10), runs=3, baselines=False
    )
    assert isinstance(cfg.grid.latent_dims, tuple)
    assert cfg.model.dropout == 0.2 and cfg.model.vae_decoder == "reference"
    assert cfg.train == TrainConfig(epochs=7, lr_max=1.0, dtype="float64")
    assert isinstance(cfg.train.lr_max, float)  # an int where a float is expected is widened
    assert cfg.sweep.cpus_per_trial == 0.5 and cfg.tracking.experiment == "t"
    assert cfg.dataset("file") is f
    with pytest.raises(DeeppertError, match="no dataset named 'x'"):
        cfg.dataset("x")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_file_is_an_error_naming_it(tmp_path, text):
    """An empty file would run the full default grid (about an hour): refuse it."""
    path = _write(tmp_path, text)
    with pytest.raises(DeeppertError, match=f"^{path}: empty config"):
        load_config(path)
    assert load_config(_write(tmp_path, "name: x\n", "one.yaml")) == ExperimentConfig(name="x")


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        (
            "name: a\ntrain: {epochs: 3}\ngrid: {runs: 1}\ntrain: {batch_size: 8}\n",
            "train",
            "2 and 4",
        ),
        ("name: a\ntrain:\n  epochs: 3\n  lr_max: 1.0\n  epochs: 4\n", "epochs", "3 and 5"),
        ("datasets:\n  - name: a\n    synthetic: {seed: 1, seed: 2}\n", "seed", "3 and 3"),
    ],
)
def test_a_key_given_twice_is_an_error_naming_file_key_and_lines(tmp_path, text, key, lines):
    """YAML keeps the last of two equal keys, silently dropping a whole section."""
    path = _write(tmp_path, text)
    with pytest.raises(DeeppertError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: key {key!r} given twice (lines {lines})"


def test_a_non_utf8_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DeeppertError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (byte 0xe9 at offset 9)"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configs_in_the_repository_parse(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.datasets


def test_the_repository_has_configs():
    assert CONFIGS, "configs/ holds no YAML file"


@pytest.mark.parametrize(
    "text, key",
    [
        ("epochz: 3\n", "epochz"),
        ("train: {epochz: 3}\n", "train.epochz"),
        ("datasets: [{name: a, synthetic: {n_sample: 30}}]\n", "datasets[0].synthetic.n_sample"),
        ("grid: {models: [AE], runz: 2}\n", "grid.runz"),
    ],
)
def test_unknown_key_names_the_key_path_and_the_file(tmp_path, text, key):
    path = _write(tmp_path, text)
    with pytest.raises(DeeppertError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: unknown key"), message
    assert "valid keys here" in message


def test_unknown_key_lists_the_valid_ones(tmp_path):
    with pytest.raises(DeeppertError, match="valid keys here: .*epochs.*lr_max"):
        load_config(_write(tmp_path, "train: {epochz: 3}\n"))


@pytest.mark.parametrize(
    "text, pattern",
    [
        ('train: {epochs: "ten"}\n', r"train\.epochs: expected an integer, got 'ten'"),
        ("train: {epochs: 2.5}\n", r"train\.epochs: expected an integer, got 2\.5"),
        ("train: {epochs: true}\n", r"train\.epochs: expected an integer, got True"),
        ("train: {lr_max: fast}\n", r"train\.lr_max: expected a number"),
        (
            "grid: {models: [XYZ]}\n",
            r"grid\.models\[0\]: 'XYZ' is not one of \['AE', 'DAE', 'VAE'\]",
        ),
        ("grid: {models: [AE, XYZ]}\n", r"grid\.models\[1\]: 'XYZ'"),
        ("grid: {baselines: yes please}\n", r"grid\.baselines: expected true/false"),
        ("train: {dtype: float16}\n", r"train\.dtype: 'float16' is not one of"),
        ("model: {vae_decoder: flipped}\n", r"model\.vae_decoder: 'flipped'"),
        ("name: 3\n", r"name: expected a string"),
        ("train: 5\n", r"train: expected a mapping, got int"),
        ("datasets: [{name: a, path: 7}]\n", r"datasets\[0\]\.path: expected a string"),
        ("datasets: [{name: a, format: xlsx}]\n", r"datasets\[0\]\.format: 'xlsx' is not one of"),
        ("datasets: [{name: a, gene_columns: [A, 3]}]\n", r"datasets\[0\]\.gene_columns\[1\]"),
    ],
)
def test_wrong_type_or_value_names_the_key(tmp_path, text, pattern):
    path = _write(tmp_path, text)
    with pytest.raises(DeeppertError, match=pattern) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("grid: {runs: 0}\n", r"grid: grid\.runs must be at least 1"),
        ("train: {epochs: 0}\n", r"train: train\.epochs must be positive"),
        ("preprocess: {val_fraction: 1.5}\n", r"preprocess: val_fraction must be in"),
        ("datasets: []\n", r"at least one dataset"),
        ("datasets: [{name: a}, {name: a}]\n", r"names must be unique"),
        (
            "datasets: [{name: a, synthetic: {signal_fraction: 2}}]\n",
            r"datasets\[0\]\.synthetic: .*signal_fraction",
        ),
    ],
)
def test_bad_values_name_the_section(tmp_path, text, pattern):
    with pytest.raises(DeeppertError, match=pattern):
        load_config(_write(tmp_path, text))


def test_file_level_errors(tmp_path):
    with pytest.raises(DeeppertError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = _write(tmp_path, "train: {epochs: [1\n")
    with pytest.raises(DeeppertError, match=f"{bad}: not valid YAML"):
        load_config(bad)
    top = _write(tmp_path, "- 1\n- 2\n", "list.yaml")
    with pytest.raises(DeeppertError, match=f"{top}: config: expected a mapping, got list"):
        load_config(top)


def test_a_scalar_where_a_list_is_expected_becomes_a_one_item_tuple():
    assert parse_config({"grid": {"latent_dims": 5, "models": "AE"}}).grid == GridConfig(
        models=("AE",), latent_dims=(5,)
    )


def test_sha256_is_stable_and_tracks_content(tmp_path):
    a = load_config(_write(tmp_path, FULL, "a.yaml"))
    # same content, keys in another order and flow vs block style
    reordered = FULL.replace(
        "train: {epochs: 7, lr_max: 1, dtype: float64}",
        "train:\n  dtype: float64\n  lr_max: 1.0\n  epochs: 7",
    )
    b = load_config(_write(tmp_path, reordered, "b.yaml"))
    assert a.sha256() == b.sha256() == a.sha256()
    assert len(a.sha256()) == 64
    assert all(ch in "0123456789abcdef" for ch in a.sha256())
    c = load_config(_write(tmp_path, FULL.replace("epochs: 7", "epochs: 8"), "c.yaml"))
    assert c.sha256() != a.sha256()
    # to_dict is plain JSON (tuples as lists), so the hash survives a round trip
    assert parse_config(a.to_dict()).sha256() == a.sha256()


def test_architecture_section_is_model_config_less_the_grid_point():
    import dataclasses

    from deeppert.config import GRID_POINT_FIELDS, ArchitectureConfig, parse_config
    from deeppert.errors import DeeppertError
    from deeppert.models import ModelConfig

    model = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    arch = {f.name: f.default for f in dataclasses.fields(ArchitectureConfig)}
    assert arch == {k: v for k, v in model.items() if k not in GRID_POINT_FIELDS}
    assert ArchitectureConfig().build("AE", 5, 30) == ModelConfig(
        kind="AE", latent_dim=5, n_inputs=30
    )
    with pytest.raises(DeeppertError, match="model: dropout must be in"):
        parse_config({"model": {"dropout": 1.5}})


def test_every_dataset_load_option_is_a_flag_with_its_fields_help():
    """The commands that read a file take DataConfig's load options as flags, each with the
    help line of its field, so `deeppert train --data` drops none of them."""
    import argparse

    from deeppert.cli._data import add_load_arguments
    from deeppert.config import LOAD_OPTIONS, DataConfig
    from deeppert.schema import help_of

    parser = argparse.ArgumentParser()
    add_load_arguments(parser)
    helps = {a.dest: a.help for a in parser._actions if a.dest != "help"}
    assert set(helps) == set(LOAD_OPTIONS) == set(DataConfig().load_options())
    for name in LOAD_OPTIONS:
        assert help_of(DataConfig, name) and helps[name].startswith(help_of(DataConfig, name))
