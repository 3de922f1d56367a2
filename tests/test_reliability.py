"""Trust what is on disk: checkpoints that cannot reach code, torn or damaged checkpoints refused, corrupt records
handled the same way by every command, temporary files, and bad values of every kind refused before any work."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file, save_file

from cl_bench import checkpoint, records, runner
from cl_bench.config import resolve

FLAGS = {"scenario": "split_digits", "device": "cpu"}
SETS = ["train.epochs=1", "model.widths=[32]"]
CLI_RUN = [
    "run",
    "--scenario",
    "split_digits",
    "--device",
    "cpu",
    "--no-progress",
    "--set",
    "train.epochs=1",
    "--set",
    "model.widths=[32]",
]


def _config(seed: int = 0):
    return resolve({}, {**FLAGS, "seed": seed}, SETS)


def _interrupted(out: Path, after: int = 1) -> Path:
    """A run directory holding the checkpoint written after ``after`` experiences (no record)."""
    return runner.execute(_config(), out, progress=False, log=lambda line: None, stop_after=after)


def _matrix(run_dir: Path) -> list:
    return json.loads((run_dir / "record.json").read_text())["accuracy_matrix"]


def _snapshot(directory: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


def _tensors_file(run_dir: Path) -> Path:
    (path,) = [p for p in run_dir.iterdir() if checkpoint.TENSORS_NAME.fullmatch(p.name)]
    return path


def _one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err


@pytest.fixture(scope="module")
def reference_matrix(tmp_path_factory) -> list:
    out = tmp_path_factory.mktemp("reference")
    return _matrix(runner.execute(_config(), out, progress=False, log=lambda line: None))


# ----------------------------------------------------------------------------- checkpoints cannot run code


def _install_gadget(monkeypatch, sentinel: Path) -> None:
    """A class under a catalog package whose attribute assignment deletes a file: the kind of object the old
    name-based decoder (any class under avalanche., cl_bench., strategies. ...) would have built."""
    module = types.ModuleType("strategies.gadget")

    class Eraser:
        def __setattr__(self, name, value):
            Path(value).unlink()

    Eraser.__module__, Eraser.__qualname__ = "strategies.gadget", "Eraser"
    module.Eraser = Eraser  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "strategies.gadget", module)


@pytest.mark.parametrize(
    "where, entry",
    [
        ("progress", {"__object__": "strategies.gadget:Eraser", "state": {"target": "SENTINEL"}}),
        ("plugin", {"__object__": "strategies.gadget:Eraser", "state": {"target": "SENTINEL"}}),
        ("progress", {"__object__": "os:system", "state": {}}),
        ("progress", {"__object__": "builtins:eval", "state": {}}),
        ("progress", {"__object__": "strategies.gpm:GPMConfig", "state": {"__class__": "SENTINEL"}}),
        ("template", "SENTINEL"),
    ],
)
def test_a_gadget_checkpoint_is_refused_and_runs_nothing(where, entry, tmp_path, capsys, monkeypatch):
    run_dir = _interrupted(tmp_path / "runs")
    sentinel = tmp_path / "precious.txt"
    sentinel.write_text("keep me")
    _install_gadget(monkeypatch, sentinel)
    structure = json.loads((run_dir / checkpoint.CHECKPOINT_STRUCTURE).read_text())
    entry = json.loads(json.dumps(entry).replace("SENTINEL", str(sentinel)))
    if where == "progress":
        structure["progress"]["__dict__"].append(["gadget", entry])
    elif where == "plugin":
        structure["plugins"][0]["gadget"] = entry
    else:  # an attribute the strategy does not declare
        structure["template"]["optimizer"] = entry
    (run_dir / checkpoint.CHECKPOINT_STRUCTURE).write_text(json.dumps(structure))
    before = _snapshot(run_dir)

    code, _, err = run_cli([*CLI_RUN, "--out", str(tmp_path / "runs"), "--resume"], capsys)
    _one_line_error(code, err)
    assert "checkpoint" in err and "--force" in err
    assert sentinel.read_text() == "keep me"
    assert _snapshot(run_dir) == before  # nothing overwritten


def test_the_writer_refuses_what_the_reader_would_refuse(tmp_path):
    prepared = runner.prepare(_config(), tmp_path, progress=False)
    with pytest.raises(checkpoint.UnsupportedState, match="allow-list"):
        checkpoint.save(tmp_path, prepared.strategy, {"accuracy_matrix": [], "stray": object()})
    assert not checkpoint.exists(tmp_path)


def test_template_attributes_are_the_ones_the_caller_passes(tmp_path):
    """A template's own learning state (Cumulative's union dataset) is saved and restored by the names its traits
    declare; a checkpoint holding a name the reader was not given is refused."""
    from cl_bench.errors import UserError
    from cl_bench.registry import STRATEGIES

    declared = STRATEGIES.traits("cumulative").checkpoint_attributes
    assert declared == ("dataset",)
    config = resolve({}, {**FLAGS, "strategy": "cumulative"}, SETS)
    first = runner.prepare(config, tmp_path, progress=False)
    first.strategy.train(first.scenario.benchmark.train_stream[0], eval_streams=[])
    checkpoint.save(tmp_path, first.strategy, {}, declared)
    resumed = runner.prepare(config, tmp_path, progress=False)
    checkpoint.load(tmp_path, resumed.strategy, declared)
    assert len(resumed.strategy.dataset) == len(first.strategy.dataset) > 0
    with pytest.raises(UserError, match="does not declare a checkpointed attribute 'dataset'"):
        checkpoint.load(tmp_path, runner.prepare(config, tmp_path, progress=False).strategy)


# ----------------------------------------------------------------------------- torn and damaged checkpoints


class _Killed(BaseException):
    """Stands for SIGKILL at one exact point (nothing after it runs, no handler catches it)."""


def test_a_kill_between_the_two_writes_resumes_bit_identical(tmp_path, monkeypatch, reference_matrix):
    writes = {"structure": 0}
    original = records.atomic_write_text

    def dying_write(path, text):
        if Path(path).name == checkpoint.CHECKPOINT_STRUCTURE:
            writes["structure"] += 1
            if writes["structure"] == 2:  # the tensors of experience 2 are in place, their structure is not
                raise _Killed()
        return original(path, text)

    monkeypatch.setattr(records, "atomic_write_text", dying_write)
    with pytest.raises(_Killed):
        runner.execute(_config(), tmp_path, progress=False, log=lambda line: None)
    monkeypatch.setattr(records, "atomic_write_text", original)
    run_dir = tmp_path / _config().run_id()
    assert len(list(run_dir.glob("checkpoint.*.safetensors"))) == 2  # the previous pair is intact beside the new file

    messages: list[str] = []
    runner.execute(_config(), tmp_path, resume=True, progress=False, log=messages.append)
    assert "resuming" in messages[0] and "after experience 1" in messages[0]
    assert _matrix(run_dir) == reference_matrix
    assert not list(run_dir.glob("checkpoint*")) and not list(run_dir.glob(".*.tmp"))


def _torn_old_structure_new_tensors(run_dir: Path, old_structure: bytes, old_name: str) -> None:
    new_tensors = _tensors_file(run_dir)
    (run_dir / checkpoint.CHECKPOINT_STRUCTURE).write_bytes(old_structure)
    new_tensors.rename(run_dir / old_name)


def test_a_torn_pair_is_refused(tmp_path, capsys):
    run_dir = _interrupted(tmp_path / "runs", after=1)
    old_structure = (run_dir / checkpoint.CHECKPOINT_STRUCTURE).read_bytes()
    old_name = _tensors_file(run_dir).name
    runner.execute(_config(), tmp_path / "runs", resume=True, progress=False, log=lambda line: None, stop_after=2)
    _torn_old_structure_new_tensors(run_dir, old_structure, old_name)
    before = _snapshot(run_dir)
    code, _, err = run_cli([*CLI_RUN, "--out", str(tmp_path / "runs"), "--resume"], capsys)
    _one_line_error(code, err)
    assert "SHA-256" in err and "--force" in err
    assert _snapshot(run_dir) == before


def _rewrite_tensors(run_dir: Path, change) -> None:
    """Replace the tensors file by ``change(tensors)`` and point the structure at it with a matching digest."""
    structure = json.loads((run_dir / checkpoint.CHECKPOINT_STRUCTURE).read_text())
    old = _tensors_file(run_dir)
    tensors = change(load_file(str(old)))
    old.unlink()
    staging = run_dir / "staging"
    save_file(tensors, str(staging))
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    name = f"checkpoint.{digest[:16]}.safetensors"
    staging.rename(run_dir / name)
    structure["tensors"] = {"file": name, "sha256": digest}
    (run_dir / checkpoint.CHECKPOINT_STRUCTURE).write_text(json.dumps(structure))


def _structure(run_dir: Path) -> Path:
    return run_dir / checkpoint.CHECKPOINT_STRUCTURE


DAMAGES = {
    "structure truncated": lambda d: _structure(d).write_bytes(_structure(d).read_bytes()[:200]),
    "structure garbled": lambda d: _structure(d).write_bytes(os.urandom(300)),
    "structure not UTF-8": lambda d: _structure(d).write_bytes(b'{"format": 2, "x": "\xff\xfe"}'),
    "structure of the old format": lambda d: _structure(d).write_text(
        json.dumps({**json.loads(_structure(d).read_text()), "format": 1})
    ),
    "structure valid JSON but empty": lambda d: _structure(d).write_text("{}"),
    "structure with a NaN literal": lambda d: _structure(d).write_text(
        _structure(d).read_text().replace('"elapsed_s", ', '"elapsed_s", NaN, "x", ', 1)
    ),
    "structure naming a missing tensor": lambda d: _structure(d).write_text(
        _structure(d).read_text().replace('"t0"', '"t99999"', 1)
    ),
    "structure with a path in the tensors reference": lambda d: _structure(d).write_text(
        json.dumps(
            {**json.loads(_structure(d).read_text()), "tensors": {"file": "../../etc/passwd", "sha256": "0" * 64}}
        )
    ),
    "progress of another stream": lambda d: _structure(d).write_text(
        _structure(d)
        .read_text()
        .replace('"accuracy_matrix", {"__list__": [', '"accuracy_matrix", {"__list__": [7, ', 1)
    ),
    "tensors truncated": lambda d: _tensors_file(d).write_bytes(_tensors_file(d).read_bytes()[:100]),
    "tensors replaced by a pickle": lambda d: _tensors_file(d).write_bytes(pickle.dumps({"w": [1.0]})),
    "tensors missing": lambda d: _tensors_file(d).unlink(),
    "tensors of other shapes (digest matching)": lambda d: _rewrite_tensors(
        d, lambda tensors: {key: torch.zeros(3, 3) for key in tensors}
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_is_a_one_line_error_and_nothing_is_overwritten(
    damage, tmp_path, capsys, reference_matrix
):
    run_dir = _interrupted(tmp_path / "runs")
    DAMAGES[damage](run_dir)
    before = _snapshot(run_dir)
    code, _, err = run_cli([*CLI_RUN, "--out", str(tmp_path / "runs"), "--resume"], capsys)
    _one_line_error(code, err)
    assert str(run_dir) in err and "--force" in err
    assert _snapshot(run_dir) == before
    # the fix the message names works
    code, out, err = run_cli([*CLI_RUN, "--out", str(tmp_path / "runs"), "--resume", "--force"], capsys)
    assert code == 0, err
    assert _matrix(run_dir) == reference_matrix


# ----------------------------------------------------------------------------- corrupt records, every reader


def _complete(out: Path, seed: int, capsys) -> Path:
    code, stdout, err = run_cli([*CLI_RUN, "--seed", str(seed), "--out", str(out)], capsys)
    assert code == 0, err
    return Path(stdout.strip().splitlines()[-1])


def _edit_record(change):
    def apply(path: Path) -> None:
        record = json.loads(path.read_text())
        change(record)
        path.write_text(json.dumps(record))

    return apply


RECORD_DAMAGES = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "garbled": lambda p: p.write_bytes(os.urandom(500)),
    "not UTF-8": lambda p: p.write_bytes(b'{"status": "complete", "x": "\xff"}'),
    "a JSON list": lambda p: p.write_text("[1, 2, 3]"),
    "metrics empty": _edit_record(lambda r: r.update(metrics={})),
    "accuracy matrix of strings": _edit_record(
        lambda r: r.update(accuracy_matrix=[[str(v) for v in row] for row in r["accuracy_matrix"]])
    ),
    "accuracy above 1": _edit_record(lambda r: r["accuracy_matrix"][0].__setitem__(0, 1.5)),
    "accuracy matrix not square": _edit_record(lambda r: r["accuracy_matrix"].pop()),
    "NaN literal": lambda p: p.write_text(p.read_text().replace('"acc": ', '"acc": NaN, "was": ', 1)),
    "status running": _edit_record(lambda r: r.update(status="running")),
    "timing missing": _edit_record(lambda r: r.pop("timing")),
    "seed a string": _edit_record(lambda r: r.update(seed="0")),
}


@pytest.fixture(scope="module")
def complete_runs(tmp_path_factory):
    """Two complete tiny runs (seeds 0 and 1) to copy and damage."""
    out = tmp_path_factory.mktemp("complete")
    from cl_bench.cli import main  # capsys is function-scoped: call the CLI directly

    dirs = []
    for seed in (0, 1):
        main([*CLI_RUN, "--seed", str(seed), "--out", str(out)])
        dirs.append(out / _config(seed).run_id())
    return dirs


@pytest.mark.parametrize("damage", list(RECORD_DAMAGES))
def test_a_corrupt_record_is_corrupt_for_every_command(damage, tmp_path, capsys, complete_runs):
    runs = tmp_path / "runs"
    for run_dir in complete_runs:
        shutil.copytree(run_dir, runs / run_dir.name)
    damaged = runs / complete_runs[0].name
    RECORD_DAMAGES[damage](damaged / "record.json")
    capsys.readouterr()

    # leaderboard: skipped with a one-line warning, the other seed still makes its row
    code, out, err = run_cli(["leaderboard", "--runs", str(runs), "--out", str(tmp_path / "boards")], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and damaged.name in warnings[0]
    (board,) = (tmp_path / "boards").glob("*.csv")
    assert ",1,1," in board.read_text()  # n_seeds 1, seeds "1"

    # plot: a one-line error naming the file
    code, _, err = run_cli(["plot", str(damaged)], capsys)
    _one_line_error(code, err)
    assert "record.json" in err

    # sweep and run: the run is redone and its record complete again
    sweep_file = tmp_path / "one.yaml"
    sweep_file.write_text(
        "grid:\n  scenario: [split_digits]\n  seed: [0, 1]\nbase: {train: {device: cpu}}\n"
        "set: ['train.epochs=1', 'model.widths=[32]']\n"
    )
    code, out, err = run_cli(["sweep", str(sweep_file), "--out", str(runs)], capsys)
    assert code == 0, err
    assert "1 done, 1 skipped, 0 failed" in out
    assert records.is_complete(damaged)
    RECORD_DAMAGES[damage](damaged / "record.json")
    code, out, err = run_cli([*CLI_RUN, "--out", str(runs)], capsys)
    assert code == 0, err
    assert records.is_complete(damaged) and _matrix(damaged) == _matrix(complete_runs[0])


def test_output_files_other_than_the_record_are_never_read_back(tmp_path, capsys, complete_runs):
    run_dir = tmp_path / complete_runs[0].name
    shutil.copytree(complete_runs[0], run_dir)
    (run_dir / "forgetting_curve.png").write_bytes(b"garbage")
    (run_dir / "accuracy_matrix.csv").write_bytes(b"\xff\xfe")
    code, _, err = run_cli([*CLI_RUN, "--out", str(tmp_path)], capsys)
    assert code == 0 and "already complete" in err
    code, _, err = run_cli(["plot", str(run_dir)], capsys)  # redraws the curve from the record
    assert code == 0, err
    assert (run_dir / "forgetting_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_records_are_strict_json(complete_runs):
    text = (complete_runs[0] / "record.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a record"))
    with pytest.raises(Exception, match="non-finite"):
        records.write_record(complete_runs[0].parent / "never", {"metrics": {"acc": float("nan")}})
    assert not (complete_runs[0].parent / "never" / "record.json").exists()


# ----------------------------------------------------------------------------- temporary files


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftover_temporaries_of_dead_writers_are_removed_on_the_next_write(tmp_path):
    target = tmp_path / "forgetting_curve.png"
    host = records.socket.gethostname()
    dead = tmp_path / f".forgetting_curve.png.{host}-{_dead_pid()}.abcd1234.tmp"
    live = tmp_path / f".forgetting_curve.png.{host}-{os.getpid()}.beef0000.tmp"  # a writer still at work
    other_host = tmp_path / ".forgetting_curve.png.elsewhere-1.cafe0000.tmp"
    untagged_old = tmp_path / ".forgetting_curve.png.k3j2h1.tmp"  # from before the tags
    untagged_new = tmp_path / ".forgetting_curve.png.q9w8e7.tmp"
    for path in (dead, live, other_host, untagged_old, untagged_new):
        path.write_bytes(b"partial")
    old = time.time() - 2 * records.UNTAGGED_TEMPORARY_AGE_S
    os.utime(untagged_old, (old, old))
    records.atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert not dead.exists() and not untagged_old.exists()
    assert live.exists() and other_host.exists() and untagged_new.exists()


def test_two_writers_of_the_same_file_never_share_a_temporary_name(tmp_path):
    names = {records.temporary_path(tmp_path / "checkpoint.json") for _ in range(50)}
    assert len(names) == 50
    assert all(f"-{os.getpid()}." in name.name for name in names)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "record.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with records.atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["record.json"]


# ----------------------------------------------------------------------------- bad values, refused before any work


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--lr", "nan"], "train.lr must be a finite number"),
        (["--lr", "inf"], "train.lr must be a finite number"),
        (["--lr", "1e308"], "train.lr is out of range"),
        (["--set", "train.lr=.nan"], "train.lr must be a finite number"),
        (["--set", "train.momentum=.nan"], "train.momentum must be a finite number"),
        (["--set", "train.batch_size=100000000000000000000000"], "train.batch_size is out of range"),
        (["--seed", "4294967296"], "seed must be between 0 and 4294967295"),
        (["--seed", "-1"], "seed must be between 0 and 4294967295"),
        (["--scenario", ""], "scenario name is empty"),
        (["--strategy", ""], "strategy name is empty"),
        (["--model", ""], "model name is empty"),
        (["--preset", ""], "preset name is empty"),
        (["--attack", ""], "attack name is empty; use none"),
        (["--preset", "../../../etc/passwd"], "unknown preset"),
        (["--epochs", "nan"], "argument --epochs: invalid int value: 'nan' (see `cl-bench run --help`)"),
        (["--seed", "abc"], "argument --seed: invalid int value: 'abc'"),
    ],
)
def test_bad_values_are_one_line_errors_and_write_nothing(extra, fragment, tmp_path, capsys):
    code, _, err = run_cli([*CLI_RUN, "--out", str(tmp_path / "runs"), *extra], capsys)
    _one_line_error(code, err)
    assert fragment in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "kind, content, fragment",
    [
        ("config", "train: {lr: .nan}\n", "train.lr must be a finite number"),
        ("config", "strategy: {name: ''}\n", "strategy name is empty"),
        ("config", "strategy: {name: 5}\n", "strategy name must be a string"),
        ("config", "seed: 99999999999\n", "seed must be between"),
        ("config", b"scenario: split_digits\n# caf\xe9\n", "is not UTF-8 text"),
        ("sweep", "grid: {scenario: [split_digits], train.lr: [0.1, .nan]}\n", "train.lr must be a finite number"),
        ("sweep", "out: 5\ngrid: {scenario: [split_digits]}\n", "out must be a directory path"),
        ("sweep", "name: [a]\ngrid: {scenario: [split_digits]}\n", "name must be a non-empty string"),
        ("sweep", "grid: {scenario: [split_digits], strategy: ['']}\n", "strategy name is empty"),
        ("sweep", b"grid: {scenario: [split_digits]}\n# \xff\n", "is not UTF-8 text"),
    ],
)
def test_bad_config_and_sweep_files_are_one_line_errors(kind, content, fragment, tmp_path, capsys):
    path = tmp_path / f"{kind}.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = [*CLI_RUN, "--config", str(path)] if kind == "config" else ["sweep", str(path)]
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "runs")], capsys)
    _one_line_error(code, err)
    assert fragment in err and not (tmp_path / "runs").exists()


def test_an_unusable_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    for out, fragment in ((a_file, "is a file, not a directory"), (a_file / "runs", "which is a file")):
        code, _, err = run_cli([*CLI_RUN, "--out", str(out)], capsys)
        _one_line_error(code, err)
        assert fragment in err
    real_access = os.access
    monkeypatch.setattr(
        records.os, "access", lambda path, mode: False if Path(path) == tmp_path else real_access(path, mode)
    )  # root may write anywhere: stand in for a read-only directory
    code, _, err = run_cli([*CLI_RUN, "--out", str(tmp_path / "runs")], capsys)
    _one_line_error(code, err)
    assert "is not writable" in err and not (tmp_path / "runs").exists()


def test_a_diverging_run_stops_with_one_line_and_leaves_no_run_directory(tmp_path, capsys):
    code, _, err = run_cli([*CLI_RUN, "--lr", "1e30", "--out", str(tmp_path / "runs")], capsys)
    _one_line_error(code, err)
    assert "training diverged" in err and "--lr" in err
    assert not (tmp_path / "runs").exists()


def test_rwalk_refuses_experiences_shorter_than_its_score_interval(tmp_path, capsys):
    code, _, err = run_cli([*CLI_RUN, "--strategy", "rwalk", "--out", str(tmp_path / "runs")], capsys)
    _one_line_error(code, err)
    assert "strategy.delta_t" in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "flag, info",
    [
        ("--memory", {"gpm_memory": {"layer_dims": {"fc1": "wide"}, "occupancy": "full"}}),
        ("--anytime", {"online_lora": {"plateau_samples": "soon"}}),
    ],
)
def test_plots_refuse_malformed_strategy_info_in_one_line(flag, info, tmp_path, capsys, complete_runs):
    run_dir = tmp_path / complete_runs[0].name
    shutil.copytree(complete_runs[0], run_dir)
    record = json.loads((run_dir / "record.json").read_text())
    record["strategy_info"] = info
    if flag == "--anytime":
        record["anytime_accuracy"] = {"eval_every": 10, "samples": [10], "accuracy": [0.5], "n_classes": [2]}
    (run_dir / "record.json").write_text(json.dumps(record))
    code, _, err = run_cli(["plot", flag, str(run_dir), "--out", str(tmp_path / "plot.png")], capsys)
    _one_line_error(code, err)
    assert "rerun it with --force" in err and not (tmp_path / "plot.png").exists()


@pytest.mark.parametrize(
    "damage",
    [
        b"\xff\xfe garbage",
        b"scenario,setting\nx,y\n",
        "attack,scenario,setting,strategy,attack_config,bwt_difference_mean,"
        "bwt_difference_std\nbrainwash,s,t,naive,{not json,0.1,0.0\n".encode(),
        "attack,scenario,setting,strategy,attack_config,bwt_difference_mean,"
        "bwt_difference_std\nbrainwash,s,t,naive,{},nan,\n".encode(),
    ],
)
def test_a_damaged_attack_board_is_a_one_line_plot_error(damage, tmp_path, capsys):
    board = tmp_path / "attack_brainwash.csv"
    board.write_bytes(damage)
    code, _, err = run_cli(["plot", "--attack-board", str(board), "--out", str(tmp_path / "bars.png")], capsys)
    _one_line_error(code, err)
    assert str(board) in err and not (tmp_path / "bars.png").exists()


def test_leaderboard_and_plot_refuse_an_out_under_a_file(tmp_path, capsys, complete_runs):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, _, err = run_cli(["leaderboard", "--runs", str(complete_runs[0].parent), "--out", str(a_file)], capsys)
    _one_line_error(code, err)
    assert "is a file" in err
    code, _, err = run_cli(["plot", str(complete_runs[0]), "--out", str(a_file / "curve.png")], capsys)
    _one_line_error(code, err)
    assert "is a file" in err and a_file.read_text() == "x"


def test_divergence_guard_catches_one_bad_loss_within_its_check_window_or_at_the_experience_end():
    from types import SimpleNamespace

    import torch

    from cl_bench.errors import UserError
    from cl_bench.templates import DivergenceGuard

    def strategy_with(loss: float):
        return SimpleNamespace(
            loss=torch.tensor(loss), model=torch.nn.Linear(2, 2), clock=SimpleNamespace(train_exp_counter=0)
        )

    guard = DivergenceGuard()
    for _ in range(3 * guard.check_every):  # finite losses never stop a run
        guard.after_training_iteration(strategy_with(0.5))
    guard.after_training_exp(strategy_with(0.5))
    guard.after_training_iteration(strategy_with(float("nan")))  # step 1 of a window: not checked yet
    with pytest.raises(UserError, match="training loss became nan"):
        for _ in range(guard.check_every):
            guard.after_training_iteration(strategy_with(0.5))
    late = DivergenceGuard()
    late.after_training_iteration(strategy_with(float("inf")))
    with pytest.raises(UserError, match="training loss became inf"):
        late.after_training_exp(strategy_with(0.5))  # the experience's end checks what is left
