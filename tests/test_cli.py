"""`cl-bench` end to end, one test per command, plus the bad-input contract (exit 2, one line, nothing written)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

from cl_bench.registry import REGISTRIES

BASE = ["--scenario", "split_digits", "--device", "cpu", "--no-progress"]
TINY = BASE + ["--set", "train.epochs=1", "--set", "model.widths=[32]"]


def test_run_writes_record_matrix_and_plot_and_prints_the_run_dir(tmp_path, capsys):
    code, out, err = run_cli(
        ["run", *TINY, "--strategy", "ewc", "--set", "strategy.ewc_lambda=10", "--out", str(tmp_path)], capsys
    )
    assert code == 0, err
    run_dir = tmp_path / out.strip().splitlines()[-1].split("/")[-1]
    assert out.strip().splitlines()[-1] == str(run_dir)
    for name in ("record.json", "accuracy_matrix.csv", "forgetting_curve.png"):
        assert (run_dir / name).is_file()
    record = json.loads((run_dir / "record.json").read_text())
    assert record["command"].startswith("cl-bench run")
    assert record["config"]["strategy"]["name"] == "ewc"
    assert "ACC" in out and "BWT" in out and "forgetting" in out and "wall time" in out


def test_console_script_runs_the_default_scenario(tmp_path):
    """The installed `cl-bench` entry point; the default scenario is the embedded Swiss roll."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cl_bench.cli",
            "run",
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
            "--set",
            "train.epochs=1",
            "--set",
            "scenario.n_tasks=3",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(open(result.stdout.strip().splitlines()[-1] + "/record.json").read())
    assert record["scenario"] == "continual_swiss_roll" and record["strategy"] == "naive"


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--strategy", "ewcc"], "unknown strategy 'ewcc'; did you mean ewc"),
        (["--model", "mpl"], "unknown model 'mpl'; did you mean mlp"),
        (["--lr", "-0.1"], "train.lr must be > 0.0"),
        (["--epochs", "0"], "train.epochs must be >= 1"),
        (["--set", "strategy.bogus=1"], "unknown strategy field 'bogus'"),
        (["--strategy", "ewc", "--set", "strategy.ewc_lambda=abc"], "strategy.ewc_lambda must be a number"),
        (["--config", "missing.yaml"], "config file missing.yaml does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(extra, fragment, tmp_path, capsys):
    code, out, err = run_cli(["run", *BASE, "--out", str(tmp_path / "runs"), *extra], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err
    assert not (tmp_path / "runs").exists()


def test_unknown_scenario_names_the_closest_choice(tmp_path, capsys):
    code, _, err = run_cli(["run", "--scenario", "split_fmnst", "--out", str(tmp_path / "runs")], capsys)
    assert code == 2 and "did you mean split_fmnist" in err
    assert not (tmp_path / "runs").exists()


def test_missing_dataset_says_how_to_prepare_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "empty"))
    code, _, err = run_cli(["run", "--scenario", "split_fmnist", "--out", str(tmp_path / "runs")], capsys)
    assert code == 2 and "cl-bench data prepare fmnist" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_sweep_then_leaderboard_then_plot(tmp_path, capsys):
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(
        "name: tiny\n"
        "grid:\n  scenario: [split_digits]\n  strategy: [naive, replay]\n  seed: [0, 1]\n"
        "base:\n  train: {device: cpu}\n"
        "set: ['train.epochs=1', 'model.widths=[32]']\n"
    )
    runs = tmp_path / "runs"
    code, out, err = run_cli(["sweep", str(sweep_file), "--out", str(runs), "--workers", "2"], capsys)
    assert code == 0, err
    assert "4 done, 0 skipped, 0 failed" in out
    code, out, _ = run_cli(["sweep", str(sweep_file), "--out", str(runs)], capsys)
    assert "0 done, 4 skipped, 0 failed" in out

    # a run killed before writing its record, and a corrupt one: skipped with warnings, never a crash
    (runs / "partial").mkdir()
    (runs / "corrupt").mkdir()
    (runs / "corrupt" / "record.json").write_text('{"schema_version": 1, "run_id": ')
    boards = tmp_path / "boards"
    code, out, err = run_cli(["leaderboard", "--runs", str(runs), "--out", str(boards)], capsys)
    assert code == 0
    assert "partial" in err and "corrupt" in err
    lines = (boards / "cl_split_digits.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("scenario,setting,strategy")
    assert all(",2,0;1," in line for line in lines[1:])

    run_dirs = sorted(p for p in runs.iterdir() if (p / "record.json").is_file())
    code, out, _ = run_cli(["plot", str(run_dirs[0]), "--out", str(tmp_path / "one.png")], capsys)
    assert code == 0 and (tmp_path / "one.png").stat().st_size > 0
    code, out, _ = run_cli(
        [
            "plot",
            "--runs",
            str(runs),
            "--scenario",
            "split_digits",
            "--strategy",
            "naive",
            "replay",
            "--out",
            str(tmp_path / "overlay.png"),
        ],
        capsys,
    )
    assert code == 0 and (tmp_path / "overlay.png").stat().st_size > 0
    code, _, err = run_cli(["plot", "--runs", str(runs), "--strategy", "gem"], capsys)
    assert code == 2 and "no runs to plot" in err


def test_sweep_with_an_unknown_strategy_fails_before_running(tmp_path, capsys):
    sweep_file = tmp_path / "bad.yaml"
    sweep_file.write_text("grid:\n  scenario: [split_digits]\n  strategy: [naive, ewcc]\n")
    code, _, err = run_cli(["sweep", str(sweep_file), "--out", str(tmp_path / "runs")], capsys)
    assert code == 2 and "ewcc" in err
    assert not (tmp_path / "runs").exists()


def test_list_shows_every_registered_component(capsys):
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    for registry in REGISTRIES.values():
        for name in registry.names():
            assert name in out
    code, out, _ = run_cli(["list", "strategy", "--verbose"], capsys)
    assert "ewc_lambda" in out and "mem_size" in out


def test_data_prepare_from_a_directory(tmp_path, capsys, fake_fmnist):
    fake_fmnist(tmp_path / "idx")
    code, out, err = run_cli(
        ["data", "prepare", "fmnist", "--from", str(tmp_path / "idx"), "--root", str(tmp_path / "root")], capsys
    )
    assert code == 0, err
    assert out.strip() == str(tmp_path / "root" / "fashion-mnist")
    code, _, err = run_cli(["data", "prepare", "imagenet", "--root", str(tmp_path / "root")], capsys)
    assert code == 2 and "fmnist" in err


def test_no_progress_bar_in_a_redirected_log(tmp_path):
    """Bars are for terminals: a run whose stderr is a file writes no bar into it."""
    log = tmp_path / "log.txt"
    with log.open("w") as stderr:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cl_bench.cli",
                "run",
                "--scenario",
                "split_digits",
                "--strategy",
                "naive",
                "--out",
                str(tmp_path / "runs"),
                "--set",
                "train.epochs=1",
            ],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
    assert "step/s" not in log.read_text() and "experience 1/" not in log.read_text()


def test_flags_come_from_the_config_dataclasses():
    """Every PretrainConfig field is a pretrain flag and the train shortcuts are TrainConfig's fields, with the
    field's doc as help; the values a flag collects are the config's to validate."""
    import dataclasses

    from cl_bench.cli import build_parser
    from cl_bench.config import TRAIN_SHORTCUTS, TrainConfig
    from cl_bench.flags import flag_name
    from cl_bench.pretrain_config import PretrainConfig

    parser = build_parser()
    pretrain_help = parser.parse_args(["pretrain"]).__dict__
    for spec in dataclasses.fields(PretrainConfig):
        assert spec.name in pretrain_help and pretrain_help[spec.name] is None  # not given: no override
    args = parser.parse_args(["pretrain", "--decoder-dim", "8", "--norm-pix-loss", "--method", "mae"])
    assert (args.decoder_embed_dim, args.norm_pix_loss, args.method) == (8, True, "mae")
    run_args = parser.parse_args(["run", "--batch-size", "7", "--lr", "0.5"])
    assert (run_args.batch_size, run_args.lr, run_args.epochs) == (7, 0.5, None)
    train_fields = {spec.name: spec for spec in dataclasses.fields(TrainConfig)}
    run_parser = next(
        action for action in parser._subparsers._group_actions[0].choices.values() if action.prog.endswith(" run")
    )
    helps = {option: action.help for action in run_parser._actions for option in action.option_strings}
    for name in TRAIN_SHORTCUTS:
        assert train_fields[name].metadata["doc"] in helps[flag_name(name)]
