"""The MLflow UI with a sweep of 1,200 child runs: how long its pages take to open.

A sweep parent (``open_sweep``) and ``--runs`` x 12 shapes child runs carrying what a trial
run carries (the trial's tags, params and description, one epoch of epoch metrics, the
held-out metrics, a registered encoder version (no files: the pages measured list runs,
they do not open models) and its tag) are logged with ``MlflowClient`` to a ``deeppert server`` on
a fresh database of the machine's PostgreSQL (``createdb``; dropped at the end). The sweep
report is then logged on the parent (:func:`~deeppert.tracking.report.log_sweep_report`,
timed: it reads every child run).

Headless Chromium (driven over the DevTools protocol with aiohttp) opens the experiment page
and the parent run's page; per page: seconds from navigation until the page shows its
``marker`` text (a run name of the table, the parent's report title), the requests it made
to the server and their count, and a screenshot into ``--img``.

Usage::

    python bench/bench_ui_scale.py --runs 100 --pg postgresql://postgres@127.0.0.1:5432
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_concurrency import endpoint  # noqa: E402
from bench.bench_platform_scale import REQUEST  # noqa: E402

RESULTS = REPO / "bench" / "results"
MODELS, DIMS = ("AE", "VAE"), (5, 10, 25, 50, 75, 100)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def log_sweep(url: str, runs: int, workers: int) -> dict:
    """Parent + runs x 12 finished child runs with a trial's tags, params and metrics."""
    import numpy as np
    from mlflow.entities import Metric

    from deeppert.config import parse_config
    from deeppert.tracking.client import finish_run
    from deeppert.tracking.contract import (
        AGREEMENT_METRIC,
        EPOCH_METRICS,
        HELD_OUT_METRICS,
        IG_METRIC,
        TAGS,
        VERSION_TAGS,
        encoder_model_name,
    )
    from deeppert.tracking.report import log_sweep_report
    from deeppert.tracking.sweep import _Shape, _start_trial_run, open_sweep

    config = parse_config(
        {
            "name": "ui-scale",
            "datasets": [{"name": "SYN", "synthetic": {"n_samples": 400}}],
            "preprocess": {"n_components": 100},
            "grid": {
                "models": list(MODELS),
                "latent_dims": list(DIMS),
                "runs": runs,
                "baselines": False,
            },
            "train": {"epochs": 1},
            "tracking": {"uri": url, "experiment": "ui-scale"},
        }  # fmt: skip
    )
    t0 = time.perf_counter()
    ctx = open_sweep(config)
    prepared = SimpleNamespace(pca=SimpleNamespace(n_components=100))  # what the params read
    rng = np.random.default_rng(0)
    client = ctx.session.client

    def point(args: tuple[str, int, int]) -> None:
        kind, dim, run = args
        shape = _Shape("SYN", "0" * 64, kind, dim)
        run_id = _start_trial_run(ctx, prepared, config, shape=shape, run=run)
        stamp = int(time.time() * 1000)
        r2 = float(np.clip(0.3 + 0.004 * dim + 0.02 * rng.standard_normal(), 0, 1))
        metrics = [Metric(m, float(rng.random()), stamp, 0) for m in EPOCH_METRICS]
        held = {"r2_pca": r2 + 0.1, "r2_genes": r2, "val_sse_plus_kl": 50 * (1 - r2)}
        held |= {IG_METRIC: 0.01, AGREEMENT_METRIC: 0.8}
        metrics += [Metric(k, v, stamp, 0) for k, v in held.items() if k in held]
        assert set(HELD_OUT_METRICS) <= set(held)
        client.log_batch(run_id, metrics=metrics)
        version = client.create_model_version(
            encoder_model_name("SYN", kind, dim),
            source=f"runs:/{run_id}/encoder",  # no files: the pages measured do not open it
            run_id=run_id,
            tags={VERSION_TAGS.sweep: ctx.sweep, VERSION_TAGS.model: kind,
                  VERSION_TAGS.dim: str(dim), VERSION_TAGS.run: str(run),
                  VERSION_TAGS.grid_key: shape.grid_key(run),
                  VERSION_TAGS.r2_genes: f"{r2:.4f}"},
        )  # fmt: skip
        client.set_tag(run_id, TAGS.encoder_version, version.version)
        finish_run(ctx.session, run_id)

    for kind in MODELS:
        for dim in DIMS:
            client.create_registered_model(encoder_model_name("SYN", kind, dim))
    grid = [(k, d, r) for k in MODELS for d in DIMS for r in range(runs)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(point, grid))
    logged = time.perf_counter() - t0
    t0 = time.perf_counter()
    log_sweep_report(ctx, config)
    report = time.perf_counter() - t0
    finish_run(ctx.session, ctx.parent_run_id)
    return {
        "experiment_id": ctx.session.experiment_id,
        "parent_run_id": ctx.parent_run_id,
        "child_runs": len(grid),
        "log_s": round(logged, 1),
        "report_s": round(report, 1),
        "parent_name": f"sweep {config.name}",
    }


async def _open_page(port: int, url: str, marker: str, png: Path, timeout: float) -> dict:
    """Navigate a fresh tab to ``url``; seconds until ``marker`` is in the page's text."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.put(f"http://127.0.0.1:{port}/json/new?about:blank") as resp:
            target = await resp.json()
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 10**6))

            async def call(method: str, **params) -> dict:
                my = next(ids)
                await ws.send_json({"id": my, "method": method, "params": params})
                while True:
                    msg = await ws.receive_json()
                    if msg.get("id") == my:
                        if "error" in msg:
                            raise RuntimeError(f"{method}: {msg['error']}")
                        return msg.get("result", {})

            await call("Page.enable")
            await call("Emulation.setDeviceMetricsOverride", width=1600, height=1000,
                       deviceScaleFactor=1, mobile=False)  # fmt: skip
            t0 = time.perf_counter()
            await call("Page.navigate", url=url)
            shown = None
            while time.perf_counter() - t0 < timeout:
                text = await call(
                    "Runtime.evaluate",
                    expression="document.body ? document.body.innerText : ''",
                    returnByValue=True,
                )
                if marker in text["result"].get("value", ""):
                    shown = time.perf_counter() - t0
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(3.0)  # let the rest of the page settle before the screenshot
            shot = await call("Page.captureScreenshot", format="png")
            png.write_bytes(base64.b64decode(shot["data"]))
            return {"url": url, "marker": marker, "shown_s": None if shown is None else round(shown, 2),
                    "screenshot": str(png)}  # fmt: skip


def time_pages(server, pages: list[tuple[str, str, str, Path]], timeout: float) -> list[dict]:
    """Each page in a fresh headless Chromium (cold cache), with the server requests it made."""
    chromium = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if chromium is None:
        raise SystemExit("no Chromium on PATH (apt-get install chromium)")
    from deeppert.tracking.server import free_port

    out = []
    for name, url, marker, png in pages:
        port = free_port()
        profile = tempfile.mkdtemp(prefix="deeppert-ui-chromium-")
        proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_devtools(port)
            log_start = server.log_path.stat().st_size
            result = asyncio.run(_open_page(port, url, marker, png, timeout))
            with open(server.log_path, "rb") as f:
                f.seek(log_start)
                requests = REQUEST.findall(f.read().decode(errors="replace"))
            api = [(m, p) for m, p, _ in requests if "/api/" in p or "/ajax-api/" in p]
            result |= {
                "page": name,
                "requests": len(requests),
                "api_requests": dict(collections.Counter(endpoint(p) for _, p in api)),
            }
            out.append(result)
            print(f"  {name}: shown after {result['shown_s']} s, {len(requests)} requests",
                  flush=True)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(30)
            shutil.rmtree(profile, ignore_errors=True)
    return out


def _wait_devtools(port: int, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="runs per shape (12 shapes)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432",
                        help="PostgreSQL server (trust auth) to create the database on")  # fmt: skip
    parser.add_argument("--workers", type=int, default=4, help="threads logging the runs")
    parser.add_argument("--timeout", type=float, default=120.0, help="per page, seconds")
    parser.add_argument("--label", default="ui")
    parser.add_argument("--img", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--out", type=Path, default=RESULTS / "ui_scale.json")
    args = parser.parse_args(argv)

    import psycopg2

    from deeppert.tracking.client import ui_url
    from deeppert.tracking.server import ServerConfig, TrackingServer

    database = f"deeppert_ui_scale_{os.getpid()}"
    admin = psycopg2.connect(f"{args.pg}/postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {database}")
    work = Path(tempfile.mkdtemp(prefix="deeppert-ui-scale-"))
    load_before = os.getloadavg()
    try:
        server = TrackingServer(
            ServerConfig(data_dir=str(work), backend_store_uri=f"{args.pg}/{database}", port=0)
        )
        with server:
            sweep = log_sweep(server.url, args.runs, args.workers)
            print(f"logged {sweep['child_runs']} child runs in {sweep['log_s']} s, "
                  f"report {sweep['report_s']} s", flush=True)  # fmt: skip
            exp, parent = sweep["experiment_id"], sweep["parent_run_id"]
            n = sweep["child_runs"]
            pages = [
                ("experiment", ui_url(server.url, exp), sweep["parent_name"],
                 args.img / f"ui_scale_{n}_experiment.png"),
                ("parent run", ui_url(server.url, exp, parent),
                 "Sweep", args.img / f"ui_scale_{n}_parent.png"),
            ]  # fmt: skip
            args.img.mkdir(parents=True, exist_ok=True)
            timed = time_pages(server, pages, args.timeout)
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()
        shutil.rmtree(work, ignore_errors=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.label] = {
        "command": "python bench/bench_ui_scale.py " + " ".join(sys.argv[1:]),
        "machine": (
            f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load "
            f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
        ),
        "sweep": sweep,
        "pages": timed,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results[args.label], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
