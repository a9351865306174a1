"""Grid-point claims and their heartbeats: how concurrent sweep attempts agree on one owner.

A trial run is the claim on its grid point. While a trial trains, a :class:`Heartbeat` thread
renews tag ``deeppert.heartbeat`` (epoch ms) on one of its runs, the lead, which the others
name in tag ``deeppert.heartbeat_run``: one request per beat whatever the trial's number of
runs. Before training a point, a trial
reads the point's trial runs (:func:`claim_state`): FINISHED with the same config -> done;
RUNNING with a fresh heartbeat and a live worker -> busy, waited for and never marked failed;
RUNNING with a stale heartbeat or a dead worker on this host -> marked FAILED and taken over.
Two trials that create a claim at once keep the oldest run (:func:`claim_grid_points`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from deeppert.errors import DeeppertError
from deeppert.tracking.client import (
    REQUEST_THREADS,
    find_runs_by_tag,
    first_line,
    mark_run_failed,
)
from deeppert.tracking.contract import TAGS

if TYPE_CHECKING:
    from deeppert.tracking.session import TrackingSession
    from deeppert.tracking.sweep import SweepContext

__all__ = [
    "ClaimState",
    "claim_state",
    "claim_grid_points",
    "Heartbeat",
    "heartbeat_lead",
    "if_reachable",
    "mark_failed_if_reachable",
    "now_ms",
    "worker_id",
    "process_alive",
]

log = logging.getLogger(__name__)


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds, the unit of ``deeppert.heartbeat``."""
    return int(time.time() * 1000)


def worker_id() -> str:
    """``host:pid`` of this process (tags ``deeppert.worker`` and ``deeppert.driver``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_alive(worker: str) -> bool | None:
    """Whether the process ``host:pid`` exists; ``None`` when it runs on another host."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def if_reachable(session: TrackingSession, action: Callable[[], None], undone: str) -> None:
    """Run ``action`` (requests to the server) if the server answers; else log ``undone``.

    One quick liveness probe first (:meth:`TrackingSession.check`), so an unreachable server
    costs seconds, not the client's retry budget per request: for the last words of a trial
    or driver that is failing anyway, whose original exception is the one to raise.
    """
    from mlflow.exceptions import MlflowException

    try:
        session.check(timeout=3.0)
        action()
    except (DeeppertError, MlflowException, OSError) as exc:
        log.warning("could not %s (%s)", undone, first_line(exc))


def mark_failed_if_reachable(session: TrackingSession, run_ids: list[str], reason: str) -> None:
    """Mark ``run_ids`` FAILED with ``reason``; if the server cannot be reached, leave them.

    Runs left RUNNING this way have a heartbeat that stops being renewed, so the next trial or
    resume of their grid point finds them stale and marks them FAILED then.
    """
    if not run_ids:
        return

    def mark() -> None:
        for run_id in run_ids:
            mark_run_failed(session, run_id, reason=reason)

    if_reachable(session, mark, f"mark run(s) {', '.join(run_ids)} FAILED; the next attempt will")


class ClaimState:
    """What an existing trial run means for its grid point (:func:`claim_state`)."""

    done = "done"  # FINISHED with this config: nothing to train
    live = "live"  # RUNNING, heartbeat fresh and worker alive: another attempt trains it
    stale = "stale"  # RUNNING but its attempt is gone: mark FAILED, take over
    ended = "ended"  # FAILED / KILLED / FINISHED with another config: ignore


def claim_state(
    trial_run: Any, ctx: SweepContext, *, now: int | None = None, lead: Any = None
) -> tuple[str, str]:
    """``(state, why)`` of an existing trial run (an MLflow ``Run``) of a grid point, for
    :func:`claim_grid_points`; ``now`` in epoch ms (default: the clock). ``lead``: the run
    its tag ``deeppert.heartbeat_run`` names (:func:`heartbeat_lead`), whose heartbeat is
    the trial's."""
    status = trial_run.info.status
    tags = trial_run.data.tags
    if status == "FINISHED":
        same = tags.get(TAGS.config_sha) == ctx.config_sha
        return (ClaimState.done if same else ClaimState.ended), status
    if status not in ("RUNNING", "SCHEDULED"):
        return ClaimState.ended, status
    worker = tags.get(TAGS.worker, "")
    if process_alive(worker) is False:
        return ClaimState.stale, f"its worker {worker} is gone"
    beat = (lead.data.tags if lead is not None else tags).get(TAGS.heartbeat)
    last = int(beat) if beat and beat.isdigit() else trial_run.info.start_time
    age = ((now or now_ms()) - last) / 1000
    if age > ctx.claim_stale_seconds:
        return ClaimState.stale, f"no heartbeat for {age:.0f} s"
    return ClaimState.live, f"heartbeat {age:.0f} s ago"


def heartbeat_lead(session: TrackingSession, trial_run: Any) -> Any:
    """The run whose heartbeat stands for RUNNING ``trial_run``'s (tag
    ``deeppert.heartbeat_run``), fetched; None when it beats itself or is not RUNNING."""
    lead = trial_run.data.tags.get(TAGS.heartbeat_run)
    if trial_run.info.status != "RUNNING" or not lead or lead == trial_run.info.run_id:
        return None
    return session.client.get_run(lead)


def claim_grid_points(
    ctx: SweepContext, keys: dict[int, str], create: Callable[[int], str]
) -> tuple[dict[int, str], list[int]]:
    """Claim the grid points ``keys`` (run -> grid key) that nobody has finished or is training.

    For each point: a FINISHED trial run of this config means done; a live RUNNING one (fresh
    heartbeat, worker alive) means busy, and it is never touched; stale RUNNING ones are
    marked FAILED ("superseded by a retry"). Free points get a new trial run from
    ``create(run)``; then the point's live trial runs are compared and the oldest (start time,
    then run id) wins, so two trials that created one at the same moment agree on one owner;
    the loser deletes its trial run before any work. Returns ``(claimed run -> run id, busy
    runs)``; ``run`` is always a seed index, an MLflow run is a ``trial_run``.
    """
    session = ctx.session

    def trial_runs_of(key: str) -> list:
        return find_runs_by_tag(session, TAGS.grid_key, key, parent_run_id=ctx.parent_run_id)

    def claim(run: int, key: str) -> tuple[str, str]:
        """("done" | "busy" | "claimed", the claiming run id) of one grid point."""
        states = [
            (trial_run, *claim_state(trial_run, ctx, lead=heartbeat_lead(session, trial_run)))
            for trial_run in trial_runs_of(key)
        ]
        if any(state == ClaimState.done for _, state, _ in states):
            return "done", ""
        for old, state, why in states:
            if state == ClaimState.stale:
                log.info("%s: run %s is stale (%s); taking over", key, old.info.run_id, why)
                mark_run_failed(
                    session,
                    old.info.run_id,
                    reason=f"attempt died before finishing ({why}); superseded by a retry",
                )
        if any(state == ClaimState.live for _, state, _ in states):
            return "busy", ""
        run_id = create(run)
        live = [
            t
            for t in trial_runs_of(key)
            if claim_state(t, ctx, lead=heartbeat_lead(session, t))[0] == ClaimState.live
        ]
        owner = min(live, key=lambda t: (t.info.start_time, t.info.run_id), default=None)
        if owner is not None and owner.info.run_id != run_id:
            log.info("%s: claimed at the same time by run %s; yielding", key, owner.info.run_id)
            session.client.delete_run(run_id)
            return "busy", ""
        return "claimed", run_id

    # Points are independent and each claim is a few waits on the server (search, create,
    # search): REQUEST_THREADS at once. A trial of 100 runs spent minutes here, GPU idle.
    with ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="deeppert-claim") as pool:
        outcomes = list(pool.map(claim, keys, keys.values()))
    claimed = {run: run_id for run, (o, run_id) in zip(keys, outcomes) if o == "claimed"}
    busy = [run for run, (o, _) in zip(keys, outcomes) if o == "busy"]
    return claimed, busy


class Heartbeat:
    """Renew tag ``deeppert.heartbeat`` every ``interval`` seconds on the lead of the runs in
    ``run_ids`` (its first run), which the others name in tag ``deeppert.heartbeat_run``: a
    trial of many runs costs one request per beat, not one per run.

    ``run_ids`` is read at every beat: the lead beats until the trial has finished (popped)
    every run, its own included. A beat that cannot reach the server is skipped (the main
    thread meets the same outage and fails or retries); an attempt that stops beating is
    taken over by others after ``sweep.claim_stale_seconds``.
    """

    def __init__(self, session: TrackingSession, run_ids: dict[int, str], interval: float) -> None:
        self._session, self._run_ids, self._interval = session, run_ids, interval
        self._lead = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="deeppert-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        """Point the other runs at the lead (one tag each), then beat in a thread."""
        if self._run_ids:
            self._lead = self._run_ids[min(self._run_ids)]
            others = [run_id for run_id in self._run_ids.values() if run_id != self._lead]
            with ThreadPoolExecutor(REQUEST_THREADS) as pool:
                list(pool.map(self._point_at_lead, others))
        self._thread.start()
        return self

    def _point_at_lead(self, run_id: str) -> None:
        self._session.client.set_tag(run_id, TAGS.heartbeat_run, self._lead)

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        client = self._session.client
        while not self._stop.wait(self._interval) and self._run_ids:
            try:
                client.set_tag(self._lead, TAGS.heartbeat, str(now_ms()))
            except Exception as exc:  # noqa: BLE001 - logged; the claim just ages
                log.warning("heartbeat of run %s not renewed: %s", self._lead, first_line(exc))
