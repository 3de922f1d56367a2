"""The scenario contract: what a scenario builder returns, and helpers to build one from tensors.

A scenario module registers a builder ``build(config, seed) -> ScenarioData`` with
``SCENARIOS.register(name, config=..., default_model=..., train_defaults={...})``. Offline scenarios derive
their config from :class:`ScenarioConfig`, which gives every one of them ``validation_fraction``: the runner
then carves a seeded, stratified validation split out of each experience's training data
(:func:`split_validation`), never out of the test stream, and records a validation accuracy matrix beside the
test one, so hyperparameters can be selected without looking at the test stream.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.scenarios.task_aware import with_task_labels

from cl_bench.config import ComponentConfig, param
from cl_bench.errors import UserError
from cl_bench.tensor_data import TensorBank

SETTINGS = ("task-incremental", "class-incremental", "domain-incremental", "task-free")
VALIDATION_STREAM = 0x7A11  # second seed word of the validation split's generator
SUBSET_STREAM = 0x5B5E  # first seed word of train_per_class's draw


@dataclass
class ScenarioConfig(ComponentConfig):
    """Fields every offline scenario has."""

    validation_fraction: float = param(
        0.0,
        "fraction of each experience's training data held out (seeded, "
        "stratified by class) as its validation split; 0: none",
        low=0.0,
        high=0.5,
    )

    train_per_class: int = param(
        0,
        "keep at most this many training rows per class and experience (a fixed stratified draw, the same for "
        "every run seed; e.g. the 5k-image regime of NTK unlearning); 0: all",
        low=0,
    )
    exclude: str = param(
        "",
        "training rows left out of the stream: class:K, random:FRACTION or experience:K (the retrained "
        "reference of an unlearning evaluator; an emptied experience is not trained on); empty: none",
    )

    # added after results were committed: runs at their defaults keep their ids
    omitted_at_default: ClassVar[tuple[str, ...]] = ("validation_fraction", "train_per_class", "exclude")


@dataclass
class OnlineStream:
    """How the runner streams a task-free scenario: mini-batch size and the anytime evaluation.

    The hidden tasks are the experiences of ``benchmark.train_stream``; only the runner sees them.
    """

    mode: str  # e.g. "disjoint" or "blurry"
    batch_size: int  # images per incoming mini-batch
    eval_every: int  # stream samples between two anytime evaluations
    anytime_test: Any  # Avalanche dataset: the anytime evaluation images (test images of every class)

    def metadata(self) -> dict:
        return {
            "mode": self.mode,
            "batch_size": self.batch_size,
            "eval_every": self.eval_every,
            "anytime_test_size": len(self.anytime_test),
        }


@dataclass
class ScenarioData:
    """An Avalanche benchmark plus the metadata models, strategies and records need."""

    benchmark: Any  # avalanche CLScenario with train_stream and test_stream
    input_shape: tuple[int, ...]
    num_classes: int
    setting: str
    task_labels: bool  # True: multi-head, the task id is given at training and test time
    classes_per_experience: list[list[int]]
    class_order: list[int] = field(default_factory=list)
    description: str = ""
    input_range: Optional[tuple[float, float]] = None  # valid input values (attack budgets clip to it)
    # per-channel (mean, std) of a Normalize transform: model input = (pixel - mean) / std, pixels in [0, 1]
    pixel_normalisation: Optional[tuple[tuple[float, ...], tuple[float, ...]]] = None
    excluded_pools: list[str] = field(default_factory=list)  # pre-training pools left out of the stream
    dataset: str = ""  # the source dataset ("fmnist" ...), for checks against a backbone's pre-training data
    online: Optional[OnlineStream] = None  # task-free scenarios: how the runner streams them
    validation: list = field(default_factory=list)  # one held-out Avalanche dataset per experience, or none

    @property
    def n_experiences(self) -> int:
        return len(self.classes_per_experience)

    def metadata(self) -> dict:
        """The JSON-able part, stored in the run record."""
        return {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "setting": self.setting,
            "task_labels": self.task_labels,
            "n_experiences": self.n_experiences,
            "classes_per_experience": self.classes_per_experience,
            "class_order": self.class_order,
            "description": self.description,
            "input_range": list(self.input_range) if self.input_range is not None else None,
            **(
                {"pixel_normalisation": [list(part) for part in self.pixel_normalisation]}
                if self.pixel_normalisation is not None
                else {}
            ),
            "excluded_pools": list(self.excluded_pools),
            "dataset": self.dataset,
            "online": self.online.metadata() if self.online is not None else None,
            **({"validation_sizes": [len(part) for part in self.validation]} if self.validation else {}),
        }


def tensor_scenario(
    train_parts: Sequence[tuple[torch.Tensor, torch.Tensor]],
    test_parts: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    setting: str,
    task_labels: bool,
    num_classes: int,
    class_order: Sequence[int] = (),
    description: str = "",
    input_range: Optional[tuple[float, float]] = None,
) -> ScenarioData:
    """A tensor-resident scenario: experience i trains on ``train_parts[i]`` and tests on ``test_parts[i]``.

    Each part is (inputs float32, targets int64). With ``task_labels`` experience i carries task
    label i; otherwise every sample has task label 0. Train and test each live in one bank so
    derived datasets (replay buffers, joint training) stay sliceable.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}")
    if len(train_parts) != len(test_parts):
        raise ValueError("train and test must have the same number of experiences")

    def one_bank(parts, name):
        inputs = torch.cat([x.float() for x, _ in parts])
        targets = torch.cat([y.long() for _, y in parts])
        sizes = [len(y) for _, y in parts]
        tasks = torch.cat([torch.full((n,), i if task_labels else 0, dtype=torch.long) for i, n in enumerate(sizes)])
        bank = TensorBank(inputs, targets, tasks, name=name)
        bounds = torch.cumsum(torch.tensor([0] + sizes), 0).tolist()
        return [bank.dataset(range(bounds[i], bounds[i + 1])) for i in range(len(parts))]

    benchmark = with_task_labels(
        benchmark_from_datasets(train=one_bank(train_parts, "train"), test=one_bank(test_parts, "test"))
    )
    classes = [sorted(torch.unique(y).tolist()) for _, y in train_parts]
    return add_classes_timeline(
        ScenarioData(
            benchmark=benchmark,
            input_shape=tuple(train_parts[0][0].shape[1:]),
            num_classes=num_classes,
            setting=setting,
            task_labels=task_labels,
            classes_per_experience=classes,
            class_order=list(class_order),
            description=description,
            input_range=input_range,
        )
    )


def stratified_holdout(
    targets: Sequence[int] | np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, held-out rows), both sorted: each class c loses ``round(fraction * n_c)`` rows, at least one
    and never all of them (a class of one row keeps it). Used for test splits and validation hold-outs."""
    target_array = np.asarray(targets)
    kept, held = [], []
    for label in np.unique(target_array):
        rows = rng.permutation(np.flatnonzero(target_array == label))
        n_held = min(max(int(round(len(rows) * fraction)), 1), len(rows) - 1)
        held.append(rows[:n_held])
        kept.append(rows[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def split_validation(scenario: ScenarioData, fraction: float, seed: int) -> ScenarioData:
    """``scenario`` with ``fraction`` of each training experience moved to ``scenario.validation``.

    Experience i draws from ``Generator((seed, VALIDATION_STREAM, i))``; the test stream is untouched.
    """
    if scenario.online is not None:
        raise UserError(
            "scenario.validation_fraction is for offline streams; task-free streams have no "
            "experiences to hold data out of"
        )
    train, validation = [], []
    for index, experience in enumerate(scenario.benchmark.train_stream):
        dataset = experience.dataset
        kept, held = stratified_holdout(
            list(dataset.targets), fraction, np.random.default_rng((seed, VALIDATION_STREAM, index))
        )
        if not len(held):
            raise UserError(
                f"scenario.validation_fraction={fraction} holds out nothing of experience {index + 1} "
                f"({len(dataset)} samples); raise it or set it to 0"
            )
        train.append(dataset.subset(kept.tolist()))
        validation.append(dataset.subset(held.tolist()))
    scenario.validation = validation
    return _replace_train(scenario, train)


def _replace_train(scenario: ScenarioData, train: list) -> ScenarioData:
    test = [experience.dataset for experience in scenario.benchmark.test_stream]
    scenario.benchmark = with_task_labels(benchmark_from_datasets(train=train, test=test))
    return add_classes_timeline(scenario)


def cap_per_class(scenario: ScenarioData, per_class: int) -> ScenarioData:
    """``scenario`` with at most ``per_class`` training rows of each class in each experience, drawn by
    ``Generator((SUBSET_STREAM, i))`` for experience i (independent of the run seed); kept rows stay in order."""
    if scenario.online is not None:
        raise UserError("scenario.train_per_class is for offline streams; set it to 0 for a task-free stream")
    train = []
    for index, experience in enumerate(scenario.benchmark.train_stream):
        targets = np.asarray(list(experience.dataset.targets))
        rng = np.random.default_rng((SUBSET_STREAM, index))
        kept = [rng.permutation(np.flatnonzero(targets == label))[:per_class] for label in np.unique(targets)]
        train.append(experience.dataset.subset(np.sort(np.concatenate(kept)).tolist()))
    return _replace_train(scenario, train)


def training_rows(scenario: ScenarioData) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, experience index) of every training row, concatenated in experience order."""
    targets, experiences = [], []
    for index, experience in enumerate(scenario.benchmark.train_stream):
        labels = torch.as_tensor(list(experience.dataset.targets), dtype=torch.long)
        targets.append(labels)
        experiences.append(torch.full_like(labels, index))
    return torch.cat(targets), torch.cat(experiences)


def exclude_rows(scenario: ScenarioData, forget: str, seed: int) -> ScenarioData:
    """``scenario`` without the training rows of the forget set ``forget`` (see :mod:`cl_bench.forget_sets`)."""
    from cl_bench.forget_sets import ForgetSpec, forget_generator

    if scenario.online is not None:
        raise UserError("scenario.exclude is for offline streams; set it to '' for a task-free stream")
    targets, experiences = training_rows(scenario)
    dropped = ForgetSpec.parse(forget).mask(targets, experiences, forget_generator(seed))
    train, offset = [], 0
    for experience in scenario.benchmark.train_stream:
        size = len(experience.dataset)
        kept = torch.nonzero(~dropped[offset : offset + size]).flatten().tolist()
        train.append(experience.dataset.subset(kept))
        offset += size
    scenario.description += f", training rows of {forget} left out"
    return _replace_train(scenario, train)


def add_classes_timeline(scenario: ScenarioData) -> ScenarioData:
    """Give every experience Avalanche's class timeline (``classes_in_this_experience`` ...), if missing.

    ``benchmark_from_datasets`` does not set it, but Avalanche's multi-head modules read it in
    ``adaptation``; skipped when the benchmark already carries it.
    """
    first = scenario.benchmark.train_stream[0]
    if not hasattr(first, "classes_in_this_experience"):
        scenario.benchmark = with_classes_timeline(scenario.benchmark)
    return scenario


def data_root() -> Path:
    """Where prepared datasets live: $CL_BENCH_DATA, else ~/.cache/cl_bench/data."""
    return Path(os.environ.get("CL_BENCH_DATA", Path.home() / ".cache" / "cl_bench" / "data"))
