"""The tables of docs/methods/rashomon_dropout.md, printed from the committed boards (a test checks the page).

    python analysis/rashomon_tables.py          # both tables, as Markdown

1. Continual learners on split Fashion-MNIST (``leaderboards/rashomon_fmnist/``): ambiguity of every test
   experience after the whole stream at epsilon 0.02, with the admitted models' accuracy on the oldest and the
   newest experience, and the run's BWT from the clean board.
2. The paper's tabular setting (``leaderboards/rashomon_tabular/``): ambiguity, discrepancy and median Rashomon
   Capacity against epsilon, mean and std over 10 seeds.
"""

from __future__ import annotations

import csv
from pathlib import Path

BOARDS = Path(__file__).resolve().parent.parent / "leaderboards"
STRATEGIES = ("naive", "ewc", "replay", "gpm", "gpm_sparse")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def fmnist_table(epsilon: str = "0.0200") -> str:
    evaluations = _rows(BOARDS / "rashomon_fmnist" / "eval_rashomon_dropout.csv")
    clean = {(r["setting"], r["strategy"]): r for r in _rows(BOARDS / "rashomon_fmnist" / "cl_split_fmnist.csv")}
    lines = [
        "| setting | strategy | BWT | ambiguity exp 1 | exp 2 | exp 3 | exp 4 | exp 5 | all | accuracy exp 1 | exp 5 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting in ("task-incremental", "class-incremental"):
        for strategy in STRATEGIES:
            cells = {
                row["experience"]: row
                for row in evaluations
                if row["setting"] == setting
                and row["strategy"] == strategy
                and row["explorer"] == "dropout"
                and row["epsilon"] == epsilon
            }
            ambiguity = [cells[key]["ambiguity_mean"] for key in ("0", "1", "2", "3", "4", "all")]
            accuracy = [cells[key]["mean_accuracy_mean"] for key in ("0", "4")]
            bwt = clean[(setting, strategy)]["bwt_mean"]
            lines.append(f"| {setting} | {strategy} | {bwt} | " + " | ".join(ambiguity + accuracy) + " |")
    return "\n".join(lines)


def tabular_table() -> str:
    evaluations = _rows(BOARDS / "rashomon_tabular" / "eval_rashomon_dropout.csv")
    lines = [
        "| dataset | dropout | epsilon | admitted | ambiguity | discrepancy | RC median | admitted accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in evaluations:
        if row["explorer"] != "dropout" or row["epsilon"] not in ("0.0000", "0.0200", "0.0400"):
            continue
        dataset = row["scenario_config"].split('"dataset":"')[1].split('"')[0]
        dropout = row["eval_config"].split('"dropout":"')[1].split('"')[0]
        lines.append(
            f"| {dataset} | {dropout} | {row['epsilon']} | {row['n_admitted_mean']} | "
            f"{row['ambiguity_mean']} ± {row['ambiguity_std']} | {row['discrepancy_mean']} | "
            f"{row['rashomon_capacity_median_mean']} | {row['mean_accuracy_mean']} |"
        )
    return "\n".join(lines)


def main() -> None:
    print(fmnist_table())
    print()
    print(tabular_table())


if __name__ == "__main__":
    main()
