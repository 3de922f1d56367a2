"""Dropout exploration against re-training, side by side in one run, on the Rashomon paper's tabular setting.

The paper (Hsu et al., ICLR 2024) claims dropout explores the Rashomon set 20x to 5,000x faster than re-training
and, at the same loss tolerance epsilon, finds at least as much multiplicity. This trains the scenario's
recommended model once (``tabular``: breast cancer, the paper's 1 x 1,000 MLP, SGD lr 1e-3, 100 epochs), then runs
``rashomon_dropout`` on it with the same budget of candidate models for every explorer:

* re-training: ``--seeds`` models for each of the paper's UCI epoch counts 20, 25, ..., 55 (8 x 5 = 40 models),
  each a complete cl-bench training run of the same config with another seed;
* Gaussian dropout (the paper's runtime comparison) and Bernoulli dropout: the 20 non-zero rates of the paper's
  UCI grids x 2 models (40 models each), one mask per model;
* and, as the paper runs it, each dropout on its whole UCI grid (21 rates x 100 models = 2,100 models).

Time per model: a re-trained model's training time (``timing.train_s`` of its record, no evaluation) against a
dropout model's inference pass over the test set. Printed per epsilon of the paper's UCI grid: the models each
explorer admits and the ambiguity they find. Targets: speed-up >= 20x; dropout's ambiguity >= re-training's.

    python benchmarks/rashomon_dropout.py [--dataset breast_cancer] [--seeds 5]
        [--out benchmarks/results/rashomon_dropout.txt]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from cl_bench import evaluation, runner
from cl_bench.config import resolve
from cl_bench.records import publish_report
from evaluators.rashomon_dropout import UCI_RATES

RETRAINING_EPOCHS = [20, 25, 30, 35, 40, 45, 50, 55]


def evaluate(run_dir: Path, settings: dict) -> dict:
    (spec,) = evaluation.resolve_evaluators([{"name": "rashomon_dropout", **settings}])
    evaluation.evaluate_runs([run_dir], [spec], force=True, log=lambda line: None)
    return json.loads(evaluation.evaluation_path(run_dir, spec).read_text())


def pooled(artefact: dict, explorer: str) -> dict[float, dict]:
    return {row["epsilon"]: row for row in artefact["rows"] if row["explorer"] == explorer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="breast_cancer")
    parser.add_argument("--seeds", type=int, default=5, help="re-trained models per epoch count")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as workdir:
        config = resolve({"scenario": "tabular"}, {"device": "cpu"}, [f"scenario.dataset={args.dataset}"])
        run_dir = runner.execute(config, Path(workdir), progress=False, log=lambda line: None)
        models = 40
        common = {"models_per_rate": models // 20, "mask_scope": "per_model"}
        started = time.perf_counter()
        retraining = evaluate(
            run_dir,
            {
                **common,
                "rates": [0.0],
                "models_per_rate": 1,
                "retraining_seeds": args.seeds,
                "retraining_epochs": RETRAINING_EPOCHS,
            },
        )
        retraining_wall = time.perf_counter() - started
        explorers = {
            kind: evaluate(run_dir, {**common, "dropout": kind, "rates": UCI_RATES[kind][1:]})
            for kind in ("gaussian", "bernoulli")
        }
        # the paper's own budget: the whole UCI grid, 21 rates x 100 models (2,100 models, about a second)
        explorers.update(
            {f"{kind}-grid": evaluate(run_dir, {"dropout": kind, "mask_scope": "per_model"}) for kind in UCI_RATES}
        )
    retrained_models = len(RETRAINING_EPOCHS) * args.seeds
    retrain_time = retraining["metrics"]["retraining_seconds_per_model"]
    lines = [
        f"rashomon_dropout vs re-training on tabular/{args.dataset} ({platform.processor() or platform.machine()}, "
        f"1 torch thread); reference model: test loss {retraining['metrics']['reference_loss']:.4f}, "
        f"accuracy {retraining['metrics']['reference_accuracy']:.4f}",
        f"re-training: {retrained_models} models (epochs {RETRAINING_EPOCHS[0]}..{RETRAINING_EPOCHS[-1]} x "
        f"{args.seeds} seeds), {retrain_time:.4f} s of training per model ({retraining_wall:.1f} s wall, runs "
        f"included)",
    ]
    for kind, artefact in explorers.items():
        seconds = artefact["metrics"]["seconds_per_model"]
        if kind.endswith("-grid"):
            continue
        lines.append(
            f"{kind} dropout: {int(artefact['metrics']['models_drawn'])} models, {seconds:.6f} s per model: "
            f"speed-up {retrain_time / seconds:.0f}x (target >= 20x)"
        )
    names = ["retrain", *explorers]
    lines += ["", "admitted models and ambiguity per epsilon (x-grid: the paper's full grid, 2,100 models)", ""]
    lines.append("epsilon  " + "  ".join(f"{name:>16}" for name in names))
    rows = pooled(retraining, "retraining")
    dropout_rows = {kind: pooled(artefact, "dropout") for kind, artefact in explorers.items()}
    at_least = {kind: 0 for kind in explorers}
    compared = 0
    for epsilon, row in rows.items():
        found = [row] + [dropout_rows[kind][epsilon] for kind in explorers]
        cells = [
            f"{r['n_admitted']:4d} " + ("   n/a" if r["ambiguity"] is None else f"{r['ambiguity']:.4f}") for r in found
        ]
        lines.append(f"{epsilon:7.3f}  " + "  ".join(f"{cell:>16}" for cell in cells))
        if row["ambiguity"] is not None:
            compared += 1
            for kind in explorers:
                at_least[kind] += (dropout_rows[kind][epsilon]["ambiguity"] or 0.0) >= row["ambiguity"]
    lines.append("")
    lines += [
        f"{kind}: ambiguity >= re-training's at {count} of the {compared} epsilons where re-training admits a model"
        for kind, count in at_least.items()
    ]
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
