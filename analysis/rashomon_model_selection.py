"""Model selection by predictive multiplicity (Hsu et al., ICLR 2024, section 4 of the spec): among models of
one configuration trained with different seeds, deploy the one whose dropout-estimated multiplicity is lowest at
comparable accuracy.

Reads the ``rashomon_dropout`` evaluations of every run under RUNS (``sweeps/rashomon_tabular.yaml``: 10 seeds per
dataset), groups them by scenario config and evaluator config, and for each group lists every seed's reference
accuracy and its ambiguity and Rashomon Capacity at ``--epsilon``; the selected seed is the lowest-ambiguity one
among those within ``--tolerance`` of the group's best accuracy (ties: the lower median RC, then the lower seed).
Accuracy here is the test accuracy the evaluation reports, so this table illustrates the paper's procedure; to
deploy by it, decide membership and accuracy on validation data (``evaluator.loss_split=validation``).

    python analysis/rashomon_model_selection.py RUNS [--epsilon 0.02] [--tolerance 0.01] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cl_bench.leaderboard import load_records
from cl_bench.records import publish_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="directory of runs with rashomon_dropout evaluations")
    parser.add_argument("--epsilon", type=float, default=0.02, help="a value of the evaluations' epsilon grid")
    parser.add_argument("--tolerance", type=float, default=0.01, help="accuracy within this of the best counts")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    groups: dict[tuple[str, str], list[tuple[int, float, float, float]]] = {}
    for record in load_records([args.runs]):
        for artefact in record["evaluations"]:
            if artefact["evaluator"] != "rashomon_dropout":
                continue
            row = next(
                (
                    r
                    for r in artefact["rows"]
                    if r["explorer"] == "dropout"
                    and r["experience"] == "all"
                    and abs(r["epsilon"] - args.epsilon) < 1e-9
                ),
                None,
            )
            if row is None:
                raise SystemExit(
                    f"error: run {record['run_id']} has no row at epsilon {args.epsilon}; pick one of its grid"
                )
            scenario = json.dumps({k: v for k, v in record["config"]["scenario"].items() if k == "dataset"})
            key = (f"{record['scenario']} {scenario}", f"dropout={artefact['config']['dropout']}")
            groups.setdefault(key, []).append(
                (
                    record["seed"],
                    artefact["metrics"]["reference_accuracy"],
                    row["ambiguity"] if row["ambiguity"] is not None else float("inf"),
                    row["rashomon_capacity_median"] or 1.0,
                )
            )
    lines = [f"model selection at epsilon {args.epsilon} (accuracy within {args.tolerance} of the best)"]
    for (scenario, explorer), seeds in sorted(groups.items()):
        best = max(accuracy for _, accuracy, _, _ in seeds)
        eligible = [entry for entry in seeds if entry[1] >= best - args.tolerance]
        chosen = min(eligible, key=lambda entry: (entry[2], entry[3], entry[0]))
        worst = max(eligible, key=lambda entry: (entry[2], entry[3], -entry[0]))
        lines += ["", f"{scenario}, {explorer}", "seed  test accuracy  ambiguity  RC median"]
        for seed, accuracy, ambiguity, capacity in sorted(seeds):
            mark = "  <- selected" if seed == chosen[0] else ""
            lines.append(f"{seed:4d}  {accuracy:13.4f}  {ambiguity:9.4f}  {capacity:9.4f}{mark}")
        lines.append(
            f"selected seed {chosen[0]}: ambiguity {chosen[2]:.4f} against {worst[2]:.4f} for the worst eligible seed "
            f"{worst[0]} ({len(eligible)} of {len(seeds)} seeds within the accuracy tolerance)"
        )
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
