"""The attack contract: budget oracles of uniform_noise, the paired clean/attacked branches, bad input."""

import json

import pytest
import torch
from conftest import run_cli, smoke_settings

from cl_bench import runner
from cl_bench.config import resolve
from cl_bench.metrics import attack_effect
from cl_bench.registry import ATTACKS, SCENARIOS
from cl_bench.tensor_data import gather

TINY = ["train.epochs=1", "model.widths=[32]"]


def _record(run_dir):
    return json.loads((run_dir / "record.json").read_text())


def _run(tmp_path, attack=None, sets=(), stop_after=None, resume=False, strategy="naive"):
    config = resolve(
        {},
        {"scenario": "split_digits", "strategy": strategy, "attack": attack, "device": "cpu"},
        smoke_settings("strategy", strategy)[1] + list(sets),  # one epoch on a 32-wide MLP (+ the strategy's)
    )
    return runner.execute(config, tmp_path, progress=False, log=lambda line: None, stop_after=stop_after, resume=resume)


def test_attack_effect_by_hand():
    clean = [[0.9, 0.1, 0.0], [0.8, 0.9, 0.1], [0.7, 0.8, 0.9]]
    attacked = [[0.9, 0.1, 0.0], [0.8, 0.9, 0.1], [0.3, 0.4, 0.6]]
    effect = attack_effect(clean, attacked, target=2)
    assert effect["previous_acc"]["clean"] == pytest.approx(0.75)
    assert effect["previous_acc"]["attacked"] == pytest.approx(0.35)
    assert effect["poisoned_acc"]["difference"] == pytest.approx(-0.3)
    assert effect["bwt"]["clean"] == pytest.approx(-0.15) and effect["bwt"]["attacked"] == pytest.approx(-0.55)
    assert effect["acc"]["difference"] == pytest.approx((1.3 - 2.4) / 3)
    assert "previous_acc" not in attack_effect(clean, attacked, target=0)


@pytest.mark.parametrize("epsilon", [0.0, 0.05, 0.3])
def test_uniform_noise_stays_in_the_budget_and_the_valid_range(epsilon):
    scenario = SCENARIOS.get("split_digits").builder(SCENARIOS.get("split_digits").config_class(), 0)
    entry = ATTACKS.get("uniform_noise")
    attack = entry.builder(entry.config_class(epsilon=epsilon), scenario, 0)
    experience = scenario.benchmark.train_stream[4]
    clean_inputs, clean_targets, clean_tasks = gather(experience.dataset)
    poisoned = attack.poison(experience, strategy=None)
    inputs, targets, tasks = gather(poisoned.dataset)
    assert inputs.shape == clean_inputs.shape and poisoned.current_experience == 4
    assert torch.equal(targets, clean_targets) and torch.equal(tasks, clean_tasks)  # labels untouched, same order
    assert (inputs - clean_inputs).abs().max() <= epsilon + 1e-7
    assert inputs.min() >= 0.0 and inputs.max() <= 1.0
    if epsilon == 0:
        assert torch.equal(inputs, clean_inputs)
    else:
        assert not torch.equal(inputs, clean_inputs)
    assert torch.equal(gather(attack.poison(experience, None).dataset)[0], inputs)  # its own seeded generator


def test_zero_budget_branches_are_bit_identical_and_the_clean_branch_is_the_plain_run(tmp_path):
    plain = _record(_run(tmp_path / "plain"))
    zero = _record(_run(tmp_path / "zero", "uniform_noise", ["attack.epsilon=0.0"]))
    assert zero["accuracy_matrix"] == zero["accuracy_matrix_clean"] == plain["accuracy_matrix"]
    noisy = _record(_run(tmp_path / "noisy", "uniform_noise", ["attack.epsilon=0.5", "attack.target_experience=2"]))
    assert noisy["accuracy_matrix_clean"] == plain["accuracy_matrix"]  # the prefix and the clean branch are shared
    assert noisy["accuracy_matrix"][:2] == plain["accuracy_matrix"][:2]
    assert noisy["accuracy_matrix"] != noisy["accuracy_matrix_clean"]
    assert noisy["attack_info"]["target_experience"] == 2 and noisy["attack_info"]["budget"]["epsilon"] == 0.5
    assert set(noisy["attack_effect"]) == {"acc", "bwt", "forgetting", "poisoned_acc", "previous_acc"}


@pytest.mark.parametrize("strategy", ["ewc", "gpm", "replay"])
def test_an_interrupted_attacked_run_resumes_to_the_same_record(strategy, tmp_path):
    sets = ["attack.epsilon=0.3"]
    whole = _record(_run(tmp_path / "whole", "uniform_noise", sets, strategy=strategy))
    _run(tmp_path / "split", "uniform_noise", sets, stop_after=2, strategy=strategy)
    resumed = _record(_run(tmp_path / "split", "uniform_noise", sets, resume=True, strategy=strategy))
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert resumed["accuracy_matrix_clean"] == whole["accuracy_matrix_clean"]


def test_cli_prints_clean_and_attacked_side_by_side(tmp_path, capsys):
    code, out, err = run_cli(
        [
            "run",
            "--scenario",
            "split_digits",
            "--attack",
            "uniform_noise",
            "--set",
            "attack.epsilon=0.3",
            "--device",
            "cpu",
            "--no-progress",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.startswith("clean ") for line in lines) and any(line.startswith("attacked ") for line in lines)
    assert any(line.startswith("difference ") for line in lines)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--attack", "uniform_noise", "--set", "attack.epsilon=-0.1"], "attack.epsilon must be >= 0"),
        (["--attack", "uniform_nosie"], "unknown attack 'uniform_nosie'; did you mean uniform_noise"),
        (["--attack", "uniform_noise", "--set", "attack.target_experience=7"], "outside the 5 experiences"),
        (["--attack", "uniform_noise", "--strategy", "joint"], "trains once on the whole stream"),
    ],
)
def test_bad_attack_input_is_one_line_exit_2_and_nothing_written(args, fragment, tmp_path, capsys):
    code, out, err = run_cli(
        ["run", "--scenario", "split_digits", "--no-progress", "--out", str(tmp_path), *args], capsys
    )
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_attack_board_pairs_clean_and_attacked_per_victim_and_stays_off_the_cl_board(tmp_path):
    import csv

    from cl_bench.leaderboard import build_leaderboards

    for seed in (0, 1):
        config = resolve(
            {},
            {"scenario": "split_digits", "strategy": "naive", "attack": "uniform_noise", "device": "cpu", "seed": seed},
            TINY + ["attack.epsilon=0.3"],
        )
        runner.execute(config, tmp_path / "runs", progress=False, log=lambda line: None)
    written = build_leaderboards(tmp_path / "runs", tmp_path / "boards", warn=lambda message: None)
    assert [path.name for path in written] == ["attack_uniform_noise.csv"]
    (row,) = list(csv.DictReader((tmp_path / "boards" / "attack_uniform_noise.csv").open()))
    assert row["n_seeds"] == "2" and row["strategy"] == "naive" and '"epsilon":0.3' in row["attack_config"]
    records = [_record(path) for path in sorted((tmp_path / "runs").iterdir())]
    mean_drop = sum(r["attack_effect"]["bwt"]["difference"] for r in records) / 2
    assert float(row["bwt_difference_mean"]) == pytest.approx(mean_drop, abs=1e-4)


def test_a_training_phase_attack_that_poisons_nothing_is_refused(tmp_path, capsys, monkeypatch):
    """An attack that poisons no training data would record clean numbers under its name: exit 2 instead."""
    from cl_bench.attack import Attack
    from cl_bench.config import ComponentConfig
    from cl_bench.registry import Entry

    ATTACKS.entries()  # load the catalogs before adding the toy
    toy = Entry(
        "test_time_toy",
        "attack",
        lambda config, scenario, seed: Attack(config, scenario, seed),
        ComponentConfig,
        "a test-time attack",
        {},
    )
    monkeypatch.setitem(ATTACKS._entries, "test_time_toy", toy)
    out = tmp_path / "runs"
    code, _, err = run_cli(
        [
            "run",
            "--scenario",
            "split_digits",
            "--attack",
            "test_time_toy",
            "--out",
            str(out),
            "--set",
            "train.epochs=1",
        ],
        capsys,
    )
    assert code == 2 and "does not poison training data" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())
