"""The pre-training pool: training images held out of every stream that uses a pre-trained backbone.

A backbone pre-trained by ``cl-bench pretrain`` must not have seen the images of the continual
stream it is later evaluated on. The pool is a fixed, stratified sixth of the Fashion-MNIST
training set (1,000 images per class on the real data, 10,000 in all), drawn once with a fixed
seed that does not depend on the run seed, so every pre-training run and every stream agree on it.
Streams built with ``holdout_pretrain_pool=true`` (the task-free scenarios always) use the
complement only; a test checks that the two never share an image.
"""

from __future__ import annotations

import numpy as np

POOL_NAME = "fmnist-train-pool"
POOL_FRACTION = 1 / 6  # of each class: 1,000 of the 6,000 training images per Fashion-MNIST class
POOL_SEED = 20261130  # fixed: the pool is the same for every run and every seed


def pool_indices(train_labels: np.ndarray) -> np.ndarray:
    """Sorted row indices of the pre-training pool in the training set with these labels."""
    labels = np.asarray(train_labels)
    rng = np.random.default_rng(POOL_SEED)
    chosen = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        count = max(1, int(round(len(rows) * POOL_FRACTION)))
        chosen.append(rng.choice(rows, size=count, replace=False))
    return np.sort(np.concatenate(chosen))


def stream_indices(train_labels: np.ndarray) -> np.ndarray:
    """Sorted row indices of every training image outside the pool (what a held-out stream may use)."""
    mask = np.ones(len(train_labels), dtype=bool)
    mask[pool_indices(train_labels)] = False
    return np.flatnonzero(mask)


def pool_description(train_labels: np.ndarray) -> dict:
    """What a backbone card records about the pool."""
    rows = pool_indices(train_labels)
    return {
        "name": POOL_NAME,
        "dataset": "fmnist",
        "split": "train",
        "size": int(len(rows)),
        "fraction_per_class": POOL_FRACTION,
        "seed": POOL_SEED,
    }
