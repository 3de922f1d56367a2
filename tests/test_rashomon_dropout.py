"""The rashomon_dropout evaluator end to end on tiny runs: the spec's oracles through the measurement phase.

The metric functions and the hooks have their own property tests (tests/test_multiplicity.py); here the evaluator
is run on real training runs and its rows are checked against what the spec says they must be.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli

from cl_bench import evaluation, runner
from cl_bench.config import resolve
from cl_bench.errors import UserError

DIGITS = ["train.epochs=1", "model.widths=[16]"]


def _evaluate(tmp_path: Path, settings: list[str], scenario: str = "split_digits", sets=DIGITS) -> dict:
    config = resolve({"scenario": scenario}, {"device": "cpu"}, list(sets))
    specs = evaluation.resolve_evaluators(["rashomon_dropout"], settings)
    run_dir = runner.execute(config, tmp_path, progress=False, log=lambda line: None, evaluators=specs)
    (path,) = (run_dir / "evaluations").glob("rashomon_dropout-*.json")
    return json.loads(path.read_text())


def test_rate_zero_admits_every_model_and_finds_no_multiplicity(tmp_path):
    settings = ["evaluator.rates=[0.0]", "evaluator.models_per_rate=3", "evaluator.epsilons=[0.0,0.01]"]
    artefact = _evaluate(tmp_path, settings)
    rows = [row for row in artefact["rows"] if row["explorer"] == "dropout"]
    assert [row["epsilon"] for row in rows] == [0.0, 0.01]
    for row in rows:  # rate 0: every drawn model is h*; the filter is non-strict, so all 3 are admitted at 0
        assert row["n_admitted"] == 3
        assert row["ambiguity"] == row["discrepancy"] == 0.0
        assert row["viable_prediction_range_median"] == 0.0 and row["score_variance_q99"] == 0.0
        assert row["rashomon_capacity_median"] == pytest.approx(1.0) and row["disagreement_q90"] == 0.0
        assert row["mean_accuracy"] == pytest.approx(artefact["metrics"]["reference_accuracy"])


def test_rows_nest_in_epsilon_and_split_by_experience(tmp_path):
    settings = [
        "evaluator.rates=[0.0,0.1,0.3]",
        "evaluator.models_per_rate=4",
        "evaluator.epsilons=[0.0,0.02,0.1,1.0]",
        "evaluator.per_experience=true",
        "evaluator.max_samples=200",
    ]
    artefact = _evaluate(tmp_path, settings)
    pooled = [row for row in artefact["rows"] if row["experience"] == "all"]
    admitted = [row["n_admitted"] for row in pooled]
    ambiguity = [row["ambiguity"] for row in pooled]
    assert admitted == sorted(admitted) and ambiguity == sorted(ambiguity)  # R(eps) is nested
    assert all(row["discrepancy"] <= row["ambiguity"] for row in pooled)
    assert artefact["details"]["evaluated_rows"] == 200
    per_experience = [row for row in artefact["rows"] if row["experience"] != "all"]
    assert sorted({row["experience"] for row in per_experience}) == [0, 1, 2, 3, 4]
    # the pooled ambiguity is the row-weighted mean of the experiences' (membership is decided once)
    sizes = artefact["details"]["rows_per_experience"]
    for epsilon, row in zip([0.0, 0.02, 0.1, 1.0], pooled):
        parts = [r for r in per_experience if r["epsilon"] == epsilon]
        weighted = sum(r["ambiguity"] * sizes[r["experience"]] for r in parts) / sum(sizes)
        assert weighted == pytest.approx(row["ambiguity"])


def test_an_empty_rashomon_set_is_undefined_not_zero(tmp_path):
    # Bernoulli p = 1 zeroes every layer's output: uniform predictions, a loss far above L(h*)
    settings = ["evaluator.rates=[1.0]", "evaluator.models_per_rate=2", "evaluator.epsilons=[0.0]"]
    (row,) = _evaluate(tmp_path, settings)["rows"]
    assert row["n_admitted"] == 0 and row["ambiguity"] is None and row["rashomon_capacity_median"] is None


def test_an_ensemble_of_every_drawn_model_has_no_spread(tmp_path):
    settings = [
        "evaluator.rates=[0.2]",
        "evaluator.models_per_rate=2",
        "evaluator.epsilons=[0.0]",
        "evaluator.ensemble_sizes=[1,4]",
        "evaluator.ensemble_pool=4",
        "evaluator.ensembles_per_size=3",
    ]
    rows = {row["explorer"]: row for row in _evaluate(tmp_path, settings)["rows"]}
    full = rows["ensemble4"]  # every ensemble averages all 4 models (in another order: float rounding only)
    assert full["viable_prediction_range_median"] == pytest.approx(0.0, abs=1e-6)
    assert full["score_variance_q99"] == pytest.approx(0.0, abs=1e-12)
    assert full["rashomon_capacity_median"] == pytest.approx(1.0) and full["disagreement_q90"] == 0.0
    assert full["n_admitted"] == 3 and 0.0 <= rows["ensemble1"]["mean_accuracy"] <= 1.0


def test_the_retraining_baseline_trains_reference_runs_once(tmp_path):
    settings = [
        "evaluator.rates=[0.0,0.05]",
        "evaluator.models_per_rate=2",
        "evaluator.epsilons=[0.0,0.5]",
        "evaluator.retraining_seeds=2",
    ]
    sets = ["train.epochs=2", "scenario.dataset=wine"]
    artefact = _evaluate(tmp_path, settings, scenario="tabular", sets=sets)
    retrained = [row for row in artefact["rows"] if row["explorer"] == "retraining"]
    assert [row["epsilon"] for row in retrained] == [0.0, 0.5]
    assert len(list((tmp_path / "references").iterdir())) == 2  # seeds 1 and 2, not on any board
    assert artefact["metrics"]["speedup"] > 1.0  # an inference pass is cheaper than a training run


def test_the_same_run_gives_the_same_artefact(tmp_path):
    settings = ["evaluator.rates=[0.1]", "evaluator.models_per_rate=3", "evaluator.epsilons=[0.05]"]
    first = _evaluate(tmp_path / "a", settings)
    second = _evaluate(tmp_path / "b", settings)
    assert first["rows"] == second["rows"] and first["details"]["losses"] == second["details"]["losses"]


@pytest.mark.parametrize(
    "setting, fragment",
    [
        ("evaluator.rates=[1.5]", "Bernoulli dropout rate must lie in [0, 1]"),
        ("evaluator.epsilons=[-0.1]", "evaluator.epsilons must be >= 0.0"),
        ("evaluator.loss_split=validation", "needs a validation split"),
        ("evaluator.mask_scope=per_batch", "evaluator.mask_scope must be one of"),
    ],
)
def test_bad_settings_are_one_line_errors_that_write_nothing(tmp_path, capsys, setting, fragment):
    out = tmp_path / "runs"
    argv = ["run", "--scenario", "tabular", "--epochs", "1", "--out", str(out), "--evaluator", "rashomon_dropout"]
    code, _, err = run_cli([*argv, "--set", setting], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_gaussian_rates_are_standard_deviations():
    (spec,) = evaluation.resolve_evaluators([{"name": "rashomon_dropout", "dropout": "gaussian"}])
    assert spec.config.grid()[-1] == pytest.approx(0.6)  # the official UCI grid, in std units
    with pytest.raises(UserError, match="needs a name"):
        evaluation.resolve_evaluators([{"dropout": "gaussian"}])


def test_the_method_page_holds_the_tables_the_boards_give():
    """docs/methods/rashomon_dropout.md quotes the committed boards through analysis/rashomon_tables.py."""
    from conftest import REPOSITORY, analysis_script, page_block

    tables = analysis_script("rashomon_tables")
    page = (REPOSITORY / "docs" / "methods" / "rashomon_dropout.md").read_text()
    for marker, table in (("rashomon-tabular", tables.tabular_table()), ("rashomon-fmnist", tables.fmnist_table())):
        assert page_block(page, marker) == table, marker
