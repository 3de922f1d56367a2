"""What BrainWash's attacker sees: inversion accuracy and its own objective, from the runs' records.

Reads the records of BrainWash runs (by default those of `sweeps/attack_brainwash_ablation.yaml`, which has
both surrogates: inverted samples, the threat model, and the old tasks' real data) and prints, per run,
``attack_info.metrics``: the victim's accuracy on the inverted samples (``inversion_accuracy``) and the
attacker's objective (reckless: the surrogate cross-entropy after one lookahead step, on a fixed diagnostic
set) with no noise (``surrogate_clean``), with the initial random noise (``surrogate_initial``) and with the
optimised noise (``surrogate_final``). A summary per surrogate follows: how flat the objective is (its
clean value), and in how many runs the optimisation raised it, by how much.

    python analysis/brainwash_attacker.py [--runs runs_brainwash_ablation] \
        [--out analysis/results/brainwash_attacker.txt]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from cl_bench.leaderboard import load_records
from cl_bench.records import publish_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", default=[Path("runs_brainwash_ablation")])
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    rows = []
    for record in load_records(args.runs, warn=lambda message: None):
        attack = record["config"].get("attack") or {}
        if attack.get("name") != "brainwash":
            continue
        metrics = record["attack_info"]["metrics"]
        rows.append(
            {
                "scenario": record["config"]["scenario"]["name"],
                "victim": record["config"]["strategy"]["name"],
                "proxy": attack["proxy"],
                "objective": attack["objective"],
                "epsilon": attack["epsilon"],
                "steps": attack["steps"],
                "seed": record["config"]["seed"],
                "inversion_accuracy": metrics.get("inversion_accuracy"),
                "clean": metrics["surrogate_clean"],
                "initial": metrics["surrogate_initial"],
                "final": metrics["surrogate_final"],
            }
        )
    rows.sort(
        key=lambda row: (
            row["scenario"],
            row["proxy"],
            row["victim"],
            row["objective"],
            row["epsilon"],
            row["steps"],
            row["seed"],
        )
    )
    lines = [
        f"{'scenario':14s} {'proxy':10s} {'victim':7s} {'objective':9s} {'eps':>4s} {'steps':>5s} {'seed':>4s} "
        f"{'inv. acc':>8s} {'objective: clean':>16s} {'initial noise':>13s} {'final noise':>11s} {'change':>8s}"
    ]
    for row in rows:
        inversion = "-" if row["inversion_accuracy"] is None else f"{row['inversion_accuracy']:.3f}"
        change = (row["final"] - row["initial"]) / row["initial"] if row["initial"] else float("nan")
        lines.append(
            f"{row['scenario']:14s} {row['proxy']:10s} {row['victim']:7s} {row['objective']:9s} "
            f"{row['epsilon']:4.2f} {row['steps']:5d} {row['seed']:4d} {inversion:>8s} {row['clean']:16.5f} "
            f"{row['initial']:13.5f} {row['final']:11.5f} {change:+8.2%}"
        )
    for proxy in sorted({row["proxy"] for row in rows}):
        group = [row for row in rows if row["proxy"] == proxy]
        rose = [row for row in group if row["final"] > row["initial"]]
        changes = [(row["final"] - row["initial"]) / row["initial"] for row in group if row["initial"]]
        accuracies = [row["inversion_accuracy"] for row in group if row["inversion_accuracy"] is not None]
        median_clean = statistics.median(r["clean"] for r in group)
        summary = (
            f"{proxy}: {len(group)} runs; objective without noise: median {median_clean:.4f} "
            f"(range {min(r['clean'] for r in group):.4f}-{max(r['clean'] for r in group):.4f}); "
            f"the noise raised it in {len(rose)} of {len(group)} runs, relative change "
            f"{min(changes):+.2%} to {max(changes):+.2%}"
        )
        if accuracies:
            summary += f"; inversion accuracy {min(accuracies):.3f}-{max(accuracies):.3f}"
        lines.append(summary)
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
