"""permuted_fmnist (scenarios/permuted_fmnist.py) on a tiny fake Fashion-MNIST written as IDX files:
per-experience pixel permutations, seeding, subsets, errors and a CLI run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli

from cl_bench.config import build_config
from cl_bench.errors import UserError
from cl_bench.registry import SCENARIOS
from cl_bench.tensor_data import gather
from scenarios.permuted_fmnist import draw_permutations

TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 10  # 200 training and 100 test images


def build(seed: int = 0, **values):
    entry = SCENARIOS.get("permuted_fmnist")
    return entry.builder(build_config(entry.config_class, values, "scenario"), seed)


def experiences(scenario, stream: str = "train") -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [gather(e.dataset) for e in getattr(scenario.benchmark, f"{stream}_stream")]


def flat_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 784) in [0, 1], the scenario's scaling."""
    return torch.from_numpy(images.reshape(len(images), -1)).float() / 255


@pytest.fixture
def fmnist_root(tmp_path, monkeypatch, fake_fmnist):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path))
    return fake_fmnist(tmp_path / "fashion-mnist", train_per_class=TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS)


def test_every_experience_permutes_the_same_images(fmnist_root):
    scenario = build(seed=0, n_experiences=4, train_per_experience=0)
    assert scenario.setting == "domain-incremental" and not scenario.task_labels
    assert scenario.num_classes == 10 and scenario.input_shape == (1, 28, 28) and scenario.n_experiences == 4
    assert scenario.classes_per_experience == [list(range(10))] * 4
    permutations = draw_permutations(4, 784, np.random.default_rng(0), identity_first=False)
    for stream, split in (("train", "train"), ("test", "test")):
        base = flat_unit(fmnist_root[f"{split}_images"])
        labels = torch.from_numpy(fmnist_root[f"{split}_labels"].astype(np.int64))
        for (x, y, t), permutation in zip(experiences(scenario, stream), permutations):
            assert x.dtype == torch.float32 and x.shape == (len(base), 1, 28, 28)
            assert torch.equal(y, labels) and set(t.tolist()) == {0}  # labels unchanged, no task labels
            flat = x.reshape(len(x), -1)
            # the same pixel values per image, only moved
            assert torch.equal(flat.sort(dim=1).values, base.sort(dim=1).values)
            assert torch.equal(flat, base[:, permutation])  # one permutation for every image, train and test
    # every experience permuted (the first too), each differently
    assert all(not np.array_equal(p, np.arange(784)) for p in permutations)
    assert len({p.tobytes() for p in permutations}) == 4
    first, second = experiences(scenario)[:2]
    assert not torch.equal(first[0], second[0])


def test_permutations_follow_the_seed(fmnist_root):
    one, again, other = (experiences(build(seed=s, n_experiences=3, train_per_experience=40)) for s in (5, 5, 6))
    for a, b in zip(one, again):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not any(torch.equal(a[0], b[0]) for a, b in zip(one, other))


def test_identity_first_keeps_experience_zero_and_the_other_permutations(fmnist_root):
    plain = experiences(build(seed=1, n_experiences=3, train_per_experience=0))
    identity = experiences(build(seed=1, n_experiences=3, train_per_experience=0, identity_first=True))
    base = flat_unit(fmnist_root["train_images"])
    assert torch.equal(identity[0][0].reshape(len(base), -1), base)
    assert not torch.equal(plain[0][0], identity[0][0])
    for a, b in zip(plain[1:], identity[1:]):
        assert torch.equal(a[0], b[0])


def test_subsets_per_experience(fmnist_root):
    scenario = build(seed=2, n_experiences=3, train_per_experience=50, test_per_experience=30)
    permutations = draw_permutations(3, 784, np.random.default_rng(2), identity_first=False)
    base = {
        bytes(image.tobytes()): int(label)
        for image, label in zip(fmnist_root["train_images"].reshape(-1, 784), fmnist_root["train_labels"])
    }
    row_sets = []
    for (x, y, _), permutation in zip(experiences(scenario), permutations):
        assert len(y) == 50
        # undo the permutation: every sample is one of the training images with its own label
        restored = (x.reshape(50, -1)[:, np.argsort(permutation)] * 255).round().to(torch.uint8).numpy()
        keys = [image.tobytes() for image in restored]
        assert all(key in base for key in keys) and [base[k] for k in keys] == y.tolist()
        assert len(set(keys)) == 50  # drawn without replacement
        row_sets.append(frozenset(keys))
    assert len(set(row_sets)) == 3  # each experience draws its own subset
    assert [len(y) for _, y, _ in experiences(scenario, "test")] == [30] * 3
    # the permutations depend on the seed only, not on the subset sizes
    full = experiences(build(seed=2, n_experiences=3, train_per_experience=0))
    assert torch.equal(full[1][0].reshape(200, -1), flat_unit(fmnist_root["train_images"])[:, permutations[1]])


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"train_per_experience": 201}, "scenario.train_per_experience=201 exceeds the 200 training images"),
        (
            {"train_per_experience": 0, "test_per_experience": 101},
            "scenario.test_per_experience=101 exceeds the 100 test images",
        ),
    ],
)
def test_more_images_than_available_is_a_user_error(fmnist_root, values, fragment):
    with pytest.raises(UserError) as error:
        build(**values)
    assert fragment in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"n_experiences": 0}, "scenario.n_experiences must be >= 1"),
        ({"train_per_experience": 60001}, "scenario.train_per_experience must be <= 60000"),
        ({"test_per_experience": -1}, "scenario.test_per_experience must be >= 0"),
        ({"identity_first": "yes"}, "scenario.identity_first must be true or false"),
    ],
)
def test_config_validation(values, fragment):
    with pytest.raises(UserError, match=fragment):
        build_config(SCENARIOS.get("permuted_fmnist").config_class, values, "scenario")


def test_missing_data_says_how_to_prepare_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path))
    with pytest.raises(UserError, match="cl-bench data prepare fmnist"):
        build()


def test_registration():
    entry = SCENARIOS.get("permuted_fmnist")
    assert entry.meta["default_model"] == "mlp_gpm" and entry.meta["requires_data"] == "fmnist"
    assert entry.meta["train_defaults"] == {"epochs": 5, "batch_size": 10, "lr": 0.01}
    assert "cl-bench data prepare fmnist" in entry.summary


def test_cli_run_on_fake_data(fmnist_root, tmp_path, capsys):
    code, out, err = run_cli(
        [
            "run",
            "--scenario",
            "permuted_fmnist",
            "--set",
            "scenario.train_per_experience=50",
            "--set",
            "scenario.n_experiences=3",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "runs"),
        ],
        capsys,
    )
    assert code == 0, err
    run_dir = tmp_path / "runs" / out.strip().splitlines()[-1].split("/")[-1]
    record = json.loads((run_dir / "record.json").read_text())
    assert record["scenario_info"]["setting"] == "domain-incremental"
    assert record["scenario_info"]["task_labels"] is False and record["scenario_info"]["n_experiences"] == 3
    assert record["model"] == "mlp_gpm"
    train = record["config"]["train"]
    assert (train["epochs"], train["batch_size"], train["lr"], train["momentum"]) == (1, 10, 0.01, 0.0)
    assert len(record["accuracy_matrix"]) == 3 and all(len(row) == 3 for row in record["accuracy_matrix"])
