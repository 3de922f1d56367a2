"""The measurement phase: the final model kept, evaluators run after training or later, artefacts, boards, sweeps.

A toy evaluator registered here (``probe_accuracy``) measures accuracy through the context, so every number it
returns has a value the run record already holds: the phase is checked against the record, not against itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import run_cli

from cl_bench import evaluation, records, runner
from cl_bench.attack import TestTimeAttack
from cl_bench.config import resolve
from cl_bench.errors import UserError
from cl_bench.evaluator import EvaluationContext, EvaluationResult, Evaluator
from cl_bench.leaderboard import evaluation_boards, load_records
from cl_bench.params import ComponentConfig, param
from cl_bench.registry import ATTACKS, EVALUATORS
from cl_bench.traits import AttackTraits, EvaluatorTraits

TINY = {"scenario": "split_digits", "device": "cpu"}
SETS = ["train.epochs=1", "model.widths=[16]"]


@dataclass
class ProbeConfig(ComponentConfig):
    fraction: float = param(1.0, "share of the test rows", low=0.0, high=1.0, low_open=True)


class ProbeAccuracy(Evaluator):
    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        inputs, targets, _ = context.tensors("test", fraction=self.config.fraction)
        accuracy = float((context.logits(inputs).argmax(1) == targets).float().mean())
        initial = float((context.logits(inputs, context.initial_model()).argmax(1) == targets).float().mean())
        rows = []
        for index in range(context.n_experiences):
            part_inputs, part_targets, _ = context.tensors("test", experiences=[index])
            hits = (context.logits(part_inputs).argmax(1) == part_targets).float().mean()
            rows.append({"experience": index, "accuracy": float(hits)})
        draw = float(torch.rand(1, generator=context.generator))
        return EvaluationResult(
            {"overall_accuracy": accuracy, "initial_accuracy": initial, "undefined": math.nan, "draw": draw}, rows
        )


@pytest.fixture(autouse=True)
def probe_components(monkeypatch):
    """The toy evaluator and a test-time attack, registered for each test only (the cards stay the code's)."""
    registry = type(EVALUATORS)("evaluator", EvaluatorTraits)
    registry.register(
        "probe_accuracy",
        config=ProbeConfig,
        traits=EvaluatorTraits(columns=("overall_accuracy",), row_keys=("experience",), row_columns=("accuracy",)),
    )(lambda config: ProbeAccuracy(config))
    monkeypatch.setitem(EVALUATORS._entries, "probe_accuracy", registry._entries["probe_accuracy"])
    attacks = type(ATTACKS)("attack", AttackTraits)
    attacks.register("probe_test_time", traits=AttackTraits(phase="test"))(
        lambda config, scenario, seed: ShiftAttack(config, scenario, seed)
    )
    attacks.register("probe_not_test_time", traits=AttackTraits(phase="test"))(lambda config, scenario, seed: None)
    for name in ("probe_test_time", "probe_not_test_time"):
        monkeypatch.setitem(ATTACKS._entries, name, attacks._entries[name])


class ShiftAttack(TestTimeAttack):
    """A toy test-time attack: the accuracy of the final model when every test input is shifted by 3."""

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        inputs, targets, _ = context.tensors("test")
        clean = float((context.logits(inputs).argmax(1) == targets).float().mean())
        shifted = float((context.logits(inputs + 3.0).argmax(1) == targets).float().mean())
        return EvaluationResult({"clean_accuracy": clean, "attacked_accuracy": shifted})


def _train(tmp_path: Path, evaluators=(), seed: int = 0, sets=()) -> Path:
    config = resolve({"scenario": "split_digits", "seed": seed}, {"device": "cpu"}, SETS + list(sets))
    specs = evaluation.resolve_evaluators(list(evaluators), list(sets))
    return runner.execute(config, tmp_path, progress=False, log=lambda line: None, evaluators=specs)


def _artefacts(run_dir: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((run_dir / "evaluations").glob("*.json"))]


def test_the_phase_measures_the_final_model_and_the_initial_one(tmp_path):
    run_dir = _train(tmp_path, ["probe_accuracy"])
    record = json.loads((run_dir / "record.json").read_text())
    (artefact,) = _artefacts(run_dir)
    assert records.evaluation_problem(artefact) is None
    assert record["schema_version"] == 2 and (run_dir / "model.safetensors").is_file()
    # the test split is the record's test stream: equal-sized experiences, so the overall accuracy is the ACC
    # per experience, the phase sees exactly the record's last accuracy-matrix row
    assert [row["accuracy"] for row in artefact["rows"]] == pytest.approx(record["accuracy_matrix"][-1], abs=1e-6)
    # the experiences hold about the same number of test images: overall ~ the mean over experiences
    assert artefact["metrics"]["overall_accuracy"] == pytest.approx(record["metrics"]["acc"], abs=0.02)
    # rebuilt exactly: the same initial model as the run's
    initial = record["accuracy_initial"]
    assert artefact["metrics"]["initial_accuracy"] == pytest.approx(sum(initial) / len(initial), abs=0.02)
    assert artefact["metrics"]["undefined"] is None  # NaN means undefined and is written as null
    assert artefact["run_id"] == record["run_id"] and artefact["model_sha256"] == record["final_model"]["sha256"]
    assert not list(run_dir.glob("checkpoint*"))  # a strategy that predicts from its model keeps no checkpoint


def test_evaluate_later_gives_the_same_numbers_and_reuses_the_training(tmp_path):
    run_dir = _train(tmp_path, ["probe_accuracy"])
    (during,) = _artefacts(run_dir)
    created = json.loads((run_dir / "record.json").read_text())["created"]
    (run_dir / "evaluations" / f"probe_accuracy-{during['eval_id']}.json").unlink()
    specs = evaluation.resolve_evaluators(["probe_accuracy"])
    written = evaluation.evaluate_runs([run_dir], specs, log=lambda line: None)
    (later,) = _artefacts(run_dir)
    assert len(written) == 1 and later["metrics"] == during["metrics"] and later["rows"] == during["rows"]
    assert json.loads((run_dir / "record.json").read_text())["created"] == created  # not retrained
    assert evaluation.evaluate_runs([run_dir], specs, log=lambda line: None) == []  # exists: kept


def test_eval_id_hashes_the_evaluator_config_and_the_generator_follows_it(tmp_path):
    run_dir = _train(tmp_path, ["probe_accuracy", {"name": "probe_accuracy", "fraction": [0.5, 1.0]}])
    artefacts = _artefacts(run_dir)
    assert sorted(a["config"]["fraction"] for a in artefacts) == [0.5, 1.0]  # the duplicate default ran once
    assert len({a["eval_id"] for a in artefacts}) == 2 and len({a["metrics"]["draw"] for a in artefacts}) == 2
    again = _train(tmp_path / "again", ["probe_accuracy"])
    (same,) = _artefacts(again)
    default = next(a for a in artefacts if a["config"]["fraction"] == 1.0)
    assert same["eval_id"] == default["eval_id"] and same["metrics"] == default["metrics"]  # bit-identical rerun


def test_the_eval_board_aggregates_the_declared_columns_over_seeds(tmp_path):
    for seed in (0, 1):
        _train(tmp_path, ["probe_accuracy"], seed=seed)
    loaded = load_records([tmp_path], warn=lambda message: None)
    (board,) = evaluation_boards(loaded)
    assert board.name == "eval_probe_accuracy" and len(board.rows) == 5  # one row per experience
    assert "overall_accuracy_mean" in board.columns and "accuracy_std" in board.columns
    assert "undefined_mean" not in board.columns  # only what the evaluator declares
    per_seed = [record["evaluations"][0]["rows"][1]["accuracy"] for record in loaded]
    row = board.rows[1]
    assert row["experience"] == 1 and row["n_seeds"] == 2
    assert row["accuracy_mean"] == pytest.approx(sum(per_seed) / 2)
    assert row["accuracy_std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / math.sqrt(2))


def test_a_sweep_evaluator_axis_is_one_training_run_with_every_evaluation(tmp_path):
    from cl_bench import sweep

    spec = sweep.parse_sweep(
        {
            "grid": {"scenario": ["split_digits"], "evaluator": [None, "probe_accuracy"]},
            "base": {"train": {"device": "cpu"}},
            "set": SETS,
        }
    )
    (run,) = sweep.expand(spec)
    assert len(run.evaluations) == 1
    result = sweep.execute([run], tmp_path, progress=False, echo=lambda line: None)
    assert result.done == 1 and len(_artefacts(tmp_path / run.run_id)) == 1
    again = sweep.execute([run], tmp_path, progress=False, echo=lambda line: None)
    assert again.skipped == 1


def test_version_1_records_still_read(tmp_path):
    run_dir = _train(tmp_path)
    record = json.loads((run_dir / "record.json").read_text())
    del record["final_model"]  # what a version-1 run wrote
    record["schema_version"] = 1
    (run_dir / "record.json").write_text(json.dumps(record))
    assert records.read_record(run_dir)[0] is not None and len(load_records([tmp_path])) == 1
    record["schema_version"] = 3
    assert "schema_version" in str(records.record_problem(record))


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--evaluator", "nope"], "unknown evaluator 'nope'"),
        (["--evaluator", "probe_accuracy", "--set", "evaluator.fraction=2"], "evaluator.fraction must be <= 1.0"),
        (["--evaluator", "probe_accuracy", "--set", "evaluator.bins=2"], "unknown evaluator field 'bins'"),
        (["--set", "evaluator.fraction=0.5"], "no evaluator"),
        (["--attack", "probe_not_test_time"], "declares the test phase but is no TestTimeAttack"),
    ],
)
def test_bad_evaluator_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, fragment):
    out = tmp_path / "runs"
    code, _, err = run_cli(["run", "--scenario", "split_digits", "--device", "cpu", "--out", str(out), *argv], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_evaluate_refuses_what_it_cannot_evaluate(tmp_path, capsys):
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    code, _, err = run_cli(["evaluate", str(incomplete), "--evaluator", "probe_accuracy"], capsys)
    assert code == 2 and "complete run" in err
    run_dir = _train(tmp_path / "runs")
    (run_dir / "model.safetensors").write_bytes(b"not tensors")
    code, _, err = run_cli(["evaluate", str(run_dir), "--evaluator", "probe_accuracy"], capsys)
    assert code == 2 and "model.safetensors" in err and len(err.strip().splitlines()) == 1
    assert not (run_dir / "evaluations").exists()
    (run_dir / "model.safetensors").unlink()
    code, _, err = run_cli(["evaluate", str(run_dir), "--evaluator", "probe_accuracy"], capsys)
    assert code == 2 and "has no model.safetensors" in err


def test_evaluate_command_end_to_end(tmp_path, capsys):
    run_dir = _train(tmp_path)
    code, out, err = run_cli(
        ["evaluate", str(run_dir), "--evaluator", "probe_accuracy", "--set", "evaluator.fraction=0.5"], capsys
    )
    assert code == 0, err
    path = Path(out.strip().splitlines()[-1])
    assert path.parent == run_dir / "evaluations" and path.name.startswith("probe_accuracy-")
    assert "overall_accuracy" in out


def test_evaluator_settings_do_not_change_the_run_id():
    plain = resolve({"scenario": "split_digits"}, None, SETS)
    with_setting = resolve({"scenario": "split_digits"}, None, SETS + ["evaluator.fraction=0.5"])
    assert plain.run_id() == with_setting.run_id()
    with pytest.raises(UserError, match="needs a name"):
        evaluation.resolve_evaluators([{"fraction": 0.5}])


def test_plot_draws_an_eval_board_metric_against_a_key(tmp_path, capsys):
    from cl_bench.leaderboard import build_leaderboards

    for seed in (0, 1):
        _train(tmp_path / "runs", ["probe_accuracy"], seed=seed)
    build_leaderboards(tmp_path / "runs", tmp_path / "boards", warn=lambda message: None)
    board = tmp_path / "boards" / "eval_probe_accuracy.csv"
    out = tmp_path / "accuracy.png"
    argv = ["plot", "--eval-board", str(board), "--x", "experience", "--y", "accuracy", "--out", str(out)]
    code, printed, err = run_cli(argv, capsys)
    assert code == 0, err
    assert printed.strip() == str(out) and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli([*argv[:-2], "--y", "nope", "--out", str(tmp_path / "x.png")], capsys)
    assert code == 2 and "no column 'nope_mean'" in err and not (tmp_path / "x.png").exists()
    code, _, err = run_cli([*argv, "--where", "seeds=9"], capsys)
    assert code == 2 and "no evaluation board rows" in err


def test_a_test_time_attack_runs_in_the_phase_on_the_clean_final_model(tmp_path):
    config = resolve({"scenario": "split_digits", "attack": "probe_test_time"}, {"device": "cpu"}, SETS)
    run_dir = runner.execute(config, tmp_path, progress=False, log=lambda line: None)
    record, problem = records.read_record(run_dir)
    assert record is not None, problem
    block = record["test_time_attack"]
    assert block["name"] == "probe_test_time" and "accuracy_matrix_clean" not in record  # trained once, clean
    # the attack saw the final model: its clean accuracy is the record's over the whole test split
    assert block["metrics"]["clean_accuracy"] == pytest.approx(record["metrics"]["acc"], abs=0.02)
    assert 0.0 <= block["metrics"]["attacked_accuracy"] <= 1.0


def test_evaluate_later_restores_a_prediction_rule_beyond_the_model(tmp_path):
    """NCM predicts from its class means (plugin state): its run keeps the final checkpoint, and a later
    evaluation through it gives the numbers the phase gave right after training."""
    config = resolve({"scenario": "split_digits", "strategy": "ncm"}, {"device": "cpu"}, SETS)
    specs = evaluation.resolve_evaluators(["probe_accuracy"])
    run_dir = runner.execute(config, tmp_path, progress=False, log=lambda line: None, evaluators=specs)
    assert (run_dir / "checkpoint.json").is_file()
    (during,) = _artefacts(run_dir)
    record = json.loads((run_dir / "record.json").read_text())
    assert [row["accuracy"] for row in during["rows"]] == pytest.approx(record["accuracy_matrix"][-1], abs=1e-6)
    evaluation.evaluate_runs([run_dir], specs, force=True, log=lambda line: None)
    (later,) = _artefacts(run_dir)
    assert later["rows"] == during["rows"] and later["metrics"] == during["metrics"]
