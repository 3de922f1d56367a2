"""Why the Continual Swiss Roll v2's bandwidth decides whether GPM can protect: the input space the tasks share.

GPM protects an old task by keeping new gradients out of the span of the old tasks' layer inputs. That works
only if a new task's inputs lie mostly *outside* that span; otherwise it must either learn in the protected
directions (forgetting) or barely learn. For the first layer the inputs are the scenario's features, so this
is a property of the data alone, independent of any network. For every bandwidth of the random Fourier
feature lift (and the raw 3-D input), this script builds GPM's first-layer memory from the tasks' training
inputs (the same update as ``strategies.gpm.update_basis``, threshold 0.97) and prints, per task, how much of
that task's input energy the earlier tasks' memory already explains, and how many of the input dimensions the
memory holds after the last task.

    python analysis/swiss_roll_lift.py [--seed 0] [--samples 300]
"""

from __future__ import annotations

import argparse

import torch

from scenarios.continual_swiss_roll import ContinualSwissRollConfig, generate_task
from strategies.gpm import update_basis

BANDWIDTHS = (0.125, 0.25, 0.5, 1.0)
THRESHOLD = 0.97


def explained_fraction(basis: torch.Tensor | None, inputs: torch.Tensor) -> float:
    """Fraction of ``inputs``' energy (rows are samples) inside the span of ``basis`` (d, r)."""
    if basis is None or basis.shape[1] == 0:
        return 0.0
    inside = inputs @ basis
    return float((inside**2).sum() / (inputs**2).sum())


def memory_walk(config: ContinualSwissRollConfig, seed: int, samples: int) -> tuple[list[float], int, int]:
    """Per task: energy already explained by the earlier tasks' memory; final memory size; input dimension."""
    basis = None
    explained = []
    for task in range(config.n_tasks):
        x_train = torch.from_numpy(generate_task(config, seed, task)[0][:samples]).double()
        explained.append(explained_fraction(basis, x_train))
        basis = update_basis(basis, x_train.T, THRESHOLD)
    return explained, int(basis.shape[1]), int(x_train.shape[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=300, help="training inputs per task (GPM's default 300)")
    args = parser.parse_args()
    variants = [("raw 3-D (lift_dim 0)", ContinualSwissRollConfig(lift_dim=0))]
    variants += [
        (f"lift 100, bandwidth {bandwidth}", ContinualSwissRollConfig(lift_dim=100, lift_bandwidth=bandwidth))
        for bandwidth in BANDWIDTHS
    ]
    print(
        f"GPM first-layer memory on the Continual Swiss Roll, threshold {THRESHOLD}, {args.samples} training "
        f"inputs per task, seed {args.seed}"
    )
    print("energy of task t's inputs already inside the memory of tasks < t (GPM can only learn task t in the rest)")
    header = "variant                        " + " ".join(f"t{task + 1:<4d}" for task in range(1, 10))
    print(header + "  mean   memory after task 10")
    for name, config in variants:
        explained, memory, dim = memory_walk(config, args.seed, args.samples)
        later = explained[1:]
        cells = " ".join(f"{value:5.3f}" for value in later)
        print(f"{name:<30s} {cells}  {sum(later) / len(later):5.3f}  {memory} of {dim}")


if __name__ == "__main__":
    main()
