"""Task-free streams: one pass over mini-batches whose task boundaries the learner never sees.

``task_free_fmnist``, ``task_free_cifar100`` and ``task_free_imagenet_r`` cut a dataset into hidden tasks
and stream them once, mini-batch by mini-batch. The runner (``cl_bench.runner``, online loop) hands the
strategy one mini-batch at a time as a bare Avalanche experience: task label 0, no task id, no boundary
flag, no origin experience. Only the runner knows where the hidden boundaries are; it uses them for the
accuracy matrix (one row per hidden task, evaluated on each hidden task's test classes) and for checkpoints,
and it evaluates the **anytime accuracy** (accuracy on the test images of every class seen so far in the
stream) every ``anytime_eval_every`` stream samples; its mean over the stream is ``a_auc`` (Si-Blurry's
A_auc, Moon et al., ICCV 2023, "Online Class Incremental Learning on Stochastic Blurry Task Boundary via
Mask and Visual Prompt Tuning").

Modes (``scenario.mode``), built by :func:`hidden_tasks` for every dataset:

* ``disjoint``: class-incremental; hidden task t holds every training image of its classes (consecutive
  chunks of the class order, ``n_tasks`` equal chunks), in a random order drawn from the run seed (the
  Online-LoRA "Disjoint" setting: natural class order unless ``shuffle_classes``).
* ``blurry`` (Si-Blurry-style): the classes are split, by the run seed, into disjoint classes (a share
  ``disjoint_class_ratio`` = N, default 0.5) and blurry classes (the rest). Each group is dealt into the
  ``n_tasks`` tasks in equal chunks; a task holds its disjoint and its blurry classes' images, except that a
  share ``blurry_sample_ratio`` = M (default 0.1) of every blurry class's images is moved to tasks drawn
  uniformly among the other tasks. So disjoint classes appear in one task only, blurry classes mostly in
  their home task and a little everywhere else.

Suite choices (Si-Blurry draws stochastic task sizes; here they are equal, so every run of a seed has the
same number of classes per task; both the disjoint and the blurry groups must divide into ``n_tasks``):

* Mini-batches never straddle a hidden boundary (as in the official Online-LoRA loop, which iterates over
  tasks to build the stream): a task's last mini-batch may be smaller.
* Test experience t = the test images of the classes whose home task is t.
* The anytime evaluation set is ``anytime_test_per_class`` test images per class (a fixed seeded choice,
  the same for every run); 0 means the whole test set.

Fashion-MNIST (``task_free_fmnist``): tensor-resident, pixels in [0, 1], no normalisation, no augmentation
(as the other Fashion-MNIST scenarios), 5 hidden tasks, anytime evaluation on 200 test images per class
every 2000 samples; ``holdout_pretrain_pool`` (default true) leaves the pre-training pool of ``cl-bench
pretrain`` out of the stream (``cl_bench/pretrain_pool.py``), because these streams are meant for
pre-trained backbones.

CIFAR-100 and ImageNet-R (``task_free_cifar100``, ``task_free_imagenet_r``): the paper-scale streams of
Online-LoRA (spec online_lora.md sections 1 and 5) on per-item datasets (as ``split_cifar100`` /
``split_imagenet_r``; ImageNet-R's seeded stratified 80/20 split is described in ``scenarios.imagenet_r``).

* ``n_tasks`` 0 (default) is the protocol's count: 10 in disjoint mode (Online-LoRA's Split CIFAR-100 and
  ImageNet-R), 5 in blurry mode (Si-Blurry, with N = 0.5 and M = 0.1).
* Transforms (Online-LoRA's ``build_transform``): train, with ``augment`` (default, official),
  ``RandomResizedCrop(N, scale (0.05, 1), ratio (3/4, 4/3))`` (bilinear) + horizontal flip + ToTensor; eval
  ``Resize(N*256//224, bicubic)`` + ``CenterCrop(N)`` + ToTensor; N = ``image_size`` (224). No
  normalisation (official, pitfall 7); ``normalize=true`` adds the dataset's mean/std (CIFAR's published
  statistics, ImageNet's for ImageNet-R). The stream order inside a task is the seeded permutation of
  :func:`hidden_tasks`; the augmentation is drawn when a mini-batch is loaded (torch's global RNG, seeded).
* The anytime accuracy is measured every 1000 stream samples (Si-Blurry's evaluation period) on all test
  images of the classes seen so far (``anytime_test_per_class`` 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from cl_bench import pretrain_pool
from cl_bench.config import ComponentConfig, param
from cl_bench.data import cifar_root, fmnist_dir, load_cifar, load_fmnist
from cl_bench.errors import UserError
from cl_bench.registry import SCENARIOS
from cl_bench.scenario import OnlineStream, ScenarioData, add_classes_timeline, tensor_scenario
from cl_bench.tensor_data import TensorBank
from cl_bench.traits import ScenarioTraits
from scenarios.imagenet_r import imagenet_r_split, split_seed_param, test_fraction_param
from scenarios.split_image import (
    CIFAR_MEAN_STD,
    IMAGENET_MEAN_STD,
    ONLINE_LORA_AUGMENT,
    SMALL_VIT_SMOKE,
    HWCImages,
    image_transforms,
    per_item_dataset,
)

FMNIST_CLASSES = 10
ANYTIME_SEED = 0  # fixed: every run evaluates its anytime accuracy on the same test images
PROTOCOL_TASKS = {"disjoint": 10, "blurry": 5}  # Online-LoRA's disjoint CIFAR-100 / ImageNet-R, Si-Blurry


@dataclass
class TaskFreeConfig(ComponentConfig):
    """The hidden tasks and the stream, shared by every task-free scenario (NUM_CLASSES set per dataset)."""

    NUM_CLASSES: ClassVar[int] = FMNIST_CLASSES
    CLASSES_FROM_DATA: ClassVar[bool] = False  # True: the class count is checked when the data is read

    mode: str = param(
        "disjoint",
        "disjoint (class-incremental) or blurry (Si-Blurry-style boundaries)",
        choices=("disjoint", "blurry"),
    )
    n_tasks: int = param(5, "hidden tasks in the stream", low=1)
    shuffle_classes: bool = param(
        False,
        "disjoint mode: order classes by a permutation drawn from the run seed "
        "(default: natural order, as Online-LoRA's disjoint setting)",
    )
    disjoint_class_ratio: float = param(
        0.5, "blurry mode: share N of classes that appear in one task only (Si-Blurry: 0.5)", low=0.0, high=1.0
    )
    blurry_sample_ratio: float = param(
        0.1,
        "blurry mode: share M of each blurry class's images moved to other tasks (Si-Blurry: 0.1)",
        low=0.0,
        high=1.0,
        high_open=True,
    )
    stream_batch_size: int = param(64, "images per incoming mini-batch (Online-LoRA: 64)", low=1)
    anytime_eval_every: int = param(2000, "evaluate the anytime accuracy every this many stream samples", low=1)
    anytime_test_per_class: int = param(200, "test images per class in the anytime evaluation (0: all)", low=0)

    def hidden_task_count(self) -> int:
        return self.n_tasks

    def validate(self) -> None:
        if self.anytime_eval_every < self.stream_batch_size:
            raise UserError(
                f"scenario.anytime_eval_every ({self.anytime_eval_every}) must be at least "
                f"scenario.stream_batch_size ({self.stream_batch_size}): the anytime accuracy is "
                f"measured between mini-batches"
            )
        if not self.CLASSES_FROM_DATA:
            self.check_tasks(self.NUM_CLASSES)

    def check_tasks(self, n_classes: int) -> None:
        """The hidden tasks must split ``n_classes`` into equal chunks."""
        n_tasks = self.hidden_task_count()
        if self.mode == "disjoint" and n_classes % n_tasks:
            raise UserError(f"scenario.n_tasks must divide the {n_classes} classes in disjoint mode, got {n_tasks}")
        if self.mode == "blurry":
            if n_tasks < 2:
                raise UserError("scenario.n_tasks must be at least 2 in blurry mode (samples leak between tasks)")
            n_disjoint = round(n_classes * self.disjoint_class_ratio)
            if n_disjoint % n_tasks or (n_classes - n_disjoint) % n_tasks:
                raise UserError(
                    f"blurry mode deals {n_disjoint} disjoint and {n_classes - n_disjoint} blurry "
                    f"classes into {n_tasks} equal tasks; choose scenario.disjoint_class_ratio and "
                    f"scenario.n_tasks so that both divide (e.g. ratio 0.5 with 5 tasks)"
                )


@dataclass
class TaskFreeFMNISTConfig(TaskFreeConfig):
    holdout_pretrain_pool: bool = param(True, "leave the pre-training pool of `cl-bench pretrain` out of the stream")


def hidden_tasks(
    labels: np.ndarray, config: TaskFreeConfig, seed: int, n_classes: Optional[int] = None
) -> tuple[list[np.ndarray], list[list[int]]]:
    """(training rows of each hidden task in stream order, home classes of each task); classes 0..n_classes-1
    (default: the config's NUM_CLASSES)."""
    rng = np.random.default_rng(seed)
    classes = np.arange(config.NUM_CLASSES if n_classes is None else n_classes)
    n_tasks = config.hidden_task_count()
    if config.mode == "disjoint":
        order = rng.permutation(classes) if config.shuffle_classes else classes
        home = [sorted(chunk.tolist()) for chunk in np.split(order, n_tasks)]
        task_rows = [np.flatnonzero(np.isin(labels, chunk)) for chunk in home]
    else:
        order = rng.permutation(classes)
        n_disjoint = round(len(classes) * config.disjoint_class_ratio)
        disjoint_chunks = np.split(order[:n_disjoint], n_tasks)
        blurry_chunks = np.split(order[n_disjoint:], n_tasks)
        home = [sorted(d.tolist() + b.tolist()) for d, b in zip(disjoint_chunks, blurry_chunks)]
        parts: list[list[np.ndarray]] = [[np.flatnonzero(np.isin(labels, chunk))] for chunk in disjoint_chunks]
        for task, chunk in enumerate(blurry_chunks):
            for label in chunk.tolist():
                rows = rng.permutation(np.flatnonzero(labels == label))
                n_moved = int(round(len(rows) * config.blurry_sample_ratio))
                parts[task].append(rows[n_moved:])
                others = [t for t in range(n_tasks) if t != task]
                destinations = rng.choice(others, size=n_moved)
                for other in others:
                    parts[other].append(rows[:n_moved][destinations == other])
        task_rows = [np.concatenate(rows) for rows in parts]
    # the order inside each task is the stream order
    return [rng.permutation(rows) for rows in task_rows], home


def anytime_rows(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Sorted test rows of the anytime evaluation set: ``per_class`` per class (all when 0)."""
    if per_class == 0:
        return np.arange(len(labels))
    rng = np.random.default_rng(ANYTIME_SEED)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:per_class] for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def _blurry_note(config: TaskFreeConfig) -> str:
    return f", blurry N={config.disjoint_class_ratio} M={config.blurry_sample_ratio}" if config.mode == "blurry" else ""


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (tensor-resident)
# ---------------------------------------------------------------------------------------------


def _to_inputs(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).unsqueeze(1)


@SCENARIOS.register(
    "task_free_fmnist",
    config=TaskFreeFMNISTConfig,
    traits=ScenarioTraits(
        task_free=True,
        smoke=(
            "scenario.stream_batch_size=20",
            "scenario.anytime_eval_every=40",
            "scenario.anytime_test_per_class=0",
            "model.widths=[16]",
        ),
    ),
    default_model="mlp",
    requires_data="fmnist",
    train_defaults={"epochs": 1, "batch_size": 64, "lr": 0.01, "momentum": 0.0},
)
def build_task_free_fmnist(config: TaskFreeFMNISTConfig, seed: int) -> ScenarioData:
    """Task-free Fashion-MNIST: one pass over 64-image mini-batches, hidden tasks, disjoint or blurry boundaries."""
    directory = fmnist_dir()
    arrays = load_fmnist(directory)
    train_rows = (
        pretrain_pool.stream_indices(arrays.train_labels)
        if config.holdout_pretrain_pool
        else np.arange(len(arrays.train_labels))
    )
    labels = arrays.train_labels[train_rows]
    task_rows, home = hidden_tasks(labels, config, seed)
    train_parts = [
        (_to_inputs(arrays.train_images[train_rows[rows]]), torch.from_numpy(labels[rows])) for rows in task_rows
    ]
    test_parts = []
    for classes in home:
        rows = np.flatnonzero(np.isin(arrays.test_labels, classes))
        test_parts.append((_to_inputs(arrays.test_images[rows]), torch.from_numpy(arrays.test_labels[rows])))
    anytime = anytime_rows(arrays.test_labels, config.anytime_test_per_class)
    stream_size = sum(len(rows) for rows in task_rows)
    description = (
        f"Task-free Fashion-MNIST ({config.mode}): {config.n_tasks} hidden tasks, home classes {home}, "
        f"one pass over {stream_size} training images in mini-batches of {config.stream_batch_size}"
        + _blurry_note(config)
        + (", pre-training pool held out" if config.holdout_pretrain_pool else "")
        + ", pixels in [0,1]"
    )
    scenario = tensor_scenario(
        train_parts,
        test_parts,
        setting="task-free",
        task_labels=False,
        num_classes=FMNIST_CLASSES,
        description=description,
        input_range=(0.0, 1.0),
    )
    scenario.classes_per_experience = home  # the home classes (blurry tasks also hold a few others)
    scenario.class_order = [c for classes in home for c in classes]
    if config.holdout_pretrain_pool:
        scenario.excluded_pools = [pretrain_pool.POOL_NAME]
    anytime_bank = TensorBank(
        _to_inputs(arrays.test_images[anytime]),
        torch.from_numpy(arrays.test_labels[anytime]),
        torch.zeros(len(anytime), dtype=torch.long),
        name="anytime",
    )
    scenario.online = OnlineStream(
        mode=config.mode,
        batch_size=config.stream_batch_size,
        eval_every=config.anytime_eval_every,
        anytime_test=anytime_bank.dataset(),
    )
    scenario.dataset = "fmnist"
    return scenario


# ---------------------------------------------------------------------------------------------
# CIFAR-100 and ImageNet-R at 224 px (per-item, Online-LoRA's transforms)
# ---------------------------------------------------------------------------------------------


@dataclass
class TaskFreeImageConfig(TaskFreeConfig):
    """A paper-scale stream: protocol task counts, Online-LoRA's 224-px transforms, Si-Blurry's anytime evaluation."""

    n_tasks: int = param(
        0,
        "hidden tasks in the stream; 0: the protocol's, 10 in disjoint mode (Online-LoRA), "
        "5 in blurry mode (Si-Blurry)",
        low=0,
    )
    anytime_eval_every: int = param(
        1000, "evaluate the anytime accuracy every this many stream samples (Si-Blurry: 1000)", low=1
    )
    anytime_test_per_class: int = param(
        0, "test images per class in the anytime evaluation (0: all, as Si-Blurry)", low=0
    )
    image_size: int = param(
        224,
        "side of the model input in pixels (Online-LoRA: 224); eval Resize(N*256/224, bicubic) + CenterCrop(N)",
        low=1,
    )
    augment: bool = param(
        True,
        "augment training images (Online-LoRA): RandomResizedCrop(N, scale 0.05-1) + "
        "horizontal flip; false: the eval transform",
    )
    normalize: bool = param(
        False, "normalise with the dataset's mean/std (Online-LoRA: no normalisation, [0,1] pixels)"
    )

    def hidden_task_count(self) -> int:
        return self.n_tasks or PROTOCOL_TASKS[self.mode]


@dataclass
class TaskFreeCIFAR100Config(TaskFreeImageConfig):
    NUM_CLASSES: ClassVar[int] = 100


@dataclass
class TaskFreeImageNetRConfig(TaskFreeImageConfig):
    NUM_CLASSES: ClassVar[int] = 200  # the real dataset's; the builder checks the count it finds
    CLASSES_FROM_DATA: ClassVar[bool] = True

    test_fraction: float = test_fraction_param()
    split_seed: int = split_seed_param()


def per_item_stream(
    config: TaskFreeImageConfig,
    seed: int,
    n_classes: int,
    train: tuple[Dataset, np.ndarray],
    test: tuple[Dataset, np.ndarray],
    mean_std,
    title: str,
    notes: str,
) -> ScenarioData:
    """A task-free scenario over per-item datasets: ``train`` and ``test`` are ``(items of PIL images, labels)``."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    config.check_tasks(n_classes)
    transforms: tuple[Callable, Callable] = image_transforms(
        config.image_size, ONLINE_LORA_AUGMENT if config.augment else None, mean_std if config.normalize else None
    )
    (train_items, train_labels), (test_items, test_labels) = train, test
    task_rows, home = hidden_tasks(train_labels, config, seed, n_classes)
    no_task = np.zeros(n_classes, dtype=np.int64)
    full_train = per_item_dataset(train_items, train_labels, no_task, *transforms)
    full_test = per_item_dataset(test_items, test_labels, no_task, *transforms)
    train_parts = [full_train.subset(rows.tolist()) for rows in task_rows]
    test_parts = [full_test.subset(np.flatnonzero(np.isin(test_labels, classes)).tolist()) for classes in home]
    benchmark = with_task_labels(benchmark_from_datasets(train=train_parts, test=test_parts))
    stream_size = sum(len(rows) for rows in task_rows)
    side = config.image_size
    description = (
        f"Task-free {title} ({config.mode}): {len(home)} hidden tasks, home classes {home}, one pass "
        f"over {stream_size} training images in mini-batches of {config.stream_batch_size}"
        + _blurry_note(config)
        + f", {side}x{side} px, {'normalised' if config.normalize else 'pixels in [0,1]'}"
        + (", augmented (Online-LoRA)" if config.augment else "")
        + notes
        + ", per-item loading"
    )
    scenario = add_classes_timeline(
        ScenarioData(
            benchmark=benchmark,
            input_shape=(3, side, side),
            num_classes=n_classes,
            setting="task-free",
            task_labels=False,
            classes_per_experience=home,
            class_order=[c for classes in home for c in classes],
            description=description,
            input_range=None if config.normalize else (0.0, 1.0),
            pixel_normalisation=(tuple(mean_std[0]), tuple(mean_std[1])) if config.normalize else None,
        )
    )
    anytime = full_test.subset(anytime_rows(test_labels, config.anytime_test_per_class).tolist())
    scenario.online = OnlineStream(
        mode=config.mode,
        batch_size=config.stream_batch_size,
        eval_every=config.anytime_eval_every,
        anytime_test=anytime,
    )
    return scenario


ONLINE_TRAIN_DEFAULTS = {"epochs": 1, "batch_size": 64, "lr": 0.01, "momentum": 0.0}


@SCENARIOS.register(
    "task_free_cifar100",
    config=TaskFreeCIFAR100Config,
    traits=ScenarioTraits(
        task_free=True,
        smoke=SMALL_VIT_SMOKE
        + ("scenario.n_tasks=2", "scenario.stream_batch_size=20", "scenario.anytime_eval_every=60"),
    ),
    default_model="timm",
    requires_data="cifar100",
    train_defaults=dict(ONLINE_TRAIN_DEFAULTS),
)
def build_task_free_cifar100(config: TaskFreeCIFAR100Config, seed: int) -> ScenarioData:
    """Task-free CIFAR-100 at 224 px: one pass over 64-image mini-batches, 10 disjoint or 5 blurry hidden tasks."""
    arrays = load_cifar("cifar100", cifar_root("cifar100"))
    return per_item_stream(
        config,
        seed,
        TaskFreeCIFAR100Config.NUM_CLASSES,
        (HWCImages(arrays.train_images, arrays.train_labels, as_pil=True), arrays.train_labels),
        (HWCImages(arrays.test_images, arrays.test_labels, as_pil=True), arrays.test_labels),
        CIFAR_MEAN_STD["cifar100"],
        "CIFAR-100",
        ", official 50k/10k split",
    )


@SCENARIOS.register(
    "task_free_imagenet_r",
    config=TaskFreeImageNetRConfig,
    traits=ScenarioTraits(
        task_free=True,
        smoke=SMALL_VIT_SMOKE + ("scenario.n_tasks=2", "scenario.stream_batch_size=8", "scenario.anytime_eval_every=8"),
    ),
    default_model="timm",
    requires_data="imagenet-r",
    train_defaults=dict(ONLINE_TRAIN_DEFAULTS),
)
def build_task_free_imagenet_r(config: TaskFreeImageNetRConfig, seed: int) -> ScenarioData:
    """Task-free ImageNet-R at 224 px: one pass over 64-image mini-batches, 10 disjoint or 5 blurry hidden tasks."""
    data = imagenet_r_split(config.test_fraction, config.split_seed)
    notes = (
        f", stratified {1 - config.test_fraction:.0%}/{config.test_fraction:.0%} split (split_seed {config.split_seed})"
    )
    return per_item_stream(
        config, seed, data.n_classes, data.part("train"), data.part("test"), IMAGENET_MEAN_STD, "ImageNet-R", notes
    )
