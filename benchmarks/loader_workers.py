"""Images per second the training loader delivers for 224-px Split CIFAR-100, in-process vs worker processes.

The SLCA presets read CIFAR-100 image by image through SLCA's 224-px pipeline (RandomResizedCrop(224,
bicubic) + flip + ColorJitter + ToTensor + Normalize); at 2–4 ms per image the loader, not a GPU, bounds
the run. ``train.num_workers`` hands that work to worker processes. This script builds the first training
experience of ``split_cifar100`` as the ``slca_cifar100`` preset sets it (``image_size=224``,
``augment=true``, ``normalize=true``) through the registry, on a
CIFAR-100 of random pixels that it writes itself in the official pickle layout (the pixels do not change the
cost of the transforms), and iterates Avalanche's training loader (``TaskBalancedDataLoader``, the one a
strategy gets) for each worker count side by side, with the keywords the runner passes. No model: this
is the loader's ceiling, what it can feed a GPU. Prints images/s and the ratio to the in-process loader.

    python benchmarks/loader_workers.py [--workers 0 1 2] [--epochs 2] [--out benchmarks/results/loader_workers.txt]
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from avalanche.benchmarks.utils.data_loader import TaskBalancedDataLoader

from cl_bench.config import TrainConfig, build_config
from cl_bench.registry import SCENARIOS
from cl_bench.runner import loader_options
from cl_bench.records import publish_report


def write_random_cifar100(root: Path, train_per_class: int, seed: int = 0) -> None:
    """A CIFAR-100 of random pixels in the official python pickle layout under ``root/cifar100``."""
    folder = root / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("test", 1)):
        labels = rng.permutation(np.repeat(np.arange(100), per_class))
        pixels = rng.integers(0, 256, size=(len(labels), 3 * 32 * 32), dtype=np.uint8)
        content = {
            b"fine_labels": labels.tolist(),
            b"coarse_labels": (labels // 5).tolist(),
            b"data": pixels,
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
        }
        (folder / split).write_bytes(pickle.dumps(content, protocol=4))
    meta = {
        b"fine_label_names": [f"class_{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=4))


def images_per_second(dataset, workers: int, epochs: int, batch_size: int) -> float:
    """Steady-state throughput: the first epoch starts the workers, the later ones are timed."""
    options = loader_options(TrainConfig(num_workers=workers))
    loader = TaskBalancedDataLoader(
        dataset, oversample_small_groups=True, batch_size=batch_size, shuffle=True, **options
    )
    for _ in loader:  # warm-up epoch (worker start-up, first file reads)
        pass
    started, images = time.perf_counter(), 0
    for _ in range(epochs):
        for inputs, _, _ in loader:
            images += len(inputs)
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch")
    parser.add_argument("--train-per-class", type=int, default=100, help="training images per class (1,000 per task)")
    parser.add_argument("--batch-size", type=int, default=128, help="SLCA's mini-batch size (the preset's)")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as root:
        write_random_cifar100(Path(root), args.train_per_class)
        os.environ["CL_BENCH_DATA"] = root
        entry = SCENARIOS.get("split_cifar100")
        config = build_config(entry.config_class, {"image_size": 224, "augment": True, "normalize": True}, "scenario")
        dataset = entry.builder(config, 0).benchmark.train_stream[0].dataset.train()
        throughput = {
            workers: images_per_second(dataset, workers, args.epochs, args.batch_size) for workers in args.workers
        }
    baseline = throughput[args.workers[0]]
    lines = [
        f"benchmark: training loader of split_cifar100 (image_size 224, augment: SLCA's RandomResizedCrop + flip + "
        f"ColorJitter, normalize), {len(dataset)} images of the first experience, batch {args.batch_size}, "
        f"{args.epochs} timed "
        f"epochs after a warm-up epoch, no model",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}",
    ]
    for workers, rate in throughput.items():
        lines.append(
            f"train.num_workers={workers}: {rate:7.0f} images/s  ({1000 / rate:.2f} ms per image, "
            f"x{rate / baseline:.2f})"
        )
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
