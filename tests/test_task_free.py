"""Task-free streams: the hidden tasks, the boundary-free experiences, anytime accuracy, resume, boards, CLI."""

import json

import numpy as np
import pytest
import torch

from conftest import run_cli

from cl_bench.loop_state import LoopState
from cl_bench import leaderboard, metrics, pretrain_pool, runner
from cl_bench.config import resolve
from cl_bench.registry import SCENARIOS
from cl_bench.templates import StatelessPlugin

TINY = [
    "model.widths=[16]",
    "scenario.stream_batch_size=16",
    "scenario.anytime_eval_every=40",
    "scenario.anytime_test_per_class=0",
]


@pytest.fixture
def fmnist(tmp_path, monkeypatch, fake_fmnist):
    """A tiny Fashion-MNIST (48 training images per class, 6 test images per class) in a fresh data root."""
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "data"))
    return fake_fmnist(tmp_path / "data" / "fashion-mnist", train_per_class=48, test_per_class=6)


def build(seed=0, **values):
    from cl_bench.config import build_config

    entry = SCENARIOS.get("task_free_fmnist")
    return entry.builder(build_config(entry.config_class, values, "scenario"), seed)


def stream_labels(scenario):
    return [torch.as_tensor(list(task.dataset.targets)) for task in scenario.benchmark.train_stream]


def test_anytime_auc_is_the_mean_of_the_curve():
    assert metrics.anytime_auc([0.2, 0.6, 1.0]) == pytest.approx(0.6)
    assert metrics.anytime_auc([]) is None


def test_disjoint_tasks_hold_exactly_their_classes_and_skip_the_pool(fmnist):
    scenario = build()
    assert scenario.setting == "task-free" and scenario.classes_per_experience == [
        [0, 1],
        [2, 3],
        [4, 5],
        [6, 7],
        [8, 9],
    ]
    labels = stream_labels(scenario)
    for task, classes in enumerate(scenario.classes_per_experience):
        assert sorted(torch.unique(labels[task]).tolist()) == classes
    pool_size = len(pretrain_pool.pool_indices(fmnist["train_labels"]))
    assert sum(len(y) for y in labels) == len(fmnist["train_labels"]) - pool_size == 400
    stream_images = torch.cat(
        [
            torch.as_tensor(np.stack([task.dataset[i][0].numpy() for i in range(len(task.dataset))]))
            for task in scenario.benchmark.train_stream
        ]
    )
    pool_images = torch.from_numpy(fmnist["train_images"][pretrain_pool.pool_indices(fmnist["train_labels"])])
    stream_bytes = {bytes((image * 255).round().to(torch.uint8).numpy()) for image in stream_images}
    assert not stream_bytes & {bytes(image.numpy()) for image in pool_images}
    # the test experience of each hidden task holds its classes' test images
    for task, classes in enumerate(scenario.classes_per_experience):
        test_labels = torch.as_tensor(list(scenario.benchmark.test_stream[task].dataset.targets))
        assert sorted(torch.unique(test_labels).tolist()) == classes and len(test_labels) == 12


def test_blurry_tasks_leak_a_share_of_the_blurry_classes_only(fmnist):
    scenario = build(mode="blurry", blurry_sample_ratio=0.25)
    labels = stream_labels(scenario)
    home = scenario.classes_per_experience
    appearances = {c: [t for t, y in enumerate(labels) if (y == c).any()] for c in range(10)}
    disjoint = [c for c in range(10) if len(appearances[c]) == 1]
    blurry = [c for c in range(10) if len(appearances[c]) > 1]
    assert len(disjoint) == 5 and len(blurry) == 5  # N = 0.5 of the classes in one task only
    per_class = 40  # 48 per class minus the pool's 8
    for task, classes in enumerate(home):
        for c in classes:
            at_home = int((labels[task] == c).sum())
            assert at_home == (per_class if c in disjoint else per_class - 10)  # M = 0.25 of 40 moved away
    assert sum(len(y) for y in labels) == 400
    quarter = build(mode="blurry", blurry_sample_ratio=0.25)
    assert [sorted(c) for c in home] == [sorted(c) for c in quarter.classes_per_experience]
    assert home != build(seed=1, mode="blurry").classes_per_experience  # the split follows the run seed


class _Spy(StatelessPlugin):
    """Records what the strategy is handed at every training call (not checkpointed: it holds no learning state)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def before_training_exp(self, strategy, **kwargs):
        self.seen.append(strategy.experience)


def test_the_strategy_never_sees_a_task_id_or_a_boundary(fmnist, tmp_path):
    config = resolve({}, {"scenario": "task_free_fmnist", "device": "cpu"}, TINY)
    prepared = runner.prepare(config, tmp_path, progress=False)
    spy = _Spy()
    prepared.strategy.plugins.append(spy)
    runner.train_online(prepared, LoopState(accuracy_initial=[0.0] * 5), tmp_path, 0.0, 0.0)
    assert len(spy.seen) == 5 * 80 // 16
    for index, experience in enumerate(spy.seen):
        assert type(experience).__name__ == "DatasetExperience" and experience.current_experience == index
        for hidden in (
            "origin_experience",
            "is_first_subexp",
            "is_last_subexp",
            "sub_stream_length",
            "classes_in_this_experience",
            "task_label",
        ):
            assert not hasattr(experience, hidden), hidden
        assert set(experience.dataset.targets_task_labels) == {0} and len(experience.dataset) == 16


def test_record_has_the_anytime_curve_and_resume_gives_the_same_record(fmnist, tmp_path):
    config = resolve({}, {"scenario": "task_free_fmnist", "device": "cpu"}, TINY)
    full = json.loads(
        (runner.execute(config, tmp_path / "full", progress=False, log=lambda line: None) / "record.json").read_text()
    )
    curve = full["anytime_accuracy"]
    # every 40 samples, at the end of the 16-image batch that crosses the next multiple of 40
    assert curve["samples"] == [48, 80, 128, 160, 208, 240, 288, 320, 368, 400]
    assert curve["n_classes"][0] == 2 and curve["n_classes"][-1] == 10
    assert full["metrics"]["a_auc"] == pytest.approx(np.mean(curve["accuracy"]))
    assert full["stream"] == {
        "batches": 25,
        "samples": 400,
        "hidden_boundaries": [80, 160, 240, 320, 400],
        "final_accuracy_seen_classes": full["metrics"]["a_last"],
    }
    assert len(full["accuracy_matrix"]) == 5

    runner.execute(config, tmp_path / "split", progress=False, stop_after=2, log=lambda line: None)
    assert not (tmp_path / "split" / config.run_id() / "record.json").exists()
    resumed = json.loads(
        (
            runner.execute(config, tmp_path / "split", resume=True, progress=False, log=lambda line: None)
            / "record.json"
        ).read_text()
    )
    for key in ("accuracy_matrix", "anytime_accuracy", "stream", "metrics"):
        assert resumed[key] == full[key], key


def test_cli_run_prints_the_anytime_numbers_and_draws_the_curve(fmnist, tmp_path, capsys):
    args = [
        "run",
        "--scenario",
        "task_free_fmnist",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(tmp_path / "runs"),
    ]
    sets = [item for assignment in TINY + ["scenario.mode=blurry"] for item in ("--set", assignment)]
    code, out, err = run_cli(args + sets, capsys)
    assert code == 0, err
    run_dir = tmp_path / "runs" / out.strip().splitlines()[-1].split("/")[-1]
    assert "A_auc" in out and "A_last" in out
    assert (run_dir / "anytime_accuracy.png").is_file()
    code, out, err = run_cli(
        ["plot", "--anytime", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "any.png")], capsys
    )
    assert code == 0, err and (tmp_path / "any.png").is_file()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--set", "scenario.mode=blurry", "--set", "scenario.n_tasks=3"], "disjoint_class_ratio"),
        (["--set", "scenario.n_tasks=4"], "must divide"),
        (["--set", "scenario.anytime_eval_every=10"], "stream_batch_size"),
        (["--strategy", "joint"], "one pass"),
        (["--attack", "uniform_noise"], "task-free"),
    ],
)
def test_bad_task_free_input_is_one_line_exit_2_and_nothing_written(extra, fragment, fmnist, tmp_path, capsys):
    code, _, err = run_cli(
        ["run", "--scenario", "task_free_fmnist", "--device", "cpu", "--out", str(tmp_path / "runs"), *extra], capsys
    )
    assert code == 2 and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_online_board_groups_by_mode_and_stays_off_the_cl_board(fmnist, tmp_path):
    for mode in ("disjoint", "blurry"):
        for seed in (0, 1):
            config = resolve(
                {}, {"scenario": "task_free_fmnist", "device": "cpu", "seed": seed}, TINY + [f"scenario.mode={mode}"]
            )
            runner.execute(config, tmp_path / "runs", progress=False, log=lambda line: None)
    boards = {board.name: board for board in leaderboard.summarize(leaderboard.load_records([tmp_path / "runs"]))}
    assert set(boards) == {"online_task_free_fmnist"}
    rows = boards["online_task_free_fmnist"].rows
    assert [(row["mode"], row["n_seeds"]) for row in rows] == [("blurry", 2), ("disjoint", 2)]
    for row in rows:
        assert 0.0 <= row["a_auc_mean"] <= 1.0 and row["a_auc_std"] is not None


def test_pretrained_runs_get_their_own_cl_board(tmp_path):
    base = {
        "scenario": "split_digits",
        "strategy": "naive",
        "seed": 0,
        "run_id": "a",
        "status": "complete",
        "config": {"scenario": {"name": "split_digits"}},
        "scenario_info": {"setting": "class-incremental"},
        "metrics": {"acc": 0.5},
        "timing": {"total_s": 1.0},
    }
    records = [base, {**base, "run_id": "b", "backbone_card": {"name": "vit_micro-fmnist-supervised-s0"}}]
    assert sorted(board.name for board in leaderboard.clean_cl_boards(records)) == [
        "cl_split_digits",
        "cl_split_digits_pretrained",
    ]
