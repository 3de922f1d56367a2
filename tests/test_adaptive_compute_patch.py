"""SlowFormer's compute patch (attacks/adaptive_compute_patch.py): the spec's oracles, the run, the board, bad input."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from conftest import run_cli
from test_avit import images, toy

from attacks.adaptive_compute_patch import (
    AdaptiveComputePatch,
    AdaptiveComputePatchConfig,
    attack_success,
    paste,
    quantise,
)
from cl_bench.leaderboard import build_leaderboards, headline_columns
from cl_bench.models.heads import SingleHeadNet

SCENARIO = SimpleNamespace(input_shape=(3, 32, 32), input_range=(0.0, 1.0))


def attack(**fields) -> AdaptiveComputePatch:
    return AdaptiveComputePatch(AdaptiveComputePatchConfig(**fields), SCENARIO, 0)


def frozen_toy(seed: int = 1) -> tuple[SingleHeadNet, torch.nn.Module]:
    vit = toy(gate_center=-2.0, seed=seed)  # h = sigmoid(10 t_0 + 2): clean depth low but above 1
    model = SingleHeadNet(vit, 64, 10).eval()
    model.requires_grad_(False)
    return model, vit


def test_paste_touches_only_its_window_equals_the_patch_and_leaves_the_input_alone():
    x = images(3)
    original = x.clone()
    patch = torch.rand(3, 5, 5)
    pasted = paste(x, patch, row=2, col=7)
    assert torch.equal(x, original)  # not in place
    assert torch.equal(pasted[:, :, 2:7, 7:12], patch.expand(3, -1, -1, -1))
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[2:7, 7:12] = False
    assert torch.equal(pasted[:, :, outside], x[:, :, outside])


def test_patch_pixels_are_valid_and_quantised_with_a_straight_through_gradient():
    values = torch.linspace(-0.5, 1.5, 101, requires_grad=True)
    snapped = quantise(values, 0.0, 1.0)
    assert snapped.min() >= 0 and snapped.max() <= 1
    levels = snapped.detach() * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    snapped.sum().backward()
    assert torch.equal(values.grad, torch.ones_like(values))


def test_the_patch_is_universal_whatever_the_batch():
    patcher = attack(size=8)
    patch = torch.rand(3, 8, 8)
    batch = patcher.apply(images(5), patch)
    alone = patcher.apply(images(5)[3:4], patch)
    assert torch.equal(batch[3], alone[0])
    assert all(torch.equal(batch[i, :, :8, :8], batch[0, :, :8, :8]) for i in range(5))


def test_size_zero_and_epsilon_zero_are_the_identity_with_zero_attack_success():
    model, vit = frozen_toy()
    x, y = images(32), torch.zeros(32, dtype=torch.long)
    for patcher, pixels in ((attack(size=0), torch.zeros(3, 0, 0)), (attack(perturbation="linf", epsilon=0.0), None)):
        if pixels is None:
            pixels = torch.zeros(3, 32, 32)
        on_grid = quantise(x, 0.0, 1.0)  # pixels of an 8-bit image
        assert torch.equal(patcher.apply(on_grid, pixels), on_grid)
        clean = patcher.measure_on(model, vit, on_grid, y, None)
        patched = patcher.measure_on(model, vit, on_grid, y, pixels)
        assert patched.mflops == clean.mflops
        assert attack_success(patched.mflops, clean.mflops, 10.0) == 0.0


def test_attack_success_formula():
    assert attack_success(0.87, 0.87, 1.26) == 0.0
    assert attack_success(1.26, 0.87, 1.26) == pytest.approx(100.0)
    assert attack_success(2.0, 0.87, 1.26) == 100.0  # capped
    assert attack_success(0.8, 0.87, 1.26) < 0  # the patch lowered compute
    assert math.isnan(attack_success(1.0, 1.26, 1.26))


def test_linf_perturbation_stays_within_its_budget():
    model, vit = frozen_toy()
    patcher = attack(perturbation="linf", epsilon=8.0, epochs=2, batch_size=16)
    fitted = patcher.fit_on(model, vit, images(32), torch.zeros(32, dtype=torch.long), torch.Generator().manual_seed(0))
    assert float(fitted.pixels.abs().max()) <= 8.0 / 255 + 1e-7
    assert fitted.pixels.shape == (3, 32, 32)


def test_toy_attack_raises_token_depth_over_a_random_patch_and_leaves_the_victim_bit_identical():
    # spec oracle 7, seed and gate pinned: clean depth 1.67 of 6 layers (28 %), so there is headroom and gradient
    model, vit = frozen_toy(seed=1)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    train_x, train_y = images(256, seed=10), torch.randint(0, 10, (256,), generator=torch.Generator().manual_seed(2))
    patcher = attack(size=8, epochs=12, batch_size=32)
    fitted = patcher.fit_on(model, vit, train_x, train_y, torch.Generator().manual_seed(0))
    test_x, test_y = images(128, seed=11), torch.zeros(128, dtype=torch.long)
    clean = patcher.measure_on(model, vit, test_x, test_y, None)
    random = patcher.measure_on(
        model, vit, test_x, test_y, patcher._start((3, 8, 8), torch.Generator().manual_seed(5), "uniform")
    )
    patched = patcher.measure_on(model, vit, test_x, test_y, fitted.pixels)
    assert 0.2 * 6 < clean.depth < 0.8 * 6
    assert patched.depth > clean.depth + 0.15
    assert abs(random.depth - clean.depth) < 0.1
    assert patched.mflops > clean.mflops
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())
    # the fitted patch is made of valid 8-bit pixels
    assert torch.allclose(fitted.pixels * 255, (fitted.pixels * 255).round(), atol=1e-4)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--model", "vit_micro"], "spends the same compute on every input"),
        (["--set", "attack.size=9"], "attack.size=9 is larger than the 8x8 image"),
        (["--set", "attack.row=6"], "leaves the 8x8 image"),
        (["--set", "attack.fit_after_experience=7"], "attack.fit_after_experience=7 is outside"),
        (["--set", "attack.objective=slow"], "attack.objective must be one of"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, extra, fragment):
    out = tmp_path / "runs"
    argv = ["run", "--scenario", "split_digits", "--model", "avit_micro", "--attack", "adaptive_compute_patch"]
    argv += ["--set", "model.patch_size=4", "--set", "attack.size=4", "--device", "cpu", "--out", str(out)]
    code, _, err = run_cli([*argv, *extra], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


TINY_RUN = [
    "--scenario",
    "split_digits",
    "--model",
    "avit_micro",
    "--strategy",
    "naive",
    "--epochs",
    "1",
    "--device",
    "cpu",
    "--no-progress",
    "--attack",
    "adaptive_compute_patch",
] + [
    part
    for setting in (
        "model.patch_size=4",
        "model.embed_dim=16",
        "model.depth=2",
        "model.num_heads=2",
        "attack.size=4",
        "attack.epochs=1",
        "attack.fit_after_experience=1",
    )
    for part in ("--set", setting)
]


def test_a_patch_fitted_mid_stream_is_followed_through_every_later_experience(tmp_path, capsys):
    code, out, err = run_cli(["run", *TINY_RUN, "--out", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    assert "test-time attack adaptive_compute_patch" in out and "slowformer" in out  # the summary shows the rows
    run_dir = tmp_path / "runs" / out.strip().splitlines()[-1].split("/")[-1]
    record = json.loads((run_dir / "record.json").read_text())
    block = record["test_time_attack"]
    n = len(record["accuracy_matrix"])
    rows = block["rows"]
    assert sorted({row["experience"] for row in rows if row["patch"] == "clean"}) == list(range(n))
    assert sorted({row["experience"] for row in rows if row["patch"] == "slowformer"}) == list(range(1, n))
    assert {row["patch"] for row in rows} == {"clean", "random", "ntap", "slowformer"}
    assert block["details"]["fitted_after_experience"] == 1
    assert block["metrics"]["mflops_max"] >= block["metrics"]["mflops_clean"] > 0
    assert block["wall_time_s"] >= block["metrics"]["fit_s"]
    assert (run_dir / "compute_patch.png").stat().st_size > 0
    boards = build_leaderboards(tmp_path / "runs", tmp_path / "boards", warn=lambda line: None)
    assert [path.name for path in boards] == ["attack_adaptive_compute_patch.csv"]
    header = boards[0].read_text().splitlines()[0].split(",")
    assert {"experience", "patch", "attack_success_mean", "mflops_mean", "fit_s_mean"} <= set(header)
    assert len(header) == len(set(header))
    assert "attack_success_mean" in headline_columns("attack_adaptive_compute_patch")
    # the stream-following attack's state is not checkpointed: resuming past its fit is refused
    code, _, err = run_cli(["run", *TINY_RUN, "--out", str(tmp_path / "runs"), "--resume"], capsys)
    assert code == 0  # a complete run is returned as is


def test_same_seed_gives_identical_attack_numbers(tmp_path, capsys):
    results = []
    for name in ("a", "b"):
        code, out, err = run_cli(["run", *TINY_RUN, "--out", str(tmp_path / name)], capsys)
        assert code == 0, err
        run_dir = tmp_path / name / out.strip().splitlines()[-1].split("/")[-1]
        block = json.loads((run_dir / "record.json").read_text())["test_time_attack"]
        results.append((block["rows"], block["details"]["patch_pixels"]))
    assert results[0] == results[1]


def test_resuming_past_the_experience_the_patch_was_fitted_at_is_refused(tmp_path):
    from cl_bench import runner
    from cl_bench.config import resolve
    from cl_bench.errors import UserError

    sets = [TINY_RUN[i + 1] for i, part in enumerate(TINY_RUN) if part == "--set"]
    spec = {
        "scenario": "split_digits",
        "model": "avit_micro",
        "strategy": "naive",
        "attack": "adaptive_compute_patch",
        "train": {"epochs": 1, "device": "cpu"},
    }
    config = resolve(spec, None, sets)
    runner.execute(config, tmp_path, progress=False, log=lambda line: None, stop_after=3)
    with pytest.raises(UserError, match="rerun it with --force"):
        runner.execute(config, tmp_path, resume=True, progress=False, log=lambda line: None)


def test_the_method_page_holds_the_tables_the_boards_give():
    """docs/methods/adaptive_compute_patch.md quotes the committed boards through analysis/compute_attack_tables.py,
    the per-token depths and the benchmark result whole."""
    from conftest import REPOSITORY, analysis_script, page_block

    tables = analysis_script("compute_attack_tables")
    page = (REPOSITORY / "docs" / "methods" / "adaptive_compute_patch.md").read_text()
    for marker, table in (("compute-fmnist", tables.fmnist_table()), ("compute-continual", tables.continual_table())):
        assert page_block(page, marker) == table, marker
    for result in ("analysis/results/compute_patch_tokens.txt", "benchmarks/results/adaptive_compute.txt"):
        assert (REPOSITORY / result).read_text().rstrip() in page, result


def test_the_run_picture_draws_an_undefined_attack_success(tmp_path):
    from cl_bench.plots import plot_compute_patch

    rows = [{"experience": 0, "patch": p, "attack_success": None, "mflops": 7.0} for p in ("clean", "slowformer")]
    block = {
        "metrics": {"attack_success": None, "mflops_clean": 7.0, "mflops_patched": 7.0},
        "rows": rows,
        "details": {"active_per_layer": {"clean": [17, 17], "slowformer": [17, 17]}, "example_images": []},
    }
    record = {"attack": "adaptive_compute_patch", "model": "avit_micro", "strategy": "naive", "test_time_attack": block}
    assert plot_compute_patch([record], tmp_path / "p.png").stat().st_size > 0
