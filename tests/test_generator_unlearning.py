"""Generator unlearning on the MAE (Li et al., ICLR 2024): the objective's properties, the frozen parts, shared masks,
the metrics' sanity, proxy retain data, bad input, and `cl-bench unlearn-generator` end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from conftest import run_cli
from test_pretrain import TINY_MODEL
from test_pretrain import TINY_RUN as TINY_PRETRAIN

from cl_bench import image_metrics, pretrain
from cl_bench.config import build_config
from cl_bench.generator_unlearning_config import GeneratorUnlearningConfig
from cl_bench.models.mae import MaskedAutoencoder
from cl_bench.models.vit import read_card
from evaluators import generator_unlearning as gu
from evaluators.generator_unlearning_baselines import max_loss, noisy_label_loss, retain_label_loss

# ---------------------------------------------------------------------------------------------
# a tiny MAE on 8x8 images (2x2 patches of 4x4) and two "classes" of synthetic images
# ---------------------------------------------------------------------------------------------


def tiny_mae(seed: int = 0) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    vit = VisionTransformer(
        img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2, num_classes=0, global_pool="token"
    )
    return MaskedAutoencoder(vit, 8, 1, 2).eval()


def two_classes(count: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Forget: bright top halves; retain: bright bottom halves (plus noise), pixels in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(2 * count, 1, 8, 8, generator=generator) * 0.3
    base[:count, :, :4] += 0.6
    base[count:, :, 4:] += 0.6
    return base[:count].clamp(0, 1), base[count:].clamp(0, 1)


def settings(**values) -> GeneratorUnlearningConfig:
    defaults = {"epochs": 1, "warmup_epochs": 0, "batch_size": 8, "lr": 1e-3, "grad_clip": 0.0}
    return build_config(GeneratorUnlearningConfig, {**defaults, **values}, "unlearn")


def left_half_masked(count: int, generator: torch.Generator) -> torch.Tensor:
    return torch.tensor([[True, False, True, False]]).expand(count, -1).clone()


def random_two_of_four(count: int, generator: torch.Generator) -> torch.Tensor:
    noise = torch.rand(count, 4, generator=generator)
    mask = torch.ones(count, 4, dtype=torch.bool)
    mask.scatter_(1, noise.argsort(dim=1)[:, :2], False)
    return mask


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


# ---------------------------------------------------------------------------------------------
# the objective (spec properties 1-5, 7, 8)
# ---------------------------------------------------------------------------------------------


def test_retain_loss_is_exactly_zero_and_alpha_zero_gives_exactly_zero_gradient_at_the_start():
    mae = tiny_mae()
    forget, retain = two_classes(4)
    images = torch.cat([forget, retain])
    is_forget = torch.arange(8) < 4
    mask = random_two_of_four(8, torch.Generator().manual_seed(0))
    teacher, student = gu.frozen_copy(mae), gu.frozen_copy(mae)
    for parameter in student.encoder.parameters():
        parameter.requires_grad_(True)
    parts = gu.encoder_noise_loss(
        student, teacher, images, is_forget, mask, settings(alpha=0.0), torch.Generator().manual_seed(1)
    )
    assert parts.retain.item() == 0.0 and parts.forget.item() > 0 and parts.total.item() == 0.0
    parts.total.backward()
    assert all(int(p.grad.count_nonzero()) == 0 for p in student.encoder.parameters())
    # with a forget weight the gradient is not zero
    student.zero_grad()
    parts = gu.encoder_noise_loss(
        student, teacher, images, is_forget, mask, settings(alpha=1.0), torch.Generator().manual_seed(1)
    )
    parts.total.backward()
    assert parts.retain.item() == 0.0 and any(int(p.grad.count_nonzero()) for p in student.encoder.parameters())


def test_no_forget_data_leaves_the_encoder_unchanged_unless_weight_decay_acts():
    mae = tiny_mae()
    _, retain = two_classes(8)
    empty = retain[:0]
    before = state(mae.encoder)
    kept = gu.unlearn(
        mae, empty, retain, settings(alpha=0.0, weight_decay=0.0, epochs=3), random_two_of_four, torch.Generator()
    )
    assert kept.steps == 6 and same(state(kept.model.encoder), before)
    assert kept.history["retain"] == [0.0, 0.0, 0.0]
    decayed = gu.unlearn(
        mae, empty, retain, settings(alpha=0.0, weight_decay=0.5, epochs=3), random_two_of_four, torch.Generator()
    )
    assert not same(state(decayed.model.encoder), before)
    assert same(state(decayed.model.decoder), state(mae.decoder))  # decay touches the trained encoder only


@pytest.mark.parametrize("method", ["encoder_noise", "random_encoder"])
def test_decoder_and_teacher_stay_bit_identical_and_only_the_encoder_changes(method):
    mae = tiny_mae()
    forget, retain = two_classes(8)
    original = state(mae)
    result = gu.unlearn(
        mae, forget, retain, settings(method=method, alpha=1.0, epochs=2), random_two_of_four, torch.Generator()
    )
    assert same(state(result.model.decoder), state(mae.decoder))
    assert same(state(result.teacher), original) and same(state(mae), original)  # the input model too
    assert not same(state(result.model.encoder), state(mae.encoder))
    assert not any(p.requires_grad for p in result.model.parameters())


@pytest.mark.parametrize("method", ["max_loss", "noisy_label", "retain_label"])
def test_the_reconstruction_baselines_train_the_whole_model_and_keep_the_teacher(method):
    mae = tiny_mae()
    forget, retain = two_classes(8)
    original = state(mae)
    result = gu.unlearn(mae, forget, retain, settings(method=method, alpha=0.5), random_two_of_four, torch.Generator())
    assert not same(state(result.model.decoder), state(mae.decoder))
    assert not same(state(result.model.encoder), state(mae.encoder))
    assert same(state(result.teacher), original)


def test_student_and_teacher_share_each_steps_mask_and_the_teacher_sees_noise_in_the_forget_rows(monkeypatch):
    mae = tiny_mae()
    forget, retain = two_classes(4)
    calls: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    original_encode = MaskedAutoencoder.encode

    def spy(self, images, mask):
        calls.append((id(self), images.clone(), mask.clone()))
        return original_encode(self, images, mask)

    monkeypatch.setattr(MaskedAutoencoder, "encode", spy)
    result = gu.unlearn(mae, forget, retain, settings(epochs=3), random_two_of_four, torch.Generator().manual_seed(0))
    assert len(calls) == 2 * result.steps  # the student, then the teacher once
    steps = [calls[i : i + 2] for i in range(0, len(calls), 2)]
    for (student, student_images, student_mask), (teacher, teacher_images, teacher_mask) in steps:
        assert student != teacher and torch.equal(student_mask, teacher_mask)
        half = len(student_images) // 2  # forget rows first
        assert torch.equal(teacher_images[half:], student_images[half:])  # the retain rows as the student sees them
        assert not torch.equal(teacher_images[:half], student_images[:half])  # noise in place of the forget images
    assert not torch.equal(steps[0][0][2], steps[1][0][2])  # masks are drawn afresh each step


def test_forget_loss_falls_while_retain_loss_stays_near_zero():
    mae = tiny_mae()
    forget, retain = two_classes(32)
    result = gu.unlearn(
        mae,
        forget,
        retain,
        # constant noise: a fixed target, so the forget term can fall far (a fresh normal draw each step leaves the
        # variance of the teacher's noise embeddings in it)
        settings(alpha=1.0, epochs=8, warmup_epochs=1, lr=1e-3, batch_size=16, weight_decay=0.0, noise_type="constant"),
        random_two_of_four,
        torch.Generator().manual_seed(0),
    )
    forget_terms, retain_terms = result.history["forget"], result.history["retain"]
    assert result.steps == 32
    assert forget_terms[-1] < 0.5 * forget_terms[0], forget_terms
    assert max(retain_terms) < 0.1 * forget_terms[0], (retain_terms, forget_terms)


def test_unlearning_is_bit_identical_for_a_seed():
    mae = tiny_mae()
    forget, retain = two_classes(8)
    runs = [
        gu.unlearn(mae, forget, retain, settings(epochs=2), random_two_of_four, torch.Generator().manual_seed(seed))
        for seed in (3, 3, 4)
    ]
    assert same(state(runs[0].model), state(runs[1].model)) and runs[0].history == runs[1].history
    assert not same(state(runs[0].model), state(runs[2].model))


def test_batches_are_balanced_by_oversampling_the_smaller_set_and_proxy_mode_needs_no_real_retain_images():
    mae = tiny_mae()
    forget, _ = two_classes(12)
    proxy = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))  # another "dataset", 3 images
    seen: list[torch.Tensor] = []

    def record(student, teacher, images, is_forget, mask, config, generator):
        seen.append(is_forget.clone())
        return gu.encoder_noise_loss(student, teacher, images, is_forget, mask, config, generator)

    original = gu.loss_function
    try:
        gu.loss_function = lambda method: record  # type: ignore[assignment]
        result = gu.unlearn(mae, forget, proxy, settings(batch_size=8, epochs=2), left_half_masked, torch.Generator())
    finally:
        gu.loss_function = original
    assert result.steps == 6 and all(int(flags.sum()) == 4 and len(flags) == 8 for flags in seen)


def test_batch_share_weighting_is_twice_the_share_times_the_group_mean():
    per_sample = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    is_forget = torch.tensor([True, False, False, False, True])
    retain, forget = gu.group_terms(per_sample, is_forget, "group_mean")
    assert (retain.item(), forget.item()) == (3.0, 5.5)
    retain_code, forget_code = gu.group_terms(per_sample, is_forget, "batch_share")
    torch.testing.assert_close(retain_code, 2 * (3 / 5) * retain)
    torch.testing.assert_close(forget_code, 2 * (2 / 5) * forget)
    balanced = torch.tensor([True, True, False, False])
    values = torch.tensor([1.0, 3.0, 5.0, 9.0])
    for a, b in zip(gu.group_terms(values, balanced, "group_mean"), gu.group_terms(values, balanced, "batch_share")):
        torch.testing.assert_close(a, b)  # equal on balanced batches


def test_noise_images_follow_the_mixed_batch_and_stay_in_range():
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    generator = torch.Generator().manual_seed(1)
    normal = gu.noise_images(images, "normal", generator)
    uniform = gu.noise_images(images, "uniform", generator)
    constant = gu.noise_images(images, "constant", generator)
    assert normal.shape == images.shape and 0 <= normal.min() and normal.max() <= 1
    assert abs(normal.mean().item() - images.mean().item()) < 0.05
    assert 0 <= uniform.min() and uniform.max() <= 1 and uniform.mean() > 0.4
    assert torch.equal(constant, torch.full_like(images, images.mean().item()))


def test_the_reconstruction_baselines_targets():
    mae = tiny_mae()
    forget, retain = two_classes(2)
    images = torch.cat([forget, retain])
    is_forget = torch.tensor([True, True, False, False])
    mask = left_half_masked(4, torch.Generator())
    config = settings(alpha=0.5)
    parts = max_loss(mae, mae, images, is_forget, mask, config, torch.Generator())
    torch.testing.assert_close(parts.total, parts.retain - 0.5 * parts.forget)
    for loss in (noisy_label_loss, retain_label_loss):
        parts = loss(mae, gu.frozen_copy(mae), images, is_forget, mask, config, torch.Generator().manual_seed(0))
        torch.testing.assert_close(parts.total, parts.retain + 0.5 * parts.forget)
    # retain_label's forget target is the teacher's output for a retain image: the teacher scores itself 0 there
    parts = retain_label_loss(mae, mae, torch.cat([retain, retain]), is_forget, mask, config, torch.Generator())
    assert parts.forget.item() == pytest.approx(0.0, abs=1e-10)  # batch sizes differ: equal up to rounding


# ---------------------------------------------------------------------------------------------
# metrics (spec property 6)
# ---------------------------------------------------------------------------------------------


def test_metrics_of_identical_images_and_of_uniform_predictions():
    rng = np.random.default_rng(0)
    images = rng.random((12, 1, 16, 16))
    mask = np.zeros((12, 16, 16), dtype=bool)
    mask[:, 4:12, 4:12] = True
    assert np.all(image_metrics.masked_mse(images, images, mask) == 0)
    assert np.all(image_metrics.psnr(np.zeros(3)) == image_metrics.MAX_PSNR_DB)
    whole, masked = image_metrics.ssim(images, images, mask)
    np.testing.assert_allclose(whole, 1.0, atol=1e-9)
    np.testing.assert_allclose(masked, 1.0, atol=1e-9)
    features = rng.normal(size=(50, 8))
    assert image_metrics.mean_cosine(features, features) == pytest.approx(1.0)
    assert image_metrics.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    assert image_metrics.frechet_distance(features, features + 1.0) == pytest.approx(8.0, rel=1e-6)
    assert image_metrics.inception_style_score(np.full((40, 10), 0.1)) == pytest.approx((1.0, 0.0))
    one_hot = np.eye(10)[np.repeat(np.arange(10), 4)]
    assert image_metrics.inception_style_score(one_hot, splits=4)[0] == pytest.approx(10.0)
    sorted_by_class = np.eye(5)[np.repeat(np.arange(5), 20)]  # how test images are stored: class by class
    assert image_metrics.inception_style_score(sorted_by_class, splits=10) == pytest.approx((5.0, 0.0))
    random = rng.dirichlet(np.ones(10), size=200)
    assert 1.0 <= image_metrics.inception_style_score(random)[0] <= 10.0
    assert image_metrics.accuracy(one_hot, np.repeat(np.arange(10), 4)) == 1.0


def test_metrics_move_the_right_way_on_damaged_images():
    rng = np.random.default_rng(1)
    truth = rng.random((10, 1, 16, 16))
    mask = np.zeros((10, 16, 16), dtype=bool)
    mask[:, :8] = True
    damaged = truth.copy()
    damaged[:, :, :8] = rng.random((10, 1, 8, 16))
    mse = image_metrics.masked_mse(damaged, truth, mask)
    assert np.all(mse > 0.05) and np.all(image_metrics.psnr(mse) < 15)
    whole, masked = image_metrics.ssim(damaged, truth, mask)
    assert np.all(masked < whole) and np.all(whole < 0.9)
    other = rng.normal(size=(50, 4))
    assert image_metrics.mean_cosine(other, -other) == pytest.approx(-1.0)


# ---------------------------------------------------------------------------------------------
# the command, end to end, on tiny backbones in a temporary cache
# ---------------------------------------------------------------------------------------------

TINY_FLAGS = [
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--images-per-class",
    "4",
    "--test-images-per-class",
    "4",
    "--tsne-images",
    "4",
    "--is-splits",
    "2",
    "--grid-images",
    "2",
    "--metric-backbone",
    "sup",
    "--device",
    "cpu",
    "--no-progress",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A tiny Fashion-MNIST and, in a temporary cache, a tiny MAE, its retain-only reference and a supervised ViT."""
    from conftest import write_fake_fmnist

    root = tmp_path_factory.mktemp("generator_unlearning")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CL_BENCH_DATA", str(root / "data"))
        patch.setenv("CL_BENCH_CACHE", str(root / "cache"))
        write_fake_fmnist(root / "data" / "fashion-mnist", train_per_class=30, test_per_class=5)
        for method, name, extra in (
            ("mae", "mae", {}),
            ("mae", None, {"classes": [5, 6, 7, 8, 9]}),
            ("supervised", "sup", {}),
        ):
            pretrain.pretrain(
                "vit_micro",
                TINY_MODEL,
                {**TINY_PRETRAIN, "method": method, **extra},
                name=name,
                progress=False,
                log=lambda line: None,
            )
        yield root


@pytest.fixture
def env(cache, monkeypatch):
    monkeypatch.setenv("CL_BENCH_DATA", str(cache / "data"))
    monkeypatch.setenv("CL_BENCH_CACHE", str(cache / "cache"))
    return cache


REFERENCE = "vit_micro-fmnist-mae-c5_6_7_8_9-s0"


def test_pretrain_classes_restricts_the_pool_and_names_the_entry(env):
    card = read_card(env / "cache" / "backbones" / REFERENCE / "weights.safetensors")
    assert card["data"]["classes"] == [5, 6, 7, 8, 9] and card["method"]["classes"] == [5, 6, 7, 8, 9]
    assert card["data"]["num_images"] == 5 * 5  # the fake pool holds 5 images per class
    full = read_card(env / "cache" / "backbones" / "mae" / "weights.safetensors")
    assert "classes" not in full["data"] and "classes" not in full["method"]


def read_board(out):
    with (out / "eval_generator_unlearning.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_unlearns_scores_and_writes_the_artefact_pictures_and_board(env, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["unlearn-generator", "--backbone", "mae", "--reference", REFERENCE, "--out", str(out), *TINY_FLAGS]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    run_dir = out / stdout.strip().splitlines()[-1].split("/")[-1]
    assert {p.name for p in run_dir.iterdir()} == {"generator_unlearning.json", "grid.png", "tsne.png"}
    artefact = json.loads((run_dir / "generator_unlearning.json").read_text())
    assert set(artefact["metrics"]) == {"original", "unlearned", "reference"}
    for numbers in artefact["metrics"].values():
        assert set(numbers) == {"forget", "retain"} and all(np.isfinite(v) for v in numbers["forget"].values())
    assert (
        artefact["training"]["updated"] == "encoder" and artefact["training"]["steps"] == 5
    )  # 20 forget images, 4 per batch
    assert artefact["data"]["forget_train_images"] == 20 and artefact["data"]["real_retain_images"] == 20
    assert artefact["degradation"]["masked_patches"] == 4 and artefact["degradation"]["fixed_mask"][1] == [0, 1, 1, 0]
    assert artefact["timing"]["retrain_over_unlearn"] > 0 and "forget" in stdout and "encoder_noise" in stdout
    (row,) = read_board(out)
    assert row["method"] == "encoder_noise" and row["reference"] == REFERENCE and row["degradation"] == "centre 14px"
    assert float(row["forget_mse_masked"]) == pytest.approx(artefact["metrics"]["unlearned"]["forget"]["mse_masked"])
    assert row["reference_retain_fd_vitmicro"] and row["original_forget_is_vitmicro"]

    # the same seed again: the same encoder and the same numbers; another method adds a row
    code, _, err = run_cli(args + ["--force"], capsys)
    again = json.loads((run_dir / "generator_unlearning.json").read_text())
    assert code == 0, err
    assert again["training"]["encoder_sha256"] == artefact["training"]["encoder_sha256"]
    assert again["metrics"] == artefact["metrics"]
    code, _, err = run_cli(args + ["--set", "method=original", "--tsne-images", "0"], capsys)
    assert code == 0, err
    rows = read_board(out)
    assert [r["method"] for r in rows] == ["original", "encoder_noise"]
    assert rows[0]["forget_mse_masked"] == rows[0]["original_forget_mse_masked"] == row["original_forget_mse_masked"]


@pytest.mark.parametrize(
    "extra, source",
    [
        (["--retain-source", "digits"], "scikit-learn digits"),
        (
            ["--set", "forget_classes=[0,1]", "--set", "retain_classes=[2,3]", "--retain-source", "classes"]
            + ["--proxy-classes", "7,8"],
            "proxy classes",
        ),
    ],
)
def test_proxy_retain_sets_run_without_real_retain_images(extra, source, env, tmp_path, capsys):
    code, stdout, err = run_cli(
        [
            "unlearn-generator",
            "--backbone",
            "mae",
            "--out",
            str(tmp_path),
            *TINY_FLAGS,
            "--degradation",
            "random",
            *extra,
        ],
        capsys,
    )
    assert code == 0, err
    artefact = json.loads(
        (tmp_path / stdout.strip().splitlines()[-1].split("/")[-1] / "generator_unlearning.json").read_text()
    )
    assert artefact["data"]["real_retain_images"] == 0 and source in artefact["data"]["retain_train"]["source"]
    assert artefact["data"]["retain_train_images"] > 0 and artefact["degradation"]["masked_patches"] == 12


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--set", "retain_classes=[4,5]"], "class 4 is both forgotten and retained"),
        (["--set", "forget_classes=[]"], "forget_classes is empty"),
        (["--hole-px", "0"], "masks nothing"),
        (["--hole-px", "28"], "masks every patch"),
        (["--degradation", "outpaint", "--border-px", "14"], "masks every patch"),
        (["--degradation", "random", "--mask-ratio", "0"], "mask_ratio=0 masks nothing"),
        (["--hole-px", "10"], "not a multiple of the model's 7x7-pixel patches"),
        (["--method", "forget_everything"], "unlearn.method must be one of"),
        (["--set", "alpha=.nan"], "unlearn.alpha must be a finite number"),
        (["--set", "colour=red"], "unknown unlearn field 'colour'"),
        (["--retain-source", "classes", "--proxy-classes", "4,7"], "proxy class 4 is also a forget or retain class"),
        (["--reference", "mae"], "must leave out the forget classes and keep the retain classes"),
        (["--metric-backbone", "mae"], "is not a supervised backbone"),
        (["--backbone", "sup"], "is not an MAE backbone"),
        (["--backbone", "absent"], "is neither a weights file nor a backbone"),
        (["--set", "nonsense"], "--set expects FIELD=VALUE"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(extra, fragment, env, tmp_path, capsys):
    code, _, err = run_cli(
        ["unlearn-generator", "--backbone", "mae", "--out", str(tmp_path / "out"), *TINY_FLAGS, *extra], capsys
    )
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
    assert not (tmp_path / "out").exists()


def test_a_backbone_card_without_its_decoder_is_refused(env, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    source = env / "cache" / "backbones" / "mae"
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    tensors = {k: v for k, v in load_file(str(source / "weights.safetensors")).items() if not k.startswith("decoder.")}
    save_file(tensors, str(stripped / "weights.safetensors"))
    card = json.loads((source / "card.json").read_text())
    card.pop("sha256")
    (stripped / "card.json").write_text(json.dumps(card))
    code, _, err = run_cli(
        [
            "unlearn-generator",
            "--backbone",
            str(stripped / "weights.safetensors"),
            "--out",
            str(tmp_path / "out"),
            *TINY_FLAGS,
        ],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and "decoder" in err, err
    assert not (tmp_path / "out").exists()


def test_list_flags_take_commas_or_yaml_and_every_setting_is_a_flag():
    import dataclasses

    from cl_bench.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["pretrain", "--classes", "5,6,7"]).classes == [5, 6, 7]
    assert parser.parse_args(["pretrain", "--classes", "[5, 6]"]).classes == [5, 6]
    args = parser.parse_args(["unlearn-generator", "--backbone", "x", "--forget-classes", "1", "--betas", "0.8,0.9"])
    assert (args.forget_classes, args.betas, args.alpha) == ([1], [0.8, 0.9], None)
    for spec in dataclasses.fields(GeneratorUnlearningConfig):
        assert hasattr(args, spec.name)


def test_the_method_page_quotes_the_committed_board_and_benchmark():
    """docs/methods/generator_unlearning.md shows analysis/generator_unlearning_tables.py's tables of the committed
    board and the benchmark result whole."""
    from conftest import REPOSITORY, analysis_script, page_block

    tables = analysis_script("generator_unlearning_tables")
    page = (REPOSITORY / "docs" / "methods" / "generator_unlearning.md").read_text()
    for marker, table in (
        ("generator-methods", tables.methods_table()),
        ("generator-paired", tables.paired_table()),
        ("generator-alpha", tables.alpha_table()),
        ("generator-proxy", tables.proxy_table()),
    ):
        assert page_block(page, marker) == table, marker
    assert (REPOSITORY / "benchmarks/results/generator_unlearning.txt").read_text().rstrip() in page


def test_the_users_inception_and_clip_weights_add_their_columns_and_name_the_run_by_content(env, tmp_path, capsys):
    """The optional extra end to end: the networks the test writes, FID/IS/CLIP columns on the board only once a
    run has them, a run id that follows the weights' content (not their path) and leaves other runs' ids alone."""
    import shutil

    from test_pretrained_image_metrics import write_inception_weights, write_tiny_clip

    inception = write_inception_weights(tmp_path / "inception")
    clip_config, clip_weights = write_tiny_clip(tmp_path / "clip")
    out = tmp_path / "out"
    # the original model only, one class per group, two test images each: the FIDs cost seconds each on a CPU
    small = [*TINY_FLAGS, "--method", "original", "--forget-classes", "0", "--retain-classes", "5"]
    small += ["--test-images-per-class", "2", "--is-splits", "2", "--tsne-images", "0"]
    base = ["unlearn-generator", "--backbone", "mae", "--out", str(out), *small]
    code, stdout, err = run_cli(base, capsys)
    assert code == 0, err
    plain_id = stdout.strip().splitlines()[-1].split("/")[-1]
    assert not any(column.endswith(("_inception", "_clip")) for column in read_board(out)[0])

    extra = ["--inception-weights", str(inception), "--clip-model", str(clip_config), "--clip-weights"]
    code, stdout, err = run_cli(base + extra + [str(clip_weights)], capsys)
    assert code == 0, err
    assert "fid_inception" in stdout and "cos_clip" in stdout
    extra_id = stdout.strip().splitlines()[-1].split("/")[-1]
    artefact = json.loads((out / extra_id / "generator_unlearning.json").read_text())
    for group in ("forget", "retain"):
        numbers = artefact["metrics"]["original"][group]
        assert numbers["fid_inception"] >= -1e-6 and numbers["is_inception"] == pytest.approx(1.0)  # an image a split
        assert -1.0 <= numbers["cos_clip"] <= 1.0 + 1e-9
        assert artefact["ground_truth"][group]["is_inception"] == pytest.approx(1.0)
    assert artefact["pretrained_metric_networks"]["clip_weights"]["sha256"]
    rows = {row["run_id"]: row for row in read_board(out)}
    assert set(rows) == {plain_id, extra_id}
    assert rows[extra_id]["original_forget_fid_inception"] and rows[plain_id]["original_forget_fid_inception"] == ""

    # the same weights elsewhere: the same run, found and reused
    moved = tmp_path / "moved.pth"
    shutil.copy(clip_weights, moved)
    code, stdout, err = run_cli(base + extra + [str(moved)], capsys)
    assert code == 0 and f"run {extra_id} already exists" in err
    # another clip checkpoint is another run; a hostile one stops before anything is written
    torch.save({"weight": torch.ones(1)}, tmp_path / "other.pth")
    code, _, err = run_cli(base + extra + [str(tmp_path / "other.pth")], capsys)
    assert code == 2 and err.count("\n") == 1 and "does not hold the open_clip" in err
    assert set(rows) == {row["run_id"] for row in read_board(out)}
