"""The Ray executor on a real cluster: a head and a worker node started with `ray start` on this machine (loopback),
`cl-bench sweep --executor ray --address` running real tiny runs, compared with the local executor, skip-if-complete
across both, and a worker killed mid-run (about 2 minutes; run with `pytest -m slow`)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
QUICK = """name: ray_quick
grid: {scenario: [continual_swiss_roll], strategy: [naive, ewc], seed: [0]}
set: [scenario.n_tasks=2, scenario.n_train=30, scenario.n_test=10, train.epochs=1, 'model.widths=[8]']
"""
# long enough (about 10 s) to kill its worker after the first checkpoint
SLOW = """name: ray_slow
grid: {scenario: [continual_swiss_roll], strategy: [naive], seed: [0]}
set: [scenario.n_tasks=3, scenario.n_train=200, scenario.n_test=20, train.epochs=60, 'model.widths=[32]']
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment() -> dict:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture
def cluster():
    """A head and one worker node (1 CPU each) on loopback; stopped afterwards."""
    pytest.importorskip("ray")
    ray = BIN / "ray"
    port = _free_port()
    head = [str(ray), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1"]
    head += ["--include-dashboard=false", "--disable-usage-stats"]
    worker = [str(ray), "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=1"]
    try:
        subprocess.run(head, check=True, capture_output=True, env=_environment(), timeout=120)
        subprocess.run(worker, check=True, capture_output=True, env=_environment(), timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True, env=_environment(), timeout=120)


def _sweep(sweep_file: Path, out: Path, *extra: str) -> str:
    command = [str(BIN / "cl-bench"), "sweep", str(sweep_file), "--out", str(out), *extra]
    finished = subprocess.run(command, capture_output=True, text=True, env=_environment(), timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


def _matrices(out: Path) -> dict[str, list]:
    return {
        path.parent.name: json.loads(path.read_text())["accuracy_matrix"] for path in sorted(out.glob("*/record.json"))
    }


def test_a_sweep_on_a_two_node_cluster_matches_the_local_executor_and_survives_a_killed_worker(cluster, tmp_path):
    status = subprocess.run(
        [str(BIN / "ray"), "status", f"--address={cluster}"], capture_output=True, text=True, env=_environment()
    )
    active = status.stdout.split("Active:")[1].split("Pending:")[0]
    assert active.count("node_") == 2, status.stdout

    quick = tmp_path / "quick.yaml"
    quick.write_text(QUICK)
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    assert "2 done, 0 skipped, 0 failed" in _sweep(quick, ray_out, "--executor", "ray", "--address", cluster)
    assert "2 done, 0 skipped, 0 failed" in _sweep(quick, local_out)
    assert _matrices(ray_out) == _matrices(local_out) and len(_matrices(ray_out)) == 2  # byte-identical values
    # complete runs are skipped whichever executor wrote them
    assert "0 done, 2 skipped, 0 failed" in _sweep(quick, ray_out, "--executor", "ray", "--address", cluster)
    assert "0 done, 2 skipped, 0 failed" in _sweep(quick, ray_out)

    slow = tmp_path / "slow.yaml"
    slow.write_text(SLOW)
    killed_out = tmp_path / "killed"
    command = [str(BIN / "cl-bench"), "sweep", str(slow), "--out", str(killed_out), "--executor", "ray"]
    sweep = subprocess.Popen(
        [*command, "--address", cluster], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment()
    )
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and sweep.poll() is None:
        time.sleep(0.5)
        if list(killed_out.glob("*/checkpoint.json")) and not list(killed_out.glob("*/record.json")):
            found = subprocess.run(["pgrep", "-f", "ray::_run_one"], capture_output=True, text=True).stdout.split()
            if found:
                killed = int(found[0])
                os.kill(killed, signal.SIGKILL)  # the worker dies mid-run, after its first checkpoint
    stdout, stderr = sweep.communicate(timeout=300)
    assert killed is not None, "the run finished before its worker could be killed"
    assert sweep.returncode == 0 and "1 done, 0 skipped, 0 failed" in stdout, stderr[-3000:]
    (run_dir,) = killed_out.iterdir()
    assert sorted(path.name for path in run_dir.iterdir() if not path.name.startswith("checkpoint")) == [
        "accuracy_matrix.csv",
        "forgetting_curve.png",
        "model.safetensors",
        "record.json",
    ]
    # Ray retried the task, which resumed from the checkpoint: the same record as an uninterrupted local run
    uninterrupted = tmp_path / "uninterrupted"
    _sweep(slow, uninterrupted)
    assert _matrices(killed_out) == _matrices(uninterrupted)
    shutil.rmtree(tmp_path / "ray", ignore_errors=True)
