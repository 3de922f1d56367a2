"""Scenario tests: the Continual Swiss Roll oracles (spec section 7) and the split image scenarios
(Fashion-MNIST and CIFAR from tiny files in the real on-disk formats, sklearn digits)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from cl_bench.config import build_config
from cl_bench.data_prepare import FMNIST_DEBIAN_DIR, prepare
from cl_bench.errors import UserError
from cl_bench.registry import SCENARIOS
from cl_bench.tensor_data import gather, make_loader
from scenarios.continual_swiss_roll import HEIGHT, SCALE, ContinualSwissRollConfig, generate_task


def build(name: str, seed: int = 0, **values):
    entry = SCENARIOS.get(name)
    return entry.builder(build_config(entry.config_class, values, "scenario"), seed)


def swiss(**values) -> ContinualSwissRollConfig:
    """The raw generator (lift off) unless the test says otherwise: its geometry is what these tests check."""
    values = {"lift_dim": 0, **values}
    return build_config(ContinualSwissRollConfig, values, "scenario")  # type: ignore[return-value]


def stream_tensors(stream) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [gather(experience.dataset) for experience in stream]


def wrapped(angle: np.ndarray) -> np.ndarray:
    """Angle difference mapped to (-pi, pi]."""
    return np.angle(np.exp(1j * angle))


# ---------------------------------------------------------------------------------------------
# Continual Swiss Roll: spec section 7
# ---------------------------------------------------------------------------------------------


def test_swiss_roll_determinism():
    config = swiss()
    first, again = generate_task(config, 3, 2), generate_task(config, 3, 2)
    for a, b in zip(first, again):
        assert a.tobytes() == b.tobytes()  # bitwise identical
    other_task = generate_task(config, 3, 5)
    other_seed = generate_task(config, 4, 2)
    assert not np.array_equal(first[0], other_task[0])
    assert not np.array_equal(first[0], other_seed[0])
    # the whole scenario too
    one, two = build("continual_swiss_roll", seed=3), build("continual_swiss_roll", seed=3)
    for (x1, y1, t1), (x2, y2, t2) in zip(
        stream_tensors(one.benchmark.train_stream), stream_tensors(two.benchmark.train_stream)
    ):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(t1, t2)


@pytest.mark.parametrize("values", [{}, {"n_classes": 4, "dim": 6, "n_train": 30, "n_test": 7}])
def test_swiss_roll_shapes_dtypes_balance(values):
    config = swiss(**values)
    for task in (0, config.n_tasks - 1):
        x_train, y_train, x_test, y_test = generate_task(config, 0, task)
        assert x_train.shape == (config.n_classes * config.n_train, config.dim) and x_train.dtype == np.float32
        assert x_test.shape == (config.n_classes * config.n_test, config.dim) and x_test.dtype == np.float32
        for y, n in ((y_train, config.n_train), (y_test, config.n_test)):
            assert y.dtype == np.int64 and y.min() >= 0 and y.max() < config.n_classes
            assert np.bincount(y, minlength=config.n_classes).tolist() == [n] * config.n_classes
        # samples are shuffled, so the first samples already mix the classes
        assert len(np.unique(y_train[:20])) > 1


def test_swiss_roll_window_property():
    config = swiss(sigma=0.0)
    T = config.n_tasks
    for task in range(T):
        x, y, _, _ = generate_task(config, 0, task)
        raw = x.astype(np.float64) * SCALE  # undo the scaling
        radius = np.hypot(raw[:, 0], raw[:, 2])
        low, high = 1.5 * math.pi * (1 + 2 * task / T), 1.5 * math.pi * (1 + 2 * (task + 1) / T)
        assert radius.min() >= low - 1e-4 and radius.max() < high + 1e-4
        # radius == roll parameter s for every class: the angle is s + 2*pi*c/n_classes
        phase = np.arctan2(raw[:, 2], raw[:, 0]) - (radius + 2 * math.pi * y / config.n_classes)
        assert np.abs(wrapped(phase)).max() < 1e-4


def test_swiss_roll_class_separation_one_nn():
    from sklearn.neighbors import KNeighborsClassifier

    config = swiss(sigma=0.0)
    for task in range(config.n_tasks):
        x_train, y_train, x_test, y_test = generate_task(config, 0, task)
        assert KNeighborsClassifier(n_neighbors=1).fit(x_train, y_train).score(x_test, y_test) == 1.0


def test_swiss_roll_shift_exists():
    from sklearn.linear_model import LogisticRegression

    config = swiss()
    x0, y0, x0_test, y0_test = generate_task(config, 0, 0)
    _, _, xl_test, yl_test = generate_task(config, 0, config.n_tasks - 1)
    classifier = LogisticRegression().fit(x0, y0)
    first, last = classifier.score(x0_test, y0_test), classifier.score(xl_test, yl_test)
    assert first >= 0.95
    assert last <= first - 0.3


def test_swiss_roll_scaling_bounds():
    config = swiss(sigma=0.0)
    for task in range(config.n_tasks):
        for x in generate_task(config, 1, task)[::2]:
            assert np.abs(x[:, [0, 2]]).max() <= 1.0
            assert x[:, 1].min() >= 0.0 and x[:, 1].max() <= HEIGHT / (4.5 * math.pi)


def test_swiss_roll_rotate_mode():
    config = swiss(sigma=0.0, mode="rotate", n_tasks=4)
    step = 2 * math.pi / 4
    for task in range(4):
        x, y, x_test, y_test = generate_task(config, 0, task)
        raw = x.astype(np.float64) * SCALE
        radius = np.hypot(raw[:, 0], raw[:, 2])
        # whole roll in every task
        assert radius.min() >= 1.5 * math.pi - 1e-4 and radius.max() <= 4.5 * math.pi + 1e-4
        assert radius.max() - radius.min() > 2.5 * math.pi
        phase = np.arctan2(raw[:, 2], raw[:, 0]) - (radius + math.pi * y + task * step)
        assert np.abs(wrapped(phase)).max() < 1e-4
        assert np.bincount(y_test).tolist() == [250, 250]
    custom = swiss(sigma=0.0, mode="rotate", rotation_step=0.3)
    x, y, _, _ = generate_task(custom, 0, 2)
    raw = x.astype(np.float64) * SCALE
    radius = np.hypot(raw[:, 0], raw[:, 2])
    phase = np.arctan2(raw[:, 2], raw[:, 0]) - (radius + math.pi * y + 0.6)
    assert np.abs(wrapped(phase)).max() < 1e-4


def test_swiss_roll_overlap_widens_windows():
    T = 10
    config = swiss(sigma=0.0, overlap=0.5)
    for task in (0, 4, T - 1):
        x, y, _, _ = generate_task(config, 0, task)
        radius = np.hypot(x[:, 0], x[:, 2]).astype(np.float64) * SCALE
        u = (radius / (1.5 * math.pi) - 1) / 2  # invert s = 1.5 pi (1 + 2u)
        low, high = max(0.0, (task - 0.5) / T), min(1.0, (task + 1.5) / T)
        assert u.min() >= low - 1e-5 and u.max() <= high + 1e-5
        assert ((u < task / T) | (u >= (task + 1) / T)).any()  # some points outside the plain window
        assert np.bincount(y).tolist() == [500, 500]


def test_swiss_roll_embedding_is_isometric():
    low_dim = generate_task(swiss(sigma=0.3), 5, 1)
    high_dim = generate_task(swiss(sigma=0.3, dim=7), 5, 1)
    assert high_dim[0].shape == (1000, 7)
    # same draws, mapped by orthonormal rows: norms and pairwise distances are preserved
    np.testing.assert_allclose(np.linalg.norm(high_dim[0], axis=1), np.linalg.norm(low_dim[0], axis=1), rtol=1e-5)
    assert np.array_equal(high_dim[1], low_dim[1])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"n_classes": 3}, "even"),
        ({"overlap": 1.0}, "overlap"),
        ({"mode": "spiral"}, "mode"),
        ({"n_tasks": 0}, "n_tasks"),
    ],
)
def test_swiss_roll_config_validation(values, message):
    with pytest.raises(UserError, match=message):
        swiss(**values)


def test_swiss_roll_scenario_settings_and_build_time():
    SCENARIOS.get("continual_swiss_roll")
    start = time.perf_counter()
    scenario = build("continual_swiss_roll")
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"building the Swiss roll took {elapsed:.2f}s"
    assert scenario.setting == "domain-incremental" and not scenario.task_labels
    assert scenario.n_experiences == 10 and scenario.input_shape == (100,) and scenario.num_classes == 2
    assert "suite variant v2, lifted to 100 random Fourier features (bandwidth 0.25)" in scenario.description
    x, y, t = gather(scenario.benchmark.test_stream[9].dataset)
    assert x.shape == (500, 100) and set(t.tolist()) == {0}
    assert SCENARIOS.get("continual_swiss_roll").config_class().validation_fraction == 0.1  # the runner holds it out
    raw = build("continual_swiss_roll", lift_dim=0)
    assert raw.input_shape == (3,) and "suite variant, raw input" in raw.description
    multi = build("continual_swiss_roll", task_labels=True, n_tasks=3, n_train=5, n_test=2)
    assert multi.setting == "task-incremental" and multi.task_labels
    assert [e.task_labels for e in multi.benchmark.train_stream] == [[0], [1], [2]]
    assert set(multi.benchmark.train_stream[2].classes_in_this_experience) == {0, 1}
    assert [set(gather(e.dataset)[2].tolist()) for e in multi.benchmark.test_stream] == [{0}, {1}, {2}]


def test_swiss_roll_registration_defaults():
    entry = SCENARIOS.get("continual_swiss_roll")
    assert entry.meta["default_model"] == "mlp"
    assert entry.meta["model_defaults"] == {"widths": [100, 100], "bias": True}
    assert entry.meta["train_defaults"] == {"epochs": 20, "batch_size": 32, "lr": 0.1}
    assert "suite variant" in entry.summary


# ---------------------------------------------------------------------------------------------
# split_fmnist on a tiny fake Fashion-MNIST
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fmnist_root(tmp_path, monkeypatch, fake_fmnist):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path))
    return fake_fmnist(tmp_path / "fashion-mnist", train_per_class=20, test_per_class=10)


def test_split_fmnist_default(fmnist_root):
    scenario = build("split_fmnist")
    assert scenario.setting == "class-incremental" and not scenario.task_labels
    assert scenario.input_shape == (1, 28, 28) and scenario.num_classes == 10
    assert scenario.classes_per_experience == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert scenario.class_order == list(range(10))
    for i, (x, y, t) in enumerate(stream_tensors(scenario.benchmark.train_stream)):
        assert x.dtype == torch.float32 and x.shape == (40, 1, 28, 28)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert sorted(set(y.tolist())) == [2 * i, 2 * i + 1] and set(t.tolist()) == {0}
    x, y, _ = gather(scenario.benchmark.test_stream[0].dataset)
    assert len(y) == 20
    # exact values: uint8 / 255, in file order
    images, labels = fmnist_root["test_images"], fmnist_root["test_labels"]
    rows = np.flatnonzero(np.isin(labels, [0, 1]))
    assert torch.equal(x[:, 0], torch.from_numpy(images[rows]).float() / 255)


def test_split_fmnist_class_order_and_shuffle(fmnist_root):
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    scenario = build("split_fmnist", class_order=order, n_experiences=2)
    assert scenario.classes_per_experience == [[5, 6, 7, 8, 9], [0, 1, 2, 3, 4]]
    assert scenario.class_order == order
    assert sorted(set(gather(scenario.benchmark.train_stream[0].dataset)[1].tolist())) == [5, 6, 7, 8, 9]
    first = build("split_fmnist", seed=1, shuffle_classes=True)
    again = build("split_fmnist", seed=1, shuffle_classes=True)
    assert first.class_order == again.class_order and sorted(first.class_order) == list(range(10))
    assert first.class_order != list(range(10))
    orders = {tuple(build("split_fmnist", seed=s, shuffle_classes=True).class_order) for s in range(4)}
    assert len(orders) > 1
    assert first.classes_per_experience == [sorted(first.class_order[2 * i : 2 * i + 2]) for i in range(5)]


def test_split_fmnist_task_labels(fmnist_root):
    scenario = build("split_fmnist", task_labels=True)
    assert scenario.setting == "task-incremental" and scenario.task_labels
    for stream in (scenario.benchmark.train_stream, scenario.benchmark.test_stream):
        assert [set(t.tolist()) for _, _, t in stream_tensors(stream)] == [{i} for i in range(5)]
    assert [e.task_labels for e in scenario.benchmark.train_stream] == [[i] for i in range(5)]
    # Avalanche's multi-head modules read the class timeline in adaptation()
    assert [set(e.classes_in_this_experience) for e in scenario.benchmark.train_stream] == [
        {2 * i, 2 * i + 1} for i in range(5)
    ]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"n_experiences": 3}, "divide"),
        ({"class_order": [0, 1, 2]}, "permutation"),
        ({"class_order": [0] * 10}, "permutation"),
        ({"class_order": list(range(10)), "shuffle_classes": True}, "exclude"),
    ],
)
def test_split_config_validation(values, message):
    entry = SCENARIOS.get("split_fmnist")
    with pytest.raises(UserError, match=message):
        build_config(entry.config_class, values, "scenario")


def test_split_fmnist_missing_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path))
    with pytest.raises(UserError) as error:
        build("split_fmnist")
    expected = (
        f"Fashion-MNIST not found in {tmp_path / 'fashion-mnist'}; run `cl-bench data prepare fmnist` "
        "(Debian: apt-get install dataset-fashion-mnist)"
    )
    assert str(error.value) == expected
    assert "\n" not in str(error.value)


def test_split_fmnist_registration():
    entry = SCENARIOS.get("split_fmnist")
    assert entry.meta["default_model"] == "mlp"
    assert entry.meta["train_defaults"] == {"epochs": 2, "batch_size": 128, "lr": 0.01, "momentum": 0.9}


@pytest.mark.skipif(not FMNIST_DEBIAN_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_split_fmnist_real_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path))
    prepared = prepare("fmnist", source=FMNIST_DEBIAN_DIR, root=tmp_path)
    assert prepared == tmp_path / "fashion-mnist"
    scenario = build("split_fmnist")
    train = stream_tensors(scenario.benchmark.train_stream)
    test = stream_tensors(scenario.benchmark.test_stream)
    assert [len(y) for _, y, _ in train] == [12000] * 5
    assert [len(y) for _, y, _ in test] == [2000] * 5
    assert train[0][0].shape[1:] == (1, 28, 28) and 0.0 <= train[0][0].min() and train[0][0].max() <= 1.0


# ---------------------------------------------------------------------------------------------
# split_digits
# ---------------------------------------------------------------------------------------------


def test_split_digits_shapes_and_determinism():
    from scenarios import split_image

    build("split_digits")  # warm: imports sklearn
    split_image._digits.cache_clear()
    start = time.perf_counter()
    scenario = build("split_digits")
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"building split_digits took {elapsed:.2f}s"
    assert scenario.input_shape == (1, 8, 8) and scenario.n_experiences == 5
    assert scenario.setting == "class-incremental"
    train, test = stream_tensors(scenario.benchmark.train_stream), stream_tensors(scenario.benchmark.test_stream)
    assert sum(len(y) for _, y, _ in train) + sum(len(y) for _, y, _ in test) == 1797
    for i, ((x, y, _), (_, y_test, _)) in enumerate(zip(train, test)):
        assert x.dtype == torch.float32 and x.min() >= 0.0 and x.max() <= 1.0
        assert sorted(set(y.tolist())) == sorted(set(y_test.tolist())) == [2 * i, 2 * i + 1]
        for label in (2 * i, 2 * i + 1):  # stratified: 30 % of each class held out
            n_train, n_test = int((y == label).sum()), int((y_test == label).sum())
            assert abs(n_test / (n_train + n_test) - 0.3) < 0.01
    again = stream_tensors(build("split_digits").benchmark.train_stream)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(train, again))
    # the split is fixed by split_seed, not by the run seed
    other_seed = stream_tensors(build("split_digits", seed=5).benchmark.train_stream)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(train, other_seed))
    other_split = stream_tensors(build("split_digits", split_seed=1).benchmark.train_stream)
    assert not torch.equal(train[0][0], other_split[0][0])


def test_split_digits_reads_the_load_digits_data():
    from sklearn.datasets import load_digits

    from scenarios import split_image

    images, labels = split_image._digits()
    bunch = load_digits()
    assert np.array_equal(images, (bunch.images / 16).astype(np.float32))
    assert np.array_equal(labels, bunch.target)


def test_split_digits_task_labels_and_registration():
    scenario = build("split_digits", task_labels=True, n_experiences=10)
    assert scenario.setting == "task-incremental"
    assert [set(t.tolist()) for _, _, t in stream_tensors(scenario.benchmark.test_stream)] == [{i} for i in range(10)]
    entry = SCENARIOS.get("split_digits")
    assert entry.meta["model_defaults"] == {"widths": [64, 64]}
    assert entry.meta["train_defaults"] == {"epochs": 3, "batch_size": 32, "lr": 0.05, "momentum": 0.0}


# ---------------------------------------------------------------------------------------------
# split_cifar10 / split_cifar100 on tiny files in the real python-pickle format
# ---------------------------------------------------------------------------------------------


def test_split_cifar10(tmp_path, monkeypatch, fake_cifar):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path))
    written = fake_cifar("cifar10", tmp_path / "cifar10", train_per_class=2, test_per_class=3)
    scenario = build("split_cifar10", normalize=False)
    assert scenario.input_shape == (3, 32, 32) and scenario.num_classes == 10
    assert scenario.setting == "class-incremental"
    assert scenario.classes_per_experience == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    experience = scenario.benchmark.train_stream[1]
    assert len(experience.dataset) == 2 * 2 * 5  # 2 per class in each of the 5 batch files
    assert sorted(set(experience.dataset.targets)) == [2, 3]
    assert set(experience.dataset.targets_task_labels) == {0}
    # pixels decoded in the right layout: first training sample of class 2 (file order)
    x, y, t = experience.dataset[0]
    labels = written["train_labels"]
    first = int(np.flatnonzero(np.isin(labels, [2, 3]))[0])
    assert y == labels[first] and t == 0
    expected = torch.from_numpy(written["train_images"][first]).permute(2, 0, 1).float() / 255
    assert x.shape == (3, 32, 32) and torch.allclose(x, expected)
    # the ordinary DataLoader path works
    batch = next(iter(make_loader(scenario.benchmark.test_stream[4].dataset, batch_size=4, shuffle=False)))
    assert batch[0].shape == (4, 3, 32, 32) and set(batch[1].tolist()) <= {8, 9}
    assert len(scenario.benchmark.test_stream[4].dataset) == 6


def test_split_cifar10_normalize_and_task_labels(tmp_path, monkeypatch, fake_cifar):
    from scenarios.split_image import CIFAR_MEAN_STD

    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path))
    written = fake_cifar("cifar10", tmp_path / "cifar10", python2_style=False)
    scenario = build("split_cifar10", task_labels=True, class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert scenario.setting == "task-incremental" and scenario.classes_per_experience[0] == [8, 9]
    assert [e.task_labels for e in scenario.benchmark.test_stream] == [[i] for i in range(5)]
    assert set(scenario.benchmark.train_stream[0].classes_in_this_experience) == {8, 9}
    x, y, t = scenario.benchmark.test_stream[0].dataset[0]
    first = int(np.flatnonzero(np.isin(written["test_labels"], [8, 9]))[0])
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in CIFAR_MEAN_STD["cifar10"])
    raw = torch.from_numpy(written["test_images"][first]).permute(2, 0, 1).float() / 255
    assert torch.allclose(x, (raw - mean) / std, atol=1e-6) and t == 0


def test_split_cifar100(tmp_path, monkeypatch, fake_cifar):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path))
    fake_cifar("cifar100", tmp_path / "cifar100", train_per_class=2, test_per_class=1)
    scenario = build("split_cifar100", seed=3, shuffle_classes=True)
    assert scenario.n_experiences == 10 and scenario.num_classes == 100
    assert sorted(scenario.class_order) == list(range(100)) and scenario.class_order != list(range(100))
    assert scenario.class_order == build("split_cifar100", seed=3, shuffle_classes=True).class_order
    for classes, experience in zip(scenario.classes_per_experience, scenario.benchmark.train_stream):
        assert len(classes) == 10 and sorted(set(experience.dataset.targets)) == classes
        assert len(experience.dataset) == 20
    assert build("split_cifar100", n_experiences=20).classes_per_experience[19] == [95, 96, 97, 98, 99]
    with pytest.raises(UserError, match="divide"):
        build("split_cifar100", n_experiences=3)


@pytest.mark.parametrize(
    "name, title, folder",
    [
        ("split_cifar10", "CIFAR-10", "cifar10/cifar-10-batches-py"),
        ("split_cifar100", "CIFAR-100", "cifar100/cifar-100-python"),
    ],
)
def test_split_cifar_missing_data(tmp_path, monkeypatch, name, title, folder):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path))
    with pytest.raises(UserError) as error:
        build(name)
    message = str(error.value)
    assert message.startswith(f"{title} not found in {tmp_path / folder}; run `cl-bench data prepare")
    assert "--from DIR" in message and "\n" not in message


def test_split_cifar_registration():
    for name in ("split_cifar10", "split_cifar100"):
        entry = SCENARIOS.get(name)
        assert entry.meta["default_model"] == "cnn"
        assert entry.meta["train_defaults"]["epochs"] >= 1


def test_swiss_roll_lift_is_a_fixed_fourier_map_of_the_raw_points():
    from scenarios.continual_swiss_roll import lift_map

    raw = ContinualSwissRollConfig(n_train=200, n_test=50, lift_dim=0)
    lifted = ContinualSwissRollConfig(n_train=200, n_test=50, lift_dim=64, lift_bandwidth=0.5)
    x_raw, y_raw, _, _ = generate_task(raw, 0, 4)
    x_lift, y_lift, x_lift_test, _ = generate_task(lifted, 0, 4)
    assert x_lift.shape == (400, 64) and x_lift_test.shape == (100, 64) and x_lift.dtype == np.float32
    assert np.array_equal(y_raw, y_lift)  # the same points and order, only mapped
    weights, phases = lift_map(lifted, 0)
    expected = np.sqrt(2.0) * np.cos(x_raw.astype(np.float64) @ weights / 0.5 + phases)
    assert np.allclose(x_lift, expected, atol=1e-5)
    # one map for every task: task 7's features come from the same W and b
    x_raw_7 = generate_task(raw, 0, 7)[0]
    assert np.allclose(
        generate_task(lifted, 0, 7)[0], np.sqrt(2.0) * np.cos(x_raw_7 @ weights / 0.5 + phases), atol=1e-5
    )
    # features of unit scale: mean near 0, mean square near 1 over the whole roll
    everything = np.concatenate([generate_task(lifted, 0, task)[0] for task in range(lifted.n_tasks)])
    assert abs(float(everything.mean())) < 0.1 and abs(float((everything**2).mean()) - 1.0) < 0.15
    assert lift_map(raw, 0) is None


def test_swiss_roll_variant_enters_the_config_id():
    """v1 (raw) and v2 (lifted) runs never share an id: the lift fields are always in the resolved config."""
    from cl_bench.config import resolve

    v2 = resolve({}, {}).to_dict()
    v1 = resolve({}, {}, ["scenario.lift_dim=0"]).to_dict()
    assert v2["scenario"]["lift_dim"] == 100 and v2["scenario"]["lift_bandwidth"] == 0.25
    assert v1["scenario"]["lift_dim"] == 0
    assert resolve({}, {}).config_id() != resolve({}, {}, ["scenario.lift_dim=0"]).config_id()
