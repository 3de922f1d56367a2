"""Sweeps: expansion, up-front validation, skipping, failure collection, process pool and Ray.

The tests register toy components (so they do not depend on the real catalogs) and inject a
fake run function that writes a valid record.json (so they do not depend on the runner).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cl_bench.config import ComponentConfig, param, resolve
from cl_bench import registry
from cl_bench.errors import UserError
from cl_bench.records import is_complete
from cl_bench.registry import ATTACKS, MODELS, SCENARIOS, STRATEGIES, Entry, load_catalogs
from cl_bench.sweep import RunSpec, SweepResult, execute, expand, grid_combinations, load_sweep, parse_sweep, run_sweep


# ----------------------------------------------------------------------------- toy components


@dataclass
class ToyScenarioConfig(ComponentConfig):
    n_experiences: int = param(2, "experiences", low=1)


@dataclass
class ToyEWCConfig(ComponentConfig):
    ewc_lambda: float = param(0.4, "penalty weight", low=0.0)


@dataclass
class ToyReplayConfig(ComponentConfig):
    mem_size: int = param(200, "buffer size", low=1)


@dataclass
class ToyAttackConfig(ComponentConfig):
    epsilon: float = param(0.1, "budget", low=0.0)


def _builder(*args, **kwargs):
    """Toy component (never built in these tests)."""
    raise AssertionError("toy components are not built")


TOYS = [
    (MODELS, Entry("toy_mlp", "model", _builder, ComponentConfig, "toy", {})),
    (SCENARIOS, Entry("toy_roll", "scenario", _builder, ToyScenarioConfig, "toy", {"default_model": "toy_mlp"})),
    (
        SCENARIOS,
        Entry(
            "toy_digits",
            "scenario",
            _builder,
            ToyScenarioConfig,
            "toy",
            {"default_model": "toy_mlp", "train_defaults": {"epochs": 3}},
        ),
    ),
    (STRATEGIES, Entry("toy_naive", "strategy", _builder, ComponentConfig, "toy", {})),
    (STRATEGIES, Entry("toy_ewc", "strategy", _builder, ToyEWCConfig, "toy", {})),
    (STRATEGIES, Entry("toy_replay", "strategy", _builder, ToyReplayConfig, "toy", {})),
    (STRATEGIES, Entry("toy_fail", "strategy", _builder, ComponentConfig, "toy", {})),
    (ATTACKS, Entry("toy_attack", "attack", _builder, ToyAttackConfig, "toy", {})),
]


def install_toys(setitem) -> None:
    load_catalogs()  # first, so a later catalog import cannot clash with the toys
    for toy_registry, entry in TOYS:
        setitem(toy_registry._entries, entry.name, entry)


@pytest.fixture(autouse=True)
def toys(monkeypatch: pytest.MonkeyPatch) -> None:
    install_toys(monkeypatch.setitem)  # undone after each test: the real registries stay clean


def fake_run(spec: dict, sets: list[str], out_dir: Path, force: bool = False, progress: bool = False) -> Path:
    """Stands in for cl_bench.runner.run_from_spec: writes a minimal complete record."""
    if "toy_roll" not in SCENARIOS._entries:
        # a worker process (pool or Ray): the toys are all it needs; skip the catalogs (Avalanche is slow)
        registry._loaded = True
        install_toys(lambda mapping, key, value: mapping.__setitem__(key, value))
    config = resolve(spec, None, sets)
    if config.strategy == "toy_fail":
        raise RuntimeError("loss diverged\nsecond line of detail")
    import torch  # noqa: F401  (only to report the worker's thread budget)

    run_dir = Path(out_dir) / config.run_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "schema_version": 1,
        "run_id": config.run_id(),
        "config_id": config.config_id(),
        "status": "complete",
        "config": config.to_dict(),
        "scenario": config.scenario,
        "strategy": config.strategy,
        "model": config.model,
        "attack": config.attack,
        "seed": config.seed,
        "accuracy_matrix": [[1.0]],
        "metrics": {"acc": 1.0, "bwt": 0.0, "forgetting": 0.0, "learning_acc": 1.0},
        "timing": {"total_s": 0.0, "train_s": 0.0, "eval_s": 0.0, "per_experience": []},
        "pid": os.getpid(),
        "torch_threads": torch.get_num_threads(),
    }
    (run_dir / "record.json").write_text(json.dumps(record))
    return run_dir


class CountingRun:
    """A run function that remembers what it ran (in-process only)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, spec, sets, out_dir, force=False, progress=False) -> Path:
        self.calls.append(spec)
        return fake_run(spec, sets, out_dir, force, progress)


def write_sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def quiet_execute(runs: list[RunSpec], out_dir: Path, **options) -> tuple[SweepResult, list[str]]:
    lines: list[str] = []
    result = execute(runs, out_dir, progress=False, echo=lines.append, **options)
    return result, lines


# ----------------------------------------------------------------------------- expansion


def test_grid_is_a_cartesian_product_with_seeds_adjacent(tmp_path: Path) -> None:
    sweep = load_sweep(
        write_sweep(
            tmp_path,
            """
name: baselines
grid:
  seed: [0, 1]
  scenario: [toy_roll, toy_digits]
  strategy: [toy_naive, toy_ewc, {name: toy_replay, mem_size: 500}]
""",
        )
    )
    assert sweep.name == "baselines" and sweep.out is None
    runs = expand(sweep)
    assert len(runs) == 2 * 3 * 2
    assert len({run.run_id for run in runs}) == 12
    first, second = runs[0], runs[1]
    assert (first.spec["seed"], second.spec["seed"]) == (0, 1) and first.config_id == second.config_id
    assert first.label == "scenario=toy_roll strategy=toy_naive seed=0"
    replay = [run for run in runs if "toy_replay" in run.label]
    assert len(replay) == 4 and resolve(replay[0].spec, None, replay[0].sets).components["strategy"].mem_size == 500
    # the scenario's recommended train defaults still apply under a sweep
    assert {resolve(r.spec, None, r.sets).train.epochs for r in runs if "toy_digits" in r.label} == {3}


def test_base_set_and_field_axes_are_layered(tmp_path: Path) -> None:
    sweep = load_sweep(
        write_sweep(
            tmp_path,
            """
out: somewhere
grid:
  scenario: toy_roll
  strategy: [toy_ewc, toy_naive]
  train.lr: [0.01, 0.1]
  strategy.ewc_lambda: [1.0]
base:
  train: {device: cpu, epochs: 5, batch_size: 7}
  strategy: {name: toy_ewc, ewc_lambda: 3.0}
set: ["train.epochs=2"]
exclude:
  - {strategy: toy_naive, strategy.ewc_lambda: 1.0}
""",
        )
    )
    assert sweep.out == Path("somewhere")
    runs = expand(sweep)
    configs = [resolve(run.spec, None, run.sets) for run in runs]
    assert len(runs) == 2  # toy_naive has no ewc_lambda: its combinations are excluded
    assert [c.train.lr for c in configs] == [0.01, 0.1]
    assert all(c.train.epochs == 2 and c.train.batch_size == 7 and c.train.device == "cpu" for c in configs)
    assert all(c.components["strategy"].ewc_lambda == 1.0 for c in configs)  # the axis over base
    assert runs[0].label == "scenario=toy_roll strategy=toy_ewc train.lr=0.01"


def test_component_fields_from_base_merge_only_with_the_same_name() -> None:
    sweep = parse_sweep(
        {
            "grid": {"scenario": ["toy_roll"], "strategy": ["toy_ewc", "toy_naive"]},
            "base": {"strategy": {"name": "toy_ewc", "ewc_lambda": 9.0}},
        }
    )
    ewc, naive = (resolve(run.spec, None, run.sets) for run in expand(sweep))
    assert ewc.components["strategy"].ewc_lambda == 9.0
    assert naive.strategy == "toy_naive"


def test_only_and_exclude_filter_combinations() -> None:
    grid = {
        "scenario": ["toy_roll", "toy_digits"],
        "strategy": ["toy_naive", "toy_ewc", "toy_replay"],
        "attack": [None, "toy_attack"],
        "seed": [0, 1, 2],
    }
    assert len(grid_combinations(parse_sweep({"grid": grid}))) == 36
    only = parse_sweep({"grid": grid, "only": [{"scenario": "toy_digits", "strategy": ["toy_naive", "toy_ewc"]}]})
    kept = grid_combinations(only)
    assert len(kept) == 2 * 2 * 3 and {c["scenario"] for c in kept} == {"toy_digits"}
    exclude = parse_sweep(
        {
            "grid": grid,
            "exclude": [{"scenario": "toy_roll", "strategy": "toy_replay"}, {"attack": "toy_attack", "seed": [1, 2]}],
        }
    )
    kept = grid_combinations(exclude)
    # 36 - 6 (toy_roll x toy_replay) - 12 (attacked seeds 1, 2) + 2 (counted in both)
    assert len(kept) == 36 - 6 - 12 + 2
    both = parse_sweep({"grid": grid, "only": [{"attack": None}], "exclude": [{"seed": 0}]})
    assert len(grid_combinations(both)) == 2 * 3 * 2
    with_mapping = parse_sweep(
        {
            "grid": {"strategy": [{"name": "toy_replay", "mem_size": 5}, "toy_naive"]},
            "exclude": [{"strategy": "toy_replay"}],
        }
    )
    assert grid_combinations(with_mapping) == [{"strategy": "toy_naive"}]


def test_explicit_runs_are_added_and_duplicates_dropped() -> None:
    sweep = parse_sweep(
        {
            "grid": {"scenario": ["toy_roll"], "strategy": ["toy_naive"], "seed": [0, 1]},
            "base": {"train": {"device": "cpu"}},
            "runs": [
                {"scenario": "toy_roll", "strategy": {"name": "toy_ewc", "ewc_lambda": 10}, "set": ["train.lr=0.5"]},
                {"scenario": "toy_roll", "strategy": "toy_naive", "seed": 1},
            ],  # same as a grid run
        }
    )
    runs = expand(sweep)
    assert len(runs) == 3
    assert runs[2].sets == ["train.lr=0.5"] and runs[2].label.startswith("runs[0] toy_roll/toy_ewc")
    config = resolve(runs[2].spec, None, runs[2].sets)
    assert config.train.lr == 0.5 and config.train.device == "cpu" and config.components["strategy"].ewc_lambda == 10
    only_runs = expand(parse_sweep({"runs": [{"strategy": "toy_naive", "scenario": "toy_roll"}]}))
    assert len(only_runs) == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ({"grid": {"scenario": ["toy_roll"], "strategy": ["toy_naive", "toy_ewcc"]}}, "unknown strategy 'toy_ewcc'"),
        ({"grid": {"scenario": ["toy_rol"]}}, "unknown scenario 'toy_rol'"),
        (
            {"grid": {"scenario": ["toy_roll"], "strategy.ewc_lambda": [-1.0]}, "base": {"strategy": "toy_ewc"}},
            "strategy.ewc_lambda must be >= 0",
        ),
        ({"grid": {"scenario": ["toy_roll"]}, "set": ["train.epochs=0"]}, "train.epochs must be >= 1"),
        ({"runs": [{"scenario": "toy_roll", "strategy": "toy_naive", "nonsense": 1}]}, "unknown config key 'nonsense'"),
        ({"grid": {"scenario": ["toy_roll"], "attack.epsilon": [0.1]}}, "attack settings were given but no attack"),
    ],
)
def test_invalid_runs_are_named_before_anything_runs(tmp_path: Path, content: dict, message: str) -> None:
    import yaml

    path = write_sweep(tmp_path, yaml.safe_dump(content))
    run = CountingRun()
    with pytest.raises(UserError, match="sweep run .*: .*" + message.replace("(", r"\(")) as error:
        run_sweep(path, tmp_path / "runs", run_fn=run, progress=False, echo=lambda line: None)
    assert "\n" not in str(error.value)
    assert run.calls == [] and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ({"grid": {"scenario": ["toy_roll"]}, "grdi": {}}, "unknown key 'grdi'"),
        ({"grid": {"optimizer": ["sgd"]}}, "unknown grid key 'optimizer'"),
        ({"grid": {"scenario": []}}, "empty list"),
        ({"name": "empty"}, "neither a grid nor runs"),
        ({"grid": {"scenario": ["toy_roll"]}, "only": [{"strategy": "toy_naive"}]}, "not a grid axis"),
        ({"grid": {"scenario": ["toy_roll"]}, "set": [3]}, "kind.field=value"),
        ({"runs": ["toy_roll"]}, "must be a mapping"),
    ],
)
def test_malformed_sweep_files(content: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_sweep(content)


def test_missing_or_non_mapping_sweep_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_sweep(tmp_path / "absent.yaml")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_sweep(write_sweep(tmp_path, "- just\n- a list\n"))


# ----------------------------------------------------------------------------- execution


def small_runs(strategies=("toy_naive", "toy_ewc"), seeds=(0, 1)) -> list[RunSpec]:
    return expand(
        parse_sweep(
            {
                "grid": {"scenario": ["toy_roll"], "strategy": list(strategies), "seed": list(seeds)},
                "base": {"train": {"device": "cpu"}},
            }
        )
    )


def test_execute_runs_then_skips_complete_records(tmp_path: Path) -> None:
    runs = small_runs()
    out = tmp_path / "runs"
    run = CountingRun()
    result, lines = quiet_execute(runs, out, run_fn=run)
    assert (result.done, result.skipped, result.failed) == (4, 0, 0) and result.ok
    assert result.done_dirs == [out / r.run_id for r in runs]  # run_id from the sweep = the run's directory
    assert all(is_complete(d / "record.json") for d in result.run_dirs)
    assert sum(line.startswith("[") and " done " in line for line in lines) == 4 and len(lines) == 4

    # a corrupt record is not complete: that run is redone, the others skipped
    (out / runs[1].run_id / "record.json").write_text("{trunc")
    again, lines = quiet_execute(runs, out, run_fn=run)
    assert (again.done, again.skipped) == (1, 3) and len(run.calls) == 5
    assert "skipping 3 run(s)" in lines[0]
    assert sorted(again.run_dirs) == sorted(result.run_dirs)

    forced, _ = quiet_execute(runs, out, run_fn=run, force=True)
    assert (forced.done, forced.skipped) == (4, 0) and len(run.calls) == 9


def test_failures_are_collected_and_the_sweep_goes_on(tmp_path: Path) -> None:
    runs = small_runs(strategies=("toy_naive", "toy_fail", "toy_ewc"), seeds=(0,))
    result, lines = quiet_execute(runs, tmp_path / "runs", run_fn=fake_run)
    assert (result.done, result.failed) == (2, 1) and not result.ok
    (failure,) = result.failures
    assert failure.run is runs[1] and failure.error == "RuntimeError: loss diverged"
    assert "Traceback" in failure.traceback
    assert any(line.startswith("[2/3] FAILED") and "toy_fail" in line for line in lines)
    assert lines[-1].startswith("failed: scenario=toy_roll strategy=toy_fail")


def test_user_errors_in_a_run_are_reported_as_their_message(tmp_path: Path) -> None:
    def missing_data(spec, sets, out_dir, force=False, progress=False):
        raise UserError("dataset fmnist is not prepared; run `cl-bench data prepare fmnist`")

    result, _ = quiet_execute(small_runs(seeds=(0,)), tmp_path / "runs", run_fn=missing_data)
    assert result.failed == 2 and result.failures[0].error.startswith("dataset fmnist is not prepared")


def test_two_worker_process_pool(tmp_path: Path) -> None:
    runs = small_runs(strategies=("toy_naive", "toy_ewc", "toy_fail"), seeds=(0, 1))
    result, lines = quiet_execute(runs, tmp_path / "runs", workers=2, run_fn=fake_run)
    assert (result.done, result.failed) == (4, 2)
    assert sorted(result.done_dirs) == sorted(tmp_path / "runs" / r.run_id for r in runs if "toy_fail" not in r.label)
    assert {f.error for f in result.failures} == {"RuntimeError: loss diverged"}
    assert all("loss diverged" in f.traceback for f in result.failures)  # the worker's traceback
    records = [json.loads((d / "record.json").read_text()) for d in result.done_dirs]
    assert os.getpid() not in {r["pid"] for r in records}  # ran in worker processes
    assert {r["torch_threads"] for r in records} == {max(1, (os.cpu_count() or 1) // 2)}
    assert len([line for line in lines if line.startswith("[")]) == 6


def test_bad_executor_and_missing_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="unknown executor"):
        execute(small_runs(), tmp_path, executor="slurm", run_fn=fake_run)
    with pytest.raises(UserError, match="workers must be >= 1"):
        execute(small_runs(), tmp_path, workers=0, run_fn=fake_run)
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if not installed
    with pytest.raises(UserError, match=r"pip install -c constraints.txt 'cl-bench\[ray\]'"):
        execute(small_runs(), tmp_path / "runs", executor="ray", run_fn=fake_run, progress=False)


@pytest.mark.slow
def test_ray_executor_runs_tasks(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}},
    )
    try:
        runs = small_runs(strategies=("toy_naive", "toy_fail"), seeds=(0, 1))
        result, _ = quiet_execute(runs, tmp_path / "runs", executor="ray", run_fn=fake_run)
    finally:
        ray.shutdown()
    assert (result.done, result.failed) == (2, 2)
    assert {f.error for f in result.failures} == {"RuntimeError: loss diverged"}
    assert all("loss diverged" in f.traceback for f in result.failures)
    assert all(is_complete(d / "record.json") for d in result.done_dirs)


def test_only_selects_a_slice_of_a_sweep_by_resolved_names(tmp_path, capsys):
    from conftest import run_cli

    from cl_bench.sweep import parse_selection, select

    sweep = parse_sweep(
        {
            "grid": {
                "scenario": ["split_digits", "continual_swiss_roll"],
                "strategy": ["naive", "ewc"],
                "seed": [0, 1],
            },
            "runs": [{"scenario": "split_digits", "strategy": "lwf", "seed": 5}],
        }
    )
    runs = expand(sweep)
    digits = select(runs, parse_selection(["scenario=split_digits"]))
    assert len(digits) == 5 and all(run.names["scenario"] == "split_digits" for run in digits)
    both = select(runs, parse_selection(["scenario=split_digits", "strategy=ewc,lwf", "seed=5"]))
    assert [run.label for run in both] == ["runs[0] split_digits/lwf seed=5"]
    assert select(runs, parse_selection([])) == runs
    for bad in ("scenari=split_digits", "scenario", "scenario="):
        with pytest.raises(UserError, match="KEY=NAME"):
            parse_selection([bad])
    path = tmp_path / "sweep.yaml"
    path.write_text("grid: {scenario: [split_digits, continual_swiss_roll], strategy: [naive], seed: [0]}\n")
    code, out, _ = run_cli(["sweep", str(path), "--only", "scenario=continual_swiss_roll", "--dry-run"], capsys)
    assert code == 0 and out.strip().endswith("1 runs") and "split_digits" not in out
    code, _, err = run_cli(["sweep", str(path), "--only", "strategies=naive", "--dry-run"], capsys)
    assert code == 2 and "KEY=NAME" in err
