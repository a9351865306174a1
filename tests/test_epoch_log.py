"""A trial's epoch metrics: every metric of every run and epoch reaches its run exactly once,
in a handful of requests rather than one per run and epoch."""

from __future__ import annotations

import collections

import pandas as pd
import pytest

from deeppert.tracking import sweep
from deeppert.tracking.contract import EPOCH_METRICS


class RecordingClient:
    def __init__(self) -> None:
        self.batches: list[tuple[str, list]] = []

    def log_batch(self, run_id: str, metrics: list) -> None:
        assert len(metrics) <= 1000, "MLflow refuses more than 1,000 metrics in one batch"
        self.batches.append((run_id, list(metrics)))


def epoch_frame(runs: list[int], epoch: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"run": runs, **{name: [epoch + r / 10 for r in runs] for name in EPOCH_METRICS}}
    )


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    now = [0.0]
    monkeypatch.setattr(sweep.time, "monotonic", lambda: now[0])
    return now


def test_epoch_metrics_are_batched_by_time_and_all_arrive_once(clock) -> None:
    runs = [0, 1, 2]
    run_ids = {r: f"id{r}" for r in runs}
    client, reported = RecordingClient(), []
    log = sweep.EpochLog(client, run_ids, reported.append, every=10.0)

    log(0, epoch_frame(runs, 0))
    assert [rid for rid, _ in client.batches] == ["id0", "id1", "id2"]  # first epoch at once
    for epoch in range(1, 30):  # 1 s an epoch: a flush every 10 s
        clock[0] += 1.0
        log(epoch, epoch_frame(runs, epoch))
    log.flush()

    assert len(reported) == 30  # the Tune report still sees every epoch
    assert len(client.batches) == 3 * 4  # epoch 0, t = 10 and 20 s, the final flush
    seen = collections.Counter(
        (rid, m.key, m.step, m.value) for rid, metrics in client.batches for m in metrics
    )
    expected = {
        (run_ids[r], name, e, e + r / 10) for r in runs for e in range(30) for name in EPOCH_METRICS
    }
    assert set(seen) == expected and set(seen.values()) == {1}
    log.flush()  # nothing left
    assert len(client.batches) == 12


def test_more_than_a_batch_of_metrics_is_split(clock) -> None:
    client = RecordingClient()
    log = sweep.EpochLog(client, {0: "id0"}, None, every=1e9)
    per_epoch = len(EPOCH_METRICS)
    epochs = 1000 // per_epoch + 5  # past 1,000 metrics after the first flush
    for epoch in range(epochs + 1):
        log(epoch, epoch_frame([0], epoch))
    log.flush()
    sizes = [len(metrics) for _, metrics in client.batches]
    assert sizes[0] == per_epoch and max(sizes) == 1000
    assert sum(sizes) == per_epoch * (epochs + 1)
