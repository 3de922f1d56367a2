"""Leaderboards from hand-written run records: statistics, ordering, determinism, bad records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cl_bench.leaderboard import CL_COLUMNS, build_leaderboards, load_records, mean_std, record_config_id
from cl_bench.records import is_complete


def make_record(
    run_id: str,
    seed: int,
    *,
    strategy: str = "ewc",
    scenario: str = "split_fmnist",
    setting: str = "class-incremental",
    config_id: str = "cfg_ewc",
    acc: float = 0.5,
    bwt: float = -0.2,
    forgetting: float = 0.3,
    learning_acc: float = 0.8,
    fwt: float | None = 0.0,
    total_s: float = 10.0,
    attack: str | None = None,
    strategy_fields: dict | None = None,
) -> dict:
    strategy_fields = strategy_fields if strategy_fields is not None else {"ewc_lambda": 0.4}
    return {
        "schema_version": 1,
        "run_id": run_id,
        "config_id": config_id,
        "command": f"cl-bench run --strategy {strategy} --seed {seed}",
        "status": "complete",
        "config": {
            "scenario": {"name": scenario, "task_labels": False},
            "model": {"name": "mlp", "widths": [8]},
            "strategy": {"name": strategy, **strategy_fields},
            "attack": None if attack is None else {"name": attack},
            "train": {"epochs": 1, "lr": 0.01, "device": "cpu"},
            "seed": seed,
        },
        "scenario": scenario,
        "strategy": strategy,
        "model": "mlp",
        "attack": attack,
        "seed": seed,
        "scenario_info": {"setting": setting, "n_experiences": 2, "task_labels": False, "num_classes": 4},
        "accuracy_matrix": [[0.9, 0.1], [acc - 0.1, acc + 0.1]],
        "accuracy_initial": [0.25, 0.25],
        "metrics": {"acc": acc, "bwt": bwt, "forgetting": forgetting, "fwt": fwt, "learning_acc": learning_acc},
        "timing": {"total_s": total_s, "train_s": total_s * 0.8, "eval_s": total_s * 0.2, "per_experience": []},
        "peak_memory_mb": 100.0,
        "environment": {},
        "created": f"2025-01-01T00:00:0{seed}",
    }


def write_record(runs_dir: Path, record: dict) -> Path:
    run_dir = runs_dir / record["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "record.json").write_text(json.dumps(record))
    return run_dir


def read_board(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def three_seeds(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    for seed, (acc, bwt, total_s) in enumerate([(0.5, -0.2, 10.0), (0.6, -0.1, 20.0), (0.7, -0.3, 30.0)]):
        write_record(
            runs,
            make_record(f"run{seed}", seed, acc=acc, bwt=bwt, total_s=total_s, fwt=None if seed == 2 else 0.1 * seed),
        )
    return runs


def test_mean_and_sample_std_over_three_seeds(three_seeds: Path, tmp_path: Path) -> None:
    paths = build_leaderboards(three_seeds, tmp_path / "boards", warn=lambda m: None)
    assert [p.name for p in paths] == ["cl_split_fmnist.csv"]
    header = paths[0].read_text().splitlines()[0].split(",")
    assert tuple(header) == CL_COLUMNS
    assert header[:7] == ["scenario", "setting", "strategy", "model", "config_id", "n_seeds", "seeds"]
    (row,) = read_board(paths[0])
    assert row["n_seeds"] == "3" and row["seeds"] == "0;1;2"
    # acc 0.5, 0.6, 0.7: mean 0.6, sample std sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    assert row["acc_mean"] == "0.6000" and row["acc_std"] == "0.1000"
    assert row["bwt_mean"] == "-0.2000" and row["bwt_std"] == "0.1000"
    assert row["wall_time_s_mean"] == "20.0000" and row["wall_time_s_std"] == "10.0000"
    assert row["forgetting_mean"] == "0.3000" and row["forgetting_std"] == "0.0000"
    # fwt reported by seeds 0 and 1 only (0.0, 0.1): mean 0.05, std sqrt(0.005)
    assert row["fwt_mean"] == "0.0500" and row["fwt_std"] == "0.0707"
    assert json.loads(row["strategy_config"]) == {"ewc_lambda": 0.4}
    assert json.loads(row["train_config"]) == {"epochs": 1, "lr": 0.01}  # device is not a config


def test_mean_std_edge_cases() -> None:
    assert mean_std([0.25]) == (0.25, None)  # one seed: std undefined, written empty
    assert mean_std([None, float("nan")]) == (None, None)
    assert mean_std([1, 3]) == (2.0, pytest.approx(2**0.5))


def test_single_seed_std_is_empty(tmp_path: Path) -> None:
    write_record(tmp_path / "runs", make_record("only", 0, acc=0.42))
    (path,) = build_leaderboards(tmp_path / "runs", tmp_path / "boards")
    (row,) = read_board(path)
    assert row["acc_mean"] == "0.4200" and row["acc_std"] == ""


def test_rerun_is_byte_identical_and_independent_of_scan_order(three_seeds: Path, tmp_path: Path) -> None:
    first = build_leaderboards(three_seeds, tmp_path / "a")[0].read_bytes()
    second = build_leaderboards(three_seeds, tmp_path / "a")[0].read_bytes()
    assert first == second
    # the same records under other directory names (so scanned in another order) give the same bytes
    shuffled = tmp_path / "shuffled"
    for name in ("run0", "run1", "run2"):
        record = json.loads((three_seeds / name / "record.json").read_text())
        record["run_id"] = f"z{2 - int(name[-1])}"
        write_record(shuffled, record)
    assert build_leaderboards(shuffled, tmp_path / "b")[0].read_bytes() == first
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["cl_split_fmnist.csv"]  # no temp files left


def test_row_order_setting_then_acc_then_strategy_then_config(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    specs = [
        ("naive", "cfg_n", "class-incremental", 0.30),
        ("ewc", "cfg_e", "class-incremental", 0.50),
        ("lwf", "cfg_l", "class-incremental", 0.50),
        ("replay", "cfg_r", "task-incremental", 0.90),
        ("agem", "cfg_a", "class-incremental", 0.70),
    ]
    for index, (strategy, config_id, setting, acc) in enumerate(specs):
        write_record(
            runs, make_record(f"r{index}", 0, strategy=strategy, config_id=config_id, setting=setting, acc=acc)
        )
    rows = read_board(build_leaderboards(runs, tmp_path / "boards")[0])
    assert [(r["setting"], r["strategy"]) for r in rows] == [
        ("class-incremental", "agem"),
        ("class-incremental", "ewc"),
        ("class-incremental", "lwf"),
        ("class-incremental", "naive"),
        ("task-incremental", "replay"),
    ]


def test_config_variants_are_separate_rows(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for seed in (0, 1):
        write_record(runs, make_record(f"a{seed}", seed, config_id="cfg_small", strategy_fields={"ewc_lambda": 0.4}))
        write_record(
            runs, make_record(f"b{seed}", seed, config_id="cfg_big", acc=0.7, strategy_fields={"ewc_lambda": 100.0})
        )
    rows = read_board(build_leaderboards(runs, tmp_path / "boards")[0])
    assert [(r["config_id"], r["n_seeds"], json.loads(r["strategy_config"])["ewc_lambda"]) for r in rows] == [
        ("cfg_big", "2", 100.0),
        ("cfg_small", "2", 0.4),
    ]


def test_one_board_per_scenario_and_attacked_runs_left_out(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_record(runs, make_record("a", 0, scenario="split_fmnist"))
    write_record(runs, make_record("b", 0, scenario="continual_swiss_roll", setting="task-incremental"))
    write_record(runs, make_record("c", 0, scenario="digits", attack="brainwash"))
    paths = build_leaderboards(runs, tmp_path / "boards")
    assert [p.name for p in paths] == ["cl_continual_swiss_roll.csv", "cl_split_fmnist.csv"]


def test_bad_records_are_skipped_with_a_warning(three_seeds: Path, tmp_path: Path) -> None:
    good = (three_seeds / "run0" / "record.json").read_text()
    (three_seeds / "corrupt").mkdir()
    (three_seeds / "corrupt" / "record.json").write_text("{not json")
    (three_seeds / "truncated").mkdir()
    (three_seeds / "truncated" / "record.json").write_text(good[: len(good) // 2])
    (three_seeds / "binary").mkdir()
    (three_seeds / "binary" / "record.json").write_bytes(b"\xff\xfe\x00garbage")
    missing = make_record("missing", 5)
    del missing["accuracy_matrix"]
    write_record(three_seeds, missing)
    running = make_record("running", 6)
    running["status"] = "running"
    write_record(three_seeds, running)
    write_record(three_seeds, {**make_record("listy", 7), "metrics": [0.5]})
    (three_seeds / "partial").mkdir()  # a run still in progress: no record yet
    (three_seeds / "partial" / "checkpoint.pt").write_bytes(b"")

    warnings: list[str] = []
    (path,) = build_leaderboards(three_seeds, tmp_path / "boards", warn=warnings.append)
    (row,) = read_board(path)
    assert row["seeds"] == "0;1;2"  # only the three good records
    assert len(warnings) == 7
    assert all("\n" not in w for w in warnings)
    joined = " ".join(warnings)
    for name in ("corrupt", "truncated", "binary", "missing", "running", "listy", "partial"):
        assert name in joined
    assert "not valid JSON" in joined and "accuracy_matrix: Field required" in joined and "'running'" in joined


def test_duplicate_seed_counts_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    older = make_record("cpu_run", 0, acc=0.5)
    newer = {**make_record("cuda_run", 0, acc=0.6), "created": "2025-02-01T00:00:00"}
    write_record(runs, older)
    write_record(runs, newer)
    warnings: list[str] = []
    (row,) = read_board(build_leaderboards(runs, tmp_path / "boards", warn=warnings.append)[0])
    assert row["n_seeds"] == "1" and row["acc_mean"] == "0.6000"
    assert len(warnings) == 1 and "cuda_run" in warnings[0]


def test_load_records_accepts_files_run_dirs_and_runs_dirs(three_seeds: Path) -> None:
    assert [r["seed"] for r in load_records(three_seeds)] == [0, 1, 2]
    assert [r["seed"] for r in load_records([three_seeds / "run1", three_seeds / "run2" / "record.json"])] == [1, 2]
    warnings: list[str] = []
    assert load_records([three_seeds / "nope"], warn=warnings.append) == [] and len(warnings) == 1
    assert is_complete(three_seeds / "run0" / "record.json")
    assert not is_complete(three_seeds / "nope" / "record.json")


def test_config_id_recomputed_without_seed_and_device() -> None:
    first, second = make_record("a", 0), make_record("b", 1)
    for record in (first, second):
        del record["config_id"]
    second["config"]["train"]["device"] = "cuda"
    assert record_config_id(first) == record_config_id(second)
    second["config"]["strategy"]["ewc_lambda"] = 1.0
    assert record_config_id(first) != record_config_id(second)


def test_missing_runs_dir_is_a_user_error(tmp_path: Path) -> None:
    from cl_bench.errors import UserError

    with pytest.raises(UserError, match="does not exist"):
        build_leaderboards(tmp_path / "absent", tmp_path / "boards")


def test_attack_setting_shows_objective_budget_and_changed_fields() -> None:
    from cl_bench.leaderboard import attack_setting

    config = {"name": "brainwash", "epsilon": 0.3, "objective": "reckless", "steps": 50, "batch_size": 512}
    assert attack_setting("brainwash", config) == "epsilon=0.3 objective=reckless steps=50"
    assert (
        attack_setting("uniform_noise", {"name": "uniform_noise", "epsilon": 0.1, "target_experience": -1})
        == "epsilon=0.1"
    )


# the boards `cl-bench leaderboard` writes from run records (not those of commands of their own, which have no
# scenario/model/strategy config: `cl-bench unlearn-generator`'s)
COMMITTED_BOARDS = [
    board
    for board in sorted((Path(__file__).resolve().parent.parent / "leaderboards").rglob("*.csv"))
    if "scenario_config" in board.open().readline().split(",")
]


@pytest.mark.parametrize("board", COMMITTED_BOARDS, ids=lambda path: str(path.relative_to(path.parents[1])))
def test_a_rerun_of_a_committed_board_gets_its_config_ids(board):
    """Rerunning a committed sweep must land on the committed rows: the config each row states resolves
    to the row's config_id with today's code (settings added since are left out at their defaults)."""
    from cl_bench.config import resolve

    rows = list(csv.DictReader(board.open()))
    assert rows
    for row in rows:
        spec = {
            kind: {"name": row[kind], **json.loads(row[f"{kind}_config"])} for kind in ("scenario", "model", "strategy")
        }
        spec["train"] = json.loads(row["train_config"])
        if row.get("attack"):
            spec["attack"] = {"name": row["attack"], **json.loads(row["attack_config"])}
        assert resolve(spec, {}, []).config_id() == row["config_id"], (row["strategy"], row.get("attack_setting"))
