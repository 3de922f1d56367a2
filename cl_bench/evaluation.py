"""The measurement phase: evaluators (and test-time attacks) on a run's final model.

    cl-bench run ... --evaluator NAME [--set evaluator.FIELD=VALUE]   after training, in the same process
    cl-bench evaluate RUN_DIR... --evaluator NAME                     later, on finished runs
    sweep files: evaluator: [NAME, {name: NAME, field: [v1, v2]}] (or a grid axis)

Every finished run keeps ``model.safetensors`` (its final model's tensors; a strategy whose prediction reads
more than the model keeps its final checkpoint too). ``cl-bench evaluate`` rebuilds the run from its record
(the same resolved config, so the same run id), loads that state and runs the same phase. Each evaluation is
written to ``<run_dir>/evaluations/<name>-<eval_id>.json`` (atomically, see :data:`EVALUATION_SCHEMA_VERSION`);
``eval_id`` hashes the evaluator's resolved config, so an evaluation is found again instead of redone.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from cl_bench.config import build_config, config_to_dict, short_hash, split_component
from cl_bench.errors import UserError
from cl_bench.params import ComponentConfig
from cl_bench.records import EVALUATIONS_DIR, MODEL_FILE, REFERENCES_DIR
from cl_bench.registry import EVALUATORS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cl_bench.evaluator import EvaluationResult
    from cl_bench.runner import Prepared

EVALUATION_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class EvaluatorSpec:
    """One evaluator with its resolved config."""

    name: str
    config: ComponentConfig

    def to_dict(self) -> dict:
        return {"name": self.name, **config_to_dict(self.config)}

    @property
    def eval_id(self) -> str:
        return short_hash(self.to_dict())

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.eval_id}.json"


def _expand_entry(entry: Any) -> list[tuple[str, dict]]:
    """A name, or a mapping whose list values are axes: ``{name: x, dropout: [bernoulli, gaussian]}`` -> two
    configs. A field that holds a list (``rates``) takes a list as its value; a list of lists is its axis."""
    import typing

    name, values = split_component(entry, "evaluator")
    if name is None:
        raise UserError(f"an evaluator entry needs a name, got {entry!r} (see `cl-bench list evaluator`)")
    hints = typing.get_type_hints(EVALUATORS.card(name).config_class)

    def holds_list(field: str) -> bool:
        hint = hints.get(field)
        options = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
        return any(typing.get_origin(option) in (list, tuple) for option in options)

    axes = [
        key
        for key, value in values.items()
        if isinstance(value, list) and (not holds_list(key) or (value and all(isinstance(v, list) for v in value)))
    ]
    combinations = itertools.product(*(values[key] for key in axes)) if axes else [()]
    return [(name, {**values, **dict(zip(axes, combination))}) for combination in combinations]


def as_entries(value: Any) -> list:
    """A config's or sweep's ``evaluator:`` value as a list of entries (None: no evaluator)."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def resolve_evaluators(entries: Any, sets: Sequence[str] = (), import_components: bool = True) -> list[EvaluatorSpec]:
    """Evaluator names or mappings (CLI ``--evaluator``, a config's or sweep's ``evaluator:``) plus the
    ``evaluator.FIELD=VALUE`` assignments of ``sets``, validated; duplicates (same eval id) once."""
    from cl_bench.config import parse_set

    entries = as_entries(entries)
    assignments = [parse_set(s) for s in sets]
    overrides = {name: value for kind, name, value in assignments if kind == "evaluator"}
    if overrides and not entries:
        raise UserError("evaluator settings were given but no evaluator; add --evaluator NAME")
    specs: list[EvaluatorSpec] = []
    used: set[str] = set()
    for entry in entries:
        if entry is None:  # a grid's "no evaluator" value
            continue
        for name, values in _expand_entry(entry):
            card = EVALUATORS.card(name)
            known = {spec.name for spec in dataclasses.fields(card.config_class)}
            applying = {key: value for key, value in overrides.items() if key in known}
            used.update(applying)
            config_class = card.config_class if not import_components else EVALUATORS.get(name).config_class
            config = build_config(config_class, {**values, **applying}, "evaluator")
            spec = EvaluatorSpec(name, config)
            if all(existing.eval_id != spec.eval_id for existing in specs):
                specs.append(spec)
    unused = sorted(set(overrides) - used)
    if unused:
        names = ", ".join(sorted({spec.name for spec in specs}))
        raise UserError(f"unknown evaluator field {unused[0]!r} (no chosen evaluator has it: {names})")
    return specs


def evaluation_path(run_dir: Path, spec: EvaluatorSpec) -> Path:
    return Path(run_dir) / EVALUATIONS_DIR / spec.filename


def missing_evaluations(run_dir: Path, specs: Sequence[EvaluatorSpec]) -> list[EvaluatorSpec]:
    """The evaluators of ``specs`` without a well-formed artefact in ``run_dir``."""
    from cl_bench.records import read_evaluation

    return [spec for spec in specs if read_evaluation(evaluation_path(run_dir, spec))[0] is None]


def check_requirements(prepared: "Prepared", specs: Sequence[EvaluatorSpec]) -> None:
    """A UserError, before anything is trained or written, for an evaluator the run cannot serve."""
    from cl_bench.registry import MODELS
    from cl_bench.tensor_data import gather

    scenario = prepared.scenario
    for spec in specs:
        traits = EVALUATORS.traits(spec.name)
        if traits.offline_only and scenario.online is not None:
            raise UserError(f"evaluator {spec.name} needs an offline stream; {prepared.config.scenario} is task-free")
        if traits.needs_vit and not MODELS.traits(prepared.config.model).vit:
            raise UserError(f"evaluator {spec.name} needs a ViT model; {prepared.config.model} is not one")
        if traits.needs_tensor_data and gather(scenario.benchmark.test_stream[0].dataset) is None:
            raise UserError(
                f"evaluator {spec.name} reads whole splits as tensors; {prepared.config.scenario} streams "
                f"images one by one (choose a tensor-resident scenario)"
            )
        EVALUATORS.get(spec.name).builder(spec.config).check(scenario, prepared.strategy.model)


# ----------------------------------------------------------------------------- the final model


def write_model(run_dir: Path, model: "nn.Module") -> str:
    """``model.safetensors`` (tensors only) written atomically; returns its SHA-256."""
    from safetensors.torch import save_file

    from cl_bench.data import file_digest
    from cl_bench.records import atomic_output

    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}
    path = Path(run_dir) / MODEL_FILE
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp))
    return file_digest(path, "sha256")


def _require_model(run_dir: Path) -> Path:
    """``run_dir/model.safetensors``; a one-line UserError when the run has none."""
    path = run_dir / MODEL_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} has no {MODEL_FILE} (written before evaluations existed?); rerun it with --force")
    return path


def load_model(run_dir: Path, model: "nn.Module", sha256: Optional[str] = None) -> None:
    """Load ``model.safetensors`` of ``run_dir`` into ``model``; a one-line UserError when it is missing, does
    not match the recorded digest, or does not fit the model."""
    from safetensors.torch import load_file

    from cl_bench.data import file_digest

    path = _require_model(Path(run_dir))
    if sha256 is not None and file_digest(path, "sha256") != sha256:
        raise UserError(f"{path} does not match the SHA-256 in its record (replaced or damaged); rerun with --force")
    try:
        tensors = load_file(str(path))
        model.load_state_dict(tensors)
    except Exception as error:  # whatever a damaged file trips on, it is the file's fault
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load {path}: {reason[:200]}; rerun the run with --force") from None


# ----------------------------------------------------------------------------- the phase


def _generator(seed: int, eval_id: str) -> "torch.Generator":
    import torch

    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + int(eval_id, 16)) % 2**63)
    return generator


def build_context(prepared: "Prepared", record: dict, out_dir: Path, eval_id: str, log: Callable[[str], None]):
    """The :class:`EvaluationContext` of a prepared run whose strategy holds its final state."""
    import torch

    from cl_bench.evaluator import EvaluationContext, ReferenceRun, frozen_copy
    from cl_bench.templates import predict_logits

    strategy, scenario = prepared.strategy, prepared.scenario

    def predict(model: "nn.Module", inputs: "torch.Tensor", task_labels: Optional["torch.Tensor"]) -> "torch.Tensor":
        if task_labels is None:
            task_labels = torch.zeros(len(inputs), dtype=torch.long)
        trained = strategy.model
        strategy.model = model  # the strategy's rule, applied to the model the evaluator gives
        try:
            return predict_logits(strategy, inputs.to(prepared.device), task_labels.to(prepared.device))
        finally:
            strategy.model = trained

    def initial_model() -> "nn.Module":
        model = copy.deepcopy(strategy.model)
        model.load_state_dict(prepared.initial_state)
        return model

    def reference_run(sets: Sequence[str], seed: Optional[int]) -> ReferenceRun:
        from cl_bench import records, runner
        from cl_bench.config import resolve

        spec = copy.deepcopy(record["config"])
        if seed is not None:
            spec["seed"] = seed
        config = resolve(spec, None, list(sets))
        # a run the user already has is found by its run id; otherwise it is trained into references/
        where = out_dir if records.is_complete(out_dir / config.run_id()) else out_dir / REFERENCES_DIR
        command = f"reference run for {record['run_id']} (set: {list(sets)}, seed: {config.seed})"
        run_dir = runner.execute(config, where, command=command, progress=False, log=log)
        reference_record, reason = records.read_record(run_dir)
        if reference_record is None:
            raise UserError(f"reference run {run_dir} did not complete: {reason}")
        reference = runner.prepare(config, where, progress=False)
        load_model(run_dir, reference.strategy.model)
        return ReferenceRun(run_dir, reference_record, frozen_copy(reference.strategy.model))

    datasets: dict[str, Sequence[Any]] = {
        "test": [experience.dataset for experience in scenario.benchmark.test_stream],
        "train": [experience.dataset for experience in scenario.benchmark.train_stream],
        "validation": list(scenario.validation),
    }
    return EvaluationContext(
        model=frozen_copy(strategy.model),
        record=record,
        device=prepared.device,
        generator=_generator(int(record["seed"]), eval_id),
        _predict=predict,
        _datasets=datasets,
        _initial_model=initial_model,
        _reference_run=reference_run,
        n_classes=scenario.num_classes,
        eval_batch_size=prepared.config.train.eval_batch_size,
    )


def json_safe(value: Any) -> Any:
    """Plain JSON values: NaN -> None (undefined), numpy/torch scalars -> Python numbers, tuples -> lists."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, (int, str, bool)):
        return value
    raise TypeError(f"an evaluation result holds a {type(value).__name__}; return numbers, strings and lists")


def artefact(spec: EvaluatorSpec, record: dict, result: "EvaluationResult", seconds: float, command: str) -> dict:
    from cl_bench.records import environment

    return {
        "schema_version": EVALUATION_SCHEMA_VERSION,
        "kind": "evaluation",
        "evaluator": spec.name,
        "eval_id": spec.eval_id,
        "config": spec.to_dict(),
        "run_id": record["run_id"],
        "config_id": record.get("config_id"),
        "seed": record["seed"],
        "model_sha256": (record.get("final_model") or {}).get("sha256"),
        "metrics": json_safe(result.metrics),
        "rows": json_safe(result.rows),
        "details": json_safe(result.details),
        "timing": {"total_s": seconds},
        "command": command,
        "environment": environment(record.get("environment", {}).get("device", "cpu")),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_phase(
    prepared: "Prepared",
    record: dict,
    run_dir: Path,
    specs: Sequence[EvaluatorSpec],
    command: str,
    log: Callable[[str], None],
) -> list[Path]:
    """Run every evaluator of ``specs`` and write its artefact (callers choose which ones need running)."""
    from cl_bench.evaluator import run_evaluator
    from cl_bench.records import atomic_write_text, evaluation_problem, strict_json

    written = []
    for spec in specs:
        path = evaluation_path(run_dir, spec)
        evaluator = EVALUATORS.get(spec.name).builder(spec.config)
        context = build_context(prepared, record, run_dir.parent, spec.eval_id, log)
        result, seconds = run_evaluator(evaluator, context)
        content = artefact(spec, record, result, seconds, command)
        problem = evaluation_problem(content)
        if problem:
            raise TypeError(f"evaluator {spec.name} returned a result the artefact schema refuses: {problem}")
        atomic_write_text(path, strict_json(content, indent=1) + "\n")
        log(f"evaluation {spec.name} of {record['run_id']}: {_summary(content)} -> {path}")
        written.append(path)
    return written


def run_test_time_attack(prepared: "Prepared", record: dict, run_dir: Path, log: Callable[[str], None]) -> dict:
    """The record's ``test_time_attack`` block: the run's test-time attack measured in the phase's context."""
    from cl_bench.attack import TestTimeAttack
    from cl_bench.evaluator import run_evaluator

    attack = prepared.attack
    if not isinstance(attack, TestTimeAttack):
        raise TypeError("run_test_time_attack needs a run whose attack is a TestTimeAttack")
    config = record["config"]["attack"]
    context = build_context(prepared, record, run_dir.parent, short_hash(config), log)
    result, seconds = run_evaluator(attack, context)
    return {
        "name": config["name"],
        "metrics": json_safe(result.metrics),
        "rows": json_safe(result.rows),
        "details": json_safe(result.details),
        "wall_time_s": seconds + attack.observed_s,
    }


def observe_test_time_attack(prepared: "Prepared", run_dir: Path, experience: int) -> None:
    """Show the run's test-time attack the model after training experience ``experience`` (mid-stream)."""
    from cl_bench.attack import TestTimeAttack

    attack = prepared.attack
    if not isinstance(attack, TestTimeAttack):
        raise TypeError("observe_test_time_attack needs a run whose attack is a TestTimeAttack")
    config = prepared.config
    resolved = config.to_dict()
    partial = {"run_id": config.run_id(), "seed": config.seed, "config": resolved}
    started = time.perf_counter()
    context = build_context(prepared, partial, run_dir.parent, short_hash(resolved["attack"]), lambda _: None)
    attack.observe(context, experience, prepared.scenario.n_experiences)
    attack.observed_s += time.perf_counter() - started


def _summary(content: dict) -> str:
    numbers = [f"{k} {v:.4g}" for k, v in content["metrics"].items() if isinstance(v, (int, float))][:4]
    return ", ".join(numbers) + f" ({content['timing']['total_s']:.1f} s)"


def evaluate_runs(
    run_dirs: Sequence[Path],
    specs: Sequence[EvaluatorSpec],
    command: str = "",
    force: bool = False,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """``cl-bench evaluate``: every run directory checked first (complete, model present, same config), then
    each rebuilt from its record, its final state loaded, and the phase run on it."""
    if not specs:
        raise UserError("no evaluator given; add --evaluator NAME (see `cl-bench list evaluator`)")
    checked = [_check_run(Path(run_dir)) for run_dir in run_dirs]
    written: list[Path] = []
    for run_dir, record, config in checked:
        todo = list(specs) if force else missing_evaluations(run_dir, specs)
        if not todo:
            log(f"{run_dir}: every evaluation exists (use --force to redo them)")
            continue
        written += evaluate_loaded(run_dir, record, config, todo, command, log)
    return written


def _check_run(run_dir: Path) -> tuple[Path, dict, Any]:
    from cl_bench import records
    from cl_bench.config import resolve

    record, reason = records.read_record(run_dir)
    if record is None:
        raise UserError(f"{run_dir}: {reason}; evaluate a complete run (finish it with `cl-bench run --resume`)")
    _require_model(run_dir)  # every run is checked before any is rebuilt
    config = resolve(copy.deepcopy(record["config"]))
    if config.run_id() != record["run_id"]:
        raise UserError(
            f"{run_dir}: its config resolves to run id {config.run_id()}, not {record['run_id']} (the components' "
            f"defaults changed since); rerun it with this version of cl-bench"
        )
    return run_dir, record, config


def evaluate_loaded(
    run_dir: Path, record: dict, config: Any, specs: Sequence[EvaluatorSpec], command: str, log: Callable[[str], None]
) -> list[Path]:
    """Rebuild a finished run, load its final state, run the phase."""
    from cl_bench import checkpoint, runner

    prepared = runner.prepare(config, run_dir.parent, progress=False)
    check_requirements(prepared, specs)
    if prepared.traits.predicts_from_model:
        load_model(run_dir, prepared.strategy.model, (record.get("final_model") or {}).get("sha256"))
    else:
        if not checkpoint.exists(run_dir):
            raise UserError(f"{run_dir} has no final checkpoint, which strategy {config.strategy} predicts from")
        checkpoint.load(run_dir, prepared.strategy, prepared.traits.checkpoint_attributes)
    return run_phase(prepared, record, run_dir, specs, command, log)
