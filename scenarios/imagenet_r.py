"""Split ImageNet-R: ImageNet renditions (Hendrycks et al., ICCV 2021, "The Many Faces of Robustness"), cut into
experiences of disjoint classes, the class-incremental benchmark of SLCA (spec slca.md section 5) and Online-LoRA.

ImageNet-R holds ~30k images (art, cartoons, sketches, toys ...) of 200 ImageNet classes, one folder per class
(``imagenet-r/<wnid>/*.jpg``), read from ``data_root()/imagenet-r`` (``cl-bench data prepare imagenet-r --from
DIR``; see :mod:`cl_bench.data`) in the ``torchvision.datasets.ImageFolder`` way: label = position of the
folder in sorted order, images opened with PIL and converted to RGB, one at a time (per-item Avalanche
datasets with "train" and "eval" transform groups, like CIFAR in :mod:`scenarios.split_image`).

* ``split_imagenet_r``: 10 experiences x 20 classes by default, class-incremental (or task-incremental with
  ``task_labels``), class order / ``shuffle_classes`` / targets as the other split scenarios.
* Transforms (spec slca.md section 5, official ``iImageNetR``): eval ``Resize(N*256//224, bicubic)`` +
  ``CenterCrop(N)`` (N = ``image_size``, 224 in the papers); train with ``augment``
  ``RandomResizedCrop(N, bicubic)`` + horizontal flip, without it the eval transform; ``normalize``:
  ImageNet mean/std (SLCA); Online-LoRA feeds [0, 1] pixels (its preset sets ``normalize=false``).

Suite choice: the train/test split. ImageNet-R has no official split. The L2P/DualPrompt code that
Online-LoRA uses draws an unstratified random 80/20 split of the whole dataset with torch's global RNG the
first time it runs and moves the files into ``train/`` and ``test/`` (so every installation has its own
split); SLCA reads ``train/`` and ``val/`` folders whose origin its repository does not document. Here each
class is split ``1 - test_fraction`` / ``test_fraction`` (default 80/20, at least one image on each side)
by a seeded permutation (``split_seed``, fixed and independent of the run seed), so every run of every
user sees the same split, and every class is in both sets. The class count is read from the data (200
for the real dataset), so the checks that depend on it (``n_experiences`` divides it, ``class_order`` is a
permutation of it) run when the scenario is built; prepared copies with fewer classes (the tests' tiny
trees) work the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch.utils.data import Dataset

from cl_bench.config import param
from cl_bench.data import ImageFolderListing, imagenet_r_dir, load_imagenet_r
from cl_bench.registry import SCENARIOS
from cl_bench.scenario import ScenarioData
from cl_bench.traits import ScenarioTraits
from scenarios.split_image import (
    IMAGENET_MEAN_STD,
    SLCA_IMAGENET_R_AUGMENT,
    SMALL_VIT_SMOKE,
    SplitImageConfig,
    image_transforms,
    per_item_split,
    stratified_split,
)

TITLE = "ImageNet-R"


class ImageFiles(Dataset):
    """Image files and their labels, one PIL RGB image at a time (torchvision's ImageFolder loader)."""

    def __init__(self, paths: list[str], labels: np.ndarray):
        self.paths = paths
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from torchvision.datasets.folder import pil_loader

        return pil_loader(self.paths[index]), int(self.labels[index])


@dataclass(frozen=True)
class ImageNetRSplit:
    """The prepared listing and its stratified train/test rows."""

    listing: ImageFolderListing
    train_rows: np.ndarray
    test_rows: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.listing.class_names)

    def part(self, split: str) -> tuple[ImageFiles, np.ndarray]:
        """(per-item images, labels) of the "train" or "test" rows."""
        rows = self.train_rows if split == "train" else self.test_rows
        labels = self.listing.labels[rows]
        return ImageFiles([self.listing.paths[r] for r in rows.tolist()], labels), labels


def imagenet_r_split(test_fraction: float, split_seed: int) -> ImageNetRSplit:
    """ImageNet-R from ``data_root()/imagenet-r``, each class split by ``split_seed`` (see the module docstring)."""
    listing = load_imagenet_r(imagenet_r_dir())
    train_rows, test_rows = stratified_split(listing.labels, test_fraction, split_seed)
    return ImageNetRSplit(listing, train_rows, test_rows)


def test_fraction_param():
    """The ``test_fraction`` field of the ImageNet-R configs (suite choice, see the module docstring)."""
    return param(
        0.2,
        "fraction of each class held out for testing (suite choice: no official split; the papers' code uses 80/20)",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )


def split_seed_param():
    """The ``split_seed`` field of the ImageNet-R configs."""
    return param(0, "seed of the stratified train/test split (fixed, independent of the run seed)", low=0)


@dataclass
class SplitImageNetRConfig(SplitImageConfig):
    """Split ImageNet-R: a seeded stratified train/test split, 224-px pipelines."""

    NUM_CLASSES: ClassVar[int] = 200  # the real dataset's; the builder uses the count it finds

    n_experiences: int = param(10, "number of experiences; must divide the number of classes (200)", low=1)
    image_size: int = param(
        224, "side of the model input in pixels (papers: 224); eval Resize(N*256/224, bicubic) + CenterCrop(N)", low=1
    )
    augment: bool = param(False, "augment training images (SLCA): RandomResizedCrop(N, bicubic) + horizontal flip")
    normalize: bool = param(True, "normalise with the ImageNet mean/std (SLCA); false: pixels in [0,1] (Online-LoRA)")
    test_fraction: float = test_fraction_param()
    split_seed: int = split_seed_param()

    def validate(self) -> None:
        self.check_classes(None)  # the class count comes from the data: checked again at build time


@SCENARIOS.register(
    "split_imagenet_r",
    config=SplitImageNetRConfig,
    traits=ScenarioTraits(smoke=SMALL_VIT_SMOKE + ("scenario.n_experiences=2", "train.epochs=1")),
    default_model="timm",
    requires_data="imagenet-r",
    train_defaults={"epochs": 5, "batch_size": 64, "lr": 0.01, "momentum": 0.9},
)
def build_split_imagenet_r(config: SplitImageNetRConfig, seed: int) -> ScenarioData:
    """Split ImageNet-R: 10 experiences x 20 classes, 224-px RGB (needs `cl-bench data prepare imagenet-r`)."""
    data = imagenet_r_split(config.test_fraction, config.split_seed)
    config.check_classes(data.n_classes)
    augment = SLCA_IMAGENET_R_AUGMENT if config.augment else None
    transforms = image_transforms(config.image_size, augment, IMAGENET_MEAN_STD if config.normalize else None)
    side = config.image_size
    notes = (
        f"{'ImageNet-normalised' if config.normalize else 'pixels in [0,1]'}, {side}x{side} px"
        f"{', augmented training images' if config.augment else ''}, stratified "
        f"{1 - config.test_fraction:.0%}/{config.test_fraction:.0%} split (split_seed {config.split_seed})"
    )
    return per_item_split(
        config,
        seed,
        data.n_classes,
        data.part("train"),
        data.part("test"),
        transforms,
        TITLE,
        str(data.listing.root),
        (3, side, side),
        notes,
        IMAGENET_MEAN_STD if config.normalize else None,
    )
