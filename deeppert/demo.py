"""``make demo``: the whole platform end to end on this machine, then where to look.

1. ``deeppert synth``: synthetic signatures with planted gene programs + known target pairs.
2. An MLflow tracking server (embedded SQLite, served artifacts) under ``demo_out/mlflow``.
3. A local Ray head node; then, each with ``ray job submit``:
   the sweep (``ray_jobs/sweep.py``), the ensemble job, the target-combination job.
4. A summary table read back from MLflow; everything started is stopped again.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from deeppert.cluster import (
    job_env,
    remove_ray_temp_dir,
    start_ray_head,
    stop_ray_head,
    submit_command,
)
from deeppert.config import load_config
from deeppert.data.synthetic import SynthConfig, make_synthetic, write_synthetic
from deeppert.errors import DeeppertError
from deeppert.tracking.client import ui_url
from deeppert.tracking.contract import ROLES, TAGS
from deeppert.tracking.server import ServerConfig, TrackingServer, free_port
from deeppert.tracking.session import TrackingSession

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "demo_out"
CONFIG = REPO / "configs" / "demo.yaml"
DISEASE = SynthConfig().disease

log = logging.getLogger("deeppert.demo")


def _submit(cmd: list[str], *, env: dict, attempts: int = 20) -> None:
    """``ray job submit``, streamed; retried while the fresh head's job agent is not up yet."""
    for attempt in range(1, attempts + 1):
        log.info("$ %s", " ".join(cmd))
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        tail: list[str] = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail = (tail + [line])[-20:]
        if proc.wait() == 0:
            return
        if "No available agent" not in "".join(tail) or attempt == attempts:
            raise subprocess.CalledProcessError(proc.returncode, cmd)
        log.info("Ray's job agent is still starting; retrying in 5 s")
        time.sleep(5)


def _summary(session: TrackingSession) -> pd.DataFrame:
    runs = session.client.search_runs(
        [session.experiment_id],
        f"tags.`{TAGS.role}` = '{ROLES.trial}' and attributes.status = 'FINISHED'",
    )
    rows = [
        {
            "model": r.data.tags[TAGS.model],
            "latent_dim": int(r.data.tags[TAGS.latent_dim]),
            "run": int(r.data.tags[TAGS.run]),
            "r2_pca": r.data.metrics.get("r2_pca"),
            "r2_genes": r.data.metrics.get("r2_genes"),
        }
        for r in runs
    ]
    return (
        pd.DataFrame(rows)
        .groupby(["model", "latent_dim"])
        .agg(runs=("run", "count"), r2_pca=("r2_pca", "mean"), r2_genes=("r2_genes", "mean"))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deeppert.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"output folder, replaced whole (default {OUT})"
    )
    out = parser.parse_args(argv).out.resolve()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    start = time.time()
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so the finally block stops what we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = load_config(CONFIG)
    shutil.rmtree(out, ignore_errors=True)

    log.info("step 1/5: synthetic data with planted programs -> %s", out / "synth")
    job_config = _write_data(out)
    port = free_port()
    server = TrackingServer(ServerConfig(data_dir=str(out / "mlflow"), port=port))
    head: subprocess.Popen | None = None
    try:
        log.info("step 2/5: MLflow tracking server (SQLite, served artifacts)")
        server.start()
        log.info("step 3/5: local Ray head node on free ports (deeppert.cluster)")
        head, address = start_ray_head(out, num_cpus=2, cwd=REPO)
        log.info("Ray job server at %s", address)
        log.info("step 4/5: sweep, ensemble and target-combination jobs via `ray job submit`")
        _run_jobs(address, ["--config", str(job_config), "--tracking-uri", server.url], out)
        log.info("step 5/5: summary read back from MLflow")
        session = TrackingSession.for_uri(server.url, config.tracking.experiment).connect()
        _print_results(session, out)
        _log_recovery(session, out)
    except (DeeppertError, subprocess.CalledProcessError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if head is not None:
            stop_ray_head(head.pid)
            remove_ray_temp_dir(out)
        server.stop()
    _print_where_to_look(out, port, config.tracking.experiment, time.time() - start)
    return 0


def _write_data(out: Path) -> Path:
    """Synthetic signatures with planted programs and target pairs under ``out/synth``; returns
    the jobs' config, which names the data by absolute path."""
    # heavy-tailed (sparse) programs, as real gene programs are and as `deeppert synth` writes
    synth = make_synthetic(SynthConfig(n_samples=2000, n_programs=5, activity="laplace", seed=0))
    write_synthetic(synth, out / "synth")
    # Jobs run in an uploaded copy of the repo without demo_out/ (.rayignore), so the config
    # they read names the data by absolute path (on a cluster: a shared file system).
    raw = yaml.safe_load(CONFIG.read_text())
    raw["datasets"][0]["path"] = str(out / "synth" / "signatures.parquet")
    job_config = out / "demo.yaml"
    job_config.write_text(yaml.safe_dump(raw, sort_keys=False))
    return job_config


def _run_jobs(address: str, common: list[str], out: Path) -> None:
    """The sweep, ensemble and target-combination jobs, one ``ray job submit`` each."""
    # Venv first on PATH (the jobs' `python`), Ray token auth off for head and client alike
    # (the head listens on 127.0.0.1 only); see deeppert.cluster.
    env = job_env()
    targets = ["--disease", DISEASE, "--pairs-dir", str(out / "synth" / "target_pairs")]
    for job, extra in (
        ("sweep", []),
        ("ensemble", []),
        ("targets", [*targets, "--out", str(out / "targets")]),
    ):
        _submit(submit_command(address, ["python", f"ray_jobs/{job}.py", *common, *extra]), env=env)


def _print_results(session: TrackingSession, out: Path) -> None:
    """Held-out R^2 per model read back from MLflow, and the target-combination match rates."""
    table = _summary(session)
    stats = pd.read_csv(out / "targets" / "match_statistics.csv")
    significance = out / "targets" / "match_significance.csv"
    print("\n== held-out reconstruction R^2 per model (mean over runs) ==")
    print(table.round(3).to_string())
    print(f"\n== target combination for {DISEASE!r} (planted pairs) ==")
    print(stats.to_string(index=False))
    if significance.exists():
        print(pd.read_csv(significance).round(4).to_string(index=False))


def _deeppert_command() -> str:
    """How to run ``deeppert`` from the current folder, as pasted: the interpreter's own
    ``bin/deeppert`` (``.venv/bin/deeppert`` under ``make demo``), else ``python -m deeppert``."""
    script = Path(sys.executable).parent / "deeppert"
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m deeppert"
    relative = os.path.relpath(script)
    return shlex.quote(relative if not relative.startswith("..") else str(script))


def _log_recovery(session: TrackingSession, out: Path) -> None:
    """Planted modules against the registered ensemble's gene importances: matched top-k
    precision printed, and a module x program figure logged on the ensemble run."""
    from deeppert.data.synthetic import module_recovery
    from deeppert.tracking.contract import ENSEMBLE_ALIAS
    from deeppert.tracking.registry import ensemble_model_name, load_ensemble_outputs

    outputs = load_ensemble_outputs(session, f"{ensemble_model_name('SYN1')}@{ENSEMBLE_ALIAS}")
    membership = pd.read_parquet(out / "synth" / "ground_truth" / "module_membership.parquet")
    table = module_recovery(outputs.weights, membership)
    fig = _recovery_figure(table)
    mean = float(table["precision"].mean())
    client = session.client
    run_id = outputs.version.run_id
    client.log_figure(run_id, fig, "planted_vs_recovered.png")
    client.log_metric(run_id, "planted_module_precision", mean)
    print("\n== planted modules vs the ensemble's programs (matched top-k precision) ==")
    print(table.round(3).to_string(index=False))


def _recovery_figure(table: pd.DataFrame):
    """Module x program top-k precision (``module_recovery``), matched pairs annotated."""
    from matplotlib.figure import Figure

    matrix = table.attrs["matrix"]
    fig = Figure(figsize=(max(4.8, 1.6 + 0.45 * matrix.shape[1]), 1.4 + 0.45 * matrix.shape[0]))
    ax = fig.subplots()
    im = ax.imshow(matrix.to_numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for m, row in table.iterrows():
        if row["program"] is not None:
            c = list(matrix.columns).index(row["program"])
            color = "k" if row["precision"] > 0.5 else "w"  # legible on viridis
            ax.text(c, m, f"{row['precision']:.2f}", ha="center", va="center", color=color)
    ax.set_xticks(range(matrix.shape[1]), [str(c).removeprefix("cluster_") for c in matrix.columns])
    ax.set_yticks(range(matrix.shape[0]), [str(m) for m in matrix.index])
    ax.set_xlabel("ensemble program (gene importance)")
    ax.set_ylabel("planted module")
    ax.set_title(
        f"planted vs recovered: matched top-k precision {float(table['precision'].mean()):.2f}",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, label="top-k precision")
    fig.tight_layout()
    return fig


def _print_where_to_look(out: Path, port: int, experiment: str, seconds: float) -> None:
    print(f"\nDemo finished in {seconds:.0f} s. Where to look:")
    print(
        f"  MLflow UI:        {_deeppert_command()} server --data-dir "
        f"{shlex.quote(str(out / 'mlflow'))} --port {port}  then open "
        f"{ui_url(f'http://127.0.0.1:{port}')}"
    )
    print(
        f"                    (runs under experiment '{experiment}'; models SYN1-encoder-<MODEL>-d<dim>@best, SYN1-ensemble@current)"
    )
    print(
        f"  target outputs:   {out / 'targets'} (target_combinations.csv, match_statistics.csv, heatmap, match-rate plot)"
    )
    print(f"  synthetic truth:  {out / 'synth' / 'ground_truth'}")


if __name__ == "__main__":
    sys.exit(main())
