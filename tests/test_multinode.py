"""The sweep on a local multi-node Ray cluster: a head with no CPUs + two worker nodes.

Every trial must run on a worker node (its Ray node id is a tag of the trial run), the data
file is moved away right after the driver has loaded it (trials get the data through the
object store, never from the driver's file system), and artifacts reach the tracking server
only over HTTP (served artifacts): no ``mlruns`` folder appears anywhere a trial could write.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from deeppert import grid
from deeppert.config import parse_config
from deeppert.data.synthetic import SynthConfig, make_synthetic, write_synthetic
from deeppert.tracking.client import tracking_client
from deeppert.tracking.server import ServerConfig, TrackingServer, free_port
from deeppert.tracking.sweep import TAGS, sweep_name
from ray_jobs import sweep as sweep_job

REPO = Path(__file__).resolve().parents[1]


def sweep_raw(uri: str, data: Path) -> dict:
    return {
        "name": "multinode",
        "datasets": [{"name": "SYN1", "path": str(data)}],
        "preprocess": {"n_components": 10, "val_fraction": 0.1},
        "grid": {"models": ["AE", "VAE"], "latent_dims": [3], "runs": 2, "baselines": False},
        "train": {"epochs": 2, "batch_size": 128},
        "attribution": {"n_steps": 8},
        "sweep": {"cpus_per_trial": 0.5, "seeds_per_trial": 1, "max_failures": 1},
        "tracking": {"uri": uri, "experiment": "multinode"},
    }


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.timeout(900)
def test_sweep_on_three_node_cluster_needs_no_driver_files(tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    data_dir = tmp_path / "driver-data"
    write_synthetic(make_synthetic(SynthConfig(n_samples=300, seed=0)), data_dir)
    data = data_dir / "signatures.parquet"
    moved = tmp_path / "elsewhere" / "signatures.parquet"
    driver_cwd = tmp_path / "driver-cwd"
    driver_cwd.mkdir()
    monkeypatch.chdir(driver_cwd)

    original_load = grid.load_dataset

    def load_then_move(dataset):
        signatures = original_load(dataset)
        moved.parent.mkdir()
        shutil.move(
            dataset.path, moved
        )  # from here on the file is gone from where trials would look
        return signatures

    monkeypatch.setattr(grid, "load_dataset", load_then_move)  # the driver's load
    ray_tmp = tempfile.mkdtemp(prefix="rmn", dir="/tmp")  # short: Unix socket paths <= 107 chars
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "gcs_server_port": free_port(),  # never the well-known 6379
            "temp_dir": ray_tmp,
            "include_dashboard": False,
        },
    )
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        with TrackingServer(ServerConfig(data_dir=str(tmp_path / "server"), port=0)) as server:
            config = parse_config(sweep_raw(server.url, data))
            t0 = time.perf_counter()
            table = sweep_job.run_sweep(config, storage_path=str(tmp_path / "tune"))
            wall = time.perf_counter() - t0
            client = tracking_client(server.url)
            experiment = client.get_experiment_by_name("multinode")
            runs = client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.`{TAGS.sweep}` = '{sweep_name(config)}'",
            )
            trials = [r for r in runs if r.data.tags.get(TAGS.role) == "trial"]
            assert len(table) == 4 and len(trials) == 4
            assert {r.info.status for r in runs} == {"FINISHED"}
            worker_ids = {w.node_id for w in workers}
            per_node = {}
            for run in trials:
                node = run.data.tags["deeppert.ray_node_id"]
                per_node[node] = per_node.get(node, 0) + 1
                assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
                names = {a.path for a in client.list_artifacts(run.info.run_id)}
                assert "gene_weights.parquet" in names and "latents.parquet" not in names
            assert set(per_node) <= worker_ids, "a trial ran on the CPU-less head"
            assert set(per_node) == worker_ids, f"trials per node {per_node}"
            assert cluster.head_node.node_id not in per_node
            assert not data.exists() and moved.exists()
            assert "Traceback" not in server.log_tail(400)
        strays = [p for root in (tmp_path, Path(ray_tmp)) for p in root.rglob("mlruns")]
        assert not strays, f"local mlruns written: {strays}"
        print(
            f"\nMEASURE multinode: {len(trials)} trials in {wall:.1f}s; per worker node "
            f"{ {k[:8]: v for k, v in per_node.items()} }; head {cluster.head_node.node_id[:8]} "
            f"ran 0; data file moved after driver load: {data} -> {moved}"
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_unreachable_ray_address_exits_2_naming_it_within_15s(tmp_path, capsys):
    raw = sweep_raw("http://127.0.0.1:9", tmp_path / "none.parquet")
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    raw["sweep"]["ray_address"] = address
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    t0 = time.perf_counter()
    assert sweep_job.main(["--config", str(path)]) == 2
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert f"Ray cluster at {address} is unreachable" in err, err
    assert elapsed < 15, elapsed
