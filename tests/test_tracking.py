"""Experiment trackers (cl_bench/tracking.py): each writes to a temporary local store and the logged values are
read back with the tracker's own reader and compared with the run record."""

import json
import struct
from pathlib import Path

import pytest

from conftest import run_cli

TINY = ["run", "--scenario", "continual_swiss_roll", "--device", "cpu", "--no-progress", "--seed", "0"]
for _setting in ("scenario.n_tasks=3", "scenario.n_train=40", "scenario.n_test=20", "model.widths=[16]"):
    TINY += ["--set", _setting]
TINY += ["--epochs", "2"]


def _run(tmp_path: Path, capsys, *extra: str) -> tuple[Path, dict]:
    code, _, err = run_cli([*TINY, "--out", str(tmp_path / "runs"), *extra], capsys)
    assert code == 0, err
    (record_path,) = (tmp_path / "runs").glob("*/record.json")
    return record_path.parent, json.loads(record_path.read_text())


def test_tensorboard_event_files_hold_every_row_the_final_metrics_and_the_config(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, record = _run(tmp_path, capsys, "--tracking", "tensorboard")
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    matrix = record["accuracy_matrix"]
    for j in range(len(matrix[0])):
        logged = [(event.step, event.value) for event in events.Scalars(f"accuracy/experience_{j}")]
        assert logged == [(i, pytest.approx(row[j], abs=1e-6)) for i, row in enumerate(matrix)]
    (final,) = events.Scalars("final/acc")
    assert final.value == pytest.approx(record["metrics"]["acc"], abs=1e-6)
    text = {tag: events.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in events.Tags()["tensors"]}
    config_tag = next(tag for tag in text if tag.startswith("config"))
    assert json.loads("\n".join(line[4:] for line in text[config_tag].splitlines())) == record["config"]
    assert any(tag.startswith("accuracy_matrix.csv") for tag in text)


def test_mlflow_file_store_holds_the_rows_params_and_matrix(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    run_dir, record = _run(tmp_path, capsys, "--tracking", "mlflow")
    client = MlflowClient(tracking_uri=(tmp_path / "runs" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("cl-bench")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == record["run_id"] and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "accuracy/average")
    expected = [sum(row) / len(row) for row in record["accuracy_matrix"]]
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (i, pytest.approx(value, abs=1e-9)) for i, value in enumerate(expected)
    ]
    assert run.data.metrics["final/bwt"] == pytest.approx(record["metrics"]["bwt"], abs=1e-9)
    assert run.data.params["seed"] == "0" and run.data.params["scenario.name"] == "continual_swiss_roll"
    matrix_file = Path(client.download_artifacts(run.info.run_id, "accuracy_matrix.csv", str(tmp_path)))
    assert matrix_file.read_text() == (run_dir / "accuracy_matrix.csv").read_text()


def wandb_records(path: Path):
    """The protobuf records of an offline W&B run file (LevelDB log framing: 32 KiB blocks, 7-byte chunk
    headers; W&B's 7-byte file header first). wandb 0.31 ships no Python reader of its own."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    offset, pending = 7, b""
    while offset + 7 <= len(data):
        room = 32768 - offset % 32768
        if room < 7:  # a block's tail too short for a header is padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # full, or the last piece of a record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk)
            pending = b""
            yield record
        elif kind in (2, 3):  # first, middle
            pending += chunk
        else:  # zero fill: the writer's padding up to the next block
            offset += 32768 - offset % 32768 if offset % 32768 else 0


def test_wandb_offline_run_holds_the_rows_and_the_config(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir, record = _run(tmp_path, capsys, "--tracking", "wandb")
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    history, config = [], {}
    for item in wandb_records(run_file):
        kind = item.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {entry.key or "/".join(entry.nested_key): json.loads(entry.value_json) for entry in item.history.item}
            )
        elif kind == "config":
            config.update({entry.key: json.loads(entry.value_json) for entry in item.config.update})
    rows = [entry for entry in history if "accuracy/experience_0" in entry]
    assert [entry["experience"] for entry in rows] == list(range(len(record["accuracy_matrix"])))
    assert [entry["accuracy/experience_0"] for entry in rows] == pytest.approx(
        [row[0] for row in record["accuracy_matrix"]]
    )
    final = next(entry for entry in history if "final/acc" in entry)
    assert final["final/acc"] == pytest.approx(record["metrics"]["acc"])
    assert config["seed"] == 0 and config["scenario"]["name"] == "continual_swiss_roll"


def test_an_attacked_run_logs_both_branches_from_the_poisoned_experience_on(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    argv = ["run", "--scenario", "split_digits", "--attack", "vit_badnets", "--device", "cpu", "--no-progress"]
    argv += ["--epochs", "1", "--set", "model.widths=[16]", "--set", "attack.trigger_size=2"]
    argv += ["--set", "attack.target_experience=2", "--tracking", "tensorboard", "--out", str(tmp_path)]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    (record_path,) = tmp_path.glob("*/record.json")
    record = json.loads(record_path.read_text())
    events = EventAccumulator(str(record_path.parent / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    assert len(record["attack_rows"]) == 5  # the shared prefix (experiences 0, 1) and the branch's rows
    for branch, rows in (("clean", record["attack_rows_clean"]), ("attacked", record["attack_rows"])):
        logged = events.Scalars(f"{branch}/attack/asr")
        assert [event.step for event in logged] == [2, 3, 4]
        assert [event.value for event in logged] == pytest.approx([row["asr"] for row in rows[2:]], abs=1e-6)
    prefix = events.Scalars("attack/asr")
    assert [(event.step, event.value) for event in prefix] == [
        (i, pytest.approx(row["asr"], abs=1e-6)) for i, row in enumerate(record["attack_rows"][:2])
    ]
    (effect,) = events.Scalars("attack_effect/asr_final/difference")
    assert effect.value == pytest.approx(record["attack_effect"]["asr_final"]["difference"], abs=1e-6)


def test_an_unknown_or_missing_tracker_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli([*TINY, "--out", str(tmp_path / "a"), "--tracking", "comet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a)
    )
    code, _, err = run_cli([*TINY, "--out", str(tmp_path / "b"), "--tracking", "mlflow"], capsys)
    assert code == 2 and "pip install 'cl-bench[tracking]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_sweep_with_two_workers_logs_every_run_to_one_mlflow_store(tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the reader's opt-in to the file store

    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        "name: tracked\n"
        "grid: {scenario: [continual_swiss_roll], strategy: [naive], seed: [0, 1]}\n"
        "set: [scenario.n_tasks=2, scenario.n_train=30, scenario.n_test=10, train.epochs=1, 'model.widths=[8]']\n"
    )
    out = tmp_path / "runs"
    argv = ["sweep", str(sweep_file), "--out", str(out), "--workers", "2", "--tracking", "mlflow"]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "2 done" in stdout
    client = MlflowClient(tracking_uri=(out / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("cl-bench").experiment_id])
    records = {path.parent.name: json.loads(path.read_text()) for path in out.glob("*/record.json")}
    assert sorted(run.info.run_name for run in runs) == sorted(records)
    for run in runs:
        record = records[run.info.run_name]
        assert run.data.metrics["final/acc"] == pytest.approx(record["metrics"]["acc"], abs=1e-9)
