"""Registry-wide smoke runs: every scenario, model, strategy, attack and evaluator, with the smoke settings it
declares.

Parametrized over the registries (``cl_bench.traits``: ``smoke`` and ``smoke_skip``), so a new component is run
end to end without a test of its own: named on top of its declared settings, on the CPU, through
``runner.execute``, on a tiny stand-in of its data (``tests/conftest.py``: :data:`conftest.TINY_DATASETS`). Each run
must complete with a square accuracy matrix of accuracies, finite metrics, its files, and what its declarations
promise (a task-free scenario's anytime curve, a strategy's run plots and kept checkpoint, an attack's paired
branches). Adding a kind is one entry in :data:`KINDS` and, where it records more, one in :data:`CHECKS`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import smoke_data_root, smoke_settings

from cl_bench import evaluation, records, runner
from cl_bench.config import resolve
from cl_bench.registry import ATTACKS, EVALUATORS, REGISTRIES, SCENARIOS, STRATEGIES

KINDS = ("scenario", "model", "strategy", "attack", "evaluator")


def smoke_run(kind: str, name: str, tmp_path: Path) -> tuple[Path, dict]:
    """(run directory, record) of the smoke run of the ``kind`` component ``name``; skipped where it declares a
    ``smoke_skip`` or needs data that is neither stood in for nor prepared."""
    skip = REGISTRIES[kind].traits(name).smoke_skip
    if skip:
        pytest.skip(f"{kind} {name}: {skip}")
    flags, sets = smoke_settings(kind, name)
    evaluators = evaluation.resolve_evaluators([flags.pop("evaluator")], sets) if kind == "evaluator" else []
    config = resolve({}, flags, sets)
    with pytest.MonkeyPatch.context() as patch:
        root = smoke_data_root(config.scenario, tmp_path)
        if root is not None:
            patch.setenv("CL_BENCH_DATA", str(root))
        run_dir = runner.execute(
            config, tmp_path / "runs", progress=False, log=lambda line: None, evaluators=evaluators
        )
    return run_dir, json.loads((run_dir / "record.json").read_text())


def _finite_or_none(values: dict, where: str) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _finite_or_none(value, f"{where}.{key}")
        else:
            assert value is None or (isinstance(value, (int, float)) and math.isfinite(value)), (where, key, value)


def check_record(run_dir: Path, record: dict) -> None:
    """What every complete run holds, and what its scenario's and strategy's traits promise."""
    assert record["status"] == "complete"
    matrix = record["accuracy_matrix"]
    assert matrix and all(len(row) == len(matrix) for row in matrix), matrix  # experiences (or hidden tasks) squared
    assert all(0.0 <= value <= 1.0 for row in matrix for value in row), matrix
    _finite_or_none(record["metrics"], "metrics")
    assert record["metrics"]["acc"] is not None
    for name in ("accuracy_matrix.csv", "forgetting_curve.png", record["final_model"]["file"]):
        assert (run_dir / name).is_file(), name
    strategy = STRATEGIES.traits(record["strategy"])
    for plot in strategy.run_plots:
        assert (run_dir / f"{plot}.png").is_file(), plot
    # the final checkpoint stays exactly when the prediction reads more than the model (cl-bench evaluate loads it)
    assert (run_dir / "checkpoint.json").is_file() is not strategy.predicts_from_model
    task_free = SCENARIOS.traits(record["scenario"]).task_free
    assert bool(record.get("anytime_accuracy", {}).get("samples")) is task_free  # the declaration is the stream's
    if task_free:
        assert record["metrics"]["a_auc"] is not None


def check_attack(run_dir: Path, record: dict) -> None:
    """An attacked run: both branches, the attack's block and its effect; a test-time attack's block holds what
    its traits declare, and its pictures exist."""
    traits = ATTACKS.traits(record["attack"])
    for plot in traits.run_plots:
        assert (run_dir / f"{plot}.png").is_file(), plot
    if traits.phase == "test":
        block = record["test_time_attack"]
        assert block["name"] == record["attack"] and set(traits.columns) <= set(block["metrics"])
        for row in block["rows"]:
            assert set(traits.row_keys) | set(traits.row_columns) <= set(row), row
        _finite_or_none(block["metrics"], "metrics")
        return
    info = record["attack_info"]
    assert info["name"] == record["attack"] and "budget" in info and "target_experience" in info
    clean = record["accuracy_matrix_clean"]
    assert len(clean) == len(record["accuracy_matrix"]) and all(0.0 <= v <= 1.0 for row in clean for v in row)
    _finite_or_none(record["attack_effect"], "attack_effect")


def check_evaluation(run_dir: Path, record: dict) -> None:
    """An evaluated run: one well-formed artefact holding the columns, keys and row columns its traits declare."""
    (path,) = (run_dir / "evaluations").glob("*.json")
    artefact, problem = records.read_evaluation(path)
    assert artefact is not None, problem
    traits = EVALUATORS.traits(artefact["evaluator"])
    assert set(traits.columns) <= set(artefact["metrics"]) or not traits.columns, artefact["metrics"]
    for row in artefact["rows"]:
        assert set(traits.row_keys) | set(traits.row_columns) <= set(row), row
    _finite_or_none(artefact["metrics"], "metrics")


# what a kind's runs record beyond every run's record
CHECKS: dict[str, Callable[[Path, dict], Any]] = {"attack": check_attack, "evaluator": check_evaluation}


@pytest.mark.parametrize(
    "kind, name",
    [pytest.param(kind, name, id=f"{kind}:{name}") for kind in KINDS for name in REGISTRIES[kind].names()],
)
def test_every_component_runs_with_its_smoke_settings(kind, name, tmp_path):
    run_dir, record = smoke_run(kind, name, tmp_path)
    assert kind == "evaluator" or record[kind] == name
    check_record(run_dir, record)
    CHECKS.get(kind, lambda *_: None)(run_dir, record)
