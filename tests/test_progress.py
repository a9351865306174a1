"""Progress: a bar on a terminal, at most about ten log lines with an ETA otherwise."""

from __future__ import annotations

import io
import logging

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
