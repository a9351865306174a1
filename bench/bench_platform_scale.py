"""The DeepProfile grid through the platform against the pure path, phase by phase.

The same grid (AE, VAE x latent dims 5, 10, 25, 50, 75, 100 x ``--runs`` runs) and the same
synthetic data (``--samples`` x 978 genes, planted programs and target pairs) go through

* the pure path: ``deeppert train``, ``attribute``, ``ensemble``, ``targets`` on a run folder
  (no Ray, no MLflow), each as its own process;
* the platform: a private PostgreSQL cluster in a temp dir (``--backend sqlite``: a SQLite
  file, for machines without PostgreSQL), a tracking server on it
  (:class:`~deeppert.tracking.server.TrackingServer`, what ``deeppert server`` runs), a private
  Ray head (:func:`deeppert.cluster.start_ray_head`, ``--cpus``, the GPUs Ray finds) and, with
  ``ray job submit`` as the README does, ``ray_jobs/sweep.py``, ``ray_jobs/ensemble.py`` (from
  the registry) and ``ray_jobs/targets.py``.

Per phase: wall s; CPU s and peak RSS (summed over a process tree, read from /proc every 0.5 s)
of the pure step, and on the platform of the job driver, the Ray workers (trials and
tasks) and the tracking server; HTTP requests to the server (its access log, by endpoint);
bytes written (the run folder, or the server's artifact store and database); the driver log's
lines and MLflow's per-run prints in it. Sweep is compared with train + attribute.

Several ``--runs`` values give per-grid-point slopes (the difference between the two largest
grids divided by the difference in grid points); the full grid is extrapolated from them,
labelled as such. ``--runs 100 --samples 15000`` runs the full grid itself; on a GPU machine
add ``--gpus-per-trial 0.08`` (12 trials share one GPU). ``--deadline`` stops a phase that would
end past it (the phase is recorded as timed out) and starts none after it; results are written
after every phase, so a cut-off run keeps what it measured.

Results go under ``--label`` (e.g. ``baseline``) into ``--out``.json (other labels kept) and a
table of every label into ``--out``.md. On a 2-core machine the two paths are best run apart,
each on an idle box (``--paths pure --label A``, then ``--paths platform --pure-from A``): the
second takes the first's pure phases for its overhead ratios, once it has checked they are of
the same grid, data and settings.

Usage::

    python bench/bench_platform_scale.py --runs 2 8 --samples 5000 --epochs 1 --ig-steps 4 \
        --label baseline
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_concurrency import endpoint  # noqa: E402

RESULTS = REPO / "bench" / "results"
SHAPES = [(k, d) for k in ("AE", "VAE") for d in (5, 10, 25, 50, 75, 100)]
FULL_GRID_POINTS = len(SHAPES) * 100
MIB = 2**20
# MLflow's per-run prints in a job's log (they should be out of the default log)
MLFLOW_NOISE = ("View run", "Saving pytorch model by Pickle", "Waiting up to 300 seconds")
REQUEST = re.compile(r'"(GET|POST|PATCH|DELETE|PUT) (\S+?)(?:\?\S*)? HTTP/1\.1" (\d{3})')
# what follows this line in the .md is written by hand and kept when the tables are rewritten
NOTES = "\n<!-- notes below are kept by bench_platform_scale.py -->\n"
THREADS = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


# -- measuring process trees ---------------------------------------------------------------
@dataclass
class _Phase:
    peak_rss: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    cpu_start: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, tuple[str, float]] = field(default_factory=dict)
    commands: dict[int, str] = field(default_factory=dict)  # pid -> last command seen


_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc_table() -> dict[int, tuple[int, int, float, str]]:
    """pid -> (parent pid, RSS bytes, CPU s (user + system), command line) from /proc."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            rss_pages = int(Path(entry.path, "statm").read_text().split()[1])
            cmd = (
                Path(entry.path, "cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
        except (OSError, ValueError, IndexError):
            continue  # ended while read
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        table[int(entry.name)] = (int(fields[1]), rss_pages * _PAGE, cpu, cmd.strip())
    return table


class TreeSampler:
    """Samples the process trees under ``roots`` (name -> pid) every ``interval`` seconds.

    Each process is put in a category (``classify``); per phase it keeps the peak of the summed
    RSS of each category and each process's CPU time (user + system) since the phase began, as
    last seen: a process that ends between two samples loses at most ``interval`` of CPU.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.roots: dict[str, int] = {}
        self.interval = interval
        self._phase: _Phase | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def classify(root: str, cmd: str) -> str:
        if root != "ray":
            return root
        if "ray_jobs/" in cmd:
            return "driver"
        if cmd.startswith("ray::") and "JobSupervisor" not in cmd:
            return "workers"
        return "ray_system"

    def _processes(self) -> dict[int, tuple[str, int, float, str]]:
        """pid -> (category, RSS bytes, CPU s, command) of every process under a root."""
        table = _proc_table()
        children = collections.defaultdict(list)
        for pid, (ppid, *_) in table.items():
            children[ppid].append(pid)
        out = {}
        for root, top in list(self.roots.items()):
            stack = [top]
            while stack:
                pid = stack.pop()
                if pid in table and pid not in out:
                    _, rss, cpu, cmd = table[pid]
                    out[pid] = (self.classify(root, cmd), rss, cpu, cmd)
                    stack += children[pid]
        return out

    def _sample(self) -> None:
        rss: dict[str, int] = collections.defaultdict(int)
        procs = self._processes()
        for what, value, *_ in procs.values():
            rss[what] += value
        with self._lock:
            phase = self._phase
            if phase is None:
                return
            for what, value in rss.items():
                phase.peak_rss[what] = max(phase.peak_rss[what], value)
            for pid, (what, _, cpu, cmd) in procs.items():
                phase.cpu_start.setdefault(pid, 0.0)  # born in this phase: all its CPU counts
                if not cmd and pid in phase.cpu_last:
                    # an exiting process (a finished trial) has an empty command line: keep
                    # the category it had, else its CPU lands in ray_system
                    what, cmd = phase.cpu_last[pid][0], phase.commands[pid]
                phase.cpu_last[pid] = (what, cpu)
                phase.commands[pid] = cmd

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def begin(self) -> None:
        """Start a phase: CPU is counted from each live process's current CPU time."""
        start = {pid: cpu for pid, (_, _, cpu, _) in self._processes().items()}
        with self._lock:
            self._phase = _Phase(cpu_start=start)

    def end(self) -> dict:
        """End the phase: ``{cpu_s: {category: s}, peak_rss_mib: {category: MiB}}``."""
        self._sample()
        with self._lock:
            phase, self._phase = self._phase, None
        cpu: dict[str, float] = collections.defaultdict(float)
        by_command: dict[str, float] = collections.defaultdict(float)
        for pid, (what, value) in phase.cpu_last.items():
            used = max(0.0, value - phase.cpu_start.get(pid, 0.0))
            cpu[what] += used
            by_command[f"{what}: {_command_name(phase.commands[pid])}"] += used
        top = sorted(by_command.items(), key=lambda kv: -kv[1])[:12]
        return {
            "cpu_s": {k: round(v, 1) for k, v in sorted(cpu.items())},
            "cpu_s_by_command": {k: round(v, 1) for k, v in top if v >= 0.5},
            "peak_rss_mib": {k: round(v / MIB, 1) for k, v in sorted(phase.peak_rss.items())},
        }


def _command_name(cmd: str) -> str:
    """A process's command, short: the script or module it runs (``ray::...`` titles kept)."""
    words = cmd.split()
    if not words:
        return "?"
    if words[0].startswith("ray::") or words[0].startswith("ray-dashboard"):
        return words[0]
    for i, word in enumerate(words):
        if word == "-m" and i + 1 < len(words):
            return f"-m {words[i + 1]}"
        if word.endswith(".py"):
            return Path(word).name
    return Path(words[0]).name


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


ARTIFACT_GET = "/api/2.0/mlflow-artifacts/artifacts/"


def download_bytes(requests: list[tuple[str, str, str]], artifacts: Path) -> int:
    """Bytes served by the phase's successful artifact GETs (the access log has no sizes: each
    request path is resolved to its file in the server's artifact store)."""
    from urllib.parse import unquote

    total = 0
    for method, path, code in requests:
        if method == "GET" and code == "200" and path.startswith(ARTIFACT_GET):
            target = artifacts / unquote(path[len(ARTIFACT_GET) :])
            total += target.stat().st_size if target.is_file() else 0
    return total


def run_logged(cmd: list[str], log: Path, *, env: dict, sampler: TreeSampler, root: str) -> int:
    """Run ``cmd`` from the repository root, its output to ``log``, its tree sampled as ``root``."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler.roots[root] = proc.pid
        try:
            return proc.wait()
        finally:
            sampler.roots.pop(root, None)


def log_lines(log: Path) -> dict:
    text = log.read_text(errors="replace").splitlines()
    return {
        "lines": len(text),
        "mlflow_per_run_prints": sum(any(n in line for n in MLFLOW_NOISE) for line in text),
        "warnings": sum("Warning" in line or " WARNING " in line for line in text),
    }


# -- the grid and its data -----------------------------------------------------------------
def write_data(folder: Path, samples: int) -> tuple[Path, Path, str]:
    """Synthetic signatures with planted programs (Laplace activities) and target pairs."""
    from deeppert.data.synthetic import SynthConfig, make_synthetic, write_synthetic

    config = SynthConfig(n_samples=samples, activity="laplace", seed=0)
    write_synthetic(make_synthetic(config), folder)
    return folder / "signatures.parquet", folder / "target_pairs", config.disease


def write_config(path: Path, data: Path, args: argparse.Namespace, runs: int, uri: str) -> Path:
    raw = {
        "name": f"scale-r{runs}",
        "datasets": [{"name": "SYN", "path": str(data)}],
        "preprocess": {"n_components": 100, "val_fraction": 0.1, "split_seed": 0},
        "grid": {
            "models": sorted({k for k, _ in SHAPES}),
            "latent_dims": sorted({d for _, d in SHAPES}),
            "runs": runs,
            "baselines": False,
        },
        "train": {"epochs": args.epochs, "batch_size": 256},
        "attribution": {"n_steps": args.ig_steps, "max_samples": args.ig_samples},
        "ensemble": {"seed": 0},
        "targets": {"n_clusters": 4, "top_genes": 50, "n_pairs": 50, "permutations": 20,
                    "plots": False},
        "sweep": {"cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
                  "seeds_per_trial": args.seeds_per_trial, "max_failures": 0},
        "tracking": {"uri": uri, "experiment": f"scale-r{runs}"},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# -- the two paths ---------------------------------------------------------------------------
def pure_path(
    work: Path, config: Path, pairs: Path, disease: str, env: dict, on_phase=lambda phases: None
) -> dict:
    out = work / "pure"
    run_dir = out / "SYN"
    python = [sys.executable, "-m", "deeppert"]
    steps = {
        "train": [*python, "train", "--config", str(config), "--out", str(out)],
        "attribute": [*python, "attribute", "--config", str(config), str(run_dir)],
        "ensemble": [*python, "ensemble", str(run_dir)],
        "targets": [*python, "targets", "--weights",
                    str(run_dir / "ensemble" / "ensemble_weights.parquet"),
                    "--pairs-dir", str(pairs), "--disease", disease, "--config", str(config),
                    "--out", str(work / "pure_targets")],
    }  # fmt: skip
    phases = {}
    with TreeSampler() as sampler:
        for name, cmd in steps.items():
            before = folder_bytes(out)
            sampler.begin()
            t0 = time.perf_counter()
            code = run_logged(cmd, work / f"pure_{name}.log", env=env, sampler=sampler, root="pure")
            wall = time.perf_counter() - t0
            phases[name] = {
                "wall_s": round(wall, 1),
                **sampler.end(),
                "bytes_written": folder_bytes(out) - before,
                "exit_code": code,
                **({"error": _tail(work / f"pure_{name}.log")} if code else {}),
            }
            print(f"  pure {name}: {wall:.0f} s (exit {code})", flush=True)
            on_phase(phases)
            if code:
                break
    return phases


def platform_path(
    work: Path,
    config: Path,
    pairs: Path,
    disease: str,
    env: dict,
    store,
    runs: int,
    args: argparse.Namespace,
    on_phase=lambda phases: None,
) -> dict:
    from deeppert.cluster import remove_ray_temp_dir, start_ray_head, stop_ray_head, submit_command
    from deeppert.tracking.server import ServerConfig, TrackingServer

    database = store.database(work, runs)
    server = TrackingServer(
        ServerConfig(
            data_dir=str(work / "server"),
            backend_store_uri=database,
            port=0,
            workers=args.server_workers,
        )
    )
    server.start()
    head = None
    phases = {}
    try:
        head_dir = work / "ray"
        head_dir.mkdir()
        head, address = start_ray_head(head_dir, num_cpus=args.cpus, cwd=REPO)
        common = ["--config", str(config), "--tracking-uri", server.url]
        jobs = {
            "sweep": ["python", "ray_jobs/sweep.py", *common],
            "ensemble": ["python", "ray_jobs/ensemble.py", *common],
            "targets": ["python", "ray_jobs/targets.py", *common, "--disease", disease,
                        "--pairs-dir", str(pairs)],
        }  # fmt: skip
        artifacts = server.config.resolved_artifacts_dir
        with TreeSampler() as sampler:
            sampler.roots.update({"server": server.pid, "ray": head.pid})
            for name, entry in jobs.items():
                left = args.deadline - (time.monotonic() - STARTED)
                if left < 30:
                    print(f"  platform {name}: not started, past --deadline", flush=True)
                    break
                log_start = server.log_path.stat().st_size
                before = folder_bytes(artifacts)
                db_before = store.database_bytes(database)
                rows_before = store.table_rows(database)
                sampler.begin()
                t0 = time.perf_counter()
                log = work / f"platform_{name}.log"
                code = _submit(submit_command(address, entry), log, env, timeout=left)
                wall = time.perf_counter() - t0
                measured = sampler.end()
                with open(server.log_path, "rb") as f:
                    f.seek(log_start)
                    requests = REQUEST.findall(f.read().decode(errors="replace"))
                phases[name] = {
                    "wall_s": round(wall, 1),
                    **measured,
                    "requests": len(requests),
                    "requests_5xx": sum(c.startswith("5") for *_, c in requests),
                    "requests_by_endpoint": dict(
                        collections.Counter(endpoint(p) for _, p, _ in requests).most_common(12)
                    ),
                    "artifact_bytes": folder_bytes(artifacts) - before,
                    "download_bytes": download_bytes(requests, artifacts),
                    "database_bytes": store.database_bytes(database) - db_before,
                    "rows_added": {
                        k: v - rows_before.get(k, 0) for k, v in store.table_rows(database).items()
                    },
                    "driver_log": log_lines(work / f"platform_{name}.log"),
                    "exit_code": code,
                    **({"timed_out": True} if code == TIMED_OUT else {}),
                    **({"error": _tail(log)} if code else {}),
                }
                print(f"  platform {name}: {wall:.0f} s (exit {code})", flush=True)
                on_phase(phases)
                if code:
                    break
    finally:
        if head is not None:
            stop_ray_head(head.pid)
            remove_ray_temp_dir(work / "ray")
        server.stop()
    return phases


TIMED_OUT = 124  # the exit code recorded for a job cut off at --deadline
STARTED = time.monotonic()


def _submit(cmd: list[str], log: Path, env: dict, attempts: int = 20, timeout: float = 1e9) -> int:
    """``ray job submit``, retried while a fresh head's job agent is not up yet; TIMED_OUT when
    it runs past ``timeout`` seconds (the head is stopped afterwards, and the job with it)."""
    end = time.monotonic() + timeout
    for _ in range(attempts):
        with log.open("w") as out:
            try:
                code = subprocess.run(
                    cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                    timeout=max(1.0, end - time.monotonic()),
                ).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                return TIMED_OUT
        if code == 0 or "No available agent" not in log.read_text(errors="replace"):
            return code
        time.sleep(5)
    return code


ROW_TABLES = ("runs", "params", "tags", "metrics", "model_versions", "logged_models",
              "logged_model_params", "logged_model_metrics")  # fmt: skip


class PostgresStore:
    """A private PostgreSQL cluster; one database per grid."""

    def __init__(self) -> None:
        from tests.conftest import PrivatePostgres

        self.pg = PrivatePostgres(Path(tempfile.mkdtemp(prefix="deeppert-pg-", dir="/tmp")))
        self.pg.start()

    def database(self, work: Path, runs: int) -> str:
        return f"{self.pg.uri.rsplit('/', 1)[0]}/scale_r{runs}"

    def database_bytes(self, uri: str) -> int:
        import psycopg2

        name = uri.rsplit("/", 1)[1]
        with contextlib.closing(psycopg2.connect(uri.rsplit("/", 1)[0] + "/postgres")) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_database_size(%s)", (name,))
                return int(cur.fetchone()[0])

    def table_rows(self, uri: str) -> dict[str, int]:
        """Rows in MLflow's tables that grow with the grid (registry versions, logged models)."""
        import psycopg2

        with contextlib.closing(psycopg2.connect(uri)) as conn:
            return _count_rows(conn, "SELECT table_name FROM information_schema.tables "
                                     "WHERE table_schema = 'public'")  # fmt: skip

    def stop(self) -> None:
        self.pg.stop()
        shutil.rmtree(self.pg.root, ignore_errors=True)


class SqliteStore:
    """A SQLite file in the grid's work folder (machines without PostgreSQL)."""

    def database(self, work: Path, runs: int) -> str:
        return f"sqlite:///{work / 'mlflow.db'}"

    def database_bytes(self, uri: str) -> int:
        path = Path(uri.removeprefix("sqlite:///"))
        return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))

    def table_rows(self, uri: str) -> dict[str, int]:
        import sqlite3

        path = uri.removeprefix("sqlite:///")
        if not Path(path).exists():
            return {}
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return _count_rows(conn, "SELECT name FROM sqlite_master WHERE type = 'table'")

    def stop(self) -> None:
        pass


def _count_rows(conn, list_tables: str) -> dict[str, int]:
    with contextlib.closing(conn.cursor()) as cur:
        cur.execute(list_tables)
        present = {name for (name,) in cur.fetchall()}
        out = {}
        for table in ROW_TABLES:
            if table in present:
                cur.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 (fixed names)
                out[table] = int(cur.fetchone()[0])
        return out


def _tail(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return "\n".join(lines[-5:])[-1500:]


# -- summary -------------------------------------------------------------------------------
COMPARE = {"sweep": ("train", "attribute"), "ensemble": ("ensemble",), "targets": ("targets",)}


def compare(pure: dict, plat: dict) -> dict:
    """Platform phase against the pure steps it replaces: wall and CPU ratios."""
    out = {}
    for phase, steps in COMPARE.items():
        if phase not in plat or not all(s in pure for s in steps):
            continue
        pure_wall = sum(pure[s]["wall_s"] for s in steps)
        pure_cpu = sum(sum(pure[s]["cpu_s"].values()) for s in steps)
        plat_cpu = sum(plat[phase]["cpu_s"].values())
        out[phase] = {
            "pure_wall_s": round(pure_wall, 1),
            "platform_wall_s": plat[phase]["wall_s"],
            "overhead_wall": round(plat[phase]["wall_s"] / max(pure_wall, 1e-9), 2),
            "pure_cpu_s": round(pure_cpu, 1),
            "platform_cpu_s": round(plat_cpu, 1),
            "overhead_cpu": round(plat_cpu / max(pure_cpu, 1e-9), 2),
        }
    return out


def _scalars(phase: dict) -> dict[str, float]:
    """The per-phase numbers a slope is taken of."""
    out = {"wall_s": phase["wall_s"], "cpu_s": sum(phase.get("cpu_s", {}).values())}
    for what, mib in phase.get("peak_rss_mib", {}).items():
        out[f"peak_rss_mib.{what}"] = mib
    for key in ("requests", "artifact_bytes", "download_bytes", "database_bytes", "bytes_written"):
        if key in phase:
            out[key] = phase[key]
    for table, n in phase.get("rows_added", {}).items():
        out[f"rows.{table}"] = n
    if "driver_log" in phase:
        out["driver_log_lines"] = phase["driver_log"]["lines"]
    return out


def slopes(grids: dict[int, dict]) -> dict:
    """Per grid point: (value at the largest grid - value at the next) / their point difference,
    with the full grid (1,200 points) extrapolated linearly from the largest grid measured."""
    if len(grids) < 2:
        return {}
    (r1, g1), (r2, g2) = sorted(grids.items())[-2:]
    n1, n2 = len(SHAPES) * r1, len(SHAPES) * r2
    out = {"between_points": [n1, n2], "extrapolated_to_points": FULL_GRID_POINTS}
    for path in ("pure", "platform"):
        for phase, values in g2[path].items():
            if phase not in g1[path] or values.get("exit_code") or g1[path][phase].get("exit_code"):
                continue
            a, b = _scalars(g1[path][phase]), _scalars(values)
            for key in sorted(set(a) & set(b)):
                slope = (b[key] - a[key]) / (n2 - n1)
                out.setdefault(path, {}).setdefault(phase, {})[key] = {
                    "per_point": round(slope, 4),
                    "full_grid_extrapolated": round(b[key] + slope * (FULL_GRID_POINTS - n2), 1),
                }
    return out


def markdown(results: dict) -> str:
    lines = ["# The grid through the platform vs the pure path (bench/bench_platform_scale.py)", ""]
    for label, res in results.items():
        lines += [f"## {label}", "", f"`{res['command']}`", "",
                  f"{res['machine']}; code {res['code']}", ""]  # fmt: skip
        if res.get("pure_from"):
            lines += [f"The pure rows are `{res['pure_from']}`'s (run apart, same settings).", ""]
        for runs, grid in sorted(res["grids"].items(), key=lambda kv: int(kv[0])):
            n = len(SHAPES) * int(runs)
            lines += [
                f"### {runs} runs per shape: {n} grid points, {res['samples']} samples",
                "",
                "| path | phase | wall s | CPU s (by process) | peak RSS MiB | requests "
                "| req/point | artifact MiB | DB MiB | driver log lines (MLflow prints) |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for path in ("pure", "platform"):
                for phase, p in grid[path].items():
                    cpu = ", ".join(f"{k} {v}" for k, v in p["cpu_s"].items())
                    rss = ", ".join(f"{k} {v:.0f}" for k, v in p["peak_rss_mib"].items())
                    written = p.get("artifact_bytes", p.get("bytes_written", 0)) / MIB
                    req = p.get("requests")
                    log = p.get("driver_log")
                    lines.append(_row(path, phase, p, n, cpu, rss, written, req, log))
            lines.append("")
            for phase, c in grid.get("overhead", {}).items():
                lines.append(
                    f"- {phase}: platform {c['platform_wall_s']} s / pure {c['pure_wall_s']} s "
                    f"= **{c['overhead_wall']}x** wall, CPU {c['platform_cpu_s']} / "
                    f"{c['pure_cpu_s']} = {c['overhead_cpu']}x"
                )
            lines.append("")
        if res.get("slopes"):
            s = res["slopes"]
            lines += [
                f"### Per grid point (slope between {s['between_points'][0]} and "
                f"{s['between_points'][1]} points) and the full grid, EXTRAPOLATED linearly "
                f"to {s['extrapolated_to_points']} points at {res['samples']} samples",
                "",
                "| path | phase | quantity | per point | 1,200 points (extrapolated) |",
                "|---|---|---|---|---|",
            ]
            for path in ("pure", "platform"):
                for phase, values in s.get(path, {}).items():
                    for key, v in values.items():
                        lines.append(
                            f"| {path} | {phase} | {key} | {v['per_point']} "
                            f"| {v['full_grid_extrapolated']} |"
                        )
            lines.append("")
    return "\n".join(lines) + "\n"


def _row(path, phase, p, n, cpu, rss, written, req, log) -> str:
    failed = " (cut at --deadline)" if p.get("timed_out") else " (failed)" if p["exit_code"] else ""
    db = f"{p['database_bytes'] / MIB:.1f}" if "database_bytes" in p else ""
    per_point = f"{req / n:.1f}" if req is not None else ""
    noise = f"{log['lines']} ({log['mlflow_per_run_prints']})" if log else ""
    return (
        f"| {path} | {phase}{failed} | {p['wall_s']} | {cpu} | {rss} "
        f"| {req if req is not None else ''} | {per_point} | {written:.1f} | {db} | {noise} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[2, 8], help="runs per shape")
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--ig-steps", type=int, default=4)
    parser.add_argument(
        "--ig-samples",
        type=int,
        default=None,
        help="IG explains this many training samples (attribution.max_samples; default all)",
    )
    parser.add_argument(
        "--seeds-per-trial", type=int, default=0, help="sweep.seeds_per_trial (0: all runs)"
    )
    parser.add_argument("--label", default="baseline", help="key of these results in --out")
    parser.add_argument("--paths", nargs="+", choices=["pure", "platform"],
                        default=["pure", "platform"])  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "platform_scale")
    parser.add_argument(
        "--pure-from",
        metavar="LABEL",
        help="the pure path's phases from LABEL in --out (a --paths pure run of the same grid, "
        "data and settings) instead of running them beside the platform: the overhead "
        "ratios then compare with that run",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--backend",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="the tracking server's database",
    )
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the Ray head")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.0,
        help="> 0 trains and attributes on the GPU, this fraction per trial",
    )
    parser.add_argument("--server-workers", type=int, default=1, help="tracking server workers")
    parser.add_argument(
        "--deadline",
        type=float,
        default=1e9,
        help="seconds from start after which no platform phase runs on",
    )
    args = parser.parse_args(argv)
    reference = _pure_reference(args) if args.pure_from else {}

    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, **THREADS, "PYTHONPATH": path, "RAY_AUTH_MODE": "disabled"}
    from deeppert.cluster import job_env

    env = job_env(env)
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="deeppert-scale-", dir="/tmp"))
    store = None
    grids = {}
    try:
        data, pairs, disease = write_data(root / "synth", args.samples)
        if "platform" in args.paths:
            store = PostgresStore() if args.backend == "postgres" else SqliteStore()
        for runs in args.runs:
            work = root / f"r{runs}"
            work.mkdir()
            print(f"{runs} runs per shape ({len(SHAPES) * runs} grid points)", flush=True)
            grid = {"pure": {}, "platform": {}}
            config = write_config(work / "config.yaml", data, args, runs, "unused")
            if "platform" in args.paths:

                def on_phase(phases, runs=runs, grid=grid):
                    _write(args, {**grids, runs: {**grid, "platform": phases}}, load_before)

                grid["platform"] = platform_path(
                    work, config, pairs, disease, env, store, runs, args, on_phase
                )
            if "pure" in args.paths:

                def on_pure(phases, runs=runs, grid=grid):
                    _write(args, {**grids, runs: {**grid, "pure": phases}}, load_before)

                grid["pure"] = pure_path(work, config, pairs, disease, env, on_pure)
            elif args.pure_from:
                grid["pure"] = reference[str(runs)]
            grid["overhead"] = compare(grid["pure"], grid["platform"])
            grids[runs] = grid
            _write(args, grids, load_before)  # a cut-off run leaves what it measured
    finally:
        if store is not None:
            store.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(args.out.with_suffix(".md").read_text())
    return 0


def _pure_reference(args: argparse.Namespace) -> dict[str, dict]:
    """The pure phases per ``--runs`` value from ``--pure-from``'s label, checked to be of the
    same grid, data and settings."""
    path = args.out.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {}
    if args.pure_from not in results:
        raise SystemExit(f"--pure-from: no label {args.pure_from!r} in {path}")
    ref = results[args.pure_from]
    for key in ("samples", "epochs", "ig_steps", "ig_samples", "seeds_per_trial"):
        if ref.get(key) != getattr(args, key):
            raise SystemExit(
                f"--pure-from {args.pure_from}: its {key} is {ref.get(key)}, this run's "
                f"{getattr(args, key)}: not the same settings"
            )
    out = {}
    for runs in args.runs:
        pure = ref["grids"].get(str(runs), {}).get("pure")
        if not pure or any(phase.get("exit_code") for phase in pure.values()):
            raise SystemExit(f"--pure-from {args.pure_from}: no finished pure path at {runs} runs")
        out[str(runs)] = pure
    return out


def _write(args: argparse.Namespace, grids: dict, load_before: tuple) -> None:
    from deeppert.tracking.client import code_version

    path = args.out.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {}
    results[args.label] = {
        "command": "python bench/bench_platform_scale.py " + " ".join(sys.argv[1:]),
        "code": code_version(),
        "machine": (
            f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load "
            f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
        ),
        "shapes": [f"{k}_d{d}" for k, d in SHAPES],
        "samples": args.samples,
        "epochs": args.epochs,
        "ig_steps": args.ig_steps,
        "ig_samples": args.ig_samples,
        "seeds_per_trial": args.seeds_per_trial,
        **({"pure_from": args.pure_from} if args.pure_from else {}),
        "grids": {str(r): g for r, g in grids.items()},
        "slopes": slopes(grids),
        "notes": (
            "CPU s and peak RSS are sampled every 0.5 s over process trees (pure: the CLI step; "
            "platform: driver = the job's entry process, workers = Ray workers (trials, tasks), "
            "ray_system = head processes, server = the tracking server); requests = lines of "
            "the server's access log during the phase; artifact_bytes = growth of the served "
            "artifact store, database_bytes = growth of the PostgreSQL database; sweep is "
            "compared with pure train + attribute; 'full_grid_extrapolated' values are linear "
            "extrapolations, not measurements"
        ),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    md = args.out.with_suffix(".md")
    notes = md.read_text().partition(NOTES)[2] if md.exists() else ""
    md.write_text(markdown(results) + (NOTES + notes if notes else ""))


if __name__ == "__main__":
    sys.exit(main())
