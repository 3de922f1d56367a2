"""Backdoors on per-item image data (CIFAR through its resize/normalise transforms): the trigger is pasted on the
transformed image, in the normalised input space; the test set is streamed; HTBA's budget stays in pixels."""

import json
import math

import pytest
import torch

from conftest import run_cli

from attacks.vit_badnets import BadNets, BadNetsConfig, make_trigger
from attacks.vit_htba import HiddenTriggerBackdoor, HTBAConfig
from cl_bench.config import build_config
from cl_bench.item_images import ImageSet
from cl_bench.registry import SCENARIOS
from scenarios.split_image import CIFAR_MEAN_STD


@pytest.fixture
def cifar10(tmp_path, monkeypatch, fake_cifar):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "data"))
    fake_cifar("cifar10", tmp_path / "data" / "cifar10", train_per_class=2, test_per_class=3)  # 100 train, 30 test


def _scenario(**values):
    entry = SCENARIOS.get("split_cifar10")
    return entry.builder(build_config(entry.config_class, {"n_experiences": 5, **values}, "scenario"), 0)


def _pixels(images: torch.Tensor) -> torch.Tensor:
    mean, std = (torch.tensor(values).view(1, -1, 1, 1) for values in CIFAR_MEAN_STD["cifar10"])
    return images * std + mean


def test_per_item_poisoning_pastes_a_normalised_trigger_after_the_transform_and_relabels_floor_p_n(cifar10):
    scenario = _scenario(image_size=16, augment=True)
    assert scenario.pixel_normalisation is not None and scenario.input_range is None
    attack = BadNets(BadNetsConfig(poison_rate=0.5, trigger_size=3, target_class=0), scenario, seed=0)
    # the trigger is the [0, 1] checkerboard in the model's normalised input space
    expected = make_trigger(3, 3, "checkerboard", 0.0, 1.0, seed=0)
    assert torch.allclose(_pixels(attack.trigger.unsqueeze(0))[0], expected, atol=1e-6)
    experience = scenario.benchmark.train_stream[1]
    original = ImageSet([experience.dataset.eval()])
    poisoned = attack.poison(experience, strategy=None)
    edited = ImageSet([poisoned.dataset.eval()])
    count = math.floor(0.5 * len(original))
    changed = (edited.targets != original.targets).nonzero().flatten().tolist()
    assert changed == attack.poisoned_indices and len(changed) == count
    assert torch.all(edited.targets[changed] == 0) and torch.equal(edited.task_labels, original.task_labels)
    rows = torch.arange(len(original))
    before, after = original.load(rows), edited.load(rows)
    rest = torch.ones(len(rows), dtype=torch.bool)
    rest[changed] = False
    assert torch.equal(after[rest], before[rest])  # the other samples are the dataset's own
    window = (slice(None), slice(None), slice(13, 16), slice(13, 16))
    assert torch.equal(after[changed][window], attack.trigger.expand(count, -1, -1, -1))
    outside = after[changed].clone()
    outside[window] = before[changed][window]
    assert torch.equal(outside, before[changed])  # nothing outside the window moved
    # training view: augmented each time, the trigger pasted afterwards at the same place
    torch.manual_seed(0)
    trained = poisoned.dataset.train()[changed[0]][0]
    assert torch.equal(trained[:, 13:16, 13:16], attack.trigger)


def test_the_streamed_test_images_and_the_blocked_square_are_black_in_pixels(cifar10):
    scenario = _scenario(image_size=16)
    attack = BadNets(BadNetsConfig(trigger_size=4, location="random", defence_images=7), scenario, seed=3)
    test = attack.test_images()
    assert len(test.images) == 30 and torch.all(test.images.targets[test.asr_rows] != 0)
    every = ImageSet([experience.dataset.eval() for experience in scenario.benchmark.test_stream])
    assert torch.equal(test.images.load(test.asr_rows[:5]), every.load(test.asr_rows[:5]))
    assert len(test.pick) == 7 and len(test.pick_all) == 7
    from cl_bench.interpret import block_squares

    clean, _ = attack.triggered(torch.arange(3))
    blocked = block_squares(clean, torch.tensor([[2, 5]] * 3), 4, attack.fill)
    assert torch.allclose(_pixels(blocked)[:, :, 2:6, 5:9], torch.zeros(3, 3, 4, 4), atol=1e-6)


def test_per_item_htba_keeps_labels_and_its_pixel_budget(cifar10):
    from cl_bench.backbone import build_model

    scenario = _scenario(image_size=16)
    config = HTBAConfig(target_class=2, source_class=3, target_experience=1, poison_rate=0.4, trigger_size=4)
    config.max_iterations, config.batch_size = 5, 2
    attack = HiddenTriggerBackdoor(config, scenario, seed=0)
    settings = {"patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2}
    _, _, model = build_model("vit_micro", settings, scenario.input_shape)

    class Strategy:
        pass

    strategy = Strategy()
    strategy.model = model
    experience = scenario.benchmark.train_stream[1]
    original = ImageSet([experience.dataset.eval()])
    poisoned = attack.poison(experience, strategy)
    edited = ImageSet([poisoned.dataset.train()])  # a poison is its fixed tensor, even in the training view
    assert torch.equal(edited.targets, original.targets)
    chosen = torch.tensor(attack.poisoned_indices)
    assert len(chosen) == math.floor(0.4 * len(original)) and torch.all(original.targets[chosen] == 2)
    moved = _pixels(edited.load(chosen)) - _pixels(original.load(chosen))
    assert float(moved.abs().max()) <= config.epsilon + 1e-5 and float(moved.abs().max()) > 0
    assert float(_pixels(edited.load(chosen)).min()) >= -1e-5 and float(_pixels(edited.load(chosen)).max()) <= 1 + 1e-5


@pytest.mark.parametrize("attack", ["vit_badnets", "vit_htba"])
def test_end_to_end_backdoor_with_the_defence_on_per_item_cifar(cifar10, tmp_path, capsys, attack):
    argv = ["run", "--scenario", "split_cifar10", "--model", "vit_micro", "--attack", attack, "--epochs", "1"]
    settings = ["scenario.n_experiences=5", "scenario.image_size=16", "model.patch_size=8", "model.embed_dim=16"]
    settings += ["model.depth=1", "model.num_heads=2", "attack.trigger_size=4", "attack.defence=block"]
    if attack == "vit_htba":
        settings += ["attack.target_experience=0", "attack.max_iterations=2", "attack.poison_rate=0.5"]
    for setting in settings:
        argv += ["--set", setting]
    code, _, err = run_cli([*argv, "--device", "cpu", "--no-progress", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    (record_path,) = tmp_path.glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert len(record["attack_rows"]) == 5 and len(record["attack_rows_clean"]) == 5
    for row in record["attack_rows"] + record["attack_rows_clean"]:
        assert 0.0 <= row["asr"] <= 1.0 and 0.0 <= row["asr_blocked"] <= 1.0 and 0.0 <= row["clean_acc"] <= 1.0
