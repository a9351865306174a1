"""``deeppert cluster start`` against itself: the folder's lock, not a check of cluster.json."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deeppert.cluster import free_ports, lock_cluster_dir, stop_cluster
from deeppert.errors import DeeppertError

REPO = Path(__file__).resolve().parents[1]


def _start(folder: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "deeppert", "cluster", "start", "--dir", str(folder),
         "--num-cpus", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _lock_is_free(folder: Path) -> bool:
    fd = os.open(folder / "cluster.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_free_ports_are_distinct_bindable_and_outside_ephemeral_and_ray_worker_ports() -> None:
    """Ports promised to Ray's and MLflow's servers come from the band no outgoing connection
    or Ray worker takes (20000 up to the kernel's ephemeral range), skip ``exclude`` and ports
    in use, and are free to bind."""
    import socket

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    if low - 20000 < 64 * 9:
        pytest.skip(f"ephemeral ports start at {low}: no band to pick from, the kernel picks")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        for _ in range(20):
            ports = free_ports(9, exclude=(20000,))
            assert len(set(ports)) == 9
            assert all(20000 < p < low for p in ports), ports
            assert busy.getsockname()[1] not in ports
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_held_lock_refuses_a_start_before_it_touches_anything(tmp_path: Path) -> None:
    """While another process (here: a child that inherited the descriptor, as the server and
    the head do) holds the lock, a start exits 2 in one line and writes nothing."""
    fd = lock_cluster_dir(tmp_path)
    holder = subprocess.Popen(["sleep", "60"], pass_fds=(fd,))
    os.close(fd)  # only the child holds it now
    try:
        with pytest.raises(DeeppertError, match="another `deeppert cluster start` is starting"):
            lock_cluster_dir(tmp_path)
        proc = _start(tmp_path)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.lock"]
        info = {"ray_address": "http://127.0.0.1:1", "tracking_uri": "http://127.0.0.1:2",
                "ray_pid": 11, "server_pid": 22, "folder": str(tmp_path)}  # fmt: skip
        (tmp_path / "cluster.json").write_text(json.dumps(info))
        with pytest.raises(
            DeeppertError, match=r"a cluster is running in .*Ray http://127.0.0.1:1"
        ):
            lock_cluster_dir(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert _lock_is_free(tmp_path)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.timeout(300)
def test_two_starts_at_once_make_one_cluster_that_stops_whole(tmp_path: Path) -> None:
    """Two `cluster start --dir D` at once: one exits 0, the other 2 in one line naming the
    folder; cluster.json names the winner; its stop releases the lock (no process left)."""
    t0 = time.perf_counter()
    first, second = _start(tmp_path), _start(tmp_path)
    results = [(p.wait(240), *p.communicate()) for p in (first, second)]
    print(f"\nMEASURE two concurrent cluster starts: {time.perf_counter() - t0:.0f} s")
    try:
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 2], results
        (_, out, _), (_, _, err) = sorted(results)
        assert len(err.strip().splitlines()) == 1, err
        assert f"in {tmp_path}" in err and "deeppert cluster stop" in err, err
        info = json.loads((tmp_path / "cluster.json").read_text())
        assert f"export RAY_ADDRESS={info['ray_address']}" in out
        assert not _lock_is_free(tmp_path)  # the server and the head hold it after start
    finally:
        if (tmp_path / "cluster.json").exists():
            stop_cluster(tmp_path)
    assert _lock_is_free(tmp_path)
