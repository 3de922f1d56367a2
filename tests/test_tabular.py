"""The `tabular` scenario (Hsu et al. ICLR 2024 UCI setting on scikit-learn's bundled tables): shapes, the
stratified split, train-only standardisation, determinism, bad input, and one run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from sklearn import datasets
from sklearn.model_selection import train_test_split

from cl_bench.config import build_config
from cl_bench.errors import UserError
from cl_bench.registry import SCENARIOS
from cl_bench.scenario import split_validation
from cl_bench.tensor_data import gather
from scenarios import tabular
from scenarios.tabular import DATASETS, TabularConfig, load_table, split_table

# (samples, features, classes) of each bundled table, as scikit-learn documents them
SIZES = {"breast_cancer": (569, 30, 2), "wine": (178, 13, 3), "iris": (150, 4, 3), "digits": (1797, 64, 10)}


def config(**values) -> TabularConfig:
    return build_config(TabularConfig, values, "scenario")  # type: ignore[return-value]


def build(seed: int = 0, **values):
    entry = SCENARIOS.get("tabular")
    return entry.builder(config(**values), seed)


def streams(scenario) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """(inputs, targets, task labels) of the single training and the single test experience."""
    (train,) = [gather(experience.dataset) for experience in scenario.benchmark.train_stream]
    (test,) = [gather(experience.dataset) for experience in scenario.benchmark.test_stream]
    assert train is not None and test is not None  # tensor-resident
    return train, test


def test_every_choice_is_a_table_of_its_documented_size():
    assert set(DATASETS) == set(SIZES)
    for name, (n, d, k) in SIZES.items():
        features, labels = load_table(name)
        assert features.shape == (n, d) and labels.shape == (n,)
        assert sorted(np.unique(labels).tolist()) == list(range(k))


@pytest.mark.parametrize("name", sorted(SIZES))
def test_one_experience_of_every_class_with_the_75_25_split(name):
    n, d, k = SIZES[name]
    scenario = build(dataset=name)
    assert scenario.n_experiences == 1 and scenario.num_classes == k
    assert scenario.classes_per_experience == [list(range(k))] and scenario.class_order == list(range(k))
    assert scenario.setting == "class-incremental" and not scenario.task_labels
    assert scenario.input_shape == (d,) and scenario.dataset == name
    (x_train, y_train, t_train), (x_test, y_test, t_test) = streams(scenario)
    assert x_train.dtype == torch.float32 and x_test.dtype == torch.float32
    assert y_train.dtype == torch.int64 and y_test.dtype == torch.int64
    assert len(y_test) == int(np.ceil(0.25 * n)) and len(y_train) + len(y_test) == n  # sklearn rounds test up
    assert x_train.shape == (len(y_train), d) and x_test.shape == (len(y_test), d)
    assert int(t_train.abs().sum()) == 0 and int(t_test.abs().sum()) == 0  # one task label, 0
    assert torch.isfinite(x_train).all() and torch.isfinite(x_test).all()  # digits has constant pixels


@pytest.mark.parametrize("name,fraction", [(name, 0.25) for name in sorted(SIZES)] + [("wine", 0.4)])
def test_the_split_is_stratified_within_one_sample_per_class(name, fraction):
    _, y_train, _, y_test = split_table(config(dataset=name, test_fraction=fraction))
    labels = load_table(name)[1]
    per_class = np.bincount(labels)
    test_counts = np.bincount(y_test, minlength=len(per_class))
    train_counts = np.bincount(y_train, minlength=len(per_class))
    assert (train_counts + test_counts == per_class).all()
    # each class's share of the test split is the same as its share of the whole table, to one sample
    assert (np.abs(test_counts - per_class * len(y_test) / len(labels)) <= 1).all()
    assert (np.abs(train_counts - per_class * len(y_train) / len(labels)) <= 1).all()


def test_it_is_sklearns_call_with_random_state_0_standardised_by_the_training_split_alone():
    """The oracle by hand: train_test_split(test_size 0.25, stratify, random_state 0), then (x - mean) / std of
    the training rows (ddof 0), applied to both splits."""
    bunch = datasets.load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.data, bunch.target, test_size=0.25, stratify=bunch.target, random_state=0
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    ours = split_table(config())
    np.testing.assert_array_equal(ours[1], y_train)
    np.testing.assert_array_equal(ours[3], y_test)
    np.testing.assert_allclose(ours[0], (x_train - mean) / std, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours[2], (x_test - mean) / std, rtol=1e-6, atol=1e-6)
    # the training split is standardised, the test split is not re-centred on its own statistics
    np.testing.assert_allclose(ours[0].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ours[0].std(axis=0), 1.0, atol=1e-5)
    assert np.abs(ours[2].mean(axis=0)).max() > 0.05


def test_the_test_rows_never_enter_the_statistics(monkeypatch):
    """Scale the test rows' features by 1000: the training split comes out bit-identical (the split itself
    depends on the labels and random_state only)."""
    features, labels = load_table("wine")
    _, test_rows = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0)
    altered = features.copy()
    altered[test_rows] *= 1000.0
    before = split_table(config(dataset="wine"))
    monkeypatch.setattr(tabular, "load_table", lambda name: (altered, labels))
    after = split_table(config(dataset="wine"))
    assert before[0].tobytes() == after[0].tobytes() and before[1].tobytes() == after[1].tobytes()
    assert not np.allclose(before[2], after[2])


def test_a_feature_constant_on_the_training_split_is_divided_by_one():
    x_train, _, x_test, _ = split_table(config(dataset="digits"))
    raw = load_table("digits")[0]
    constant = np.flatnonzero(x_train.std(axis=0) == 0)
    assert len(constant) > 0  # some border pixels are 0 in every training image
    assert (x_train[:, constant] == 0).all()  # x - mean = 0, divided by 1
    assert np.isfinite(x_test).all() and raw.shape[1] == x_train.shape[1]


def test_the_same_split_twice_is_bit_identical_and_the_run_seed_does_not_move_it():
    load_table.cache_clear()
    first = streams(build(seed=0, dataset="wine"))
    load_table.cache_clear()
    again = streams(build(seed=0, dataset="wine"))
    other_run_seed = streams(build(seed=7, dataset="wine"))
    for one, two, three in zip(first, again, other_run_seed):
        for a, b, c in zip(one, two, three):
            assert a.numpy().tobytes() == b.numpy().tobytes() == c.numpy().tobytes()
    moved = streams(build(seed=0, dataset="wine", split_seed=1))
    assert not torch.equal(first[1][0], moved[1][0])


def test_validation_fraction_holds_out_of_the_training_split_only():
    scenario = build(dataset="breast_cancer")
    n_train, n_test = (len(part[1]) for part in streams(scenario))
    held = split_validation(build(dataset="breast_cancer"), 0.2, seed=0)
    (x_train, y_train, _), (_, y_test, _) = streams(held)
    (validation,) = held.validation
    assert len(y_test) == n_test and len(y_train) + len(validation) == n_train
    assert abs(len(validation) - 0.2 * n_train) <= 2


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"dataset": "wines"}, "scenario.dataset must be one of breast_cancer, wine, iris, digits"),
        ({"test_fraction": 1.0}, "scenario.test_fraction"),
        ({"split_seed": -1}, "scenario.split_seed"),
    ],
)
def test_a_bad_config_is_a_one_line_user_error(values, fragment):
    with pytest.raises(UserError) as caught:
        config(**values)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_split_too_small_for_every_class_is_a_one_line_user_error():
    with pytest.raises(UserError, match="cannot split iris") as caught:
        split_table(config(dataset="iris", test_fraction=0.01))
    assert "\n" not in str(caught.value)


def test_the_cli_refuses_an_unknown_table_with_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    code, _, err = run_cli(
        ["run", "--scenario", "tabular", "--set", "scenario.dataset=wines", "--out", str(out)], capsys
    )
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "scenario.dataset" in err
    assert not out.exists()


def test_run_end_to_end_with_the_papers_network_and_training(tmp_path, capsys):
    code, out, err = run_cli(
        ["run", "--scenario", "tabular", "--epochs", "1", "--device", "cpu", "--no-progress", "--out", str(tmp_path)],
        capsys,
    )
    assert code == 0, err
    run_dir = tmp_path / out.strip().splitlines()[-1].split("/")[-1]
    for name in ("record.json", "accuracy_matrix.csv", "forgetting_curve.png"):
        assert (run_dir / name).is_file()
    record = json.loads((run_dir / "record.json").read_text())
    assert record["config"]["scenario"] == {
        "name": "tabular",
        "dataset": "breast_cancer",
        "test_fraction": 0.25,
        "split_seed": 0,
    }
    assert record["config"]["model"] == {"name": "mlp", "widths": [1000], "bias": True}
    train = record["config"]["train"]
    assert (train["epochs"], train["batch_size"], train["lr"], train["momentum"], train["weight_decay"]) == (
        1,
        100,
        1e-3,
        0.9,
        5e-4,
    )
    assert len(record["accuracy_matrix"]) == 1 and len(record["accuracy_matrix"][0]) == 1
    assert 0.0 <= record["metrics"]["acc"] <= 1.0
