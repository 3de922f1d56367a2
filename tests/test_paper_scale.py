"""Paper-scale scenarios and presets on tiny files: 224-px CIFAR transforms, ImageNet-R (prepare, stratified
split, bad trees), task-free CIFAR-100 / ImageNet-R streams, and every SLCA / Online-LoRA preset run end to end
with a tiny ViT (the presets' ViT-B/16 weights are refused with a one-line error, never downloaded)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import WNIDS, run_cli, write_image_tree

from cl_bench import runner
from cl_bench.config import build_config, resolve
from cl_bench.data import IMAGE_EXTENSIONS
from cl_bench.data_prepare import prepare
from cl_bench.errors import UserError
from cl_bench.presets import preset_names
from cl_bench.registry import SCENARIOS
from cl_bench.templates import SlicingDataMixin

PAPER_PRESETS = [
    "slca_cifar100",
    "slca_imagenet_r",
    "online_lora_cifar100",
    "online_lora_imagenet_r",
    "online_lora_si_blurry_cifar100",
]
TINY_VIT = ["model.patch_size=8", "model.embed_dim=16", "model.depth=1", "model.num_heads=2"]


def build(name: str, seed: int = 0, **values):
    entry = SCENARIOS.get(name)
    return entry.builder(build_config(entry.config_class, values, "scenario"), seed)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def imagenet_r(tmp_path, monkeypatch) -> Path:
    """A prepared tiny ImageNet-R (4 classes x 6 JPEGs) in a fresh data root; returns the source tree."""
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "data"))
    source = tmp_path / "download" / "imagenet-r"
    write_image_tree(source)
    prepare("imagenet-r", tmp_path / "download", tmp_path / "data")
    return source


@pytest.fixture
def cifar100(tmp_path, monkeypatch, fake_cifar) -> dict:
    """A tiny CIFAR-100 (2 training and 1 test image per class) in a fresh data root."""
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "data"))
    return fake_cifar("cifar100", tmp_path / "data" / "cifar100", train_per_class=2, test_per_class=1)


@pytest.fixture
def no_cached_weights(tmp_path, monkeypatch) -> None:
    """Empty Hugging Face and torch hub caches: no pretrained weights can be found (nor downloaded)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


# ---------------------------------------------------------------------------------------------
# 224-px CIFAR (SLCA's official transforms)
# ---------------------------------------------------------------------------------------------


def test_224_px_cifar_has_slca_transforms_and_distinct_train_and_eval_groups(cifar100):
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    from scenarios.split_image import CIFAR_MEAN_STD

    scenario = build("split_cifar100", image_size=224, augment=True)
    assert scenario.input_shape == (3, 224, 224) and scenario.input_range is None
    dataset = scenario.benchmark.test_stream[0].dataset
    first = int(np.flatnonzero(np.isin(cifar100["test_labels"], scenario.classes_per_experience[0]))[0])
    x_eval = dataset.eval()[0][0]
    # eval: Resize(256, bicubic) + CenterCrop(224) on the PIL image, then the CIFAR normalisation
    image = Image.fromarray(cifar100["test_images"][first])
    expected = transforms.Normalize(*CIFAR_MEAN_STD["cifar100"])(
        transforms.ToTensor()(
            transforms.CenterCrop(224)(transforms.Resize(256, interpolation=InterpolationMode.BICUBIC)(image))
        )
    )
    assert x_eval.shape == (3, 224, 224) and torch.equal(x_eval, expected)
    assert torch.equal(dataset.eval()[0][0], x_eval)  # deterministic
    # train: random (RandomResizedCrop bicubic + flip + ColorJitter 63/255), the same shape
    torch.manual_seed(0)
    draws = [dataset.train()[0][0] for _ in range(3)]
    assert all(d.shape == (3, 224, 224) for d in draws)
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], x_eval)
    from scenarios.split_image import cifar_transforms

    crop, flip, jitter, *_ = cifar_transforms("cifar100", 224, augment=True, normalize=True)[0].transforms
    assert isinstance(crop, transforms.RandomResizedCrop) and crop.size == (224, 224)
    assert crop.interpolation == InterpolationMode.BICUBIC and crop.scale == (0.08, 1.0)
    assert isinstance(flip, transforms.RandomHorizontalFlip)
    assert isinstance(jitter, transforms.ColorJitter) and jitter.brightness == pytest.approx(
        (1 - 63 / 255, 1 + 63 / 255)
    )
    # without augment the training images get the eval transform
    plain = build("split_cifar100", image_size=224).benchmark.train_stream[0].dataset
    assert torch.equal(plain.train()[0][0], plain.eval()[0][0])


def test_native_cifar_augment_is_slca_32_px_recipe_and_default_is_unchanged(cifar100):
    default = build("split_cifar100", normalize=False)
    assert default.input_shape == (3, 32, 32) and default.input_range == (0.0, 1.0)
    train = default.benchmark.train_stream[0].dataset
    assert torch.equal(train.train()[0][0], train.eval()[0][0])
    augmented = build("split_cifar100", normalize=False, augment=True).benchmark.train_stream[0].dataset
    assert torch.equal(augmented.eval()[0][0], train.eval()[0][0])  # same images, same eval tensors
    torch.manual_seed(0)
    draws = [augmented.train()[0][0] for _ in range(4)]
    assert all(d.shape == (3, 32, 32) for d in draws) and not torch.equal(draws[0], draws[1])
    assert "resized" not in default.description and "augmented" not in default.description


# ---------------------------------------------------------------------------------------------
# ImageNet-R: prepare, stratified split, errors
# ---------------------------------------------------------------------------------------------


def test_image_extensions_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert IMAGE_EXTENSIONS == tuple(IMG_EXTENSIONS)


@pytest.mark.parametrize("how", ["parent", "folder", "tar", "parent_of_tar"])
def test_prepare_imagenet_r_from_every_source_layout(tmp_path, how):
    write_image_tree(tmp_path / "src" / "imagenet-r", fmt="PNG" if how == "folder" else "JPEG")
    archive = tmp_path / "tar" / "imagenet-r.tar"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src" / "imagenet-r", arcname="imagenet-r")
    source = {
        "parent": tmp_path / "src",
        "folder": tmp_path / "src" / "imagenet-r",
        "tar": archive,
        "parent_of_tar": tmp_path / "tar",
    }[how]
    root = tmp_path / "root"
    prepared = prepare("imagenet-r", source, root)
    assert prepared == root / "imagenet-r"
    suffix = ".png" if how == "folder" else ".jpg"
    assert tree(prepared) == sorted(WNIDS + [f"{w}/art_{i}{suffix}" for w in WNIDS for i in range(6)])
    assert tree(root) == ["imagenet-r"] + [f"imagenet-r/{p}" for p in tree(prepared)]  # no staging left
    assert prepare("imagenet-r", None, root) == prepared  # already there: kept


def _truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[:200])


def _keep_one_image(source: Path) -> None:
    for path in (source / WNIDS[0]).glob("art_[1-5].jpg"):
        path.unlink()


def _keep_one_class(source: Path) -> None:
    for wnid in WNIDS[1:]:
        shutil.rmtree(source / wnid)


@pytest.mark.parametrize(
    "break_it, fragment",
    [
        (_keep_one_image, f"class folder {{source}}/{WNIDS[0]} holds 1 image(s), at least 2"),
        (_keep_one_class, "holds 1 class folder(s), at least 2"),
        (
            lambda source: _truncated_jpeg(source / WNIDS[2] / "art_3.jpg"),
            f"corrupt image {{source}}/{WNIDS[2]}/art_3.jpg",
        ),
        (
            lambda source: (source / WNIDS[1] / "art_0.jpg").write_text("no image"),
            f"corrupt image {{source}}/{WNIDS[1]}",
        ),
    ],
)
def test_bad_imagenet_r_trees_are_one_line_errors_and_leave_nothing(tmp_path, break_it, fragment):
    source = tmp_path / "src" / "imagenet-r"
    write_image_tree(source)
    break_it(source)
    fragment = fragment.format(source=source)
    with pytest.raises(UserError) as error:
        prepare("imagenet-r", tmp_path / "src", tmp_path / "root")
    assert fragment in str(error.value) and "\n" not in str(error.value)
    assert tree(tmp_path / "root") == []


def test_bad_imagenet_r_archive_names_the_archive_and_keeps_the_previous_copy(tmp_path):
    root = tmp_path / "root"
    write_image_tree(tmp_path / "good" / "imagenet-r")
    prepare("imagenet-r", tmp_path / "good", root)
    before = tree(root)
    bad = tmp_path / "bad" / "imagenet-r"
    write_image_tree(bad)
    _truncated_jpeg(bad / WNIDS[3] / "art_5.jpg")
    archive = tmp_path / "imagenet-r.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(bad, arcname="imagenet-r")
    with pytest.raises(UserError) as error:
        prepare("imagenet-r", archive, root)
    message = str(error.value)
    assert message.startswith(f"in archive {archive}: corrupt image imagenet-r/{WNIDS[3]}/art_5.jpg")
    assert ".tmp-" not in message and "\n" not in message
    assert tree(root) == before
    with pytest.raises(UserError, match="does not exist"):
        prepare("imagenet-r", tmp_path / "missing", root)
    (tmp_path / "split" / "imagenet-r" / "train").mkdir(parents=True)
    (tmp_path / "split" / "imagenet-r" / "test").mkdir()
    with pytest.raises(UserError, match="holds 0 image"):  # a pre-split copy is not class folders
        prepare("imagenet-r", tmp_path / "split", root)


def test_imagenet_r_missing_at_run_time_names_the_prepare_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path))
    for name in ("split_imagenet_r", "task_free_imagenet_r"):
        with pytest.raises(UserError) as error:
            build(name)
        message = str(error.value)
        assert (
            message.startswith(
                f"ImageNet-R not found in {tmp_path / 'imagenet-r'}; run `cl-bench data prepare imagenet-r --from DIR`"
            )
            and "\n" not in message
        )
    with pytest.raises(UserError, match="does not download"):
        prepare("imagenet-r", None, tmp_path, allow_download=True)
    write_image_tree(tmp_path / "dl" / "imagenet-r")
    code, out, err = run_cli(
        ["data", "prepare", "imagenet-r", "--from", str(tmp_path / "dl"), "--root", str(tmp_path / "root")], capsys
    )
    assert code == 0, err
    assert out.strip() == str(tmp_path / "root" / "imagenet-r")


def test_split_imagenet_r_is_a_seeded_stratified_split_with_imagenet_transforms(imagenet_r):
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    from scenarios.imagenet_r import imagenet_r_split
    from scenarios.split_image import IMAGENET_MEAN_STD

    split = imagenet_r_split(test_fraction=0.2, split_seed=0)
    train_items, train_labels = split.part("train")
    test_items, test_labels = split.part("test")
    assert np.bincount(train_labels).tolist() == [5] * 4 and np.bincount(test_labels).tolist() == [1] * 4
    assert not set(train_items.paths) & set(test_items.paths)
    assert sorted(
        Path(p).relative_to(imagenet_r.parent.parent / "data" / "imagenet-r").as_posix()
        for p in train_items.paths + test_items.paths
    ) == sorted(f"{w}/art_{i}.jpg" for w in WNIDS for i in range(6))  # README and .DS_Store were left behind
    assert imagenet_r_split(0.2, 0).part("test")[0].paths == test_items.paths  # fixed by split_seed
    assert imagenet_r_split(0.2, 1).part("test")[0].paths != test_items.paths
    assert np.bincount(imagenet_r_split(0.5, 0).part("test")[1]).tolist() == [3] * 4

    scenario = build("split_imagenet_r", n_experiences=2, image_size=16, augment=True)
    assert scenario.num_classes == 4 and scenario.input_shape == (3, 16, 16) and scenario.n_experiences == 2
    assert scenario.classes_per_experience == [[0, 1], [2, 3]] and scenario.setting == "class-incremental"
    for stream, per_class in ((scenario.benchmark.train_stream, 5), (scenario.benchmark.test_stream, 1)):
        for experience, classes in zip(stream, scenario.classes_per_experience):
            assert sorted(_targets(experience.dataset)) == sorted(classes * per_class)
    # the class order follows the run seed; the split does not
    orders = {
        tuple(build("split_imagenet_r", seed=s, n_experiences=2, shuffle_classes=True).class_order) for s in range(4)
    }
    assert len(orders) > 1 and all(sorted(order) == [0, 1, 2, 3] for order in orders)
    # transforms: eval Resize(16*256//224 = 18, bicubic) + CenterCrop(16) + ImageNet mean/std; train random
    test = scenario.benchmark.test_stream[0].dataset
    x, y, t = test.eval()[0]
    image = Image.open(test_items.paths[0]).convert("RGB")
    expected = transforms.Normalize(*IMAGENET_MEAN_STD)(
        transforms.ToTensor()(
            transforms.CenterCrop(16)(transforms.Resize(18, interpolation=InterpolationMode.BICUBIC)(image))
        )
    )
    assert torch.equal(x, expected) and y == test_labels[0] == 0 and t == 0
    torch.manual_seed(0)
    train = scenario.benchmark.train_stream[0].dataset
    assert not torch.equal(train.train()[0][0], train.train()[0][0])
    assert torch.equal(train.eval()[0][0], train.eval()[0][0])
    raw = build("split_imagenet_r", n_experiences=4, normalize=False, task_labels=True, image_size=8)
    assert raw.input_range == (0.0, 1.0) and raw.setting == "task-incremental"
    low, high = raw.benchmark.test_stream[3].dataset.eval()[0][0].aminmax()
    assert 0.0 <= low and high <= 1.0 and raw.benchmark.test_stream[3].dataset[0][2] == 3


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"n_experiences": 3}, "must divide the 4 classes"),
        ({"n_experiences": 2, "class_order": [2, 1, 0]}, "permutation of 0..3"),
    ],
)
def test_split_imagenet_r_checks_the_class_count_it_finds(imagenet_r, values, fragment):
    with pytest.raises(UserError, match=fragment):
        build("split_imagenet_r", **values)


# ---------------------------------------------------------------------------------------------
# task-free CIFAR-100 and ImageNet-R
# ---------------------------------------------------------------------------------------------


def _targets(dataset) -> list[int]:
    return [int(t) for t in dataset.targets]


def test_task_free_cifar100_hidden_tasks_follow_online_lora_and_si_blurry(cifar100):
    scenario = build("task_free_cifar100")
    assert scenario.setting == "task-free" and scenario.input_shape == (3, 224, 224)
    assert scenario.input_range == (0.0, 1.0) and scenario.num_classes == 100
    assert scenario.classes_per_experience == [list(range(10 * t, 10 * t + 10)) for t in range(10)]
    online = scenario.online
    assert (online.mode, online.batch_size, online.eval_every) == ("disjoint", 64, 1000)
    assert len(online.anytime_test) == 100 and sorted(_targets(online.anytime_test)) == list(range(100))
    for task, classes in enumerate(scenario.classes_per_experience):
        stream = _targets(scenario.benchmark.train_stream[task].dataset)
        assert sorted(stream) == sorted(classes * 2)  # every training image of the task's classes, once
        assert sorted(_targets(scenario.benchmark.test_stream[task].dataset)) == classes
    # the stream order inside a task is a seeded shuffle
    first = _targets(scenario.benchmark.train_stream[0].dataset)
    assert first != sorted(first) and first == _targets(build("task_free_cifar100").benchmark.train_stream[0].dataset)
    assert first != _targets(build("task_free_cifar100", seed=1).benchmark.train_stream[0].dataset)
    # Online-LoRA's transforms: train random crops of [0, 1] pixels, eval fixed
    dataset = scenario.benchmark.train_stream[0].dataset
    torch.manual_seed(0)
    a, b = dataset.train()[0][0], dataset.train()[0][0]
    assert a.shape == (3, 224, 224) and not torch.equal(a, b) and 0.0 <= a.min() and a.max() <= 1.0
    assert torch.equal(dataset.eval()[0][0], dataset.eval()[0][0])
    # Si-Blurry: 5 tasks by default (N = 0.5, M = 0.1); with M = 0.5 one of the 2 images of every blurry class
    # moves to another task, so exactly half of the classes appear in two tasks
    blurry = build("task_free_cifar100", mode="blurry", blurry_sample_ratio=0.5)
    assert blurry.n_experiences == 5 and all(len(home) == 20 for home in blurry.classes_per_experience)
    tasks_of = {
        c: {t for t, e in enumerate(blurry.benchmark.train_stream) if c in _targets(e.dataset)} for c in range(100)
    }
    assert sorted(len(tasks) for tasks in tasks_of.values()) == [1] * 50 + [2] * 50
    assert sum(len(_targets(e.dataset)) for e in blurry.benchmark.train_stream) == 200


def test_task_free_imagenet_r_streams_the_training_split_only(imagenet_r):
    scenario = build("task_free_imagenet_r", n_tasks=2, image_size=16)
    assert scenario.num_classes == 4 and scenario.classes_per_experience == [[0, 1], [2, 3]]
    assert [len(e.dataset) for e in scenario.benchmark.train_stream] == [10, 10]
    assert [sorted(_targets(e.dataset)) for e in scenario.benchmark.test_stream] == [[0, 1], [2, 3]]
    assert sorted(_targets(scenario.online.anytime_test)) == [0, 1, 2, 3]
    x, y, t = scenario.benchmark.train_stream[1].dataset.train()[0]
    assert x.shape == (3, 16, 16) and y in (2, 3) and t == 0
    with pytest.raises(UserError, match="must divide the 4 classes"):
        build("task_free_imagenet_r", n_tasks=3)
    with pytest.raises(UserError, match="must divide the 4 classes"):
        build("task_free_imagenet_r")  # 10 tasks by default (Online-LoRA)


# ---------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------


def test_every_paper_preset_resolves_to_the_papers_settings():
    assert set(PAPER_PRESETS) <= set(preset_names())
    configs = {name: resolve({}, {"preset": name}, []) for name in preset_names()}
    slca = configs["slca_cifar100"]
    assert (slca.scenario, slca.model, slca.strategy) == ("split_cifar100", "timm", "slca")
    assert slca.components["model"].arch == "vit_base_patch16_224"
    assert slca.components["model"].pretrained == "augreg_in21k"
    scenario = slca.components["scenario"]
    assert (scenario.image_size, scenario.augment, scenario.normalize, scenario.n_experiences) == (224, True, True, 10)
    assert slca.components["strategy"].milestones == [18] and slca.components["strategy"].lr_ratio == 0.01
    assert (slca.train.epochs, slca.train.batch_size, slca.train.lr, slca.train.momentum, slca.train.weight_decay) == (
        20,
        128,
        0.01,
        0.9,
        5e-4,
    )
    slca_r = configs["slca_imagenet_r"]
    assert slca_r.train.epochs == 50 and slca_r.components["strategy"].milestones == [40]
    assert slca_r.components["scenario"].normalize and slca_r.components["scenario"].n_experiences == 10
    for name, scenario_name, mode, tasks, lr, tau in [
        ("online_lora_cifar100", "task_free_cifar100", "disjoint", 10, 1e-4, (6.0, 0.1)),
        ("online_lora_imagenet_r", "task_free_imagenet_r", "disjoint", 10, 1e-4, (6.0, 0.1)),
        ("online_lora_si_blurry_cifar100", "task_free_cifar100", "blurry", 5, 2e-4, (5.2, 0.02)),
    ]:
        config = configs[name]
        scenario, strategy = config.components["scenario"], config.components["strategy"]
        assert (config.scenario, config.strategy, scenario.mode, scenario.n_tasks) == (
            scenario_name,
            "online_lora",
            mode,
            tasks,
        )
        assert not scenario.normalize and scenario.augment and scenario.image_size == 224
        assert (config.train.optimizer, config.train.lr, config.train.batch_size, scenario.stream_batch_size) == (
            "adam",
            lr,
            64,
            64,
        )
        assert (strategy.rank, strategy.reg_lambda, strategy.hard_buffer_size, strategy.window_length) == (
            4,
            2000.0,
            4,
            5,
        )
        assert (strategy.tau_mean, strategy.tau_var) == tau
        assert config.components["model"].arch == "vit_base_patch16_224"


def _shortened(name: str) -> list[str]:
    """--set overrides that make a paper preset run in seconds on the tiny files with a tiny vit_micro."""
    common = TINY_VIT + ["scenario.image_size=16"]
    if name.startswith("slca"):
        return common + [
            "scenario.n_experiences=2",
            "train.epochs=1",
            "strategy.ca_epochs=1",
            "strategy.ca_samples_per_class=8",
        ]
    # the tiny ImageNet-R streams 20 images, CIFAR-100 200: (mini-batch, anytime period)
    batch, every = (8, 8) if name.endswith("imagenet_r") else (16, 48)
    return common + [
        "scenario.n_tasks=2",
        f"scenario.stream_batch_size={batch}",
        f"scenario.anytime_eval_every={every}",
        f"train.batch_size={batch}",
    ]


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_every_paper_preset_runs_end_to_end_on_tiny_files(name, tmp_path, monkeypatch, fake_cifar):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "data"))
    if "imagenet_r" in name:
        write_image_tree(tmp_path / "download" / "imagenet-r")
        prepare("imagenet-r", tmp_path / "download", tmp_path / "data")
    else:
        fake_cifar("cifar100", tmp_path / "data" / "cifar100", train_per_class=2, test_per_class=1)
    config = resolve({}, {"preset": name, "model": "vit_micro", "device": "cpu"}, _shortened(name))
    run_dir = runner.execute(config, tmp_path / "runs", progress=False, log=lambda line: None)
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "complete" and record["model"] == "vit_micro"
    assert record["config"]["scenario"]["image_size"] == 16 and record["config"]["scenario"]["augment"] is True
    assert record["scenario_info"]["input_shape"] == [3, 16, 16]
    assert len(record["accuracy_matrix"]) == 2  # experiences or hidden tasks
    if name.startswith("online_lora"):
        assert record["config"]["strategy"]["merge_mode"] == "official"
        assert record["scenario_info"]["online"]["mode"] == ("blurry" if "blurry" in name else "disjoint")
        assert record["stream"]["samples"] == (200 if "cifar" in name else 20)
        assert record["anytime_accuracy"]["samples"] and record["metrics"]["a_auc"] is not None
    if "imagenet_r" in name:  # random crops of per-item images: reproducible, also through an interruption
        again = runner.execute(config, tmp_path / "again", progress=False, log=lambda line: None)
        assert json.loads((again / "record.json").read_text())["accuracy_matrix"] == record["accuracy_matrix"]
        runner.execute(config, tmp_path / "resumed", progress=False, log=lambda line: None, stop_after=1)
        resumed = runner.execute(config, tmp_path / "resumed", resume=True, progress=False, log=lambda line: None)
        assert json.loads((resumed / "record.json").read_text())["accuracy_matrix"] == record["accuracy_matrix"]


@pytest.mark.parametrize(
    "name, tag", [("slca_cifar100", "augreg_in21k"), ("online_lora_cifar100", "augreg2_in21k_ft_in1k")]
)
def test_paper_presets_ask_for_local_weights_instead_of_downloading(name, tag, cifar100, no_cached_weights, tmp_path):
    config = resolve({}, {"preset": name, "device": "cpu"}, [])
    with pytest.raises(UserError) as error:
        runner.execute(config, tmp_path / "runs", progress=False, log=lambda line: None)
    message = str(error.value)
    assert f"vit_base_patch16_224.{tag}" in message and "model.weights=PATH" in message
    assert "nothing is downloaded" in message and "\n" not in message
    assert not (tmp_path / "runs").exists()


def test_loader_workers_change_neither_results_nor_the_config_id(tmp_path, cifar100):
    """``train.num_workers`` moves the per-item 224-px loading into worker processes: without augmentation
    the matrix is bit-identical to the in-process loader's; with random crops, reproducible for a seed."""
    records = {}
    for workers, augment, out in [(0, False, "serial"), (2, False, "workers"), (2, True, "a"), (2, True, "b")]:
        config = resolve(
            {},
            {"preset": "slca_cifar100", "model": "vit_micro", "device": "cpu"},
            _shortened("slca_cifar100") + [f"train.num_workers={workers}", f"scenario.augment={augment}"],
        )
        run_dir = runner.execute(config, tmp_path / out, progress=False, log=lambda line: None)
        records[out] = json.loads((run_dir / "record.json").read_text())
    serial, workers = records["serial"], records["workers"]
    assert workers["accuracy_matrix"] == serial["accuracy_matrix"]
    assert "num_workers" not in serial["config"]["train"] and workers["config"]["train"]["num_workers"] == 2
    assert workers["config_id"] == serial["config_id"] and workers["run_id"] != serial["run_id"]
    assert records["a"]["accuracy_matrix"] == records["b"]["accuracy_matrix"]


def test_loader_workers_reach_avalanches_training_loader_and_the_evaluation(tmp_path, monkeypatch, cifar100):
    train_workers, eval_workers = [], []
    make_train_dataloader, make_loader = SlicingDataMixin.make_train_dataloader, runner.make_loader

    def recording_train_loader(strategy, **kwargs):
        make_train_dataloader(strategy, **kwargs)
        train_workers.append(strategy.dataloader.loader_kwargs["num_workers"])  # a TaskBalancedDataLoader

    def recording_loader(*args, **kwargs):
        loader = make_loader(*args, **kwargs)
        eval_workers.append(loader.num_workers)
        return loader

    monkeypatch.setattr(SlicingDataMixin, "make_train_dataloader", recording_train_loader)
    monkeypatch.setattr(runner, "make_loader", recording_loader)
    config = resolve(
        {},
        {"preset": "slca_cifar100", "model": "vit_micro", "device": "cpu"},
        _shortened("slca_cifar100") + ["train.num_workers=2"],
    )
    runner.execute(config, tmp_path / "runs", progress=False, log=lambda line: None)
    assert train_workers == [2, 2]  # one Avalanche DataLoader per experience
    assert eval_workers and set(eval_workers) == {2}
