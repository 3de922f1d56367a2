"""The tables and the plot of docs/methods/fast_ntk.md, from the committed boards (a test checks the page).

    python analysis/unlearning_tables.py [--plot docs/unlearn_fmnist_gap_time.png]

1. ``leaderboards/unlearn_fmnist/eval_fast_ntk.csv``: every method against retraining on the test split, for
   the BatchNorm cnn and the prompted vit_micro, class-wise (class:3) and random (10 %) forgetting. An NTK
   method's ridge term is the one with the lowest mean Avg. Gap on the *validation* split (never the test).
2. The same board, cnn rows: Fast-NTK's linearisation centre (theta_D, as Golatkar's code, or theta_0, as the
   paper) and residual (ce, mse) on class:3.
3. ``leaderboards/unlearn_continual_fmnist/eval_fast_ntk.csv``: forgetting experience 1 of five continual
   learners, with the test accuracy on the forgotten experience's classes and on the others.

The plot: Avg. Gap against the seconds each method took (log scale), one panel per forget set.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Optional

BOARDS = Path(__file__).resolve().parent.parent / "leaderboards"
NTK = ("fast_ntk", "full_ntk")
METHOD_ORDER = ("original", "retrain", "fast_ntk", "full_ntk", "finetune", "grad_ascent", "random_labels")
STRATEGIES = ("naive", "ewc", "replay", "gpm", "slca")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _setting(row: dict) -> dict:
    return json.loads(row["eval_config"])


def _key(row: dict) -> tuple:
    """What a ridge term is chosen for: one model, one evaluator config, one NTK method."""
    return row["model"], row["model_config"], row["eval_config"], row["method"]


def chosen(rows: list[dict]) -> list[dict]:
    """Test rows with each NTK method at the ridge term of lowest validation Avg. Gap (per model, config)."""
    best: dict[tuple, tuple[float, str]] = {}
    for row in rows:
        if row["split"] == "validation" and row["method"] in NTK:
            gap = float(row["avg_gap_mean"])
            if _key(row) not in best or gap < best[_key(row)][0]:
                best[_key(row)] = (gap, row["lam"])
    picked = []
    for row in rows:
        if row["split"] != "test":
            continue
        if row["method"] in NTK and (_key(row) not in best or best[_key(row)][1] != row["lam"]):
            continue
        picked.append(row)
    return sorted(picked, key=lambda r: METHOD_ORDER.index(r["method"].removesuffix("+bn")))


def _cell(row: dict, column: str) -> str:
    mean, std = row.get(f"{column}_mean", ""), row.get(f"{column}_std", "")
    if mean == "":
        return "–"
    return f"{float(mean):.1f} ± {float(std):.1f}" if std not in ("", None) else f"{float(mean):.1f}"


def _quality_cells(row: dict) -> str:
    """UA | MIA-Eff. | RA | TA | Avg. Gap of one board row."""
    return " | ".join(_cell(row, column) for column in ("ua", "mia_efficacy", "ra", "ta", "avg_gap"))


def _time_cells(row: dict) -> str:
    """The seconds and the ratio to the retrain time ("–" for the original model, which runs nothing)."""
    if row["method"] == "original":
        return "– | –"
    return f"{float(row['seconds_mean']):.1f} | {float(row['time_ratio_mean']):.2f}"


def _lam(row: dict) -> str:
    return f"{float(row['lam']):g}" if row["lam"] else "–"


def _main_config(row: dict) -> bool:
    setting = _setting(row)
    return setting["centre"] == "trained" and setting["loss"] == "ce"


def fmnist_table() -> str:
    rows = [row for row in _rows(BOARDS / "unlearn_fmnist" / "eval_fast_ntk.csv") if _main_config(row)]
    lines = [
        "| model | forget | method | lam | UA | MIA-Eff. | RA | TA | Avg. Gap | seconds | × retrain |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in ("cnn", "vit_micro"):
        for forget in ("class:3", "random:0.1"):
            for row in chosen([r for r in rows if r["model"] == model and _setting(r)["forget"] == forget]):
                cells = f"{_lam(row)} | {_quality_cells(row)} | {_time_cells(row)}"
                lines.append(f"| {model} | {forget} | {row['method']} | {cells} |")
    return "\n".join(lines)


def centre_table() -> str:
    rows = [
        row
        for row in _rows(BOARDS / "unlearn_fmnist" / "eval_fast_ntk.csv")
        if _setting(row)["forget"] == "class:3" and row["method"] == "fast_ntk"
    ]
    lines = [
        "| model | centre | residual | lam (validation) | UA | MIA-Eff. | RA | TA | Avg. Gap |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in ("cnn",):  # sweeps/unlearn_fmnist_centre.yaml evaluates the cnn runs only
        for centre, loss in (("trained", "ce"), ("initial", "ce"), ("initial", "mse")):
            subset = [
                r
                for r in rows
                if r["model"] == model and _setting(r)["centre"] == centre and _setting(r)["loss"] == loss
            ]
            for row in chosen(subset):
                lines.append(f"| {model} | {centre} | {loss} | {_lam(row)} | {_quality_cells(row)} |")
    return "\n".join(lines)


def continual_table() -> str:
    rows = _rows(BOARDS / "unlearn_continual_fmnist" / "eval_fast_ntk.csv")
    lines = [
        "| strategy | method | lam | UA | RA | test acc. exp 1 | test acc. others | Avg. Gap | seconds | × retrain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for strategy in STRATEGIES:
        for row in chosen([r for r in rows if r["strategy"] == strategy]):
            lines.append(
                f"| {strategy} | {row['method']} | {_lam(row)} | {_cell(row, 'ua')} | {_cell(row, 'ra')} | "
                f"{_cell(row, 'test_forgotten')} | {_cell(row, 'test_kept')} | {_cell(row, 'avg_gap')} | "
                f"{_time_cells(row)} |"
            )
    return "\n".join(lines)


def plot(out: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in _rows(BOARDS / "unlearn_fmnist" / "eval_fast_ntk.csv") if _main_config(row)]
    forgets = ("class:3", "random:0.1")
    figure, axes = plt.subplots(1, len(forgets), figsize=(11, 4.2), sharey=False)
    markers = {"cnn": "o", "vit_micro": "^"}
    colours = {m: f"C{i}" for i, m in enumerate(METHOD_ORDER)}
    for axis, forget in zip(axes, forgets):
        for model, marker in markers.items():
            for row in chosen([r for r in rows if r["model"] == model and _setting(r)["forget"] == forget]):
                if row["method"] == "original":  # where doing nothing lands
                    style = "--" if model == "cnn" else ":"
                    axis.axhline(float(row["avg_gap_mean"]), color="grey", linestyle=style, label=f"original ({model})")
                    continue
                axis.errorbar(
                    float(row["seconds_mean"]),
                    float(row["avg_gap_mean"]),
                    yerr=float(row["avg_gap_std"] or 0),
                    marker=marker,
                    color=colours[row["method"]],
                    linestyle="none",
                    markersize=8,
                    label=f"{row['method']} ({model})",
                )
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("seconds of the method (retrain: its training run)")
        axis.set_ylabel("Avg. Gap to retraining (points)")
        axis.set_title(f"forget {forget} (test split, 3 seeds)")
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=8)
    figure.tight_layout(rect=(0, 0, 0.8, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    print(out)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, help="also draw Avg. Gap against run time to this PNG")
    args = parser.parse_args(argv)
    print(fmnist_table(), centre_table(), continual_table(), sep="\n\n")
    if args.plot:
        plot(args.plot)


if __name__ == "__main__":
    main()
