"""Permuted Fashion-MNIST: GPM's Permuted-MNIST protocol on Fashion-MNIST.

Protocol of Saha, Garg, Roy, "Gradient Projection Memory for Continual Learning", ICLR 2021
(arXiv 2103.09762), official code github.com/sahagobinda/GPM (``main_pmnist.py``,
``dataloader/pmnist.py``): ``n_experiences`` experiences (default 10); experience ``i`` applies its
own fixed random permutation of the 784 pixels to every image, train and test. Every experience is
permuted, the first one included, as in the official code (``identity_first`` keeps experience 0
unpermuted, the other variant found in the literature). All 10 classes in every experience, labels
unchanged: domain-incremental, one shared 10-way head, no task labels.

Suite choices:

* The permutations are drawn from ``numpy.random.default_rng(seed)`` with ``seed`` = the run
  seed, so they change with the seed (the official permutations also depend on the run seed).
  All ``n_experiences`` permutations are drawn first and the subsets afterwards, so a
  permutation depends only on the seed and its experience index, not on the subset sizes;
  ``identity_first`` replaces permutation 0 by the identity and leaves the others as they are.
* ``train_per_experience`` (default 5000, so that a CPU run stays short: about 2,500 steps and
  5-10 s per experience for mlp_gpm with the default 5 epochs of batch 10 on a 2-core CPU;
  Avalanche's per-iteration overhead dominates at batch 10): each experience
  trains on its own random subset of the 60000 training images (without replacement, drawn from
  the same generator, not class-balanced, kept in file order); 0 = all of them as in the paper.
  ``test_per_experience`` likewise for the 10000 test images (default 0 = all).
* Pixels scaled to [0, 1] (/255), no mean/std normalisation (like ``split_fmnist``, so attack
  budgets are in pixel units), input shape (1, 28, 28), float32; the model flattens it.
* Memory: each experience is its own float32 copy; with the defaults 10 x (5000 + 10000) x 784
  x 4 bytes = 470 MB (about twice that at the peak, while the banks are concatenated);
  ``train_per_experience=0`` adds 1.9 GB.

Deviations from the official PMNIST:

* Fashion-MNIST instead of MNIST (so the headline PMNIST numbers do not apply).
* No mean/std normalisation (official: MNIST's mean 0.1307 / std 0.3081 after the /255).
* No validation split (official: the first 10% of the training set, which PMNIST does not use
  for early stopping anyway), and by default a 5000-image training subset per experience
  instead of all 60000 (54000 after the validation split in the official code).
* Permutations come from numpy's ``default_rng`` stream, not the official code's generator, so the
  exact permutations for a given seed differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cl_bench.config import param
from cl_bench.data import FMNIST_CLASSES, FMNIST_REAL_COUNTS, fmnist_dir, load_fmnist
from cl_bench.errors import UserError
from cl_bench.registry import SCENARIOS
from cl_bench.scenario import ScenarioConfig, ScenarioData, tensor_scenario
from cl_bench.traits import ScenarioTraits


@dataclass
class PermutedFMNISTConfig(ScenarioConfig):
    """Permuted Fashion-MNIST: one fixed pixel permutation per experience."""

    n_experiences: int = param(10, "number of experiences, each with its own pixel permutation (official: 10)", low=1)
    train_per_experience: int = param(
        5000,
        "training images per experience, a random subset drawn per experience; 0 = all 60000 (as in the paper)",
        low=0,
        high=FMNIST_REAL_COUNTS["train"],
    )
    test_per_experience: int = param(
        0,
        "test images per experience, a random subset drawn per experience; 0 = all 10000",
        low=0,
        high=FMNIST_REAL_COUNTS["test"],
    )
    identity_first: bool = param(False, "keep experience 0 unpermuted (official: every experience is permuted)")


def draw_permutations(
    n_experiences: int, n_pixels: int, rng: np.random.Generator, identity_first: bool
) -> list[np.ndarray]:
    """One pixel permutation per experience; all drawn even with ``identity_first`` so the others stay the same."""
    permutations = [rng.permutation(n_pixels) for _ in range(n_experiences)]
    if identity_first:
        permutations[0] = np.arange(n_pixels)
    return permutations


def _subset_size(requested: int, available: int, field: str, split: str, where: str) -> int:
    if requested > available:
        raise UserError(
            f"scenario.{field}={requested} exceeds the {available} {split} images in {where}; "
            f"use at most {available} (0 = all)"
        )
    return requested or available


def _permuted_part(
    images: np.ndarray, labels: np.ndarray, rows: np.ndarray | None, permutation: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of uint8 (N, 28, 28) images with their pixels permuted -> float32 (n, 1, 28, 28) in [0, 1], labels."""
    flat = images.reshape(len(images), -1)
    # one fancy-indexing pass on uint8 (4x cheaper than on floats), no per-sample loop
    picked = flat[:, permutation] if rows is None else flat[np.ix_(rows, permutation)]
    inputs = torch.from_numpy(picked).float().div_(255.0).view(-1, 1, *images.shape[1:])
    chosen = labels if rows is None else labels[rows]
    return inputs, torch.from_numpy(chosen.astype(np.int64))


@SCENARIOS.register(
    "permuted_fmnist",
    config=PermutedFMNISTConfig,
    traits=ScenarioTraits(
        smoke=(
            "scenario.n_experiences=3",
            "scenario.train_per_experience=100",
            "scenario.test_per_experience=50",
            "train.epochs=1",
            "model.widths=[32]",
        )
    ),
    default_model="mlp_gpm",
    requires_data="fmnist",
    train_defaults={"epochs": 5, "batch_size": 10, "lr": 0.01},
)
def build_permuted_fmnist(config: PermutedFMNISTConfig, seed: int) -> ScenarioData:
    """Permuted Fashion-MNIST (GPM's PMNIST): 10 pixel permutations, one head (needs `cl-bench data prepare fmnist`)."""
    directory = fmnist_dir()
    arrays = load_fmnist(directory)
    n_train = _subset_size(
        config.train_per_experience, len(arrays.train_labels), "train_per_experience", "training", str(directory)
    )
    n_test = _subset_size(
        config.test_per_experience, len(arrays.test_labels), "test_per_experience", "test", str(directory)
    )
    rng = np.random.default_rng(seed)
    n_pixels = int(np.prod(arrays.train_images.shape[1:]))
    permutations = draw_permutations(config.n_experiences, n_pixels, rng, config.identity_first)

    def rows_for(total: int, size: int) -> np.ndarray | None:
        # None = every image (no copy of the index); a subset is sorted to keep the file order
        return None if size == total else np.sort(rng.choice(total, size=size, replace=False))

    train_parts, test_parts = [], []
    for permutation in permutations:
        train_rows = rows_for(len(arrays.train_labels), n_train)
        test_rows = rows_for(len(arrays.test_labels), n_test)
        train_parts.append(_permuted_part(arrays.train_images, arrays.train_labels, train_rows, permutation))
        test_parts.append(_permuted_part(arrays.test_images, arrays.test_labels, test_rows, permutation))
    first = "experience 0 unpermuted" if config.identity_first else "every experience permuted"
    description = (
        f"Permuted Fashion-MNIST: {config.n_experiences} experiences, each with its own fixed pixel "
        f"permutation drawn from the run seed ({first}), domain-incremental (one 10-way head, no task "
        f"labels), {n_train} train / {n_test} test images per experience, 28x28 pixels in [0,1]"
    )
    scenario = tensor_scenario(
        train_parts,
        test_parts,
        setting="domain-incremental",
        task_labels=False,
        num_classes=FMNIST_CLASSES,
        description=description,
        input_range=(0.0, 1.0),
    )
    scenario.dataset = "fmnist"  # a backbone pre-trained on the Fashion-MNIST pool is refused here (no holdout)
    return scenario
