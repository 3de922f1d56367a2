"""Sweeps: a YAML grid expanded into run configs, executed locally (process pool) or on Ray.

Sweep file format (read with the safe YAML loader)::

    name: baselines                 # optional, default: the file name
    out: runs                       # optional default output dir (relative to the working dir)
    grid:                           # cartesian product of the listed axes
      scenario: [continual_swiss_roll, split_fmnist]     # names or {name: ..., field: value}
      strategy: [naive, ewc, {name: replay, mem_size: 500}]
      attack: [null, brainwash]     # null = no attack
      train.lr: [0.01, 0.1]         # <kind>.<field>: a scalar hyperparameter axis
      seed: [0, 1, 2]
    base: {train: {device: cpu}}    # optional: a `--config` style dict under every run
    set: ["train.epochs=1"]         # optional: `--set` overrides applied to every run (they win)
    only:                           # optional: keep only combinations matching >= 1 pattern
      - {scenario: split_fmnist, strategy: [naive, ewc]}
    exclude:                        # optional: drop combinations matching any pattern
      - {scenario: continual_swiss_roll, strategy: replay}
    runs:                           # optional: explicit `--config` style dicts, added after the grid
      - {scenario: split_fmnist, strategy: {name: ewc, ewc_lambda: 10}, seed: 0, set: ["train.lr=0.1"]}
    evaluator: [rashomon_dropout]   # optional: evaluators run on every run's final model (a list field in a
                                    # mapping is an axis: {name: rashomon_dropout, dropout: [bernoulli, gaussian]})

Rules:

- Grid keys: scenario, model, strategy, attack, seed, and ``<kind>.<field>`` with kind one of
  scenario, model, strategy, attack, train. A scalar value is a one-value axis. Combinations
  are enumerated with the component axes first and seed last, so seeds of a config are adjacent.
- ``only`` / ``exclude`` patterns map grid keys to a value or a list of values; a combination
  matches a pattern when, for every key of the pattern, its value is one of the listed values
  (components match by name, or by the whole mapping when the pattern gives one). ``only``
  is a global whitelist: to restrict only part of the grid, use ``exclude`` (or ``runs``).
- Layering of one run: ``base``, then the grid combination (or the ``runs`` entry) on top,
  then the ``<kind>.<field>`` axes, then the ``set`` list (plus the entry's own ``set``).
  A component given on top replaces the one below, except that their fields merge when the
  names agree (or the upper one has no name).
- Evaluators (the top-level ``evaluator:`` list, an ``evaluator`` grid axis, or a run's own ``evaluator:``) are
  not part of a run's identity: runs that differ only by evaluator are one training run with every evaluation.
  A run is skipped when its record is complete and every evaluation it needs exists; a complete run missing
  an evaluation is only evaluated, not retrained.
- Every run is resolved up front with :func:`cl_bench.config.resolve`; a bad name or value is
  a UserError naming the run before anything executes. Runs resolving to the same run_id are
  executed once.

Execution skips runs whose ``<out>/<run_id>/record.json`` is complete (unless ``force``), runs
the rest one per process (``spawn`` pool, one torch thread budget per worker) or as Ray tasks,
prints one line per finished or failed run, and collects failures instead of stopping.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from cl_bench.config import COMPONENT_KINDS, SETTABLE_KINDS, load_yaml, resolve, split_component
from cl_bench.errors import UserError
from cl_bench.records import EVALUATIONS_DIR, RECORD_FILE, check_output_dir, is_complete

SWEEP_KEYS = ("name", "out", "grid", "base", "set", "only", "exclude", "runs", "evaluator")
GRID_COMPONENT_KEYS = COMPONENT_KINDS  # scenario, model, strategy, attack
EXECUTORS = ("local", "ray")
RAY_INSTALL_HINT = "pip install -c constraints.txt 'cl-bench[ray]'"

RunFn = Callable[..., Path]  # run_fn(spec, sets, out_dir, force=..., progress=...) -> run dir


@dataclass
class SweepSpec:
    """A parsed, shape-checked sweep file (values are checked by :func:`expand`)."""

    name: str
    out: Optional[Path] = None
    grid: dict[str, list] = field(default_factory=dict)
    base: dict = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)
    only: list[dict] = field(default_factory=list)
    exclude: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    path: Optional[Path] = None
    evaluator: list = field(default_factory=list)  # evaluator entries for every run


@dataclass
class RunSpec:
    """One run of a sweep: a ``--config`` style dict plus ``--set`` assignments, resolved."""

    spec: dict
    sets: list[str]
    run_id: str
    config_id: str
    label: str  # short human description, for progress lines and error messages
    names: dict = field(default_factory=dict)  # component kind -> registered name, and "seed", as resolved
    evaluations: list[str] = field(default_factory=list)  # evaluations/<file> the run needs (see evaluation.py)


@dataclass
class RunFailure:
    run: RunSpec
    error: str  # one line
    traceback: str = ""


@dataclass
class SweepResult:
    """What :func:`execute` did: counts (``done``, ``skipped``, ``failed``), run dirs and failures."""

    done_dirs: list[Path] = field(default_factory=list)  # produced by this call, in finishing order
    skipped_dirs: list[Path] = field(default_factory=list)  # already held a complete record
    failures: list[RunFailure] = field(default_factory=list)  # in sweep order

    @property
    def done(self) -> int:
        return len(self.done_dirs)

    @property
    def skipped(self) -> int:
        return len(self.skipped_dirs)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def run_dirs(self) -> list[Path]:
        """Every run directory holding a complete record after the sweep."""
        return self.skipped_dirs + self.done_dirs

    @property
    def ok(self) -> bool:
        return not self.failures


# ----------------------------------------------------------------------------- loading


def _as_list(value: Any, where: str) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, (str, int, float, bool, dict)):
        return [value]
    raise UserError(f"{where} must be a list, got {value!r}")


def _check_grid_key(key: Any, where: str) -> None:
    if key in GRID_COMPONENT_KEYS or key in ("seed", "evaluator"):
        return
    if isinstance(key, str) and "." in key:
        kind, name = key.split(".", 1)
        if kind in SETTABLE_KINDS and name:
            return
    raise UserError(
        f"{where}: unknown grid key {key!r}; use scenario, model, strategy, attack, seed, evaluator "
        f"or <kind>.<field> with kind in {', '.join(SETTABLE_KINDS)} (e.g. train.lr)"
    )


def parse_sweep(content: dict, name: str = "sweep", path: Optional[Path] = None) -> SweepSpec:
    """Check the shape of a sweep mapping (as read from YAML) and return a SweepSpec."""
    where = f"sweep {path}" if path else "sweep"
    unknown = sorted(set(content) - set(SWEEP_KEYS), key=str)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(SWEEP_KEYS)}")
    grid_raw = content.get("grid") or {}
    if not isinstance(grid_raw, dict):
        raise UserError(f"{where}: grid must be a mapping of axis -> list of values")
    grid: dict[str, list] = {}
    for key, values in grid_raw.items():
        _check_grid_key(key, where)
        values = [None] if values is None else _as_list(values, f"{where}: grid.{key}")
        if not values:
            raise UserError(f"{where}: grid.{key} is an empty list")
        grid[key] = values
    runs = _as_list(content.get("runs"), f"{where}: runs")
    for index, entry in enumerate(runs):
        if not isinstance(entry, dict):
            raise UserError(f"{where}: runs[{index}] must be a mapping like a --config file, got {entry!r}")
    if not grid and not runs:
        raise UserError(f"{where} has neither a grid nor runs; nothing to do")
    base = content.get("base") or {}
    if not isinstance(base, dict):
        raise UserError(f"{where}: base must be a mapping like a --config file")
    sets = _as_list(content.get("set"), f"{where}: set")
    if not all(isinstance(s, str) for s in sets):
        raise UserError(f"{where}: set must be a list of 'kind.field=value' strings")
    patterns = {}
    for key in ("only", "exclude"):
        patterns[key] = _as_list(content.get(key), f"{where}: {key}")
        for pattern in patterns[key]:
            if not isinstance(pattern, dict) or not pattern:
                raise UserError(f"{where}: each {key} entry must be a mapping of grid key -> value(s)")
            for pattern_key in pattern:
                if pattern_key not in grid:
                    raise UserError(
                        f"{where}: {key} pattern key {pattern_key!r} is not a grid axis "
                        f"({', '.join(map(str, grid)) or 'no grid'})"
                    )
    out = content.get("out")
    if out is not None and (not isinstance(out, str) or not out.strip()):
        raise UserError(f"{where}: out must be a directory path (a string), got {out!r}")
    sweep_name = content.get("name")
    if sweep_name is not None and (not isinstance(sweep_name, str) or not sweep_name.strip()):
        raise UserError(f"{where}: name must be a non-empty string, got {sweep_name!r}")
    return SweepSpec(
        name=sweep_name or name,
        out=Path(out) if out else None,
        grid=grid,
        base=base,
        sets=list(sets),
        only=patterns["only"],
        exclude=patterns["exclude"],
        runs=runs,
        path=path,
        evaluator=_as_list(content.get("evaluator"), f"{where}: evaluator"),
    )


def load_sweep(path: Path) -> SweepSpec:
    """Read a sweep YAML file (safe loader) into a SweepSpec; a UserError when malformed."""
    path = Path(path)
    return parse_sweep(load_yaml(path), name=path.stem, path=path)


# ----------------------------------------------------------------------------- expansion


def _merge_component(lower: Any, upper: Any) -> Any:
    """``upper`` over ``lower``: fields merge when the names agree or upper has none, else replace."""
    if upper is None or lower is None or not isinstance(upper, (dict, str)):
        return copy.deepcopy(upper)
    lower_name, lower_fields = split_component(lower, "component")
    upper_name, upper_fields = split_component(upper, "component")
    if upper_name is not None and upper_name != lower_name:
        return copy.deepcopy(upper)
    name = upper_name if upper_name is not None else lower_name
    fields = {**copy.deepcopy(lower_fields), **copy.deepcopy(upper_fields)}
    if not fields:
        return name
    return {"name": name, **fields} if name is not None else fields


def merge_specs(lower: dict, upper: dict) -> dict:
    """Layer one ``--config`` style dict over another (train merges, components see above)."""
    merged = copy.deepcopy(lower)
    for key, value in upper.items():
        if key in COMPONENT_KINDS and key in merged:
            merged[key] = _merge_component(merged[key], value)
        elif key == "train" and isinstance(merged.get("train"), dict) and isinstance(value, dict):
            merged["train"] = {**merged["train"], **copy.deepcopy(value)}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _set_field(spec: dict, kind: str, name: str, value: Any) -> None:
    """Put one ``<kind>.<field>`` axis value into the spec, keeping its type (not via --set)."""
    if kind == "train":
        train = spec.get("train")
        spec["train"] = {**(train if isinstance(train, dict) else {}), name: value}
        return
    component_name, fields = split_component(spec.get(kind), kind)
    fields[name] = value
    spec[kind] = {"name": component_name, **fields} if component_name is not None else fields


def _value_matches(actual: Any, wanted: Any, component: bool) -> bool:
    if component and isinstance(wanted, str):
        return split_component(actual, "component")[0] == wanted
    if component:
        return split_component(actual, "component") == split_component(wanted, "component")
    return actual == wanted


def _matches(combination: dict, pattern: dict) -> bool:
    for key, wanted in pattern.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        component = key in GRID_COMPONENT_KEYS or key == "evaluator"
        if not any(_value_matches(combination[key], option, component) for option in options):
            return False
    return True


def _short(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        name, fields = split_component(value, "component")
        inner = ",".join(f"{k}={v}" for k, v in fields.items())
        return f"{name or ''}({inner})" if inner else str(name)
    return str(value)


def grid_combinations(sweep: SweepSpec) -> list[dict]:
    """The grid's combinations (axis -> value) after ``only`` and ``exclude``, in run order."""
    if not sweep.grid:
        return []
    component_axes = [k for k in GRID_COMPONENT_KEYS if k in sweep.grid]
    field_axes = [k for k in sweep.grid if k not in GRID_COMPONENT_KEYS and k != "seed"]
    axes = component_axes + field_axes + (["seed"] if "seed" in sweep.grid else [])
    combinations = []
    for values in itertools.product(*(sweep.grid[axis] for axis in axes)):
        combination = dict(zip(axes, values))
        if sweep.only and not any(_matches(combination, p) for p in sweep.only):
            continue
        if any(_matches(combination, p) for p in sweep.exclude):
            continue
        combinations.append(combination)
    return combinations


def _combination_spec(base: dict, combination: dict) -> dict:
    upper: dict[str, Any] = {
        k: v for k, v in combination.items() if k in GRID_COMPONENT_KEYS or k in ("seed", "evaluator")
    }
    spec = merge_specs(base, upper)
    for key, value in combination.items():
        if "." in key:
            kind, name = key.split(".", 1)
            _set_field(spec, kind, name, value)
    return spec


def expand(sweep: SweepSpec, import_components: bool = True) -> list[RunSpec]:
    """Every run of the sweep, each resolved (validated) up front; duplicates by run_id dropped.

    A UserError naming the offending run (its index and label) when any run is invalid. Without
    ``import_components`` the runs are validated from the component cards alone (a dry run: no torch, no
    Avalanche, but no cross-field checks, see :func:`cl_bench.config.resolve`).
    """
    candidates: list[tuple[dict, list[str], str]] = []
    varying = [k for k, v in sweep.grid.items() if len(v) > 1 or k in ("scenario", "strategy", "seed")]
    for combination in grid_combinations(sweep):
        label = " ".join(f"{k}={_short(combination[k])}" for k in combination if k in varying)
        candidates.append((_combination_spec(sweep.base, combination), list(sweep.sets), label))
    for index, entry in enumerate(sweep.runs):
        entry = dict(entry)
        own_sets = _as_list(entry.pop("set", None), f"runs[{index}].set")
        spec = merge_specs(sweep.base, entry)
        candidates.append((spec, list(sweep.sets) + [str(s) for s in own_sets], f"runs[{index}]"))

    from cl_bench.evaluation import as_entries, resolve_evaluators

    runs: list[RunSpec] = []
    seen: dict[str, RunSpec] = {}
    for number, (spec, sets, label) in enumerate(candidates, start=1):
        try:
            config = resolve(spec, None, sets, import_components=import_components)
            entries = list(sweep.evaluator) + as_entries(spec.get("evaluator"))
            evaluators = resolve_evaluators(entries, sets, import_components=import_components)
        except UserError as error:
            raise UserError(f"sweep run {number}/{len(candidates)} ({label}): {error}") from None
        spec = {**spec, "evaluator": [evaluator.to_dict() for evaluator in evaluators]}
        if not spec["evaluator"]:
            del spec["evaluator"]
        if label.startswith("runs["):
            label = f"{label} {config.scenario}/{config.strategy} seed={config.seed}"
        run_id = config.run_id()
        if run_id in seen:  # the same training run: it also runs this combination's evaluators
            known = seen[run_id]
            for evaluator in evaluators:
                if evaluator.filename not in known.evaluations:
                    known.evaluations.append(evaluator.filename)
                    known.spec.setdefault("evaluator", []).append(evaluator.to_dict())
            continue
        names = {
            "scenario": config.scenario,
            "model": config.model,
            "strategy": config.strategy,
            "attack": config.attack or "none",
            "seed": str(config.seed),
        }
        run = RunSpec(
            spec=spec,
            sets=sets,
            run_id=run_id,
            config_id=config.config_id(),
            label=label,
            names=names,
            evaluations=[evaluator.filename for evaluator in evaluators],
        )
        seen[run_id] = run
        runs.append(run)
    return runs


SELECTABLE = ("scenario", "model", "strategy", "attack", "seed")


def parse_selection(assignments: Sequence[str]) -> dict[str, set[str]]:
    """``["scenario=continual_swiss_roll", "strategy=gpm,gpm_sparse"]`` -> kind -> accepted names."""
    selection: dict[str, set[str]] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or key not in SELECTABLE or not value.strip(","):
            raise UserError(
                f"--only {assignment!r}: expected KEY=NAME[,NAME...] with KEY one of "
                f"{', '.join(SELECTABLE)}, e.g. --only scenario=continual_swiss_roll"
            )
        selection.setdefault(key, set()).update(name for name in value.split(",") if name)
    return selection


def select(runs: Sequence[RunSpec], selection: dict[str, set[str]]) -> list[RunSpec]:
    """The runs whose resolved names match every key of ``selection`` (one of its names per key)."""
    return [run for run in runs if all(run.names.get(key) in names for key, names in selection.items())]


# ----------------------------------------------------------------------------- execution


def _default_run_fn(spec: dict, sets: list[str], out_dir: Path, force: bool = False, progress: bool = False) -> Path:
    # imported lazily: the runner pulls in torch/Avalanche, needed only where a run executes
    from cl_bench.runner import run_from_spec

    return run_from_spec(spec, sets, out_dir, force=force, progress=progress)


def _limit_threads(threads: Optional[int]) -> None:
    """Cap this worker's torch threads so N parallel workers do not oversubscribe the CPUs."""
    if threads is None:
        return
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _run_one(
    run_fn: RunFn, spec: dict, sets: list[str], out_dir: str, force: bool, threads: Optional[int] = None
) -> tuple[str, float]:
    """Execute one run (in a worker process, a Ray task or in-process): (run dir, seconds)."""
    _limit_threads(threads)
    start = time.perf_counter()
    run_dir = run_fn(spec, sets, Path(out_dir), force=force, progress=False)
    return str(run_dir), time.perf_counter() - start


def worker_threads(workers: int) -> Optional[int]:
    """Torch threads per worker: the CPU count shared out, None (leave alone) for one worker."""
    if workers <= 1:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(error, UserError):
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class _Reporter:
    """Progress bar over runs plus one printed line per finished or failed run."""

    def __init__(self, total: int, progress: bool, echo: Callable[[str], None]):
        from tqdm import tqdm

        self.total = total
        self.count = 0
        # disable=None: no bar when stderr is not a terminal (redirected logs)
        self.bar = tqdm(total=total, desc="sweep", unit="run", disable=None if progress else True, leave=False)
        self.echo = echo

    def finished(self, run: RunSpec, run_dir: Path, seconds: float) -> None:
        self.count += 1
        self.bar.update(1)
        self.echo(f"[{self.count}/{self.total}] done    {run.label} -> {run_dir} ({seconds:.1f}s)")

    def failed(self, run: RunSpec, error: str) -> None:
        self.count += 1
        self.bar.update(1)
        self.echo(f"[{self.count}/{self.total}] FAILED  {run.label}: {error}")

    def close(self) -> None:
        self.bar.close()


def _echo_default(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)  # through tqdm so the bar is redrawn below the line


def execute(
    runs: Sequence[RunSpec],
    out_dir: Path,
    workers: int = 1,
    executor: str = "local",
    address: Optional[str] = None,
    force: bool = False,
    progress: bool = True,
    run_fn: Optional[RunFn] = None,
    echo: Optional[Callable[[str], None]] = None,
    ray_options: Optional[dict] = None,
    ray_runtime_env: Optional[dict] = None,
) -> SweepResult:
    """Run every run not already complete in ``out_dir``; failures are collected, not raised.

    ``executor``: "local" (workers=1 runs in this process; more use a spawn process pool) or
    "ray" (tasks on the cluster at ``address``, or a local Ray when None; ``out_dir`` must be
    on a filesystem the Ray workers share; ``ray_options`` go to ``ray.remote``, default
    ``{"num_cpus": 1}``; a task's torch threads = its ``num_cpus``), ``ray_runtime_env`` to ``ray.init``
    (e.g. ``{"env_vars": {...}}``; every node needs cl-bench installed). ``run_fn`` (picklable, module level)
    defaults to ``cl_bench.runner.run_from_spec``.
    """
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    run_fn = run_fn or _default_run_fn
    echo = echo or _echo_default
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    result = SweepResult()
    pending: list[RunSpec] = []
    for run in runs:
        record_path = out_dir / run.run_id / RECORD_FILE
        evaluated = all((record_path.parent / EVALUATIONS_DIR / name).is_file() for name in run.evaluations)
        if not force and is_complete(record_path) and evaluated:
            result.skipped_dirs.append(record_path.parent)
        else:
            pending.append(run)
    if result.skipped:
        echo(f"skipping {result.skipped} run(s) with a complete record in {out_dir} (use --force to redo)")
    if not pending:
        return result

    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError(f"the ray executor needs Ray: {RAY_INSTALL_HINT}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    reporter = _Reporter(len(pending), progress, echo)
    try:
        if executor == "ray":
            _execute_ray(pending, out_dir, force, run_fn, address, ray_options, reporter, result, ray_runtime_env)
        elif workers == 1:
            _execute_in_process(pending, out_dir, force, run_fn, reporter, result)
        else:
            _execute_pool(pending, out_dir, force, run_fn, workers, reporter, result)
    finally:
        reporter.close()
    position = {id(run): index for index, run in enumerate(pending)}
    result.failures.sort(key=lambda failure: position[id(failure.run)])  # sweep order, not finishing order
    for failure in result.failures:
        echo(f"failed: {failure.run.label} ({failure.run.run_id}): {failure.error}")
    return result


def _execute_in_process(
    pending: list[RunSpec], out_dir: Path, force: bool, run_fn: RunFn, reporter: _Reporter, result: SweepResult
) -> None:
    for run in pending:
        _collect(lambda: _run_one(run_fn, run.spec, run.sets, str(out_dir), force), run, reporter, result)


def _execute_pool(
    pending: list[RunSpec],
    out_dir: Path,
    force: bool,
    run_fn: RunFn,
    workers: int,
    reporter: _Reporter,
    result: SweepResult,
) -> None:
    # spawn: a fresh interpreter per worker; forking a process that holds torch/CUDA/OpenMP state is unsafe
    context = multiprocessing.get_context("spawn")
    threads = worker_threads(workers)
    with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=context) as pool:
        futures: dict[Future, RunSpec] = {}
        order: dict[Future, int] = {}  # report runs finishing together in sweep order
        try:
            for index, run in enumerate(pending):
                future = pool.submit(_run_one, run_fn, run.spec, run.sets, str(out_dir), force, threads)
                futures[future] = run
                order[future] = index
            remaining = set(futures)
            while remaining:
                finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: order[f]):
                    _collect(future.result, futures[future], reporter, result)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _collect(
    get_result: Callable[[], tuple[str, float]], run: RunSpec, reporter: _Reporter, result: SweepResult
) -> None:
    """Record one finished task: its run dir, or its failure (a dead worker included)."""
    try:
        run_dir_name, seconds = get_result()
    except BrokenProcessPool as error:
        message = f"worker process died (crashed or out of memory?): {_one_line(error)}"
        result.failures.append(RunFailure(run, message))
        reporter.failed(run, message)
        return
    except Exception as error:  # one failed run must not stop the sweep
        cause = getattr(error, "__cause__", None)  # the pool attaches the worker's traceback here
        result.failures.append(RunFailure(run, _one_line(error), str(cause or traceback.format_exc())))
        reporter.failed(run, _one_line(error))
        return
    run_dir = Path(run_dir_name)
    result.done_dirs.append(run_dir)
    reporter.finished(run, run_dir, seconds)


def _execute_ray(
    pending: list[RunSpec],
    out_dir: Path,
    force: bool,
    run_fn: RunFn,
    address: Optional[str],
    ray_options: Optional[dict],
    reporter: _Reporter,
    result: SweepResult,
    runtime_env: Optional[dict] = None,
) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
    options = {"num_cpus": 1, **(ray_options or {})}
    threads = max(1, int(options["num_cpus"])) if options.get("num_cpus") else None
    remote_run = ray.remote(**options)(_run_one)
    refs = {}
    for run in pending:
        refs[remote_run.remote(run_fn, run.spec, run.sets, str(out_dir.resolve()), force, threads)] = run
    remaining = list(refs)
    while remaining:
        finished, remaining = ray.wait(remaining, num_returns=1)
        for ref in finished:
            run = refs[ref]
            _collect(lambda: _ray_get(ray, ref), run, reporter, result)


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the ``__cause__`` of the re-raised error."""

    def __str__(self) -> str:
        return str(self.args[0])


def _ray_get(ray: Any, ref: Any) -> tuple[str, float]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        # surface the task's own exception (e.g. a UserError) rather than Ray's wrapper
        cause = getattr(error, "cause", None)
        cause = cause if isinstance(cause, Exception) else error
        raise cause from _RemoteTraceback(getattr(error, "traceback_str", None) or str(error))


def sweep_out_dir(sweep: SweepSpec, out: Optional[Path] = None) -> Path:
    """Where runs go: the explicit ``out`` (CLI ``--out``), else the sweep's ``out:``, else runs/."""
    return Path(out) if out is not None else (sweep.out or Path("runs"))


def planned_runs(
    path: Path, selection: Optional[dict[str, set[str]]] = None, import_components: bool = True
) -> tuple[SweepSpec, list[RunSpec]]:
    """Load a sweep file and expand it (validating every run), keeping the ``selection`` (see ``--only``)."""
    sweep = load_sweep(path)
    return sweep, select(expand(sweep, import_components), selection or {})


def run_sweep(
    path: Path,
    out: Optional[Path] = None,
    selection: Optional[dict[str, set[str]]] = None,
    tracking: Optional[dict] = None,
    **execute_options: Any,
) -> SweepResult:
    """Load, expand (validating every run), select and execute a sweep file: the `cl-bench sweep` path.
    ``tracking`` ({"name", "uri"}) goes to every run's spec (not part of its identity)."""
    sweep, runs = planned_runs(path, selection)
    if tracking:
        runs = [dataclasses.replace(run, spec={**run.spec, "tracking": tracking}) for run in runs]
    return execute(runs, sweep_out_dir(sweep, out), **execute_options)
