"""Does gpm_sparse learn new tasks badly because test time drops the heterogeneous-dropout masks?

Trains gpm_sparse (suite defaults) on the Continual Swiss Roll and, after each task, measures the
accuracy on that task's test set twice: as the runner does (eval mode: no dropout, every unit
competes in k-WTA) and with the dropout keep-probabilities that task was trained with (mean over 20
mask draws; no counting, no gradients; the run itself is not changed). A large gap means the units that a new
task was trained through lose the
k-WTA competition to old tasks' units at test time.

    python analysis/hd_eval_mismatch.py [--seed 0] [--scenario continual_swiss_roll]
"""

from __future__ import annotations

import argparse

import torch

from cl_bench import runner
from cl_bench.config import resolve
from cl_bench.models.kwta import KWTA
from cl_bench.tensor_data import gather


@torch.no_grad()
def accuracy(model, inputs, targets, task_labels, with_masks: bool, draws: int = 20) -> float:
    units = [m for m in model.modules() if isinstance(m, KWTA)]
    model.eval()
    if not with_masks:
        return (
            float((model(inputs).argmax(1) == targets).float().mean())
            if not hasattr(model, "heads")
            else float((model(inputs, task_labels).argmax(1) == targets).float().mean())
        )
    for unit in units:  # dropout on, counting off, everything else in eval mode
        unit.train()
        unit.counting = False
    scores = []
    for _ in range(draws):
        logits = model(inputs, task_labels) if hasattr(model, "heads") else model(inputs)
        scores.append(float((logits.argmax(1) == targets).float().mean()))
    for unit in units:
        unit.eval()
        unit.counting = True
    return sum(scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", default="continual_swiss_roll")
    args = parser.parse_args()
    # the committed output is on the raw Swiss roll (v1), measured before the v2 lift became the default
    v1_roll = ["scenario.lift_dim=0", "scenario.validation_fraction=0"]
    if args.scenario != "continual_swiss_roll":
        v1_roll = []
    config = resolve(
        {}, {"scenario": args.scenario, "strategy": "gpm_sparse", "device": "cpu", "seed": args.seed}, v1_roll
    )
    run = runner.prepare(config, "unused", progress=False)
    train_stream, test_stream = run.scenario.benchmark.train_stream, run.scenario.benchmark.test_stream
    print(f"{args.scenario}, gpm_sparse defaults, seed {args.seed}: accuracy on the task just learnt")
    print("task  eval mode (as recorded)  with dropout masks  gap")
    gaps = []
    units = [m for m in run.strategy.model.modules() if isinstance(m, KWTA)]
    for index in range(run.scenario.n_experiences):
        training_masks = [unit.keep_probability.clone() for unit in units]  # the ones this task trains with
        run.strategy.train(train_stream[index], eval_streams=[])
        rng_state = torch.get_rng_state()  # the measurement must not change the rest of the run
        inputs, targets, task_labels = gather(test_stream[index].dataset)
        plain = accuracy(run.strategy.model, inputs, targets, task_labels, with_masks=False)
        next_masks = [unit.keep_probability.clone() for unit in units]
        for unit, keep in zip(units, training_masks):
            unit.keep_probability.copy_(keep)
        masked = accuracy(run.strategy.model, inputs, targets, task_labels, with_masks=True)
        for unit, keep in zip(units, next_masks):
            unit.keep_probability.copy_(keep)
        torch.set_rng_state(rng_state)
        run.strategy.model.train()
        gaps.append(masked - plain)
        print(f"{index + 1:>4}  {plain:23.3f}  {masked:18.3f}  {masked - plain:+.3f}")
    print(f"mean gap over tasks 2..{len(gaps)}: {sum(gaps[1:]) / max(1, len(gaps) - 1):+.3f}")


if __name__ == "__main__":
    main()
