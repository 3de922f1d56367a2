"""Runner overhead: cl-bench's runner (naive strategy) vs a bare PyTorch loop, side by side.

Both train an MLP 784-256-256-10 with batch 128 for 1 epoch per experience on split_fmnist
(5 experiences, 12,000 training images each), from the same initial weights, with the same
number of optimizer steps, in this one process. (a) is the full cl-bench path: Avalanche
template, plugins, slicing loader, evaluation after each experience and checkpoints; (b) is a
plain loop over the same tensors (shuffle, slice, forward, backward, step) that also evaluates
after each experience. Prints the wall-time ratio a/b; target <= 1.3.

    python benchmarks/overhead.py [--repeats 3] [--out benchmarks/results/overhead.txt]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from cl_bench import runner
from cl_bench.config import resolve
from cl_bench.registry import MODELS, SCENARIOS
from cl_bench.tensor_data import gather

SPEC = {"scenario": "split_fmnist", "strategy": "naive", "model": {"name": "mlp", "widths": [256, 256]},
        "train": {"epochs": 1, "batch_size": 128, "lr": 0.01, "momentum": 0.9, "device": "cpu"}, "seed": 0}


def time_runner() -> float:
    config = resolve(SPEC)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        runner.execute(config, Path(out), progress=False, log=lambda line: None)
        return time.perf_counter() - start


def time_bare_loop() -> float:
    config = resolve(SPEC)
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    scenario = SCENARIOS.get("split_fmnist").builder(config.components["scenario"], config.seed)
    model = MODELS.get("mlp").builder(config.components["model"], scenario)
    train_sets = [gather(e.dataset) for e in scenario.benchmark.train_stream]
    test_sets = [gather(e.dataset) for e in scenario.benchmark.test_stream]
    loss_fn = nn.CrossEntropyLoss()
    batch = config.train.batch_size
    for inputs, targets, _ in train_sets:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.train.lr, momentum=config.train.momentum)
        model.train()
        order = torch.randperm(len(targets))
        inputs, targets = inputs[order], targets[order]
        for first in range(0, len(targets), batch):
            optimizer.zero_grad()
            loss = loss_fn(model(inputs[first:first + batch]), targets[first:first + batch])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for test_inputs, test_targets, _ in test_sets:
                correct = 0
                for first in range(0, len(test_targets), 1000):
                    logits = model(test_inputs[first:first + 1000])
                    correct += int((logits.argmax(1) == test_targets[first:first + 1000]).sum())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    time_bare_loop()  # warm-up: data decoding cache, allocator, thread pool
    runner_times, bare_times = [], []
    for _ in range(args.repeats):
        runner_times.append(time_runner())
        bare_times.append(time_bare_loop())
    best_runner, best_bare = min(runner_times), min(bare_times)
    lines = [
        "benchmark: runner overhead, split_fmnist, naive, MLP 784-256-256-10, batch 128, 1 epoch/experience",
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}",
        f"(a) cl-bench runner  : " + ", ".join(f"{t:.2f}s" for t in runner_times) + f"  (best {best_runner:.2f}s)",
        f"(b) bare PyTorch loop: " + ", ".join(f"{t:.2f}s" for t in bare_times) + f"  (best {best_bare:.2f}s)",
        f"ratio a/b (best of {args.repeats}): {best_runner / best_bare:.3f}   target <= 1.3",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
