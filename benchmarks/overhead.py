"""Runner overhead: cl-bench's runner (naive strategy) vs a bare PyTorch loop, side by side.

Both train a model with batch 128 for 1 epoch per experience on split_fmnist (5 experiences,
12,000 training images each), from the same initial weights, with the same number of optimizer
steps, in this one process: the MLP 784-256-256-10 (``--model mlp``, default) or the ViT of the
pre-trained-backbone experiments (``--model vit_micro``: patch 7, width 64, depth 4, 4 heads).
(a) is the full cl-bench path: Avalanche template, plugins, slicing loader, evaluation after each
experience and checkpoints; (b) is a plain loop over the same tensors (shuffle, slice, forward,
backward, step) that also evaluates after each experience. Prints the wall-time ratio a/b (target
<= 1.3) and each path's throughput in training images per second of wall time. With ``--per-item``,
(c) is the same runner with the slicing disabled, so that training and evaluation go through Avalanche's
stock per-item DataLoaders (what DESIGN.md's tensor banks avoid), and its ratio to (a) is printed.

    python benchmarks/overhead.py [--model vit_micro] [--repeats 3] [--per-item] [--out benchmarks/results/overhead.txt]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from cl_bench import runner
from cl_bench.config import resolve
from cl_bench.registry import MODELS, SCENARIOS
from cl_bench.tensor_data import gather
from cl_bench.records import publish_report

MODELS_BENCHED = {"mlp": {"name": "mlp", "widths": [256, 256]}, "vit_micro": {"name": "vit_micro"}}
TRAIN = {"epochs": 1, "batch_size": 128, "lr": 0.01, "momentum": 0.9, "device": "cpu"}


def spec_for(model: str) -> dict:
    return {"scenario": "split_fmnist", "strategy": "naive", "model": MODELS_BENCHED[model], "train": TRAIN, "seed": 0}


def time_runner(spec: dict) -> tuple[float, float]:
    """(wall time of the whole run, time of its training phases as the record reports them)."""
    config = resolve(spec)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_dir = runner.execute(config, Path(out), progress=False, log=lambda line: None)
        total = time.perf_counter() - start
        return total, json.loads((run_dir / "record.json").read_text())["timing"]["train_s"]


def time_runner_per_item(spec: dict) -> tuple[float, float]:
    """:func:`time_runner` with every dataset seen as per-item (no tensor bank): Avalanche's own loaders."""
    with (
        mock.patch("cl_bench.templates.gather", return_value=None),
        mock.patch("cl_bench.tensor_data.gather", return_value=None),
    ):
        return time_runner(spec)


def time_bare_loop(spec: dict) -> tuple[float, float]:
    """(wall time of the whole loop, time of its training phases)."""
    config = resolve(spec)
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    scenario = SCENARIOS.get("split_fmnist").builder(config.components["scenario"], config.seed)
    model = MODELS.get(config.model).builder(config.components["model"], scenario)
    train_sets = [gather(e.dataset) for e in scenario.benchmark.train_stream]
    test_sets = [gather(e.dataset) for e in scenario.benchmark.test_stream]
    loss_fn = nn.CrossEntropyLoss()
    batch = config.train.batch_size
    train_time = 0.0
    for inputs, targets, _ in train_sets:
        train_start = time.perf_counter()
        optimizer = torch.optim.SGD(model.parameters(), lr=config.train.lr, momentum=config.train.momentum)
        model.train()
        order = torch.randperm(len(targets))
        inputs, targets = inputs[order], targets[order]
        for first in range(0, len(targets), batch):
            optimizer.zero_grad()
            loss = loss_fn(model(inputs[first : first + batch]), targets[first : first + batch])
            loss.backward()
            optimizer.step()
        train_time += time.perf_counter() - train_start
        model.eval()
        with torch.no_grad():
            for test_inputs, test_targets, _ in test_sets:
                correct = 0
                for first in range(0, len(test_targets), 1000):
                    logits = model(test_inputs[first : first + 1000])
                    correct += int((logits.argmax(1) == test_targets[first : first + 1000]).sum())
    return time.perf_counter() - start, train_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS_BENCHED), default="mlp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per-item", action="store_true", help="also time the runner on Avalanche's per-item loaders")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    spec = spec_for(args.model)
    time_bare_loop(spec)  # warm-up: data decoding cache, allocator, thread pool
    runner_runs, bare_runs, per_item_runs = [], [], []
    for _ in range(args.repeats):
        runner_runs.append(time_runner(spec))
        bare_runs.append(time_bare_loop(spec))
        if args.per_item:
            per_item_runs.append(time_runner_per_item(spec))
    runner_times, bare_times = [total for total, _ in runner_runs], [total for total, _ in bare_runs]
    best_runner, best_bare = min(runner_times), min(bare_times)
    runner_train, bare_train = min(train for _, train in runner_runs), min(train for _, train in bare_runs)
    images = 60000  # split_fmnist: 5 experiences x 12,000 training images, one epoch each
    title = {"mlp": "MLP 784-256-256-10", "vit_micro": "vit_micro (patch 7, width 64, depth 4, 4 heads)"}[args.model]
    lines = [
        f"benchmark: runner overhead, split_fmnist, naive, {title}, batch 128, 1 epoch/experience",
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}",
        "(a) cl-bench runner  : " + ", ".join(f"{t:.2f}s" for t in runner_times) + f"  (best {best_runner:.2f}s)",
        "(b) bare PyTorch loop: " + ", ".join(f"{t:.2f}s" for t in bare_times) + f"  (best {best_bare:.2f}s)",
        f"ratio a/b of the whole run (best of {args.repeats}): {best_runner / best_bare:.3f}   target <= 1.3",
        f"training throughput (best of {args.repeats}): runner {images / runner_train:.0f} images/s, bare loop "
        f"{images / bare_train:.0f} images/s, ratio {runner_train / bare_train:.3f}",
    ]
    if per_item_runs:
        per_item_times = [total for total, _ in per_item_runs]
        per_item_train = min(train for _, train in per_item_runs)
        lines += [
            "(c) runner, Avalanche's per-item loaders: "
            + ", ".join(f"{t:.2f}s" for t in per_item_times)
            + f"  (best {min(per_item_times):.2f}s)",
            f"ratio c/a of the whole run: {min(per_item_times) / best_runner:.2f}; training throughput "
            f"{images / per_item_train:.0f} images/s, {per_item_train / runner_train:.2f}x the slicing runner's time",
        ]
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
