"""The single runs behind the README's remarks on the Swiss roll network and on Avalanche's SI and MAS.

Each check is one run (seed 0) through the cl-bench runner, next to the registered default it questions:

* the Swiss roll's network: ``joint`` with biases off (the spec's bias-free MLP) and with lr 0.01 (the spec's
  rate) against the registered default (biases on, lr 0.1);
* SI: Avalanche 0.6 clamps every importance at 0.001, so even c = 10,000 should leave it equal to naive;
* MAS: lambda 0.01 against the paper's 1; with Avalanche's unnormalised importances lambda 1 makes training
  diverge (the runner's divergence guard stops the run: NaN or inf loss).

Prints ACC, BWT and learning accuracy of every run, or where the run diverged.

    python analysis/baseline_checks.py [--out analysis/results/baseline_checks.txt]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from cl_bench import runner
from cl_bench.config import resolve
from cl_bench.errors import UserError
from cl_bench.records import publish_report

# (label, scenario, strategy, --set overrides)
CHECKS = [
    ("Swiss roll network: registered default (biases, lr 0.1)", "continual_swiss_roll", "joint", []),
    ("Swiss roll network: no biases (spec)", "continual_swiss_roll", "joint", ["model.bias=false"]),
    ("Swiss roll network: lr 0.01 (spec)", "continual_swiss_roll", "joint", ["train.lr=0.01"]),
    ("SI: naive", "continual_swiss_roll", "naive", []),
    ("SI: c = 10,000", "continual_swiss_roll", "si", ["strategy.si_lambda=10000"]),
    ("MAS: lambda 1 (paper, registered)", "continual_swiss_roll", "mas", []),
    ("MAS: lambda 0.01", "continual_swiss_roll", "mas", ["strategy.lambda_reg=0.01"]),
    ("MAS: lambda 1 (paper, registered)", "split_fmnist", "mas", []),
    ("MAS: lambda 0.01", "split_fmnist", "mas", ["strategy.lambda_reg=0.01"]),
]


# the Swiss-roll checks were measured on the raw roll (v1), before the v2 lift became the default
V1_ROLL = ["scenario.lift_dim=0", "scenario.validation_fraction=0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    lines = [f"{'check':58s} {'scenario':22s} {'strategy':8s} {'ACC':>7s} {'BWT':>8s} {'learning ACC':>13s}"]
    with tempfile.TemporaryDirectory() as out:
        for label, scenario, strategy, sets in tqdm(CHECKS, desc="checks", unit="run"):
            pinned = V1_ROLL + sets if scenario == "continual_swiss_roll" else sets
            config = resolve({}, {"scenario": scenario, "strategy": strategy, "seed": 0, "device": "cpu"}, pinned)
            try:
                run_dir = runner.execute(config, Path(out), progress=False, log=lambda line: None)
            except UserError as error:  # the divergence guard: no record, say where it stopped
                lines.append(f"{label:58s} {scenario:22s} {strategy:8s} {str(error).split(';')[0]}")
                continue
            metrics = json.loads((run_dir / "record.json").read_text())["metrics"]
            lines.append(
                f"{label:58s} {scenario:22s} {strategy:8s} {metrics['acc']:7.4f} {metrics['bwt']:8.4f} "
                f"{metrics['learning_acc']:13.4f}"
            )
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
