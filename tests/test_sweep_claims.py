"""Grid-point claims (deeppert.tracking.claims.claim_state): which existing run blocks a point."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from types import SimpleNamespace

from deeppert.tracking.claims import ClaimState, claim_state
from deeppert.tracking.contract import TAGS
from deeppert.tracking.session import TrackingSession
from deeppert.tracking.sweep import SweepContext

CTX = SweepContext(
    TrackingSession.for_uri("http://x", experiment_id="1"),
    "parent",
    "s",
    "sha-a",
    "v",
    heartbeat_seconds=5,
    claim_stale_seconds=60,
)
NOW = 10_000_000


def run(status: str, *, worker: str, beat_age_s: float | None, sha: str = "sha-a"):
    tags = {TAGS.worker: worker, TAGS.config_sha: sha}
    if beat_age_s is not None:
        tags[TAGS.heartbeat] = str(int(NOW - beat_age_s * 1000))
    return SimpleNamespace(
        info=SimpleNamespace(status=status, start_time=NOW - 600_000, run_id="r"),
        data=SimpleNamespace(tags=tags),
    )


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_claim_states() -> None:
    here = socket.gethostname()
    alive = f"{here}:{os.getpid()}"
    assert (
        claim_state(run("FINISHED", worker=alive, beat_age_s=1), CTX, now=NOW)[0] == ClaimState.done
    )
    assert (
        claim_state(run("FINISHED", worker=alive, beat_age_s=1, sha="b"), CTX, now=NOW)[0]
        == ClaimState.ended
    )
    assert (
        claim_state(run("FAILED", worker=alive, beat_age_s=1), CTX, now=NOW)[0] == ClaimState.ended
    )
    # A live attempt: fresh heartbeat, worker alive (this process), or on another host.
    assert (
        claim_state(run("RUNNING", worker=alive, beat_age_s=5), CTX, now=NOW)[0] == ClaimState.live
    )
    assert (
        claim_state(run("RUNNING", worker="elsewhere:1", beat_age_s=59), CTX, now=NOW)[0]
        == ClaimState.live
    )
    # Dead attempts: the worker process on this host is gone, or the heartbeat is stale.
    state, why = claim_state(
        run("RUNNING", worker=f"{here}:{dead_pid()}", beat_age_s=1), CTX, now=NOW
    )
    assert state == ClaimState.stale and "is gone" in why
    state, why = claim_state(run("RUNNING", worker="elsewhere:1", beat_age_s=61), CTX, now=NOW)
    assert state == ClaimState.stale and "no heartbeat for 61 s" in why
    # No heartbeat tag at all (a run from before claims): its start time counts.
    assert (
        claim_state(run("RUNNING", worker="elsewhere:1", beat_age_s=None), CTX, now=NOW)[0]
        == ClaimState.stale
    )


def test_tune_trials_are_named_for_what_they_train() -> None:
    from ray_jobs.sweep import trial_name

    trial = {"dataset": "A549", "model": "AE", "latent_dim": 10}
    assert trial_name({**trial, "runs": list(range(20))}) == "A549_AE_d10_runs0-19"
    assert trial_name({**trial, "runs": [3]}) == "A549_AE_d10_run3"
    assert trial_name({**trial, "runs": [0, 2, 5]}) == "A549_AE_d10_runs0,2,5"


def test_a_trial_beats_once_for_all_its_runs() -> None:
    """The heartbeat renews one run's tag per beat (the lead), the others point at it, and a
    follower's claim is as fresh or stale as its lead's heartbeat."""
    import threading

    from deeppert.tracking.claims import Heartbeat

    calls, beat = [], threading.Event()

    def set_tag(run_id, key, value):
        calls.append((run_id, key, value))
        if key == TAGS.heartbeat:
            beat.set()

    session = SimpleNamespace(client=SimpleNamespace(set_tag=set_tag))
    run_ids = {3: "c", 1: "a", 2: "b"}
    heartbeat = Heartbeat(session, run_ids, interval=0.01).start()
    assert beat.wait(10)
    heartbeat.stop()
    pointers = [(r, v) for r, k, v in calls if k == TAGS.heartbeat_run]
    assert sorted(pointers) == [("b", "a"), ("c", "a")]
    assert {r for r, k, _ in calls if k == TAGS.heartbeat} == {"a"}

    follower = run("RUNNING", worker="elsewhere:1", beat_age_s=600)
    follower.data.tags[TAGS.heartbeat_run] = "a"
    fresh_lead = run("FINISHED", worker="elsewhere:1", beat_age_s=5)
    stale_lead = run("RUNNING", worker="elsewhere:1", beat_age_s=61)
    assert claim_state(follower, CTX, now=NOW, lead=fresh_lead)[0] == ClaimState.live
    assert claim_state(follower, CTX, now=NOW, lead=stale_lead)[0] == ClaimState.stale
