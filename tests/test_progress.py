"""Progress: a bar on a terminal, at most about ten log lines with an ETA otherwise."""

from __future__ import annotations

import io
import logging
import sys
import types

from deeppert.progress import Progress


def test_log_lines_without_a_terminal(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="deeppert.progress"):
        with Progress(200, "training", unit="epoch", tty=False) as bar:
            for _ in range(200):
                bar.update(1, loss=0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 11  # at once, then 10%, 20%, ..., 100%: not one line per step
    assert lines[0] == "training: 0/200 epochs"
    assert lines[1].startswith("training: 20/200 epochs (10%)")
    assert lines[-1].startswith("training: 200/200 epochs (100%)")
    assert all("ETA" in line and "loss 0.5" in line for line in lines[1:])


def test_bar_on_a_terminal(monkeypatch, caplog) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    with caplog.at_level(logging.INFO, logger="deeppert.progress"):
        with Progress(3, "attributing", unit="run", tty=True) as bar:
            for _ in range(3):
                bar.update(1, model="VAE_d5")
    assert caplog.records == []  # the bar replaces the log lines
    assert "attributing: 100%" in err.getvalue() and "3/3" in err.getvalue()


def test_bar_in_a_notebook_kernel(monkeypatch, caplog) -> None:
    """A Jupyter kernel's stderr is a pipe, yet a person watches it: the bar, not log lines
    that an unconfigured logger would drop."""
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    with caplog.at_level(logging.INFO, logger="deeppert.progress"):
        with Progress(2, "training", unit="epoch") as bar:
            bar.update(2)
    assert caplog.records == []
    assert "training: 100%" in err.getvalue()
    monkeypatch.delitem(sys.modules, "ipykernel")
    with caplog.at_level(logging.INFO, logger="deeppert.progress"):
        with Progress(2, "training", unit="epoch") as bar:  # a pipe, no kernel: log lines
            bar.update(2)
    assert [r.getMessage() for r in caplog.records][0] == "training: 0/2 epochs"
