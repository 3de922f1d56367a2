"""The fast_ntk evaluator end to end: forget sets, the retrained reference, the methods, PEFT and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import page_block, run_cli

from cl_bench import evaluation, peft, runner
from cl_bench.config import resolve
from cl_bench.errors import UserError
from cl_bench.forget_sets import ForgetSpec, forget_generator
from cl_bench.scenario import training_rows
from evaluators import ntk_scrub
from evaluators.fast_ntk import recalibrate_bn

SETS = ["train.epochs=2", "model.widths=[16]"]
CHEAP = ["evaluator.subset=all", "evaluator.mia_samples=60", "evaluator.finetune_epochs=1", "evaluator.ascent_epochs=1"]


def _run(tmp_path: Path, evaluator_sets, sets=(), seed: int = 0) -> Path:
    config = resolve({"scenario": "split_digits", "seed": seed}, {"device": "cpu"}, SETS + list(sets))
    specs = evaluation.resolve_evaluators(["fast_ntk"], CHEAP + list(evaluator_sets))
    return runner.execute(config, tmp_path, progress=False, log=lambda line: None, evaluators=specs)


def _artefact(run_dir: Path) -> dict:
    (path,) = sorted((run_dir / "evaluations").glob("fast_ntk-*.json"))
    return json.loads(path.read_text())


def test_the_cli_unlearns_a_class_against_a_cached_retrain(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["run", "--scenario", "split_digits", "--device", "cpu", "--out", str(out), "--evaluator", "fast_ntk"]
    for assignment in SETS + CHEAP + ["evaluator.forget=class:3", "evaluator.methods=[fast_ntk,finetune]"]:
        argv += ["--set", assignment]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    (run_dir,) = [path for path in out.iterdir() if path.name != "references"]
    artefact = _artefact(run_dir)
    rows = {row["method"]: row for row in artefact["rows"]}
    assert list(rows) == ["retrain", "original", "fast_ntk", "finetune"]
    assert rows["fast_ntk"]["lam"] == 1.0 and rows["finetune"]["lam"] is None and rows["original"]["split"] == "test"
    # the reference is the same recipe without class 3: it never saw the class, so it cannot predict it
    assert rows["retrain"]["avg_gap"] == 0.0 and rows["retrain"]["time_ratio"] == 1.0
    assert rows["retrain"]["fa"] == 0.0 and rows["retrain"]["ua"] == 100.0
    assert all(0 <= row["avg_gap"] <= 100 for row in rows.values())
    (reference_dir,) = (out / "references").iterdir()
    reference = json.loads((reference_dir / "record.json").read_text())
    assert (
        reference["config"]["scenario"]["exclude"] == "class:3"
        and reference["run_id"] == artefact["details"]["retrain_run"]
    )
    assert artefact["metrics"]["n_forget"] == 128  # class 3's training rows of the 70 % split
    assert artefact["details"]["methods"]["fast_ntk"]["solver"] in ("primal", "dual")
    # evaluating again later finds the reference by its run id: nothing is retrained
    stamp = reference["created"]
    code, _, err = run_cli(
        ["evaluate", str(run_dir), "--evaluator", "fast_ntk", "--force"]
        + [
            item
            for assignment in CHEAP + ["evaluator.forget=class:3", "evaluator.methods=[fast_ntk,finetune]"]
            for item in ("--set", assignment)
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads((reference_dir / "record.json").read_text())["created"] == stamp
    assert _untimed(_artefact(run_dir)["rows"]) == _untimed(artefact["rows"])  # bit-identical on the CPU


def _untimed(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in ("seconds", "time_ratio")} for row in rows]


def test_a_random_forget_set_is_the_same_rows_in_the_evaluator_and_the_reference():
    config = resolve({"scenario": "split_digits", "seed": 4}, {"device": "cpu"}, SETS)
    scenario = runner.prepare(config, Path("/nonexistent"), progress=False).scenario
    targets, experiences = training_rows(scenario)
    mask = ForgetSpec.parse("random:0.2").mask(targets, experiences, forget_generator(4))
    excluded = resolve(
        {"scenario": "split_digits", "seed": 4}, {"device": "cpu"}, SETS + ["scenario.exclude=random:0.2"]
    )
    kept = runner.prepare(excluded, Path("/nonexistent"), progress=False).scenario
    kept_targets, _ = training_rows(kept)
    assert torch.equal(kept_targets, targets[~mask]) and len(kept_targets) == len(targets) - round(0.2 * len(targets))


def test_forgetting_an_experience_of_a_continual_run(tmp_path):
    run_dir = _run(tmp_path, ["evaluator.forget=experience:1", "evaluator.methods=[finetune]"])
    artefact = _artefact(run_dir)
    reference = json.loads(next((tmp_path / "references").glob("*/record.json")).read_text())
    # the continual run that never saw experience 1 did not train on it: its rows 1 and 2 are equal
    assert reference["accuracy_matrix"][1] == reference["accuracy_matrix"][0]
    per_experience = artefact["details"]["accuracy_per_experience"]
    assert set(per_experience) == {"test/original/None", "test/retrain/None", "test/finetune/None"}
    rows = {row["method"]: row for row in artefact["rows"]}
    assert len(per_experience["test/original/None"]) == 5
    assert rows["original"]["test_forgotten"] == pytest.approx(per_experience["test/original/None"][1])


def test_one_evaluation_gives_every_lambda_and_split_with_the_jacobians_computed_once(tmp_path):
    run_dir = _run(
        tmp_path,
        ["evaluator.methods=[fast_ntk]", "evaluator.lam=[0.1,10.0]", "evaluator.splits=[validation,test]"],
        sets=["scenario.validation_fraction=0.2"],
    )
    artefact = _artefact(run_dir)
    keys = [(row["method"], row["lam"], row["split"]) for row in artefact["rows"]]
    assert keys == [
        (method, lam, split)
        for split in ("validation", "test")
        for method, lam in (("retrain", None), ("original", None), ("fast_ntk", 0.1), ("fast_ntk", 10.0))
    ]
    (diagnostics,) = artefact["details"]["methods"].values()
    assert [entry["lam"] for entry in diagnostics["per_lam"]] == [0.1, 10.0]
    # a larger ridge term moves theta less
    assert diagnostics["per_lam"][1]["delta_norm"] < diagnostics["per_lam"][0]["delta_norm"]


def test_the_golatkar_scale_and_the_initial_centre_change_the_step(tmp_path):
    base = ["evaluator.methods=[fast_ntk]", "evaluator.lam=[1.0]"]
    plain = _artefact(_run(tmp_path / "plain", base))["details"]["methods"]["fast_ntk"]["per_lam"][0]
    scaled = _artefact(_run(tmp_path / "scaled", base + ["evaluator.scale=golatkar"]))
    (entry,) = scaled["details"]["methods"]["fast_ntk"]["per_lam"]
    assert plain["scale"] == 1.0 and 0.0 <= entry["scale"] <= 5.0 and entry["scale"] != 1.0
    assert entry["delta_norm"] == plain["delta_norm"]  # the scale multiplies the same Delta
    initial = _artefact(_run(tmp_path / "initial", base + ["evaluator.centre=initial"]))
    assert initial["details"]["methods"]["fast_ntk"]["per_lam"][0]["delta_norm"] != plain["delta_norm"]


def test_full_ntk_that_does_not_fit_is_skipped_with_the_memory_it_needs(tmp_path):
    run_dir = _run(tmp_path, ["evaluator.methods=[full_ntk]", "evaluator.max_memory_gb=0.001"])
    artefact = _artefact(run_dir)
    assert [row["method"] for row in artefact["rows"]] == ["retrain", "original"]
    assert "GB > evaluator.max_memory_gb=0.001" in artefact["details"]["skipped"]["full_ntk"]


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (["evaluator.forget=class:99"], "selects no training sample"),
        (["evaluator.forget=random:1.5"], "strictly between 0 and 1"),
        (["evaluator.forget=label:1"], "write class:K"),
        (["evaluator.methods=[sisa]"], "evaluator.methods"),
        (["evaluator.subset=bn"], "has no bn parameters"),
        (["evaluator.subset=auto"], "neither BatchNorm nor prompt tokens"),
        (["evaluator.recalibrate_bn=true"], "needs a model with BatchNorm"),
        (["scenario.exclude=class:1", "evaluator.forget=class:1"], "selects no training sample"),
        (["evaluator.splits=[validation]"], "needs a validation split"),
        (["evaluator.lam=[]"], "at least one ridge term"),
    ],
)
def test_bad_unlearning_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, sets, fragment):
    out = tmp_path / "runs"
    argv = ["run", "--scenario", "split_digits", "--device", "cpu", "--out", str(out), "--evaluator", "fast_ntk"]
    overrides = ["evaluator.subset=all"] if not any(s.startswith("evaluator.subset") for s in sets) else []
    for assignment in overrides + sets:
        argv += ["--set", assignment]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_trainable_freezes_everything_outside_the_subset(tmp_path):
    config = resolve({"scenario": "split_digits"}, {"device": "cpu"}, SETS + ["train.trainable=head"])
    prepared = runner.prepare(config, tmp_path, progress=False)
    model = prepared.strategy.model
    assert [name for name, p in model.named_parameters() if p.requires_grad] == peft.head_names(model)
    run_dir = runner.execute(config, tmp_path, progress=False, log=lambda line: None)
    trained = runner.prepare(config, tmp_path, progress=False).strategy.model
    evaluation.load_model(run_dir, trained)
    final = dict(trained.named_parameters())
    for name, value in prepared.initial_state.items():
        if name in final and not name.startswith("head."):
            assert torch.equal(final[name].detach().cpu(), value), name
    assert not torch.equal(final["head.weight"].detach().cpu(), prepared.initial_state["head.weight"])


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_bn_recalibration_gives_the_statistics_of_the_retain_set_alone():
    net, inputs = _bn_net(), torch.randn(300, 4)
    net.train()
    net(torch.randn(50, 4) * 5 + 3)  # running statistics of other data, which recalibration must forget
    net.eval()
    recalibrated = recalibrate_bn(net, inputs, torch.device("cpu"), batch_size=300)
    features = net[0](inputs).detach()
    assert torch.allclose(recalibrated[1].running_mean, features.mean(0), atol=1e-5)
    assert torch.allclose(recalibrated[1].running_var, features.var(0, unbiased=True), atol=1e-4)
    assert not recalibrated.training and all(
        torch.equal(a, b) for a, b in zip(net.parameters(), recalibrated.parameters())
    )
    assert peft.select(net, "bn") == ["1.weight", "1.bias"]
    with pytest.raises(UserError, match="no prompts parameters"):
        peft.select(net, "prompts")


def test_the_predicted_scale_follows_the_notebook_rule_and_is_clipped():
    delta = torch.tensor([1.0, 0.0])
    assert ntk_scrub.predicted_scale(delta, torch.tensor([0.5, 0.0])) == pytest.approx(2.0)  # c = 1: 1 + 2 * 0.5
    assert ntk_scrub.predicted_scale(delta, torch.tensor([0.0, 0.25])) == pytest.approx(1.0)  # c = 0
    # c = -1: arccos(-1) - pi/2 = pi/2, sin = 1: 1 + 2 * 0.3
    assert ntk_scrub.predicted_scale(delta, torch.tensor([-0.3, 0.0])) == pytest.approx(1.6)
    assert ntk_scrub.predicted_scale(delta, torch.tensor([100.0, 0.0])) == 5.0
    assert ntk_scrub.predicted_scale(torch.zeros(2), torch.ones(2)) == 1.0
    assert not math.isnan(ntk_scrub.predicted_scale(delta, torch.zeros(2)))


ROOT = Path(__file__).resolve().parent.parent


def _unlearning_tables():
    from conftest import analysis_script

    return analysis_script("unlearning_tables")


def test_the_method_page_holds_the_tables_the_boards_give():
    """docs/methods/fast_ntk.md quotes the committed unlearning boards through analysis/unlearning_tables.py, and
    the committed benchmark result."""
    tables = _unlearning_tables()
    page = (ROOT / "docs" / "methods" / "fast_ntk.md").read_text()
    for marker, table in (
        ("unlearn-fmnist", tables.fmnist_table()),
        ("unlearn-centre", tables.centre_table()),
        ("unlearn-continual", tables.continual_table()),
    ):
        assert page_block(page, marker) == table, marker
    assert (ROOT / "benchmarks" / "results" / "fast_ntk.txt").read_text().rstrip() in page  # quoted whole


def test_the_ridge_term_is_chosen_on_validation_rows_only():
    tables = _unlearning_tables()
    common = {"model": "cnn", "model_config": "{}", "eval_config": "{}"}
    rows = [
        {**common, "method": "fast_ntk", "lam": "0.01", "split": "validation", "avg_gap_mean": "5.0"},
        {**common, "method": "fast_ntk", "lam": "1.0", "split": "validation", "avg_gap_mean": "3.0"},
        {**common, "method": "fast_ntk", "lam": "0.01", "split": "test", "avg_gap_mean": "1.0"},
        {**common, "method": "fast_ntk", "lam": "1.0", "split": "test", "avg_gap_mean": "9.0"},
        {**common, "method": "retrain", "lam": "", "split": "test", "avg_gap_mean": "0.0"},
    ]
    picked = tables.chosen(rows)
    # lam 1.0 wins on validation, so its (worse) test row is reported, not the test-best lam 0.01
    assert [(row["method"], row["lam"]) for row in picked] == [("retrain", ""), ("fast_ntk", "1.0")]
