"""GPM's permuted protocol through cl-bench against a bare PyTorch GPM loop, side by side in one process.

``cl-bench run --preset pmnist --strategy gpm`` is 300,000 optimizer steps of batch 10, where the cost per step
is dominated by overhead, not arithmetic. This times a fixed prefix of that preset (the first ``--tasks``
tasks, all 5 epochs each, the preset's 54,000 training images per task after the 10% validation hold-out):

(a) the whole cl-bench run (``runner.execute``: Avalanche template, plugins, slicing loader, evaluation of the
    test experiences and the validation parts after each task, checkpoints, the record), and
(b) a bare loop over the same tensors from the same initial weights: shuffle, slice, forward, cross-entropy,
    backward, GPM's projection of every layer's gradient (the input-side form the plugin uses at batch 10),
    plain SGD; at each task end GPM's memory update (``strategies.gpm.update_basis`` on 300 training inputs
    per layer, thresholds 0.95 / 0.99 / 0.99) and the same evaluations.

Both include building the scenario (the same ``runner.prepare``); both run with the runner's default of one
torch thread. Prints the ratio a/b of the wall times (target <= 1.2).

    python benchmarks/gpm_protocol.py [--tasks 2] [--repeats 2] [--out benchmarks/results/gpm_protocol.txt]

Needs ``cl-bench data prepare fmnist``. Run it on an otherwise idle machine.
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
from cl_bench.records import publish_report
from cl_bench.tensor_data import gather
from strategies.gpm import update_basis

THRESHOLDS = (0.95, 0.99, 0.99)
REPRESENTATION_SAMPLES = 300


def preset_config(tasks: int):
    return resolve(
        {},
        {"preset": "pmnist", "strategy": "gpm", "device": "cpu"},
        [f"scenario.n_experiences={tasks}", "train.threads=1"],
    )


def time_runner(tasks: int) -> float:
    config = preset_config(tasks)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        runner.execute(config, Path(out), progress=False, log=lambda line: None)
        return time.perf_counter() - start


def accuracy(layers: list[nn.Linear], inputs: torch.Tensor, targets: torch.Tensor, batch: int) -> float:
    correct = 0
    with torch.no_grad():
        for first in range(0, len(targets), batch):
            correct += int(
                (
                    forward(layers, inputs[first : first + batch])[1][-1].argmax(1) == targets[first : first + batch]
                ).sum()
            )
    return correct / len(targets)


def forward(layers: list[nn.Linear], inputs: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The bias-free ReLU MLP of the preset: (every layer's input, every layer's output; the last is the logits)."""
    layer_inputs, outputs, hidden = [], [], inputs
    for index, layer in enumerate(layers):
        layer_inputs.append(hidden)
        outputs.append(layer(hidden))
        hidden = torch.relu(outputs[-1]) if index < len(layers) - 1 else outputs[-1]
    return layer_inputs, outputs


def _flat(tensors) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = tensors[0], tensors[1]
    return inputs.reshape(len(inputs), -1), targets


def time_bare_loop(tasks: int) -> float:
    config = preset_config(tasks)
    torch.set_num_threads(1)
    start = time.perf_counter()  # the scenario build (permuting 60,000 images per task) is in both timings
    prepared = runner.prepare(config, Path("unused"), progress=False)  # the same tensors and initial weights
    layers = [module for module in prepared.strategy.model.modules() if isinstance(module, nn.Linear)]
    benchmark = prepared.scenario.benchmark
    train_sets = [_flat(gather(experience.dataset)) for experience in benchmark.train_stream]
    test_sets = [_flat(gather(experience.dataset)) for experience in benchmark.test_stream]
    validation_sets = [_flat(gather(dataset)) for dataset in prepared.scenario.validation]
    train = config.train
    bases: list = [None] * len(layers)
    for inputs, targets in train_sets:
        optimizer = torch.optim.SGD([layer.weight for layer in layers], lr=train.lr)
        projectors = [None if basis is None else basis.to(torch.float32) for basis in bases]
        for _ in range(train.epochs):
            order = torch.randperm(len(targets))
            for first in range(0, len(targets), train.batch_size):
                rows = order[first : first + train.batch_size]
                optimizer.zero_grad()
                layer_inputs, outputs = forward(layers, inputs[rows])
                for output in outputs:
                    output.retain_grad()
                nn.functional.cross_entropy(outputs[-1], targets[rows]).backward()
                for layer, layer_input, output, projector in zip(layers, layer_inputs, outputs, projectors):
                    if projector is not None:
                        # G = g^T X, so G - G M M^T = g^T (X - X M M^T): project the batch's input rows
                        layer_input = layer_input.detach()
                        projected = torch.addmm(layer_input, layer_input @ projector, projector.T, alpha=-1)
                        torch.mm(output.grad.T, projected, out=layer.weight.grad)
                optimizer.step()
        sample = torch.randperm(len(targets))[:REPRESENTATION_SAMPLES]
        with torch.no_grad():
            representation = forward(layers, inputs[sample])[0]
        bases = [
            update_basis(basis, layer_input.T, threshold)
            for basis, layer_input, threshold in zip(bases, representation, THRESHOLDS)
        ]
        for eval_inputs, eval_targets in test_sets + validation_sets:
            accuracy(layers, eval_inputs, eval_targets, train.eval_batch_size)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2, help="tasks of the pmnist preset timed (all 5 epochs each)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats (best of)")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    runner_times, bare_times = [], []
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both
        runner_times.append(time_runner(args.tasks))
        bare_times.append(time_bare_loop(args.tasks))
    steps = args.tasks * 5 * 5400
    best_runner, best_bare = min(runner_times), min(bare_times)
    lines = [
        f"benchmark: the pmnist preset's first {args.tasks} tasks with gpm ({steps} steps of batch 10), cl-bench run "
        f"vs a bare PyTorch GPM loop",
        f"machine: {platform.processor() or platform.machine()}, 1 torch thread, torch {torch.__version__}",
        "(a) cl-bench run      : " + ", ".join(f"{t:.1f}s" for t in runner_times) + f"  (best {best_runner:.1f}s, "
        f"{best_runner / steps * 1e3:.3f} ms/step)",
        "(b) bare PyTorch loop : " + ", ".join(f"{t:.1f}s" for t in bare_times) + f"  (best {best_bare:.1f}s, "
        f"{best_bare / steps * 1e3:.3f} ms/step)",
        f"ratio a/b (best of {args.repeats}): {best_runner / best_bare:.3f}   target <= 1.2",
        "ratio a/b of each interleaved pair: " + ", ".join(f"{a / b:.3f}" for a, b in zip(runner_times, bare_times)),
    ]
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
