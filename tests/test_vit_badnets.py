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


# ----------------------------------------------------------------------------- the blocking defence


def _tiny_vit(seed: int = 0):
    from timm.models.vision_transformer import VisionTransformer

    from cl_bench.models.heads import SingleHeadNet

    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=2, num_heads=2, num_classes=0)
    return SingleHeadNet(vit, 16, 10).eval(), vit


@pytest.mark.parametrize("official", [False, True])
def test_rollout_map_has_the_patch_grid_shape_range_no_nans_and_leaves_no_hooks(official):
    from cl_bench.interpret import attention_rollout

    model, vit = _tiny_vit()
    fused = [block.attn.fused_attn for block in vit.blocks]
    maps = attention_rollout(model, torch.rand(3, 1, 8, 8), official_normalisation=official)
    assert maps.shape == (3, 4, 4) and torch.isfinite(maps).all()
    assert torch.all(maps >= 0) and torch.allclose(maps.amax(dim=(1, 2)), torch.ones(3))
    assert all(not block.attn.attn_drop._forward_hooks for block in vit.blocks)
    assert [block.attn.fused_attn for block in vit.blocks] == fused
    assert all(p.grad is None for p in model.parameters())  # the maps' backward leaves no gradients behind


def test_row_normalisation_and_the_official_quirk_by_hand():
    from cl_bench.interpret import normalise

    matrix = torch.tensor([[1.0, 3.0], [2.0, 2.0]])  # row sums 4 and 4 ... then a case where they differ
    assert torch.equal(normalise(matrix), torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    uneven = torch.tensor([[1.0, 1.0], [3.0, 5.0]])  # row sums 2 and 8
    assert torch.equal(normalise(uneven), torch.tensor([[0.5, 0.5], [0.375, 0.625]]))
    # the quirk divides column j by the sum of row j: [[1/2, 1/8], [3/2, 5/8]]
    assert torch.equal(normalise(uneven, official=True), torch.tensor([[0.5, 0.125], [1.5, 0.625]]))


def test_grad_cam_maps_the_last_convolution():
    from cl_bench.backbone import build_model
    from cl_bench.interpret import grad_cam

    _, _, model = build_model("cnn", {}, (1, 28, 28))
    maps = grad_cam(model.eval(), torch.rand(2, 1, 28, 28))
    assert maps.ndim == 3 and torch.isfinite(maps).all() and float(maps.max()) <= 1.0 + 1e-6


def test_the_blocked_square_covers_a_hand_made_saliency_peak_and_nothing_else():
    from cl_bench.interpret import block_peak

    images = torch.rand(2, 1, 12, 12)
    saliency = torch.zeros(2, 12, 12)
    saliency[0, 2:5, 6:9] = 1.0  # a 3 x 3 square
    saliency[1, 9:12, 9:12] = 1.0  # in the corner: the square is shifted to stay inside
    blocked = block_peak(images, saliency, size=3, fill=0.0)
    changed = blocked != images
    assert torch.equal(changed[0, 0].nonzero().amin(0), torch.tensor([2, 6]))
    assert torch.equal(changed[0, 0].nonzero().amax(0), torch.tensor([4, 8]))
    assert torch.equal(changed[1, 0].nonzero().amin(0), torch.tensor([9, 9]))
    assert int(changed[0].sum()) == 9 and int(changed[1].sum()) == 9


def test_blocking_needs_a_model_with_maps(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = [*TOY, "--out", str(out), "--set", "attack.defence=block", "--set", "attack.interpretation=rollout"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "needs attention maps" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_end_to_end_blocking_lowers_the_asr_of_a_backdoored_vit(tmp_path, capsys):
    """The spec's toy (about 40 s): a small ViT on 8x8 digits with a 3-px trigger on 20 % of the data."""
    argv = ["run", "--scenario", "split_digits", "--set", "scenario.n_experiences=1", "--model", "vit_micro"]
    for setting in ("model.patch_size=2", "model.embed_dim=32", "model.depth=2", "model.num_heads=2"):
        argv += ["--set", setting]
    argv += ["--set", "train.optimizer=adam", "--lr", "0.003", "--epochs", "40", "--attack", "vit_badnets"]
    for setting in ("attack.trigger_size=3", "attack.poison_rate=0.2", "attack.defence=block"):
        argv += ["--set", setting]
    code, _, err = run_cli([*argv, "--device", "cpu", "--no-progress", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    (record_path,) = tmp_path.glob("*/record.json")
    record = json.loads(record_path.read_text())
    attacked, clean = record["attack_rows"][-1], record["attack_rows_clean"][-1]
    assert attacked["asr"] > 0.9 and clean["asr"] < 0.05
    assert attacked["clean_acc"] > clean["clean_acc"] - 0.05  # the backdoor costs little clean accuracy
    assert attacked["asr_blocked"] < attacked["asr"] - 0.5  # blocking lowers ASR by a large margin
    assert attacked["source_acc_recovered"] > 0.3


def test_squares_overlap_by_hand():
    from attacks.vit_badnets import squares_overlap

    corners = torch.tensor([[0, 0], [4, 4], [3, 0]])
    triggers = torch.tensor([[3, 3], [5, 5], [0, 3]])
    # a 3-px square at (0,0) and a 2-px one at (3,3) touch no pixel; (4,4)/(5,5) overlap; (3,0)/(0,3) do not
    assert squares_overlap(corners, 3, triggers, 2).tolist() == [False, True, False]
    assert squares_overlap(torch.tensor([[2, 2]]), 2, torch.tensor([[3, 3]]), 2).tolist() == [True]


@pytest.mark.parametrize("defence", ["none", "block"])
def test_a_strategy_without_plain_logits_can_be_poisoned_but_not_blocked(defence):
    """L2P's model returns no plain logits: BadNets only edits data and predicts through the strategy's rule, so
    it may run; the blocking defence differentiates the model, so it is refused before training."""
    from cl_bench import runner
    from cl_bench.config import resolve
    from cl_bench.errors import UserError
    from cl_bench.registry import STRATEGIES

    smoke = STRATEGIES.traits("l2p").smoke
    names = dict(setting.split("=", 1) for setting in smoke if "." not in setting.split("=", 1)[0])
    settings = [s for s in smoke if "." in s.split("=", 1)[0]] + ["attack.trigger_size=2", f"attack.defence={defence}"]
    config = resolve({}, {**names, "strategy": "l2p", "attack": "vit_badnets", "device": "cpu"}, settings)
    if defence == "none":
        assert runner.prepare(config, "unused", progress=False).attack is not None
    else:
        with pytest.raises(UserError, match="cannot be attacked by vit_badnets with these settings"):
            runner.prepare(config, "unused", progress=False)


def test_the_method_page_quotes_the_committed_boards_and_results():
    """docs/methods/vit_backdoor.md shows analysis/backdoor_tables.py's tables of the committed boards, the HTBA
    step-size measurement and the benchmark result whole."""
    from conftest import REPOSITORY, analysis_script, page_block

    tables = analysis_script("backdoor_tables")
    page = (REPOSITORY / "docs" / "methods" / "vit_backdoor.md").read_text()
    for marker, table in (
        ("backdoor-persistence", tables.persistence_table()),
        ("backdoor-defence", tables.defence_table()),
        ("backdoor-strength", tables.strength_table()),
    ):
        assert page_block(page, marker) == table, marker
    for result in ("analysis/results/htba_step_size.txt", "benchmarks/results/backdoor.txt"):
        assert (REPOSITORY / result).read_text().rstrip() in page, result
