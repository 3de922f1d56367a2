"""The clean-label hidden-trigger backdoor (attacks/vit_htba.py): the spec's HTBA oracles and bad input."""

import json
import math

import pytest
import torch
from torch import nn

from conftest import run_cli

from attacks.vit_htba import HiddenTriggerBackdoor, HTBAConfig, collide_features, greedy_pairing
from cl_bench.attack import experience_tensors
from cl_bench.config import build_config
from cl_bench.errors import UserError
from cl_bench.models.heads import SingleHeadNet
from cl_bench.registry import SCENARIOS


def _scenario():
    return SCENARIOS.get("split_digits").builder(
        build_config(SCENARIOS.get("split_digits").config_class, {}, "scenario"), 0
    )


class _Victim:
    """The part of a strategy the attack reads: its model."""

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh())
        self.model = SingleHeadNet(backbone, 16, 10)


def test_greedy_pairing_takes_the_global_minimum_first_and_is_a_permutation():
    distances = torch.tensor([[1.0, 0.5, 4.0], [0.2, 3.0, 0.3], [2.0, 0.4, 5.0]])
    # 0.2 at (1, 0); then 0.4 at (2, 1); row 0 gets the last column
    assert greedy_pairing(distances).tolist() == [2, 0, 1]
    random = torch.rand(17, 17, generator=torch.Generator().manual_seed(3))
    assert sorted(greedy_pairing(random).tolist()) == list(range(17))


def test_poisons_stay_in_budget_keep_their_labels_and_only_floor_p_n_target_images_change():
    scenario = _scenario()
    config = HTBAConfig(poison_rate=0.2, trigger_size=2, target_class=0, source_class=3, max_iterations=20)
    attack = HiddenTriggerBackdoor(config, scenario, seed=0)
    experience = scenario.benchmark.train_stream[0]
    inputs, targets, _ = experience_tensors(experience)
    poisoned_inputs, poisoned_targets, _ = experience_tensors(attack.poison(experience, _Victim()))
    assert torch.equal(poisoned_targets, targets)  # clean label
    count = math.floor(0.2 * len(targets))
    assert len(attack.poisoned_indices) == count and torch.all(targets[attack.poisoned_indices] == 0)
    rest = torch.ones(len(targets), dtype=torch.bool)
    rest[attack.poisoned_indices] = False
    assert torch.equal(poisoned_inputs[rest], inputs[rest])
    change = (poisoned_inputs - inputs).abs().amax()
    assert 0 < float(change) <= config.epsilon + 1e-6
    assert float(poisoned_inputs.min()) >= 0.0 and float(poisoned_inputs.max()) <= 1.0
    metrics = attack.metrics()
    assert metrics["poisoned_samples"] == count and metrics["feature_loss_last"] < metrics["feature_loss_first"]


def test_the_feature_loss_decreases_over_iterations():
    victim = _Victim(1)
    features = victim.model.backbone.eval()
    generator = torch.Generator().manual_seed(0)
    targets, sources = torch.rand(8, 1, 8, 8, generator=generator), torch.rand(8, 1, 8, 8, generator=generator)
    config = HTBAConfig(epsilon=0.5, lr=0.02, max_iterations=60)
    poisons, losses = collide_features(features, targets, sources, config, 0.0, 1.0, config.epsilon)
    assert len(losses) == 60 and losses[-1] < 0.8 * losses[0]
    assert sum(later <= earlier + 1e-6 for earlier, later in zip(losses, losses[1:])) >= 55  # nearly monotone
    assert float((poisons - targets).abs().max()) <= 0.5 + 1e-6


def test_early_stop_when_the_largest_pair_loss_is_below_the_threshold():
    features = _Victim().model.backbone.eval()
    images = torch.rand(4, 1, 8, 8)
    _, losses = collide_features(
        features, images, images, HTBAConfig(stop_loss=1e-3, max_iterations=50), 0.0, 1.0, 16 / 255
    )
    assert len(losses) == 1  # identical images: the pair loss is 0 at the start


HTBA = ["run", "--scenario", "split_digits", "--attack", "vit_htba", "--epochs", "3", "--device", "cpu"]
HTBA += ["--set", "attack.trigger_size=2", "--set", "attack.max_iterations=5", "--no-progress"]


def test_end_to_end_the_record_holds_source_class_asr_rows_and_the_budget(tmp_path, capsys):
    code, out, err = run_cli([*HTBA, "--out", str(tmp_path)], capsys)
    assert code == 0, err
    (record_path,) = tmp_path.glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert len(record["attack_rows"]) == len(record["accuracy_matrix"]) == len(record["attack_rows_clean"])
    info = record["attack_info"]
    assert info["budget"]["source_class"] == 1 and info["budget"]["epsilon"] == pytest.approx(16 / 255)
    assert info["metrics"]["poisoned_samples"] > 0 and info["metrics"]["iterations"] > 0
    assert "asr_final" in out


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--set", "attack.source_class=0"], "other than the target class"),
        (["--set", "attack.source_class=11"], "must be a class of this stream"),
        (["--set", "attack.target_experience=2"], "experience 2 has no class 0"),
        (["--set", "attack.epsilon=0"], "attack.epsilon must be > 0.0"),
        (["--set", "attack.poison_rate=0.9"], "images of the target class"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, extra, fragment):
    out = tmp_path / "runs"
    code, _, err = run_cli([*HTBA, "--out", str(out), *extra], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_model_without_a_backbone_head_split_is_refused():
    attack = HiddenTriggerBackdoor(HTBAConfig(trigger_size=2), _scenario(), seed=0)
    with pytest.raises(UserError, match="no backbone/head split"):
        attack.check(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
