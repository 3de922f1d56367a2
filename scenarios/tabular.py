"""Tabular: one experience of a small tabular classification set, the UCI-tabular setting of Hsu et al. (ICLR 2024).

Paper: Hsiang Hsu, Guihong Li, Shaohan Hu, Chun-Fu (Richard) Chen, "Dropout-Based Rashomon Set Exploration
for Efficient Predictive Multiplicity Estimation", ICLR 2024 (arXiv 2402.00728); official code
github.com/jpmorganchase/dropout-rashomon-set-exploration (``uci-tabular/train-tabular.py``). The suite's
spec is ``rashomon_dropout.md`` section 5, "UCI tabular". The scenario is the data side of that setting: a
single trained classifier whose predictive multiplicity an evaluator then measures. It is not a continual
stream: one experience holds every class (``n_experiences`` is 1).

From the paper's setting (spec section 5, tagged [code] there), kept here:

* a stratified 75/25 train/test split with ``random_state`` 0:
  ``sklearn.model_selection.train_test_split(x, y, test_size=test_fraction, stratify=y,
  random_state=split_seed)``, the same call (``test_fraction`` 0.25, ``split_seed`` 0 by default);
* the recommended network and training (registered defaults): an MLP with one hidden layer of 1,000 ReLU
  units (the suite's ``mlp`` with ``widths=[1000]``, biases on), SGD lr 1e-3, momentum 0.9, weight decay
  5e-4, 100 epochs, batch 100, cross-entropy.

Suite choices, each a config field or stated here:

* **the datasets are stand-ins [suite]**. The paper's are UCI CSVs shipped with its code (Adult, Bank,
  Credit Approval, Dermatology, Mammography, Contraceptive); this suite downloads nothing at run time and
  ships no copies, so ``dataset`` chooses among scikit-learn's *bundled* sets instead:
  ``breast_cancer`` (default; 569 samples, 30 features, 2 classes, 212/357), ``wine`` (178, 13, 3 classes,
  59/71/48), ``iris`` (150, 4, 3 classes, 50 each) and ``digits`` (1,797, 64 pixel features, 10 classes),
  read with ``sklearn.datasets.load_<name>()``. Numbers on them are not comparable with the paper's tables.
* **standardisation [suite]**: every feature becomes ``(x - mean) / std`` with the mean and the population
  standard deviation (ddof 0, as ``StandardScaler``) of the *training split* only, applied to both splits,
  computed in float64 and stored as float32; a feature constant on the training split (some ``digits``
  pixels) is divided by 1, as ``StandardScaler`` does. The official code's preprocessing for these
  datasets is unknown (they are not its datasets), so this is the suite's choice, not the paper's.
* **the split is fixed, not the run seed's [suite]**: ``split_seed`` (default 0, the paper's
  ``random_state``) alone draws it, so every run seed sees the same split, as with an official split;
  ``--set scenario.split_seed=N`` draws another one. The run seed still drives initialisation and batching.
* **validation**: ``validation_fraction`` (default 0, as every scenario: the paper holds nothing out) is the
  suite's common mechanism (:func:`cl_bench.scenario.split_validation`): the runner moves a seeded,
  stratified fraction of the training split into a validation split after this builder ran. The
  standardisation statistics are those of the whole training split, the held-out part included (feature
  means and deviations only, no labels; the test split never enters them).
* labels: the datasets' own class indices 0..K-1 (already contiguous); one shared head, no task labels, so
  the setting is recorded as class-incremental with every class in the single experience. Samples keep the
  order ``train_test_split`` returns (loaders shuffle). Inputs are unbounded (no ``input_range``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from cl_bench.config import param
from cl_bench.errors import UserError
from cl_bench.registry import SCENARIOS
from cl_bench.traits import ScenarioTraits
from cl_bench.scenario import ScenarioConfig, ScenarioData, tensor_scenario

DATASETS = ("breast_cancer", "wine", "iris", "digits")  # scikit-learn's bundled classification tables


@dataclass
class TabularConfig(ScenarioConfig):
    """One experience of a bundled scikit-learn table, stratified split, train-split standardisation."""

    dataset: str = param(
        "breast_cancer",
        "scikit-learn bundled table (stand-ins for the paper's UCI CSVs) [suite]",
        choices=DATASETS,
    )
    test_fraction: float = param(
        0.25,
        "fraction held out for testing, stratified by class (paper: 75/25)",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )
    split_seed: int = param(
        0,
        "random_state of the stratified train/test split, fixed, independent of the run seed (paper: 0)",
        low=0,
        high=2**32 - 1,
    )


@lru_cache(maxsize=len(DATASETS))
def load_table(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(features float64 (n, d), labels int64 (n,)) of scikit-learn's bundled table ``name``, read once."""
    if name not in DATASETS:
        raise UserError(f"scenario.dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    features.flags.writeable = False
    labels.flags.writeable = False
    return features, labels


def split_table(
    config: TabularConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of ``config``: float32 standardised features, int64 labels.

    A pure function of the config: the same config gives bitwise identical arrays.
    """
    from sklearn.model_selection import train_test_split

    features, labels = load_table(config.dataset)
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            features, labels, test_size=config.test_fraction, stratify=labels, random_state=config.split_seed
        )
    except ValueError as error:  # a split too small to hold every class once
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"scenario.test_fraction={config.test_fraction} cannot split {config.dataset} ({len(labels)} samples, "
            f"{len(np.unique(labels))} classes) stratified: {reason}"
        ) from None
    mean, std = train_statistics(x_train)
    return (
        ((x_train - mean) / std).astype(np.float32),
        y_train.astype(np.int64),
        ((x_test - mean) / std).astype(np.float32),
        y_test.astype(np.int64),
    )


def train_statistics(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (mean, std) of the training split (ddof 0); a zero std becomes 1, as ``StandardScaler``."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    return mean, np.where(std == 0.0, 1.0, std)


@SCENARIOS.register(
    "tabular",
    config=TabularConfig,
    default_model="mlp",
    model_defaults={"widths": [1000], "bias": True},
    train_defaults={
        "epochs": 100,
        "batch_size": 100,
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "optimizer": "sgd",
    },
    traits=ScenarioTraits(smoke=("train.epochs=5", "model.widths=[32]")),
)
def build_tabular(config: TabularConfig, seed: int) -> ScenarioData:
    """Tabular (Hsu et al. ICLR 2024 UCI setting, sklearn stand-in tables): 1 experience, stratified 75/25 split."""
    x_train, y_train, x_test, y_test = split_table(config)
    n_classes = int(load_table(config.dataset)[1].max()) + 1
    description = (
        f"Tabular {config.dataset} (scikit-learn bundled, a stand-in for the UCI tables of Hsu et al. 2024): "
        f"1 experience, {n_classes} classes, {x_train.shape[1]} features standardised with the training "
        f"split's mean/std, stratified {len(y_train)}/{len(y_test)} train/test split "
        f"(test_fraction {config.test_fraction}, split_seed {config.split_seed})"
    )
    scenario = tensor_scenario(
        [(torch.from_numpy(x_train), torch.from_numpy(y_train))],
        [(torch.from_numpy(x_test), torch.from_numpy(y_test))],
        setting="class-incremental",
        task_labels=False,
        num_classes=n_classes,
        class_order=list(range(n_classes)),
        description=description,
    )
    scenario.dataset = config.dataset
    return scenario
