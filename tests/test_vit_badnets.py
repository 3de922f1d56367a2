"""The dirty-label patch-trigger backdoor (attacks/vit_badnets.py): the spec's oracles, the ASR rows, bad input."""

import json
import math

import pytest
import torch

from conftest import run_cli

from attacks.vit_badnets import BadNets, BadNetsConfig, make_trigger, paste_triggers, trigger_positions
from cl_bench.attack import experience_tensors
from cl_bench.leaderboard import build_leaderboards, headline_columns
from cl_bench.registry import SCENARIOS
from cl_bench.config import build_config


def _scenario():
    return SCENARIOS.get("split_digits").builder(
        build_config(SCENARIOS.get("split_digits").config_class, {}, "scenario"), 0
    )


def test_the_trigger_replaces_only_its_window_and_random_positions_stay_inside():
    images = torch.rand(6, 1, 8, 8)
    trigger = make_trigger(3, 1, "checkerboard", 0.0, 1.0, seed=0)
    positions = trigger_positions(6, 3, 8, 8, "random", torch.Generator().manual_seed(1))
    assert torch.all(positions >= 0) and torch.all(positions <= 8 - 3)
    assert torch.equal(positions, trigger_positions(6, 3, 8, 8, "random", torch.Generator().manual_seed(1)))
    pasted = paste_triggers(images, trigger, positions)
    for index, (row, col) in enumerate(positions.tolist()):
        assert torch.equal(pasted[index, :, row : row + 3, col : col + 3], trigger)
        outside = torch.ones(8, 8, dtype=torch.bool)
        outside[row : row + 3, col : col + 3] = False
        assert torch.equal(pasted[index, :, outside], images[index, :, outside])
    fixed = trigger_positions(2, 3, 8, 8, "fixed", None)
    assert fixed.tolist() == [[5, 5], [5, 5]]  # the bottom-right corner


@pytest.mark.parametrize("rate", [0.1, 0.35])
def test_exactly_floor_p_n_samples_are_poisoned_and_relabelled_the_rest_bit_identical(rate):
    scenario = _scenario()
    attack = BadNets(BadNetsConfig(poison_rate=rate, trigger_size=2, target_class=0), scenario, seed=0)
    experience = scenario.benchmark.train_stream[2]
    inputs, targets, _ = experience_tensors(experience)
    poisoned_inputs, poisoned_targets, _ = experience_tensors(attack.poison(experience, strategy=None))
    count = math.floor(rate * len(targets))
    changed = (poisoned_targets != targets).nonzero().flatten().tolist()
    assert changed == attack.poisoned_indices and len(changed) == count
    assert torch.all(poisoned_targets[changed] == 0) and torch.all(targets[changed] != 0)
    rest = torch.ones(len(targets), dtype=torch.bool)
    rest[changed] = False
    assert torch.equal(poisoned_inputs[rest], inputs[rest]) and torch.equal(poisoned_targets[rest], targets[rest])
    assert torch.equal(poisoned_inputs[changed][:, :, -2:, -2:], attack.trigger.expand(count, -1, -1, -1))


def test_a_rate_that_poisons_no_sample_returns_the_experience_itself():
    scenario = _scenario()
    attack = BadNets(BadNetsConfig(poison_rate=1e-6, trigger_size=2), scenario, seed=0)
    experience = scenario.benchmark.train_stream[1]
    assert attack.poison(experience, strategy=None) is experience and attack.poisoned_indices == []


TOY = ["run", "--scenario", "split_digits", "--attack", "vit_badnets", "--epochs", "10", "--device", "cpu"]
TOY += ["--set", "attack.trigger_size=3", "--set", "attack.poison_rate=0.2", "--no-progress"]


def test_end_to_end_the_backdoor_works_at_near_clean_accuracy_and_the_record_holds_the_asr_rows(tmp_path, capsys):
    code, out, err = run_cli([*TOY, "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert "asr_final" in out
    (record_path,) = tmp_path.glob("*/record.json")
    record = json.loads(record_path.read_text())
    n = len(record["accuracy_matrix"])
    assert len(record["attack_rows"]) == len(record["attack_rows_clean"]) == n
    effect = record["attack_effect"]
    assert effect["asr_final"]["attacked"] > 0.5 > 0.05 > effect["asr_final"]["clean"]  # chance is 1/10
    assert effect["asr_not_patched_final"]["attacked"] < 0.05
    assert abs(effect["poisoned_acc"]["difference"]) < 0.1
    assert record["attack_info"]["metrics"]["poisoned_samples"] > 0
    (board,) = build_leaderboards(tmp_path, tmp_path / "boards", warn=lambda line: None)
    header = board.read_text().splitlines()[0].split(",")
    assert board.name == "attack_vit_badnets.csv"
    assert {"asr_final_attacked_mean", "asr_at_target_clean_mean", "asr_not_patched_final_difference_std"} <= set(
        header
    )
    assert "asr_final_attacked_mean" in headline_columns("attack_vit_badnets")


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--set", "attack.poison_rate=0"], "attack.poison_rate must be > 0.0"),
        (["--set", "attack.poison_rate=1.5"], "attack.poison_rate must be <= 1.0"),
        (["--set", "attack.trigger_size=9"], "larger than the 8x8 image"),
        (["--set", "attack.target_class=12"], "not a class of this stream"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, extra, fragment):
    out = tmp_path / "runs"
    code, _, err = run_cli([*TOY, "--out", str(out), *extra], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_poisoning_more_than_the_non_target_samples_is_refused():
    from cl_bench.errors import UserError

    scenario = _scenario()
    attack = BadNets(BadNetsConfig(poison_rate=1.0, trigger_size=2, target_class=0), scenario, seed=0)
    with pytest.raises(UserError, match="outside the target class"):
        attack.poison(scenario.benchmark.train_stream[0], strategy=None)  # classes 0 and 1: half are targets
