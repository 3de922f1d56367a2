"""Split image scenarios: a labelled image dataset cut into experiences of disjoint classes.

* ``split_fmnist``: Fashion-MNIST, official 60k/10k train/test split, 5 experiences x 2 classes.
* ``split_digits``: scikit-learn's bundled 8x8 digits (1797 images), a stratified train/test split,
  5 experiences x 2 classes; the tiny scenario for fast tests (no files needed).
* ``split_cifar10`` (5 x 2 classes) and ``split_cifar100`` (10 x 10 classes by default).

Suite choices, shared by all four:

* Experience ``i`` holds the classes ``class_order[i*k:(i+1)*k]`` (``k = classes / n_experiences``);
  ``class_order`` is 0..C-1 unless given explicitly or ``shuffle_classes`` draws a permutation from
  ``numpy.random.default_rng(seed)`` (seed = the run seed, so class orders vary with the seed).
* Targets keep the dataset's original labels (no remapping by class order); ``num_classes`` is the
  dataset's number of classes.
* ``task_labels=False`` (default): class-incremental, one shared head, no task id.
  ``task_labels=True``: task-incremental, experience ``i`` carries task label ``i`` at train and
  test time (multi-head).
* Samples inside an experience keep the dataset's order (loaders shuffle).
* No data augmentation, except in the CIFAR scenarios with ``augment`` (below).

Per-dataset choices:

* Fashion-MNIST and digits are tensor-resident (:func:`cl_bench.scenario.tensor_scenario`):
  pixels scaled to [0, 1] (/255, digits /16) with no mean/std normalisation, so attack budgets
  (epsilon) are in [0, 1] pixel units; input shape (1, 28, 28) and (1, 8, 8). Fashion-MNIST is
  read from ``data_root()/fashion-mnist`` (decoded arrays are cached in-process by
  :mod:`cl_bench.data`); digits are the data of ``sklearn.datasets.load_digits`` (its bundled
  ``digits.csv.gz`` read directly, which skips the ~0.4 s import of ``sklearn.datasets``; a test
  checks it equals ``load_digits()``), with a stratified split
  fixed by ``test_fraction`` and ``split_seed`` (not the run seed, so that every run sees the same
  split, like an official one).
* CIFAR-10/100 use the ordinary per-item Avalanche path (a float32 tensor bank would take
  ~740 MB per dataset): each experience is an ``AvalancheDataset`` over the uint8 images with
  ``targets`` and ``targets_task_labels`` data attributes and a ``ToTensor`` + per-channel
  ``Normalize`` transform (fixed, published CIFAR mean/std; ``normalize=False`` keeps [0, 1]
  pixels) in both the train and eval transform groups. The files are the standard
  ``cifar-10-batches-py`` / ``cifar-100-python`` pickles under ``data_root()/cifar10`` or
  ``/cifar100`` (the torchvision root layout), but they are read by :mod:`cl_bench.data` rather
  than by ``torchvision.datasets.CIFAR10``: torchvision's constructor insists on the MD5 of the
  full official files (``_check_integrity``, and again for the meta file in ``_load_meta``), so
  it cannot read the small files the tests write in the same format without overriding its
  private methods; reading the pickles ourselves also lets us refuse any pickle that is not
  plain arrays. The format is checked on every load; ``cl-bench data prepare`` validates copies
  and checks the downloaded archive's MD5.
* CIFAR at paper scale (``image_size``, default 0 = the native 32x32 pixels, as above): with
  ``image_size=N`` the images go through SLCA's official 224-px pipeline (spec slca.md section 5,
  ``iCIFAR100_224``), generalised to N: eval ``Resize(N*256//224, bicubic)`` (256 for 224) +
  ``CenterCrop(N)``; train, with ``augment``, ``RandomResizedCrop(N, bicubic)`` + horizontal flip +
  ``ColorJitter(brightness=63/255)``, without it the eval transform. ``augment`` at 32 px is SLCA's
  (PyCIL's) 32-px recipe: ``RandomCrop(32, padding=4)`` + flip + the same jitter. Images go through
  PIL (as torchvision's CIFAR datasets do), so the resizes are PIL's. The train transform group is
  used while training; evaluation and SLCA's class statistics use ``dataset.eval()``. Deviation:
  ``normalize`` keeps this module's published CIFAR statistics, which differ from SLCA's constants
  (0.5071, 0.4867, 0.4408)/(0.2675, 0.2565, 0.2761) by at most 2e-4.

Shared with ``scenarios.imagenet_r`` and ``scenarios.task_free``: :func:`per_item_dataset` (an Avalanche
dataset over any per-item torch dataset, with train and eval transform groups), :func:`image_transforms`
(the official fixed-size recipes) and :func:`per_item_split` (a split scenario from per-item datasets).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, ClassVar, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cl_bench import pretrain_pool
from cl_bench.config import param
from cl_bench.data import CIFAR_LAYOUTS, ImageArrays, cifar_root, fmnist_dir, load_cifar, load_fmnist
from cl_bench.errors import UserError
from cl_bench.registry import SCENARIOS
from cl_bench.scenario import ScenarioConfig, ScenarioData, add_classes_timeline, stratified_holdout, tensor_scenario
from cl_bench.traits import ScenarioTraits

# published per-channel statistics of the CIFAR training sets (fixed, so nothing is computed from data)
CIFAR_MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's, used by SLCA for ImageNet-R


@dataclass
class SplitImageConfig(ScenarioConfig):
    """Class split shared by every split-image scenario (NUM_CLASSES set per dataset)."""

    NUM_CLASSES: ClassVar[int] = 10

    n_experiences: int = param(5, "number of experiences; must divide the number of classes", low=1)
    class_order: Optional[list[int]] = param(
        None, "explicit class order (a permutation of all class ids); default: 0, 1, 2, ... in order"
    )
    shuffle_classes: bool = param(False, "order the classes by a permutation drawn from the run seed")
    task_labels: bool = param(
        False,
        "multi-head task-incremental (task id = experience index); default: class-incremental, one head, no task id",
    )

    def validate(self) -> None:
        self.check_classes(self.NUM_CLASSES)

    def check_classes(self, n_classes: Optional[int]) -> None:
        """Check the class split against ``n_classes`` (None: a count known only from the data; the
        checks that need it run again when the data is read)."""
        if n_classes is not None and n_classes % self.n_experiences:
            raise UserError(f"scenario.n_experiences must divide the {n_classes} classes, got {self.n_experiences}")
        if self.class_order is not None:
            expected = n_classes if n_classes is not None else len(self.class_order)
            if sorted(self.class_order) != list(range(expected)):
                raise UserError(
                    f"scenario.class_order must be a permutation of 0..{expected - 1} "
                    f"(each class once), got {self.class_order}"
                )
            if self.shuffle_classes:
                raise UserError("scenario.class_order and scenario.shuffle_classes exclude each other; set only one")


def class_order_for(config: SplitImageConfig, seed: int, n_classes: Optional[int] = None) -> list[int]:
    """The explicit order, a seeded permutation (shuffle_classes), or 0..C-1 (C: ``n_classes`` or NUM_CLASSES)."""
    n_classes = config.NUM_CLASSES if n_classes is None else n_classes
    if config.class_order is not None:
        return list(config.class_order)
    if config.shuffle_classes:
        return np.random.default_rng(seed).permutation(n_classes).tolist()
    return list(range(n_classes))


def experience_classes(config: SplitImageConfig, order: list[int]) -> list[list[int]]:
    """Consecutive chunks of the class order, one per experience."""
    k = len(order) // config.n_experiences
    return [order[i * k : (i + 1) * k] for i in range(config.n_experiences)]


def _rows_per_experience(labels: np.ndarray, chunks: list[list[int]], what: str) -> list[np.ndarray]:
    rows = [np.flatnonzero(np.isin(labels, classes)) for classes in chunks]
    for classes, indices in zip(chunks, rows):
        if len(indices) == 0:
            raise UserError(f"{what} has no samples of classes {classes}; the data files are incomplete")
    return rows


def _tensor_split(
    arrays: ImageArrays,
    config: SplitImageConfig,
    seed: int,
    to_inputs: Callable[[np.ndarray], torch.Tensor],
    title: str,
    where: str,
) -> ScenarioData:
    """A tensor-resident split scenario from decoded arrays; ``to_inputs`` maps raw images to float32."""
    order = class_order_for(config, seed)
    chunks = experience_classes(config, order)
    parts = {}
    for split, images, labels in (
        ("train", arrays.train_images, arrays.train_labels),
        ("test", arrays.test_images, arrays.test_labels),
    ):
        rows = _rows_per_experience(labels, chunks, f"the {title} {split} set in {where}")
        parts[split] = [(to_inputs(images[r]), torch.from_numpy(labels[r].astype(np.int64))) for r in rows]
    k = config.NUM_CLASSES // config.n_experiences
    description = (
        f"Split {title}: {config.n_experiences} experiences x {k} classes, class order {order}, "
        f"{'task-incremental (multi-head)' if config.task_labels else 'class-incremental (single head)'}"
    )
    return tensor_scenario(
        parts["train"],
        parts["test"],
        setting="task-incremental" if config.task_labels else "class-incremental",
        task_labels=config.task_labels,
        num_classes=config.NUM_CLASSES,
        class_order=order,
        description=description,
        input_range=(0.0, 1.0),
    )


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------------------------


@dataclass
class SplitFMNISTConfig(SplitImageConfig):
    """Split Fashion-MNIST: official train/test split, pixels in [0, 1]."""

    holdout_pretrain_pool: bool = param(
        False,
        "leave the pre-training pool (a fixed sixth of the training images, "
        "see cl_bench/pretrain_pool.py) out of the stream; needed with a "
        "backbone from `cl-bench pretrain`",
    )

    omitted_at_default: ClassVar[tuple[str, ...]] = ("holdout_pretrain_pool",)  # added after the issue-3/4 boards


def _uint8_to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) in [0, 1]."""
    return torch.from_numpy(images).float().div_(255.0).unsqueeze(1)


@SCENARIOS.register(
    "split_fmnist",
    config=SplitFMNISTConfig,
    traits=ScenarioTraits(smoke=("train.epochs=1", "model.widths=[32]")),
    default_model="mlp",
    requires_data="fmnist",
    train_defaults={"epochs": 2, "batch_size": 128, "lr": 0.01, "momentum": 0.9},
)
def build_split_fmnist(config: SplitFMNISTConfig, seed: int) -> ScenarioData:
    """Split Fashion-MNIST: 5 experiences x 2 classes, 28x28 pixels in [0,1] (needs `cl-bench data prepare fmnist`)."""
    directory = fmnist_dir()
    arrays = load_fmnist(directory)
    if config.holdout_pretrain_pool:
        arrays = without_pretrain_pool(arrays)
    scenario = _tensor_split(arrays, config, seed, _uint8_to_unit, "Fashion-MNIST", str(directory))
    scenario.dataset = "fmnist"
    scenario.description += ", pixels in [0,1], official 60k/10k split"
    if config.holdout_pretrain_pool:
        scenario.description += f", pre-training pool held out ({len(arrays.train_labels)} training images left)"
        scenario.excluded_pools = [pretrain_pool.POOL_NAME]
    return scenario


def without_pretrain_pool(arrays: ImageArrays) -> ImageArrays:
    """The Fashion-MNIST arrays with the pre-training pool removed from the training set."""
    rows = pretrain_pool.stream_indices(arrays.train_labels)
    return ImageArrays(arrays.train_images[rows], arrays.train_labels[rows], arrays.test_images, arrays.test_labels)


# ---------------------------------------------------------------------------------------------
# scikit-learn digits
# ---------------------------------------------------------------------------------------------


@dataclass
class SplitDigitsConfig(SplitImageConfig):
    """Split digits: sklearn's 8x8 digits with a fixed stratified train/test split."""

    test_fraction: float = param(
        0.3, "fraction of each class held out for testing", low=0.0, high=1.0, low_open=True, high_open=True
    )
    split_seed: int = param(0, "seed of the stratified train/test split (fixed, independent of the run seed)", low=0)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as (float32 images (1797, 8, 8) in [0, 1], int64 labels), read once."""
    raw = _bundled_digits_csv()
    if raw is not None:
        images, labels = raw[:, :-1].reshape(-1, 8, 8), raw[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, labels = bunch.images, bunch.target
    images = (images / 16.0).astype(np.float32)  # pixel values are 0..16
    labels = labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _bundled_digits_csv() -> Optional[np.ndarray]:
    """The (1797, 65) table ``load_digits`` reads (64 pixels + label), read without importing sklearn.

    Why: importing ``sklearn.datasets`` costs ~0.4 s, most of the build time of this tiny scenario.
    The file is located through the package spec (no import); None if it is not where
    scikit-learn keeps it, and the caller falls back to ``load_digits``. A test checks both agree.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        return None
    table = np.loadtxt(path, delimiter=",")
    return table if table.shape == (1797, 65) else None


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows), each class split in the same proportion; rows sorted."""
    return stratified_holdout(labels, test_fraction, np.random.default_rng(seed))


@SCENARIOS.register(
    "split_digits",
    config=SplitDigitsConfig,
    traits=ScenarioTraits(smoke=("train.epochs=1", "model.widths=[32]")),
    default_model="mlp",
    model_defaults={"widths": [64, 64]},
    train_defaults={"epochs": 3, "batch_size": 32, "lr": 0.05, "momentum": 0.0},
)
def build_split_digits(config: SplitDigitsConfig, seed: int) -> ScenarioData:
    """Split digits (sklearn 8x8, bundled): 5 experiences x 2 classes, tiny and fast, for tests and smoke runs."""
    images, labels = _digits()
    train_rows, test_rows = stratified_split(labels, config.test_fraction, config.split_seed)
    arrays = ImageArrays(images[train_rows], labels[train_rows], images[test_rows], labels[test_rows])
    scenario = _tensor_split(
        arrays, config, seed, lambda x: torch.from_numpy(x).unsqueeze(1), "digits", "sklearn.datasets.load_digits"
    )
    scenario.description += (
        f", 8x8 pixels in [0,1], stratified {1 - config.test_fraction:.0%}/"
        f"{config.test_fraction:.0%} split (split_seed {config.split_seed})"
    )
    return scenario


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# ---------------------------------------------------------------------------------------------


@dataclass
class SplitCIFAR10Config(SplitImageConfig):
    """Split CIFAR-10."""

    normalize: bool = param(True, "normalise each channel with the published CIFAR mean/std; false: pixels in [0,1]")
    image_size: int = param(
        0,
        "0: the native 32x32 pixels; N: SLCA's resize pipeline at N px (paper: 224), eval "
        "Resize(N*256/224, bicubic) + CenterCrop(N)",
        low=0,
    )
    augment: bool = param(
        False,
        "augment training images (SLCA): RandomResizedCrop(N, bicubic) + flip + "
        "ColorJitter(brightness 63/255); at 32 px RandomCrop(32, padding 4) + flip + jitter",
    )


@dataclass
class SplitCIFAR100Config(SplitCIFAR10Config):
    """Split CIFAR-100 (fine labels)."""

    NUM_CLASSES: ClassVar[int] = 100

    n_experiences: int = param(10, "number of experiences; must divide the number of classes", low=1)


class HWCImages(Dataset):
    """uint8 (N, H, W, C) images and their labels, one sample at a time (for torchvision transforms)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, as_pil: bool = False):
        self.images = images
        self.labels = labels
        self.as_pil = as_pil  # PIL images for the resize/crop transforms, else arrays

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        if self.as_pil:
            from PIL import Image

            return Image.fromarray(self.images[index]), int(self.labels[index])
        # a copy: the cached arrays are read-only and torch warns on non-writable numpy arrays
        return np.array(self.images[index]), int(self.labels[index])


def per_item_dataset(
    items: Dataset,
    labels: np.ndarray,
    task_of_class: np.ndarray,
    train_transform: Callable,
    eval_transform: Optional[Callable] = None,
):
    """One Avalanche classification dataset over ``items`` (``(x, y)`` per index), with ``targets`` and
    ``targets_task_labels`` attributes and the "train" and "eval" transform groups (eval: the train
    transform when None)."""
    from avalanche.benchmarks.utils import DataAttribute
    from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset
    from avalanche.benchmarks.utils.transform_groups import TransformGroups

    attributes = [
        DataAttribute(labels.tolist(), "targets"),
        DataAttribute(task_of_class[labels].tolist(), "targets_task_labels", use_in_getitem=True),
    ]
    groups = {"train": train_transform, "eval": train_transform if eval_transform is None else eval_transform}
    return TaskAwareSupervisedClassificationDataset(
        [items], data_attributes=attributes, transform_groups=TransformGroups(groups)
    )


@dataclass(frozen=True)
class AugmentRecipe:
    """The train-time augmentation of one official fixed-size pipeline."""

    crop_scale: tuple[float, float]  # area range of RandomResizedCrop (aspect ratio 3/4..4/3 in all recipes)
    crop_interpolation: str  # "bicubic" or "bilinear"
    brightness: float  # ColorJitter brightness; 0: no jitter


SLCA_CIFAR_AUGMENT = AugmentRecipe((0.08, 1.0), "bicubic", 63 / 255)  # spec slca.md section 5 (iCIFAR100_224)
SLCA_IMAGENET_R_AUGMENT = AugmentRecipe((0.08, 1.0), "bicubic", 0.0)  # spec slca.md section 5 (iImageNetR)
ONLINE_LORA_AUGMENT = AugmentRecipe((0.05, 1.0), "bilinear", 0.0)  # spec online_lora.md section 5


def image_transforms(
    image_size: int, augment: Optional[AugmentRecipe], mean_std: Optional[tuple[Sequence[float], Sequence[float]]]
) -> tuple[Callable, Callable]:
    """(train, eval) transforms from a PIL image to a float tensor (3, image_size, image_size).

    eval (every official recipe): ``Resize(image_size * 256 // 224, bicubic)`` (256 for 224) +
    ``CenterCrop(image_size)``; train: ``augment``'s RandomResizedCrop + horizontal flip (+ ColorJitter),
    or the eval transform when ``augment`` is None. Then ToTensor and, with ``mean_std``, Normalize.
    """
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    tail = [transforms.ToTensor()] + ([transforms.Normalize(*mean_std)] if mean_std is not None else [])
    eval_transform = transforms.Compose(
        [
            transforms.Resize(image_size * 256 // 224, interpolation=InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size),
            *tail,
        ]
    )
    if augment is None:
        return eval_transform, eval_transform
    steps = [
        transforms.RandomResizedCrop(
            image_size, scale=augment.crop_scale, interpolation=InterpolationMode(augment.crop_interpolation)
        ),
        transforms.RandomHorizontalFlip(),
    ]
    if augment.brightness:
        steps.append(transforms.ColorJitter(brightness=augment.brightness))
    return transforms.Compose(steps + tail), eval_transform


def cifar_transforms(name: str, image_size: int, augment: bool, normalize: bool) -> tuple[Callable, Callable, bool]:
    """(train, eval, as_pil) for CIFAR: SLCA's pipelines (see the module docstring); ``as_pil`` says whether
    they take PIL images (else the stored HWC arrays)."""
    from torchvision import transforms

    mean_std = CIFAR_MEAN_STD[name] if normalize else None
    if image_size:
        return (*image_transforms(image_size, SLCA_CIFAR_AUGMENT if augment else None, mean_std), True)
    native = transforms.Compose(
        [transforms.ToTensor()] + ([transforms.Normalize(*mean_std)] if mean_std is not None else [])
    )
    if not augment:
        return native, native, False
    train = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=SLCA_CIFAR_AUGMENT.brightness),
            *native.transforms,
        ]
    )
    return train, native, True


def per_item_split(
    config: SplitImageConfig,
    seed: int,
    n_classes: int,
    train: tuple[Dataset, np.ndarray],
    test: tuple[Dataset, np.ndarray],
    transforms: tuple[Callable, Callable],
    title: str,
    where: str,
    input_shape: tuple[int, ...],
    notes: str,
    mean_std: Optional[tuple[Sequence[float], Sequence[float]]],
) -> ScenarioData:
    """A split scenario over per-item datasets: ``train`` and ``test`` are ``(items, labels)``; ``mean_std``: the
    transforms' Normalize statistics (None: pixels in [0, 1])."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    order = class_order_for(config, seed, n_classes)
    chunks = experience_classes(config, order)
    task_of_class = np.zeros(n_classes, dtype=np.int64)
    if config.task_labels:
        for task, classes in enumerate(chunks):
            task_of_class[classes] = task
    streams = {}
    for split, (items, labels) in (("train", train), ("test", test)):
        full = per_item_dataset(items, labels, task_of_class, *transforms)
        rows = _rows_per_experience(labels, chunks, f"the {title} {split} set in {where}")
        streams[split] = [full.subset(r.tolist()) for r in rows]
    benchmark = with_task_labels(benchmark_from_datasets(train=streams["train"], test=streams["test"]))
    k = n_classes // config.n_experiences
    description = (
        f"Split {title}: {config.n_experiences} experiences x {k} classes, class order "
        f"{order}, {'task-incremental (multi-head)' if config.task_labels else 'class-incremental'}, "
        f"{notes}, per-item loading"
    )
    return add_classes_timeline(
        ScenarioData(
            benchmark=benchmark,
            input_shape=input_shape,
            num_classes=n_classes,
            setting="task-incremental" if config.task_labels else "class-incremental",
            task_labels=config.task_labels,
            classes_per_experience=[sorted(c) for c in chunks],
            class_order=order,
            description=description,
            input_range=None if mean_std is not None else (0.0, 1.0),
            pixel_normalisation=None if mean_std is None else (tuple(mean_std[0]), tuple(mean_std[1])),
        )
    )


def _build_split_cifar(name: str, config: SplitCIFAR10Config, seed: int) -> ScenarioData:
    layout = CIFAR_LAYOUTS[name]
    root = cifar_root(name)
    arrays = load_cifar(name, root)
    train_transform, eval_transform, as_pil = cifar_transforms(
        name, config.image_size, config.augment, config.normalize
    )
    side = config.image_size or 32
    notes = "normalised per channel" if config.normalize else "pixels in [0,1]"
    if config.image_size:
        notes += f", resized to {side}x{side} (SLCA's pipeline)"
    if config.augment:
        notes += ", augmented training images"
    return per_item_split(
        config,
        seed,
        layout.num_classes,
        (HWCImages(arrays.train_images, arrays.train_labels, as_pil), arrays.train_labels),
        (HWCImages(arrays.test_images, arrays.test_labels, as_pil), arrays.test_labels),
        (train_transform, eval_transform),
        layout.title,
        str(root),
        (3, side, side),
        notes,
        CIFAR_MEAN_STD[name] if config.normalize else None,
    )


CIFAR_TRAIN_DEFAULTS = {"epochs": 5, "batch_size": 64, "lr": 0.01, "momentum": 0.9}
CIFAR_SMOKE = ("train.epochs=1", "model.channels=[8]", "model.hidden=32")  # a one-block cnn
# the 224-px scenarios' smoke runs: 16-px images on a one-block vit_micro (4 patches of 8x8)
SMALL_VIT_SMOKE = (
    "model=vit_micro",
    "scenario.image_size=16",
    "model.patch_size=8",
    "model.embed_dim=16",
    "model.depth=1",
    "model.num_heads=2",
)


@SCENARIOS.register(
    "split_cifar10",
    config=SplitCIFAR10Config,
    traits=ScenarioTraits(smoke=CIFAR_SMOKE),
    default_model="cnn",
    requires_data="cifar10",
    train_defaults=dict(CIFAR_TRAIN_DEFAULTS),
)
def build_split_cifar10(config: SplitCIFAR10Config, seed: int) -> ScenarioData:
    """Split CIFAR-10: 5 experiences x 2 classes, 32x32 RGB or resized (needs `cl-bench data prepare cifar10`)."""
    return _build_split_cifar("cifar10", config, seed)


@SCENARIOS.register(
    "split_cifar100",
    config=SplitCIFAR100Config,
    traits=ScenarioTraits(smoke=CIFAR_SMOKE + ("scenario.n_experiences=2",)),
    default_model="cnn",
    requires_data="cifar100",
    train_defaults=dict(CIFAR_TRAIN_DEFAULTS),
)
def build_split_cifar100(config: SplitCIFAR100Config, seed: int) -> ScenarioData:
    """Split CIFAR-100: 10 experiences x 10 classes, 32x32 RGB or resized (needs `cl-bench data prepare cifar100`)."""
    return _build_split_cifar("cifar100", config, seed)
