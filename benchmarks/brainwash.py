"""BrainWash's cost against the victim's own training, measured side by side in one process.

On task-incremental split_fmnist at its registered defaults (MLP 2x256, 2 epochs, batch 128) and
the attack's defaults: a victim (naive by default) trains experiences 1..4; then, from that same
state, (a) the victim trains the last experience on clean data, timed, and (b) ``brainwash``
poisons the last experience, timed (inversion + noise + diagnostics). Printed: the ratio (b)/(a)
per repeat. Target: <= 20. Also printed: one pass of the noise optimisation with the batches
vectorised by ``vmap`` against the same pass one batch at a time.

Usage (needs `cl-bench data prepare fmnist`; writes nothing, prints the ratios)::

    python benchmarks/brainwash.py [--strategy naive] [--repeats 3]

Run it on an otherwise idle machine; committed output: benchmarks/results/brainwash.txt.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from attacks.brainwash import BrainWashConfig, ProxySet, attacker_copy, optimise_noise
from cl_bench import checkpoint, runner
from cl_bench.attack import experience_tensors
from cl_bench.config import resolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="naive")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = resolve(
        {"scenario": {"name": "split_fmnist", "task_labels": True}, "attack": "brainwash"},
        {"strategy": args.strategy, "device": "cpu"},
    )
    run = runner.prepare(config, "unused", progress=False)
    stream = run.scenario.benchmark.train_stream
    last = len(stream) - 1
    for index in range(last):
        run.strategy.train(stream[index], eval_streams=[])
    state_dir = Path(tempfile.mkdtemp())
    attributes = run.traits.checkpoint_attributes  # the template's own state (e.g. cumulative's union)
    checkpoint.save(
        state_dir, run.strategy, {"accuracy_matrix": [], "per_experience": [], "elapsed_s": 0.0}, attributes
    )

    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"split_fmnist (task-incremental), victim {args.strategy}, attack defaults: "
        f"{BrainWashConfig().steps} steps, batch {BrainWashConfig().batch_size}, "
        f"{BrainWashConfig().inversion_steps} inversion steps"
    )
    print("repeat  victim train (s)  attack (s)  inversion  noise  diagnostics  ratio")
    ratios = []
    for repeat in range(args.repeats):
        checkpoint.load(state_dir, run.strategy, attributes)
        start = time.perf_counter()
        run.strategy.train(stream[last], eval_streams=[])
        victim_s = time.perf_counter() - start
        checkpoint.load(state_dir, run.strategy, attributes)
        start = time.perf_counter()
        run.attack.poison(stream[last], run.strategy)
        attack_s = time.perf_counter() - start
        m = run.attack.metrics()
        ratios.append(attack_s / victim_s)
        print(
            f"{repeat:6d}  {victim_s:16.2f}  {attack_s:10.2f}  {m['inversion_s']:9.2f}  {m['noise_s']:5.2f}  "
            f"{m['diagnostic_s']:11.2f}  {ratios[-1]:5.1f}"
        )
    print(
        f"attack / victim training of the same experience: median {sorted(ratios)[len(ratios) // 2]:.1f} (target <= 20)"
    )

    # one noise pass, vectorised vs one batch at a time (same arithmetic)
    inputs, targets, _ = experience_tensors(stream[last])
    model = attacker_copy(run.strategy.model, "train")
    proxy = ProxySet(
        torch.rand(last, 128, *inputs.shape[1:]),
        torch.zeros(last, 128, dtype=torch.long)
        + torch.tensor([c[0] for c in run.scenario.classes_per_experience[:last]]).unsqueeze(1),
        list(range(last)),
    )
    for batch_size in (128, 512):
        timings = {}
        for vectorize in (False, True):
            one_pass = BrainWashConfig(steps=2, batch_size=batch_size)
            start = time.perf_counter()
            optimise_noise(
                model,
                inputs,
                targets,
                last,
                proxy,
                one_pass,
                (0.0, 1.0),
                torch.Generator().manual_seed(0),
                vectorize=vectorize,
            )
            timings[vectorize] = (time.perf_counter() - start) / 2
        print(
            f"noise pass, batch {batch_size}: one batch at a time {timings[False]:.2f} s, vmap {timings[True]:.2f} s "
            f"(x{timings[False] / timings[True]:.2f})"
        )


if __name__ == "__main__":
    main()
