"""Rashomon Capacity: Blahut-Arimoto batched over samples in torch vs the per-sample Python loop, side by side.

Both compute ``RC = 2^C`` per sample (``evaluators.multiplicity``: same 1e-12 floor, same per-sample stopping
rule ``mean_j (r_j - pi_j)^2 < 1e-12``, at most 1000 iterations, float64) on the same (n, m, K) tensors in
this one process. The loop is the spec's steps written out one sample at a time, as the official code does
them (there with a multiprocessing pool). The probabilities are "Dirichlet-ish" dropout-like model sets: per
sample a reference logit vector ~ N(0, 3^2), and per model that vector plus N(0, spread^2) noise, softmaxed;
the spread varies over samples in [0, 2], so some samples have near-identical models (RC near 1) and others
widely different ones. Prints the seconds of each path, the ratio loop/batched (target >= 10) and the largest
absolute difference of the RC values.

    python benchmarks/rashomon_capacity.py [--samples 2000] [--models 100] [--repeats 1] \
        [--out benchmarks/results/rashomon_capacity.txt]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from cl_bench.records import publish_report
from evaluators.multiplicity import rashomon_capacity, rashomon_capacity_loop


def model_set(n_samples: int, n_models: int, n_classes: int, seed: int) -> torch.Tensor:
    """(n, m, K) float32 softmax probabilities of ``n_models`` perturbed copies of a reference per sample."""
    generator = torch.Generator().manual_seed(seed)
    reference_logits = 3.0 * torch.randn(n_samples, 1, n_classes, generator=generator)
    spread = 2.0 * torch.rand(n_samples, 1, 1, generator=generator)
    noise = torch.randn(n_samples, n_models, n_classes, generator=generator)
    return torch.softmax(reference_logits + spread * noise, dim=-1)


def best_seconds(function, probabilities: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    best, result = float("inf"), torch.empty(0)
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(probabilities)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--repeats", type=int, default=1, help="timings per path (best of)")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the runner's default (train.threads)
    started = time.perf_counter()
    rows = []
    for n_classes in args.classes:
        probabilities = model_set(args.samples, args.models, n_classes, seed=n_classes)
        rashomon_capacity(probabilities[:8])  # warm-up
        batched_s, batched = best_seconds(rashomon_capacity, probabilities, args.repeats)
        loop_s, looped = best_seconds(rashomon_capacity_loop, probabilities, args.repeats)
        rows.append(
            f"K={n_classes:<3d} batched {batched_s:8.2f} s   loop {loop_s:8.2f} s"
            f"   loop/batched {loop_s / batched_s:6.1f}x"
            f"   max |RC difference| {(batched - looped).abs().max().item():.1e}"
            f"   RC median {batched.median().item():.3f}, max {batched.max().item():.3f}"
        )
    lines = [
        f"benchmark: Rashomon Capacity (Blahut-Arimoto), n={args.samples} samples, m={args.models} models, "
        f"batched torch vs per-sample loop (target loop/batched >= 10x)",
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}; best of {args.repeats}, {time.perf_counter() - started:.0f} s in all",
        *rows,
    ]
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
