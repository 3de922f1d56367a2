"""GPM's costs, measured side by side in one process on permuted_fmnist with the bias-free 2x100 MLP.

1. Memory update (representation pass + SVD + criterion, GPM's ``after_training_exp``) as a
   fraction of the task's training time. Target: <= 10%.
2. A GPM training step (with the projection active: memory from earlier tasks) against a naive
   step, same model, same batch (the scenario's batch of 10), through the same Avalanche
   template. Target: <= 1.5x. Also printed: the same two steps in a bare PyTorch loop, which
   isolates the projection's own cost from Avalanche's per-iteration overhead (there a 0.4 ms
   step has nothing to hide a few extra matrix products behind).

Usage (needs `cl-bench data prepare fmnist`; writes nothing, prints the ratios)::

    python benchmarks/gpm.py [--experiences 3] [--repeats 3]

Run it on an otherwise idle machine; committed output: benchmarks/results/gpm.txt.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from cl_bench import runner
from cl_bench.config import resolve
from strategies.gpm import GPMPlugin


def prepared(strategy: str):
    config = resolve({}, {"scenario": "permuted_fmnist", "strategy": strategy, "device": "cpu"})
    return runner.prepare(config, "unused", progress=False)


def gpm_plugin(strategy) -> GPMPlugin:
    return next(plugin for plugin in strategy.plugins if isinstance(plugin, GPMPlugin))


def memory_update_fraction(n_experiences: int) -> list[tuple[float, float]]:
    """(training seconds without the update, update seconds) per experience."""
    run = prepared("gpm")
    plugin = gpm_plugin(run.strategy)
    update_seconds: list[float] = []
    original_update = plugin.after_training_exp

    def timed_update(strategy, **kwargs):
        start = time.perf_counter()
        original_update(strategy, **kwargs)
        update_seconds.append(time.perf_counter() - start)

    plugin.after_training_exp = timed_update
    results = []
    for index in range(n_experiences):
        start = time.perf_counter()
        run.strategy.train(run.scenario.benchmark.train_stream[index], eval_streams=[])
        total = time.perf_counter() - start
        results.append((total - update_seconds[-1], update_seconds[-1]))
    return results


def template_step_seconds(repeats: int, warm_experiences: int = 2) -> tuple[float, float, int, list[int]]:
    """Best-of-``repeats`` seconds per step of naive and gpm (projection active), the batch, the memory sizes."""
    runs = {name: prepared(name) for name in ("naive", "gpm")}
    stream = runs["gpm"].scenario.benchmark.train_stream
    for name, run in runs.items():
        run.strategy.train_epochs = 1
        for index in range(warm_experiences):
            run.strategy.train(stream[index], eval_streams=[])
    plugin = gpm_plugin(runs["gpm"].strategy)
    memory_sizes = [basis.shape[1] for basis in plugin.bases.values()]
    plugin.after_training_exp = lambda strategy, **kwargs: None  # time the steps only
    best = {name: float("inf") for name in runs}
    experience = stream[warm_experiences]
    for _ in range(repeats):
        for name, run in runs.items():  # interleaved, so drifts in machine load hit both
            start = time.perf_counter()
            run.strategy.train(experience, eval_streams=[])
            steps = -(-len(experience.dataset) // run.strategy.train_mb_size)
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best["naive"], best["gpm"], runs["gpm"].strategy.train_mb_size, memory_sizes


def bare_step_seconds(basis_sizes: list[int], batch: int, steps: int = 2000) -> tuple[float, float]:
    """Seconds per step of a plain PyTorch SGD loop on the 2x100 MLP, without and with the projection.

    The projection is done as the plugin does it for small batches: on each layer's input rows
    (``G' = g^T (X - X M M^T)``), with the layer inputs and output gradients kept by the loop itself.
    """
    torch.manual_seed(0)
    shapes = ((784, 100), (100, 100), (100, 10))
    weights = [torch.nn.Parameter(torch.randn(out, dim) * dim**-0.5) for dim, out in shapes]
    bases = [torch.linalg.qr(torch.randn(w.shape[1], size))[0] for w, size in zip(weights, basis_sizes)]
    optimizer = torch.optim.SGD(weights, lr=0.01)
    inputs, targets = torch.randn(batch, 784), torch.randint(0, 10, (batch,))

    def run(project: bool) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad()
            layer_inputs, outputs, hidden = [], [], inputs
            for index, weight in enumerate(weights):
                layer_inputs.append(hidden)
                output = hidden @ weight.T
                output.retain_grad()
                outputs.append(output)
                hidden = torch.relu(output) if index < 2 else output
            torch.nn.functional.cross_entropy(hidden, targets).backward()
            if project:
                for weight, basis, layer_input, output in zip(weights, bases, layer_inputs, outputs):
                    weight.grad.copy_(output.grad.T @ (layer_input - (layer_input @ basis) @ basis.T))
            optimizer.step()
        return (time.perf_counter() - start) / steps

    run(False), run(True)  # warm-up
    timings = [(run(False), run(True)) for _ in range(5)]  # interleaved, best of 5
    return min(t[0] for t in timings), min(t[1] for t in timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiences", type=int, default=3, help="experiences timed for the memory update")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats of the step timing (best of)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the runner's default (train.threads)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, permuted_fmnist defaults (5 epochs, batch 10, 5000 images/task)"
    )

    start = time.perf_counter()
    torch.linalg.svd(torch.randn(784, 300, dtype=torch.float64), full_matrices=False)
    print(
        f"\n0. one-time LAPACK initialisation (first SVD of the process, excluded below): "
        f"{(time.perf_counter() - start) * 1e3:.0f} ms"
    )

    print("\n1. memory update vs task training time (target <= 10%)")
    fractions = []
    for index, (train_seconds, update_seconds) in enumerate(memory_update_fraction(args.experiences)):
        fractions.append(update_seconds / train_seconds)
        print(
            f"   task {index + 1}: training {train_seconds:7.2f} s, memory update {update_seconds * 1000:7.1f} ms, "
            f"fraction {fractions[-1]:.2%}"
        )
    print(f"   worst fraction: {max(fractions):.2%}")

    naive_step, gpm_step, batch, memory_sizes = template_step_seconds(args.repeats)
    print(f"\n2. training step, batch {batch}, projection active after 2 tasks (target <= 1.5x)")
    print(
        f"   naive {naive_step * 1e3:.3f} ms/step, gpm {gpm_step * 1e3:.3f} ms/step, "
        f"ratio gpm/naive {gpm_step / naive_step:.2f}"
    )
    print(f"   memory after 2 tasks: {memory_sizes} of [784, 100, 100] dimensions")
    bare_naive, bare_gpm = bare_step_seconds(memory_sizes, batch)
    print(
        f"   bare PyTorch loop, same memory: naive {bare_naive * 1e3:.3f} ms/step, "
        f"gpm {bare_gpm * 1e3:.3f} ms/step, ratio {bare_gpm / bare_naive:.2f}"
    )


if __name__ == "__main__":
    main()
