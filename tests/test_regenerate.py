"""A committed board regenerates from its sweep: the naive row of the default Swiss-roll board, rerun from
``sweeps/baselines.yaml`` (3 seeds, about 15 s) and aggregated by ``cl-bench leaderboard``, is the committed
row byte for byte in every column but the measured wall time."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from cl_bench.leaderboard import build_leaderboards
from cl_bench.sweep import execute, parse_selection, planned_runs

ROOT = Path(__file__).resolve().parents[1]
BOARD = "cl_continual_swiss_roll.csv"
MEASURED = ("wall_time_s_mean", "wall_time_s_std")  # seconds on whatever machine runs the test


def _rows(text: str, strategy: str) -> tuple[list[str], list[list[str]]]:
    header, *rows = list(csv.reader(io.StringIO(text)))
    column = header.index("strategy")
    return header, [row for row in rows if row[column] == strategy]


def test_the_naive_row_of_the_default_board_regenerates_from_its_sweep(tmp_path):
    selection = parse_selection(["scenario=continual_swiss_roll", "strategy=naive"])
    _, runs = planned_runs(ROOT / "sweeps" / "baselines.yaml", selection)
    assert len(runs) == 3
    result = execute(runs, tmp_path / "runs", workers=1, progress=False, echo=lambda line: None)
    assert result.ok
    build_leaderboards(tmp_path / "runs", tmp_path / "boards", warn=lambda message: None)

    committed_header, committed = _rows((ROOT / "leaderboards" / BOARD).read_text(), "naive")
    header, regenerated = _rows((tmp_path / "boards" / BOARD).read_text(), "naive")
    assert header == committed_header and len(regenerated) == len(committed) == 1
    keep = [i for i, name in enumerate(header) if name not in MEASURED]
    assert [regenerated[0][i] for i in keep] == [committed[0][i] for i in keep]
