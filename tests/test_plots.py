"""Plots from hand-written run records: files are written, are PNGs, and bad input is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cl_bench.errors import UserError
from cl_bench.plots import plot_overlay, plot_run, seen_accuracy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_record(strategy: str, seed: int, n_tasks: int = 3, decay: float = 0.3) -> dict:
    matrix = [
        [round(0.9 * (1 - decay) ** (i - j) + 0.01 * seed, 4) if j <= i else 0.1 for j in range(n_tasks)]
        for i in range(n_tasks)
    ]
    return {
        "run_id": f"{strategy}{seed}",
        "scenario": "split_fmnist",
        "strategy": strategy,
        "seed": seed,
        "attack": None,
        "accuracy_matrix": matrix,
        "accuracy_initial": [0.1] * n_tasks,
        "metrics": {"acc": float(np.mean(matrix[-1])), "bwt": -0.2},
    }


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing


def test_seen_accuracy_is_mean_of_lower_triangle() -> None:
    matrix = np.array([[0.9, 0.1, 0.0], [0.5, 0.8, 0.2], [0.3, 0.6, 0.9]])
    assert seen_accuracy(matrix) == pytest.approx([0.9, 0.65, 0.6])


@pytest.mark.parametrize("n_tasks", [1, 3, 10])
def test_plot_run_writes_a_png(tmp_path: Path, n_tasks: int) -> None:
    out = plot_run(make_record("ewc", 0, n_tasks), tmp_path / "sub" / "run.png")
    assert out == tmp_path / "sub" / "run.png"
    assert_png(out)


def test_plot_overlay_with_seed_groups(tmp_path: Path) -> None:
    records = [
        make_record(strategy, seed, 5, decay) for strategy, decay in (("naive", 0.6), ("ewc", 0.2)) for seed in range(3)
    ] + [make_record("joint", 0, 5, 0.0)]
    assert_png(plot_overlay(records, tmp_path / "overlay.png"))
    labels = [f"{r['strategy']}-s{r['seed']}" for r in records]  # explicit labels: one line per run
    assert_png(plot_overlay(records, tmp_path / "labelled.png", labels=labels))


def test_plot_overlay_rejects_mismatched_groups(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="different numbers of experiences"):
        plot_overlay([make_record("ewc", 0, 3), make_record("ewc", 1, 5)], tmp_path / "bad.png")
    with pytest.raises(UserError, match="no runs"):
        plot_overlay([], tmp_path / "empty.png")


def attack_row(strategy: str, attack: str, config: str, difference: float, scenario: str = "split_fmnist") -> dict:
    return {
        "scenario": scenario,
        "setting": "task-incremental",
        "strategy": strategy,
        "attack": attack,
        "attack_config": config,
        "bwt_difference_mean": str(difference),
        "bwt_difference_std": "0.01",
    }


def test_attack_label_names_objective_and_budget() -> None:
    from cl_bench.plots import attack_label

    # the fields each attack declares for its labels (AttackTraits.label_fields), in that order
    assert (
        attack_label("brainwash", {"objective": "cautious", "epsilon": 0.3})
        == "brainwash objective=cautious epsilon=0.3"
    )
    assert attack_label("uniform_noise", {"epsilon": 0.1}) == "uniform_noise epsilon=0.1"


def test_plot_attack_boards_writes_a_png_and_cli_draws_it(tmp_path: Path) -> None:
    import csv

    from cl_bench.cli import main
    from cl_bench.plots import plot_attack_boards

    rows = [attack_row(s, "brainwash", '{"objective":"reckless","epsilon":0.1}', -0.02) for s in ("naive", "ewc")]
    rows += [attack_row("naive", "uniform_noise", '{"epsilon":0.1}', 0.0, scenario="continual_swiss_roll")]
    assert_png(plot_attack_boards(rows, tmp_path / "bars.png"))
    with pytest.raises(UserError, match="no attack board rows"):
        plot_attack_boards([], tmp_path / "empty.png")

    board = tmp_path / "attack_brainwash.csv"
    with board.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    main(["plot", "--attack-board", str(board), "--out", str(tmp_path / "cli.png")])
    assert_png(tmp_path / "cli.png")
    with pytest.raises(SystemExit) as stop:
        main(["plot", "--attack-board", str(tmp_path / "missing.csv")])
    assert stop.value.code == 2


def test_attack_bars_of_configs_that_differ_off_the_budget_stay_apart() -> None:
    from cl_bench.plots import bar_label

    rows = [
        {
            **attack_row("ewc", "brainwash", '{"objective":"reckless","epsilon":0.3,"steps":%d}' % steps, -0.05),
            "attack_setting": f"epsilon=0.3 objective=reckless steps={steps}",
        }
        for steps in (10, 200)
    ]
    assert len({bar_label(row) for row in rows}) == 2
    assert (
        bar_label(attack_row("ewc", "brainwash", '{"objective":"reckless","epsilon":0.3}', -0.05))
        == "brainwash objective=reckless epsilon=0.3"
    )  # boards written before the setting column
