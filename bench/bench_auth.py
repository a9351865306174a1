"""Benchmark: request latency of the tracking server without auth, with auth and the credential
cache off, and with auth at the default cache TTL, in one run.

Starts one local ``TrackingServer`` per case (SQLite, 1 worker, fresh data dir), all three at
once, and times ``--requests`` ``experiments/search`` calls per case over one keep-alive
session each after ``--warmup`` untimed ones, the cases taking turns request by request (a
change in the machine's load then weighs on all alike). Reports median and p95 in
milliseconds per case to ``bench/results/auth.json``.

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
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def time_requests(
    cases: dict[str, tuple[str, tuple[str, str] | None]], n: int, warmup: int
) -> dict[str, list[float]]:
    """Milliseconds of each of ``n`` GET experiments/search calls per case (after ``warmup``
    calls), the cases taking turns request by request so that a change in the machine's load
    weighs on all of them alike. ``cases``: name -> (server URL, basic-auth pair or None)."""
    import requests

    sessions = {}
    for name, (_, auth) in cases.items():
        sessions[name] = requests.Session()
        sessions[name].auth = auth
    times: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for i in range(warmup + n):
            for name, (url, _) in cases.items():
                t0 = time.perf_counter()
                answer = sessions[name].get(
                    f"{url}/api/2.0/mlflow/experiments/search",
                    params={"max_results": 1},
                    timeout=30,
                )
                elapsed = (time.perf_counter() - t0) * 1000
                answer.raise_for_status()
                if i >= warmup:
                    times[name].append(elapsed)
    finally:
        for session in sessions.values():
            session.close()
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
    with tempfile.TemporaryDirectory(prefix="deeppert-auth-bench-") as tmp, ExitStack() as stack:
        targets = {}
        for name, (fields, auth) in cases.items():
            config = ServerConfig(data_dir=str(Path(tmp) / name), port=0, **fields)
            server = stack.enter_context(TrackingServer(config, env=env))
            targets[name] = (server.url, auth)
        for name, times in time_requests(targets, args.requests, args.warmup).items():
            out[name] = summary(times)
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
