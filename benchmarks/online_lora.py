"""Online-LoRA's cost per incoming mini-batch vs online fine-tuning on the same backbone, side by side.

Each strategy streams the same task-free Fashion-MNIST (disjoint, 5 hidden tasks, mini-batches of 64)
through the cl-bench runner on ``vit_micro`` in this one process; the record's training time (the
anytime and boundary evaluations excluded) divided by the number of incoming mini-batches gives the
wall time per mini-batch. Online-LoRA does more per batch than online fine-tuning: the hard buffer's
losses (up to 4 more mini-batches forward and backward), the regulariser, and at each loss plateau an
importance estimate and a merge. Prints ms per mini-batch of every strategy and its ratio to naive.

    python benchmarks/online_lora.py [--repeats 3] [--weights NAME] [--out benchmarks/results/online_lora.txt]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from cl_bench import runner
from cl_bench.config import resolve
from cl_bench.records import publish_report

STRATEGIES = ("naive", "online_er", "online_lora")


def per_batch_ms(strategy: str, weights: str) -> tuple[float, dict]:
    """(training ms per incoming mini-batch, the run's strategy_info) of one run."""
    sets = ["scenario.anytime_eval_every=50000"]  # one anytime evaluation: time the training, not the evaluation
    if weights:
        sets.append(f"model.weights={weights}")
    config = resolve(
        {}, {"scenario": "task_free_fmnist", "model": "vit_micro", "strategy": strategy, "device": "cpu"}, sets
    )
    with tempfile.TemporaryDirectory() as out:
        record = json.loads(
            (runner.execute(config, Path(out), progress=False, log=lambda line: None) / "record.json").read_text()
        )
    return 1000 * record["timing"]["train_s"] / record["stream"]["batches"], record["strategy_info"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--weights",
        default="",
        help="model.weights for vit_micro (a pretrain cache name); default: random initialisation",
    )
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    timings: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    infos: dict[str, dict] = {}
    started = time.perf_counter()
    for _ in range(args.repeats):
        for name in STRATEGIES:  # interleaved, so slow phases of the machine hit every strategy
            milliseconds, infos[name] = per_batch_ms(name, args.weights)
            timings[name].append(milliseconds)
    best = {name: min(values) for name, values in timings.items()}
    lora = infos["online_lora"].get("online_lora", {})
    lines = [
        "benchmark: wall time per incoming mini-batch (training only), task_free_fmnist disjoint, 50,000 images "
        "in mini-batches of 64, vit_micro" + (f" ({args.weights})" if args.weights else " (random init)"),
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}; {args.repeats} repeats in {time.perf_counter() - started:.0f} s",
    ]
    for name in STRATEGIES:
        lines.append(
            f"{name:12s} "
            + ", ".join(f"{t:.2f}" for t in timings[name])
            + f" ms/batch  (best {best[name]:.2f}, x{best[name] / best['naive']:.2f} naive)"
        )
    lines.append(f"online_lora plateaus (merges) in the stream: {lora.get('merges', '?')}")
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
