"""scenario.validation_fraction: a seeded, stratified validation split of every experience's training data,
a validation accuracy matrix in the record, and boards ranked by it."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from cl_bench import runner
from cl_bench.config import resolve
from cl_bench.errors import UserError
from cl_bench.leaderboard import clean_cl_boards
from cl_bench.registry import SCENARIOS
from cl_bench.scenario import split_validation, stratified_holdout
from cl_bench.tensor_data import gather

TINY = ["train.epochs=1", "model.widths=[32]"]


def test_stratified_holdout_by_hand():
    targets = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    kept, held = stratified_holdout(targets, 0.25, np.random.default_rng(0))
    # class 0: round(4 * 0.25) = 1 row; class 1: round(6 * 0.25) = round(1.5) = 2 rows
    assert sorted(np.asarray(targets)[held].tolist()) == [0, 1, 1]
    assert sorted(kept.tolist() + held.tolist()) == list(range(10)) and not set(kept) & set(held)
    # a class of one row keeps it; a small fraction still holds one row out of a class of two or more
    held = stratified_holdout([0, 1, 1], 0.01, np.random.default_rng(0))[1]
    assert len(held) == 1 and held[0] in (1, 2)


def _scenario(fraction, seed=0):
    config = resolve({}, {"scenario": "split_digits"}, [f"scenario.validation_fraction={fraction}"])
    scenario = SCENARIOS.get("split_digits").builder(config.components["scenario"], seed)
    return split_validation(scenario, fraction, seed) if fraction else scenario


def test_the_split_partitions_each_experiences_training_data_and_leaves_the_test_stream():
    plain, split = _scenario(0.0), _scenario(0.2)
    for index, experience in enumerate(plain.benchmark.train_stream):
        x_all, y_all, _ = gather(experience.dataset)
        x_train, y_train, _ = gather(split.benchmark.train_stream[index].dataset)
        x_val, y_val, _ = gather(split.validation[index])
        assert len(y_train) + len(y_val) == len(y_all)
        rows = {tuple(row.flatten().tolist()) for row in x_all}
        assert {tuple(r.flatten().tolist()) for r in torch.cat([x_train, x_val])} == rows
        for label in torch.unique(y_all).tolist():  # stratified: each class loses about a fifth
            assert abs(int((y_val == label).sum()) - round(0.2 * int((y_all == label).sum()))) <= 1
    for a, b in zip(plain.benchmark.test_stream, split.benchmark.test_stream):
        assert torch.equal(gather(a.dataset)[0], gather(b.dataset)[0])
    assert torch.equal(gather(_scenario(0.2).validation[0])[0], gather(split.validation[0])[0])  # seeded
    # the same experience data split under another seed holds other rows out
    reseeded = split_validation(_scenario(0.0), 0.2, seed=1)
    assert not torch.equal(gather(reseeded.validation[0])[0], gather(split.validation[0])[0])


def test_the_record_holds_a_validation_matrix_and_resume_keeps_it(tmp_path):
    config = resolve({}, {"scenario": "split_digits", "device": "cpu"}, TINY + ["scenario.validation_fraction=0.2"])
    whole = json.loads(
        (runner.execute(config, tmp_path / "whole", progress=False, log=lambda line: None) / "record.json").read_text()
    )
    matrix = whole["accuracy_matrix_validation"]
    assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
    assert whole["metrics_validation"]["acc"] == pytest.approx(float(np.mean(matrix[-1])))
    assert whole["scenario_info"]["validation_sizes"] and whole["accuracy_matrix"] != matrix
    runner.execute(config, tmp_path / "split", progress=False, log=lambda line: None, stop_after=2)
    resumed = json.loads(
        (
            runner.execute(config, tmp_path / "split", resume=True, progress=False, log=lambda line: None)
            / "record.json"
        ).read_text()
    )
    assert resumed["accuracy_matrix_validation"] == matrix


def test_an_attacked_run_has_both_branches_validation_matrices(tmp_path):
    config = resolve(
        {},
        {"scenario": "split_digits", "attack": "uniform_noise", "device": "cpu"},
        TINY + ["scenario.validation_fraction=0.2"],
    )
    record = json.loads(
        (runner.execute(config, tmp_path, progress=False, log=lambda line: None) / "record.json").read_text()
    )
    clean, attacked = record["accuracy_matrix_validation_clean"], record["accuracy_matrix_validation"]
    target = record["attack_info"]["target_experience"]
    assert len(clean) == len(attacked) == 5 and clean[:target] == attacked[:target]


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (["scenario.validation_fraction=0.6"], "scenario.validation_fraction must be <= 0.5"),
        (["scenario.validation_fraction=-0.1"], "scenario.validation_fraction must be >= 0.0"),
    ],
)
def test_bad_fractions_are_refused(sets, fragment):
    with pytest.raises(UserError, match=fragment):
        resolve({}, {"scenario": "split_digits"}, sets)


def test_a_fraction_that_holds_out_nothing_is_refused(tmp_path, capsys):
    code, _, err = run_cli(
        [
            "run",
            "--scenario",
            "continual_swiss_roll",
            "--set",
            "scenario.n_train=1",
            "--set",
            "scenario.validation_fraction=0.1",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "runs"),
        ],
        capsys,
    )
    assert code == 2 and "holds out nothing" in err and not (tmp_path / "runs").exists()


def _record(strategy, seed, val_acc, acc):
    return {
        "run_id": f"{strategy}{seed}",
        "scenario": "s",
        "strategy": strategy,
        "seed": seed,
        "attack": None,
        "config": {
            "scenario": {"name": "s"},
            "model": {"name": "m"},
            "strategy": {"name": strategy},
            "train": {},
            "seed": seed,
        },
        "scenario_info": {"setting": "class-incremental"},
        "model": "m",
        "metrics": {"acc": acc, "bwt": 0.0, "forgetting": 0.0, "learning_acc": acc},
        "metrics_validation": {"acc": val_acc, "bwt": -0.1},
        "timing": {"total_s": 1.0},
    }


def test_a_board_with_validation_ranks_by_validation_acc():
    (board,) = clean_cl_boards(
        [_record("a", 0, 0.6, 0.9), _record("b", 0, 0.8, 0.5), _record("b", 1, 0.7, 0.5)], warn=lambda message: None
    )
    assert "val_acc_mean" in board.columns and [row["strategy"] for row in board.rows] == ["b", "a"]
    assert board.rows[0]["val_acc_mean"] == pytest.approx(0.75)
