"""TrackingSession: one client per session, made lazily, never pickled; connect() in one line."""

from __future__ import annotations

import pickle
import socket

import pytest

from deeppert.config import TrackingConfig
from deeppert.errors import DeeppertError
from deeppert.tracking import ServerUnreachable, TrackingSession


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pickles_without_its_client_and_makes_one_lazily() -> None:
    tracking = TrackingConfig(uri="http://127.0.0.1:1", experiment="e", http_max_retries=3)
    session = TrackingSession(tracking, experiment_id="7")
    client = session.client
    assert session.client is client  # one client per session, not one per call
    assert client.tracking_uri == "http://127.0.0.1:1"

    copy = pickle.loads(pickle.dumps(session))
    assert copy._client is None  # the client stayed behind
    assert session._client is client  # pickling did not drop the original's
    assert (copy.uri, copy.experiment_id, copy.tracking) == ("http://127.0.0.1:1", "7", tracking)
    again = copy.client  # made on first use in the receiving process
    assert again is not client and again.tracking_uri == "http://127.0.0.1:1"
    assert copy.client is again


def test_client_sets_the_retry_budget_of_its_config(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    tracking = TrackingConfig(uri="http://127.0.0.1:1", http_max_retries=4)
    session = pickle.loads(pickle.dumps(TrackingSession(tracking)))
    session.client  # noqa: B018 - building it configures this process, sends nothing
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "4"


def test_experiment_id_before_connect_is_named() -> None:
    session = TrackingSession.for_uri("http://127.0.0.1:1")
    with pytest.raises(DeeppertError, match=r"http://127.0.0.1:1 has no experiment: call connect"):
        session.experiment_id  # noqa: B018


def test_connect_to_a_down_server_raises_one_line() -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    session = TrackingSession.for_uri(uri, "never-made")
    with pytest.raises(ServerUnreachable) as info:
        session.connect(timeout=2.0)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"MLflow tracking server at {uri} is unreachable")
    assert session._client is None  # nothing was made for a server that is not there
    with pytest.raises(DeeppertError, match="call connect"):
        session.experiment_id  # noqa: B018
