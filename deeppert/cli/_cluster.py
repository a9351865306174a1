"""``deeppert cluster start|stop|submit``: a private Ray head + MLflow server on free ports."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from deeppert.errors import DeeppertError

__all__ = ["register"]

REPO = Path(__file__).resolve().parents[2]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cluster",
        help="start/stop a local Ray head + MLflow server on free ports; submit jobs to it",
        description="start: an MLflow server (SQLite under DIR) and a Ray head on 127.0.0.1, all "
        "ports free, token auth off for head and client; prints the exports (also in DIR/env.sh). "
        "stop: stops exactly those processes. submit: `ray job submit` of a job to it, failing "
        "in one line when no head answers.",
    )
    sub = p.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    start = sub.add_parser("start", help="start and print RAY_ADDRESS / MLFLOW_TRACKING_URI")
    start.add_argument("--dir", type=Path, required=True, help="state folder (logs, mlflow/)")
    start.add_argument("--num-cpus", type=int, default=2, help="CPUs the head offers")
    start.set_defaults(func=_start)
    stop = sub.add_parser("stop", help="stop the cluster started in DIR")
    stop.add_argument("--dir", type=Path, required=True)
    stop.set_defaults(func=_stop)
    submit = sub.add_parser(
        "submit", help="ray job submit -- COMMAND (from the repository root) to $RAY_ADDRESS"
    )
    submit.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="$RAY_ADDRESS")
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- python ray_jobs/....py")
    submit.set_defaults(func=_submit)


def _start(args: argparse.Namespace) -> int:
    from deeppert.cluster import start_cluster

    info = start_cluster(args.dir, num_cpus=args.num_cpus)
    print(info.exports(), end="", flush=True)
    return 0


def _stop(args: argparse.Namespace) -> int:
    from deeppert.cluster import stop_cluster

    info = stop_cluster(args.dir)
    print(f"stopped Ray head (pid {info.ray_pid}) and MLflow server (pid {info.server_pid})")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from deeppert.cluster import check_ray_address, job_env, submit_command

    entrypoint = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    if not entrypoint:
        raise DeeppertError(
            "nothing to submit: give the job after --, e.g. -- python ray_jobs/sweep.py ..."
        )
    if not args.address:
        raise DeeppertError(
            "no Ray address: set RAY_ADDRESS (deeppert cluster start prints it) or pass --address"
        )
    check_ray_address(args.address)
    proc = subprocess.run(submit_command(args.address, entrypoint), cwd=REPO, env=job_env())
    if proc.returncode != 0:
        print(
            f"deeppert cluster submit: job {' '.join(entrypoint)} failed (exit {proc.returncode})",
            file=sys.stderr,
        )
    return proc.returncode
