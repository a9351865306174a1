"""Benchmark: request latency of the tracking server without auth, with auth and the credential
cache off, and with auth at the default cache TTL, in one run.

Starts one local ``TrackingServer`` per case (SQLite, 1 worker, fresh data dir) and times
``--requests`` authenticated ``experiments/search`` calls over one keep-alive session after
``--warmup`` untimed ones. Reports median and p95 in milliseconds per case to
``bench/results/auth.json``.

Usage::

    python bench/bench_auth.py [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def time_requests(url: str, auth: tuple[str, str] | None, n: int, warmup: int) -> list[float]:
    """Milliseconds of each of ``n`` GET experiments/search calls (after ``warmup`` calls)."""
    import requests

    api = f"{url}/api/2.0/mlflow/experiments/search"
    with requests.Session() as session:
        session.auth = auth
        times = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            answer = session.get(api, params={"max_results": 1}, timeout=30)
            elapsed = (time.perf_counter() - t0) * 1000
            answer.raise_for_status()
            if i >= warmup:
                times.append(elapsed)
    return times


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "n": len(times),
        "median_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "auth.json"))
    args = parser.parse_args(argv)

    from deeppert.tracking.server import DEFAULT_AUTH_CACHE_TTL, ServerConfig, TrackingServer

    password = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
    }
    cases = {
        "no_auth": (dict(auth=False), None),
        "auth_cache_off": (dict(auth=True, auth_cache_ttl=0), ("admin", password)),
        f"auth_cache_ttl_{DEFAULT_AUTH_CACHE_TTL}s": (dict(auth=True), ("admin", password)),
    }
    out: dict = {"machine": f"{os.cpu_count()}-core CPU", "requests": args.requests}
    with tempfile.TemporaryDirectory(prefix="deeppert-auth-bench-") as tmp:
        for name, (fields, auth) in cases.items():
            config = ServerConfig(data_dir=str(Path(tmp) / name), port=0, **fields)
            with TrackingServer(config, env=env) as server:
                out[name] = summary(time_requests(server.url, auth, args.requests, args.warmup))
            print(name, out[name], flush=True)
    base = out["no_auth"]["median_ms"]
    for name in list(cases)[1:]:
        out[name]["median_over_no_auth"] = round(out[name]["median_ms"] / base, 2)
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
