"""One tracking server, one experiment, one client: what every tracking helper takes.

A :class:`TrackingSession` carries the tracking config (server URI, experiment name, the
client's retry budget), the experiment id once :meth:`TrackingSession.connect` has found or
created it, and one ``MlflowClient`` made on first use, the way Lightning's MLflow logger and
Ray's MLflow utility carry one client. It pickles without its client (Ray hands it to trials,
``tune.with_parameters`` and remote tasks), and the unpickled copy makes its own on first use,
setting that process's MLflow retry budget first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deeppert.errors import DeeppertError
from deeppert.tracking.client import (
    check_server,
    configure_mlflow,
    get_or_create_experiment,
    tracking_client,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from deeppert.config import TrackingConfig

__all__ = ["TrackingSession"]


class TrackingSession:
    """The tracking config, its experiment id and a lazily made client.

    ``TrackingSession(config.tracking).connect()`` is how a job starts: check the server
    (one line naming it when it does not answer) and find or create the experiment.
    Readers of the registry alone connect with ``experiment=False`` and create nothing.
    """

    def __init__(self, tracking: TrackingConfig, *, experiment_id: str | None = None) -> None:
        self.tracking = tracking
        self._experiment_id = experiment_id
        self._client: MlflowClient | None = None

    @classmethod
    def for_uri(
        cls, uri: str, experiment: str | None = None, *, experiment_id: str | None = None
    ) -> TrackingSession:
        """A session on ``uri`` with the default retry budget (``experiment`` when given)."""
        from deeppert.config import TrackingConfig

        names = {"experiment": experiment} if experiment is not None else {}
        return cls(TrackingConfig(uri=uri, **names), experiment_id=experiment_id)

    @property
    def uri(self) -> str:
        """The tracking server's URI."""
        return self.tracking.uri

    @property
    def experiment_id(self) -> str:
        """The experiment's id; set by :meth:`connect`."""
        if self._experiment_id is None:
            raise DeeppertError(
                f"tracking session on {self.uri} has no experiment: call connect() first"
            )
        return self._experiment_id

    @property
    def client(self) -> MlflowClient:
        """The session's ``MlflowClient``, made on first use (after the process's MLflow
        settings and retry budget are set from :attr:`tracking`)."""
        if self._client is None:
            configure_mlflow(self.tracking)
            self._client = tracking_client(self.uri)
        return self._client

    def connect(self, *, experiment: bool = True, timeout: float = 5.0) -> TrackingSession:
        """Check the server (:func:`~deeppert.tracking.client.check_server`: raises
        ``ServerUnreachable`` or ``DeeppertError`` in one line) and, with ``experiment``, find or
        create ``tracking.experiment``; returns the session itself."""
        configure_mlflow(self.tracking)
        check_server(self.uri, timeout=timeout)
        if experiment:
            self._experiment_id = get_or_create_experiment(self, self.tracking.experiment)
        return self

    def check(self, *, timeout: float = 3.0) -> None:
        """A quick liveness probe of the server (no retries), as :meth:`connect` makes."""
        check_server(self.uri, timeout=timeout)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None  # clients hold sockets and locks; each process makes its own
        return state

    def __repr__(self) -> str:
        return (
            f"TrackingSession(uri={self.uri!r}, experiment={self.tracking.experiment!r}, "
            f"experiment_id={self._experiment_id!r})"
        )
