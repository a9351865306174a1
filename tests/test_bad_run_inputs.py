"""Damaged run folders and unwritable outputs: one line, exit 2, never a traceback or a silent
partial result (a truncated Parquet, a deleted latent file, ``--out`` on a file, a read-only
output folder)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from deeppert.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = """\
name: tiny
datasets:
  - name: s
    synthetic: {n_samples: 200}
preprocess: {n_components: 10}
"""
pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRAIN = ["--models", "AE", "--dims", "3", "--runs", "3", "--epochs", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run folder with 3 runs, attributed (latents and gene weights for each)."""
    tmp = tmp_path_factory.mktemp("bad-run")
    (tmp / "tiny.yaml").write_text(CONFIG)
    assert (
        main(["train", "--config", str(tmp / "tiny.yaml"), "--out", str(tmp / "out"), *TRAIN]) == 0
    )
    run_dir = tmp / "out" / "s"
    assert main(["attribute", str(run_dir), "--steps", "4"]) == 0
    return run_dir


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "s"))


def one_line_error(capsys, argv: list[str], command: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    print(f"\nMEASURE bad input `deeppert {' '.join(argv[:1])} ...` -> exit {rc}: {err.strip()}")
    assert rc == 2, err
    assert err.startswith(f"deeppert {command}: error: ")
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_truncated_latent_parquet_is_named(run_copy: Path, capsys) -> None:
    victim = run_copy / "latents" / "AE_d3_run1.parquet"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    err = one_line_error(capsys, ["ensemble", str(run_copy), "--no-stability"], "ensemble")
    assert str(victim) in err and "not a readable Parquet file" in err
    assert not (run_copy / "ensemble").exists()


def test_ensemble_with_a_deleted_latent_file_names_it(run_copy: Path, capsys) -> None:
    victim = run_copy / "latents" / "AE_d3_run2.parquet"
    victim.unlink()
    err = one_line_error(capsys, ["ensemble", str(run_copy), "--no-stability"], "ensemble")
    assert "1 of 3 latent files missing" in err and str(victim) in err
    assert not (run_copy / "ensemble").exists()


def test_a_latent_file_of_other_samples_is_named(run_copy: Path, capsys) -> None:
    """The consensus reads one run's latents at a time: a file with fewer rows than the others
    is refused when it is read, naming the run and both shapes."""
    import pandas as pd

    victim = run_copy / "latents" / "AE_d3_run1.parquet"
    pd.read_parquet(victim).iloc[:-5].to_parquet(victim)
    err = one_line_error(capsys, ["ensemble", str(run_copy), "--no-stability"], "ensemble")
    assert "latents of AE_d3_run1" in err and "expected" in err
    assert not (run_copy / "ensemble").exists()


def test_the_consensus_reads_one_run_of_latents_at_a_time(
    trained: Path, tmp_path: Path, monkeypatch
) -> None:
    """`deeppert ensemble` (consensus) streams the latent files, as the ensemble job streams
    its encoders: no read asks for more than one model run's columns, and the ensemble is
    the one of all latents read into one frame."""
    import numpy as np

    from deeppert import tl
    from deeppert.ensemble.config import EnsembleConfig
    from deeppert.ensemble.stability import ensemble_step
    from deeppert.latent_store import ParquetLatents
    from deeppert.workspace import load_pca, read_member_frames, training_inputs

    run_dir = Path(shutil.copytree(trained, tmp_path / "s"))
    widest, read = [], ParquetLatents.__call__

    def spy(self, key, columns):
        widest.append(len(columns))
        return read(self, key, columns)

    monkeypatch.setattr(ParquetLatents, "__call__", spy)
    config = EnsembleConfig(density_threshold=2.0, l_max=4)  # 2-epoch models recur weakly
    step = tl.ensemble(run_dir, config=config, stability=False)
    assert widest and max(widest) <= 3  # AE d3: one run's 3 latent variables
    frame = read_member_frames(run_dir, "latents", "latent")
    x_pca, _ = training_inputs(run_dir)
    ref = ensemble_step(
        frame, None, config=config, x_pca=x_pca, pca=load_pca(run_dir),
        stability=False,
    )  # fmt: skip
    np.testing.assert_allclose(step.ensemble.loadings, ref.ensemble.loadings)
    np.testing.assert_allclose(step.ensemble.embedding, ref.ensemble.embedding)


def test_consensus_needs_no_gene_weights_and_gmeans_names_the_step(
    trained: Path, tmp_path: Path, capsys
) -> None:
    """The default consensus reads latents and PCA only: on ``train``'s folder alone it writes
    the same weights as beside IG gene weights; the gmeans mode averages IG weights and says
    which command writes them."""
    bare = Path(shutil.copytree(trained, tmp_path / "bare"))
    with_ig = Path(shutil.copytree(trained, tmp_path / "with_ig"))
    shutil.rmtree(bare / "gene_weights")
    argv = ["ensemble", str(bare), "--method", "gmeans", "--no-stability"]
    err = one_line_error(capsys, argv, "ensemble")
    assert f"deeppert attribute {bare}" in err
    assert not (bare / "ensemble").exists()
    capsys.readouterr()  # one_line_error's own MEASURE line
    # The fixture's few-epoch grid recurs weakly: a loose density filter lets it through.
    for run in (bare, with_ig):
        assert main(["ensemble", str(run), "--no-stability", "--density-threshold", "1.0"]) == 0
        first = capsys.readouterr().out.splitlines()[0]  # before minutes of work, what runs
        assert first == f"deeppert ensemble: the consensus ensemble of {run}"
    table = "ensemble/ensemble_weights.parquet"
    assert (bare / table).read_bytes() == (with_ig / table).read_bytes()


def test_truncated_signatures_parquet_is_named(run_copy: Path, capsys) -> None:
    victim = run_copy / "signatures.parquet"
    victim.write_bytes(victim.read_bytes()[:100])
    err = one_line_error(capsys, ["attribute", str(run_copy), "--steps", "4"], "attribute")
    assert str(victim) in err


def test_train_out_on_an_existing_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    out = tmp_path / "results.txt"
    out.write_text("keep me\n")
    argv = ["train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(out), *TRAIN]
    err = one_line_error(capsys, argv, "train")
    assert f"{out} exists and is a file" in err
    assert out.read_text() == "keep me\n"


def test_train_into_a_read_only_folder(tmp_path: Path) -> None:
    """As an unprivileged user (root ignores folder modes): exit 2, one line, nothing written."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not available to drop privileges")
    if os.geteuid() == 0:  # the dropped user must reach the checkout and the interpreter
        for path in (REPO, Path(sys.executable).parent):
            closed = [p for p in (path, *path.parents) if not p.stat().st_mode & stat.S_IXOTH]
            if closed:
                pytest.skip(f"{closed[-1]} is private (no o+x): an unprivileged user cannot run")
    base = Path(tempfile.mkdtemp(prefix="deeppert-ro-", dir="/tmp"))
    try:
        base.chmod(0o755)
        (base / "tiny.yaml").write_text(CONFIG)
        (base / "home").mkdir()
        (base / "home").chmod(0o777)
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(
            stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
        )
        drop = (
            []
            if os.geteuid() != 0
            else ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        )
        env = {**os.environ, "HOME": str(base / "home"), "MPLCONFIGDIR": str(base / "home")}
        argv = ["train", "--config", str(base / "tiny.yaml"), "--out", str(locked / "out"), *TRAIN]
        proc = subprocess.run(
            [*drop, sys.executable, "-m", "deeppert", *argv],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        print(f"\nMEASURE read-only --out -> exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.startswith("deeppert train: error: "), proc.stderr[-2000:]
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
        assert "not writable" in proc.stderr and str(locked) in proc.stderr
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- damaged inputs: one table, each case ends in one line, exit 2, nothing left -------------


def _signature_frame():
    """A 60 x 978 synthetic signature matrix (sample ids as index)."""
    from deeppert.data.synthetic import SynthConfig, make_synthetic

    return make_synthetic(SynthConfig(n_samples=60, seed=1)).signatures.to_frame()


def _parquet(tmp: Path, frame) -> Path:
    path = tmp / "sig.parquet"
    frame.to_parquet(path)
    return path


def _all_zero(tmp: Path, run: Path) -> tuple[list[str], Path]:
    frame = _signature_frame()
    frame.iloc[:, :] = 0.0
    out = tmp / "new" / "out"
    return ["train", "--data", str(_parquet(tmp, frame)), "--out", str(out), *TRAIN], tmp / "new"


def _huge_value(tmp: Path, run: Path) -> tuple[list[str], Path]:
    frame = _signature_frame()
    frame.iloc[7, 11] = 1e308
    out = tmp / "out"
    return ["train", "--data", str(_parquet(tmp, frame)), "--out", str(out), *TRAIN], out


def _huge_value_info(tmp: Path, run: Path) -> tuple[list[str], Path]:
    argv, out = _huge_value(tmp, run)
    return ["info", argv[2]], out


def _duplicated_columns(tmp: Path, run: Path) -> tuple[list[str], Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(_signature_frame().reset_index(), preserve_index=False)
    names = table.column_names + ["DDR1", "PAX8", "RPS5"]
    columns = table.columns + [table.column(n) for n in ("DDR1", "PAX8", "RPS5")]
    path = tmp / "dup.parquet"
    pq.write_table(pa.Table.from_arrays(columns, names=names), path)
    out = tmp / "out"
    return ["train", "--data", str(path), "--out", str(out), *TRAIN], out


def _truncated_state(tmp: Path, run: Path) -> tuple[list[str], Path]:
    state = run / "models" / "AE_d3" / "state.pt"
    state.write_bytes(state.read_bytes()[:200])
    shutil.rmtree(run / "gene_weights")
    return ["attribute", str(run), "--steps", "4"], run / "gene_weights"


def _model_config_not_json(tmp: Path, run: Path) -> tuple[list[str], Path]:
    (run / "models" / "AE_d3" / "config.json").write_text('{"model": {"kind": "AE", ')
    shutil.rmtree(run / "gene_weights")
    return ["attribute", str(run), "--steps", "4"], run / "gene_weights"


def _run_config_not_json(tmp: Path, run: Path) -> tuple[list[str], Path]:
    (run / "config.json").write_text('{"experiment": ')
    return ["ensemble", str(run), "--no-stability"], run / "ensemble"


def _truncated_ensemble_weights(tmp: Path, run: Path) -> tuple[list[str], Path]:
    assert main(["ensemble", str(run), "--no-stability", "--method", "gmeans"]) == 0
    weights = run / "ensemble" / "ensemble_weights.parquet"
    weights.write_bytes(weights.read_bytes()[:100])
    out = tmp / "export.h5ad"
    return ["export", str(run), "--h5ad", str(out)], out


def _config_not_utf8(tmp: Path, run: Path) -> tuple[list[str], Path]:
    config = tmp / "latin1.yaml"
    config.write_bytes(CONFIG.replace("tiny", "caf\u00e9").encode("latin-1"))
    out = tmp / "out"
    return ["train", "--config", str(config), "--out", str(out), *TRAIN], out


DAMAGED = {
    # case: (make argv and the path that must not exist afterwards, command, message parts)
    "all-zero genes": (_all_zero, "train", ["every gene is constant", "nothing to embed"]),
    "1e308 (train)": (_huge_value, "train", ["value 1e+308 in gene column", "out of range"]),
    "1e308 (info)": (_huge_value_info, "info", ["at row 7", "out of range"]),
    "duplicated columns": (
        _duplicated_columns,
        "train",
        ["3 column name(s) appear more than once: 'DDR1', 'PAX8', 'RPS5'"],
    ),
    "truncated state.pt": (_truncated_state, "attribute", ["state.pt: not a readable model"]),
    "model config.json not JSON": (
        _model_config_not_json,
        "attribute",
        ["config.json: not a readable JSON file"],
    ),
    "run config.json not JSON": (
        _run_config_not_json,
        "ensemble",
        ["config.json: not a readable JSON file"],
    ),
    "truncated ensemble_weights.parquet": (
        _truncated_ensemble_weights,
        "export",
        ["ensemble_weights.parquet: not a readable Parquet file"],
    ),
    "non-UTF-8 config": (_config_not_utf8, "train", ["latin1.yaml: not UTF-8 text (byte 0xe9"]),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_damaged_input_is_one_line_and_leaves_nothing(
    case: str, run_copy: Path, tmp_path: Path, capsys
) -> None:
    make, command, says = DAMAGED[case]
    argv, must_not_exist = make(tmp_path, run_copy)
    err = one_line_error(capsys, argv, command)
    for part in says:
        assert part in err, err
    assert "lr_max" not in err
    assert len(err) < 400, err
    assert not must_not_exist.exists(), sorted(p.name for p in must_not_exist.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "says"), [
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),
    (signal.SIGINT, 130, "interrupted (SIGINT)"),
])  # fmt: skip
def test_a_signal_mid_training_removes_the_temporary_output(
    tmp_path: Path, sig: int, code: int, says: str
) -> None:
    """SIGTERM or Ctrl-C while `deeppert train` writes its hidden temporary folder: one line,
    exit 143 / 130, no traceback, and neither the temporary folder nor the --out folder the
    command created is left."""
    config = tmp_path / "long.yaml"
    config.write_text(CONFIG + "grid: {baselines: false}\ntrain: {epochs: 100000}\n")
    out = tmp_path / "new" / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deeppert", "train", "--config", str(config), "--out", str(out),
         "--models", "AE", "--dims", "3", "--runs", "2"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # a suite started in the background of a non-interactive shell inherits SIGINT
        # ignored, and Python then keeps ignoring it: the command must see Ctrl-C as a user does
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out.is_dir() and any(out.iterdir())):  # the hidden .s.*.tmp folder
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        written = [p.name for p in out.iterdir()]
        proc.send_signal(sig)
        err = proc.communicate(timeout=180)[1]  # a loaded 2-core box needs minutes to unwind
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"\nMEASURE {signal.Signals(sig).name} with {written} in --out -> exit {proc.returncode}")
    assert written[0].startswith(".s.") and written[0].endswith(".tmp")
    assert proc.returncode == code, err
    assert err.strip() == f"deeppert train: {says}; partial output removed", err
    assert not (tmp_path / "new").exists()
