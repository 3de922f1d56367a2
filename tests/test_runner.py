"""The runner: every strategy resumed, determinism, resume (in-process and after a kill).

Every component's plain smoke run is in ``test_registry_smoke.py``; the resume test here runs every strategy with
the same declared smoke settings."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import smoke_settings

from cl_bench import runner
from cl_bench.config import resolve
from cl_bench.registry import STRATEGIES

TINY = ["train.epochs=1", "model.widths=[32]"]


def _matrix(run_dir):
    return json.loads((run_dir / "record.json").read_text())["accuracy_matrix"]


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_every_strategy_resumes_to_the_same_matrix(strategy, tmp_path):
    """Stopped after two experiences and resumed, a strategy's smoke run ends with the uninterrupted run's matrix
    (its plugins' state and the template attributes it declares survive the checkpoint)."""
    config = resolve({}, *smoke_settings("strategy", strategy))
    reference = _matrix(runner.execute(config, tmp_path / "full", progress=False, log=lambda line: None))
    runner.execute(config, tmp_path / "split", progress=False, stop_after=2, log=lambda line: None)
    assert not (tmp_path / "split" / config.run_id() / "record.json").exists()
    resumed_dir = runner.execute(config, tmp_path / "split", resume=True, progress=False, log=lambda line: None)
    assert _matrix(resumed_dir) == reference


def test_resume_keeps_the_momentum_buffers(tmp_path):
    """Avalanche keeps the optimizer state across experiences; a resumed run must have it too."""
    config = resolve(
        {}, {"scenario": "split_digits", "strategy": "naive", "device": "cpu"}, TINY + ["train.momentum=0.9"]
    )
    reference = _matrix(runner.execute(config, tmp_path / "full", progress=False, log=lambda line: None))
    runner.execute(config, tmp_path / "split", progress=False, stop_after=2, log=lambda line: None)
    resumed = runner.execute(config, tmp_path / "split", resume=True, progress=False, log=lambda line: None)
    assert _matrix(resumed) == reference


def test_same_seed_is_bit_identical_and_other_seed_differs(tmp_path):
    flags, sets = smoke_settings("strategy", "ewc")
    first = resolve({}, flags, sets)
    a = _matrix(runner.execute(first, tmp_path / "a", progress=False, log=lambda line: None))
    b = _matrix(runner.execute(first, tmp_path / "b", progress=False, log=lambda line: None))
    assert a == b
    other = resolve({}, {**flags, "seed": 1}, sets)
    assert _matrix(runner.execute(other, tmp_path / "c", progress=False, log=lambda line: None)) != a


@pytest.mark.parametrize("strategy", ["naive", "lwf"])  # LwF asks a multi-task model for every head's output
def test_task_incremental_multi_head(strategy, tmp_path):
    config = resolve(
        {},
        {"scenario": "split_digits", "strategy": strategy, "device": "cpu"},
        TINY + ["scenario.task_labels=true", "train.epochs=3"],
    )
    record = json.loads(
        (runner.execute(config, tmp_path, progress=False, log=lambda line: None) / "record.json").read_text()
    )
    assert record["scenario_info"]["setting"] == "task-incremental"
    # two-way choices within each task: far above the 10-way chance level even after forgetting
    assert record["metrics"]["acc"] > 0.6


def test_complete_run_is_found_not_redone(tmp_path):
    config = resolve({}, {"scenario": "split_digits", "device": "cpu"}, TINY)
    run_dir = runner.execute(config, tmp_path, progress=False, log=lambda line: None)
    stamp = (run_dir / "record.json").stat().st_mtime_ns
    messages = []
    runner.execute(config, tmp_path, progress=False, log=messages.append)
    assert (run_dir / "record.json").stat().st_mtime_ns == stamp
    assert "already complete" in messages[0]


def test_resume_after_killing_the_process(tmp_path):
    """Kill a real `cl-bench run` after its first checkpoint; --resume ends with the same matrix."""
    args = [
        sys.executable,
        "-m",
        "cl_bench.cli",
        "run",
        "--scenario",
        "continual_swiss_roll",
        "--strategy",
        "si",
        "--device",
        "cpu",
        "--no-progress",
        "--set",
        "train.epochs=8",
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    reference = subprocess.run(
        args + ["--out", str(tmp_path / "reference")], capture_output=True, text=True, env=environment, check=True
    )
    reference_dir = reference.stdout.strip().splitlines()[-1]
    run_id = os.path.basename(reference_dir)

    killed_dir = tmp_path / "killed" / run_id
    process = subprocess.Popen(
        args + ["--out", str(tmp_path / "killed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
    )
    deadline = time.time() + 120
    while not (killed_dir / "checkpoint.json").exists():
        assert process.poll() is None, "run ended before its first checkpoint was seen"
        assert time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "record.json").exists(), "the run finished before it could be killed"

    resumed = subprocess.run(
        args + ["--out", str(tmp_path / "killed"), "--resume"],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    )
    assert "resuming" in resumed.stderr
    assert _matrix(killed_dir) == json.loads(open(os.path.join(reference_dir, "record.json")).read())["accuracy_matrix"]


def test_train_threads_sets_the_runs_torch_threads_and_leaves_the_config_id(tmp_path):
    import torch

    before = torch.get_num_threads()
    config = resolve({}, {"scenario": "split_digits", "device": "cpu"}, TINY + ["train.threads=2"])
    default = resolve({}, {"scenario": "split_digits", "device": "cpu"}, TINY)
    assert config.config_id() == default.config_id() and default.train.threads == 1
    assert "threads" not in default.to_dict()["train"]  # runs from before the field keep their ids
    try:
        record = json.loads(
            (runner.execute(config, tmp_path, progress=False, log=lambda line: None) / "record.json").read_text()
        )
    finally:
        torch.set_num_threads(before)
    assert record["environment"]["torch_threads"] == 2 and record["config"]["train"]["threads"] == 2
