"""The runner: one explicit loop from a resolved config to a run record.

    seed -> device -> scenario -> model -> strategy -> [resume from checkpoint]
    offline:   for each experience i:  strategy.train(experience i) -> evaluate every test experience
                                       -> row i of the accuracy matrix -> checkpoint
               (an attack on experience k: k and the rest twice from the same state, clean and poisoned)
    task-free: for each incoming mini-batch: strategy.train(bare mini-batch experience)
                                       -> every N samples: anytime accuracy on the classes seen so far
               at each hidden boundary: row of the accuracy matrix -> checkpoint
    metrics -> record.json + accuracy_matrix.csv + forgetting-curve PNG (written atomically)

The algorithm lives in the strategy; this module only orders the phases, times them and keeps
the results. Bad input is rejected before the run directory is created. ``train.num_workers`` gives
the offline training and every evaluation worker processes for per-item (224-px) datasets; the task-free
stream's own mini-batches are read in the main process (one pass, each image once).
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
from avalanche.benchmarks.scenarios.online import split_online_stream
from tqdm.auto import tqdm

from cl_bench import checkpoint, evaluation, metrics, peft, records
from cl_bench.attack import Attack, TestTimeAttack
from cl_bench.config import RunConfig, TrainConfig, materialize, resolve
from cl_bench.device import seed_everything, select_device
from cl_bench.errors import UserError
from cl_bench.evaluation import EvaluatorSpec
from cl_bench.loop_state import AnytimeCurve, LoopState, OnlineProgress
from cl_bench.registry import ATTACKS, MODELS, SCENARIOS, STRATEGIES
from cl_bench.scenario import ScenarioConfig, ScenarioData, cap_per_class, exclude_rows, split_validation
from cl_bench.templates import (
    AuxiliaryLossPlugin,
    DivergenceGuard,
    ProgressPlugin,
    ReportingPlugin,
    StrategyContext,
    eval_mode,
    predict_logits,
)
from cl_bench.tracking import Tracker, check_tracking, log_record, open_tracker, row_metrics
from cl_bench.traits import StrategyTraits
from cl_bench.tensor_data import make_loader


@torch.no_grad()
def accuracy(strategy, batches: Iterable) -> float:
    """Accuracy of the strategy's prediction rule over ``(inputs, targets, task_labels)`` batches."""
    correct, total = 0, 0
    with eval_mode(strategy.model):
        for inputs, targets, task_labels in batches:
            inputs, targets = inputs.to(strategy.device), targets.to(strategy.device)
            logits = predict_logits(strategy, inputs, task_labels.to(strategy.device))
            correct += int((logits.argmax(dim=1) == targets).sum())
            total += len(targets)
    return correct / max(total, 1)


def evaluate_datasets(strategy, datasets: Iterable, batch_size: int, num_workers: int = 0) -> list[float]:
    """Accuracy of the strategy's current model on each Avalanche dataset (in its eval transforms)."""
    return [
        accuracy(strategy, make_loader(dataset.eval(), batch_size, shuffle=False, num_workers=num_workers))
        for dataset in datasets
    ]


def evaluate_stream(strategy, test_stream, batch_size: int, num_workers: int = 0) -> list[float]:
    """Accuracy of the strategy's current model on every experience of ``test_stream``."""
    return evaluate_datasets(strategy, (experience.dataset for experience in test_stream), batch_size, num_workers)


def loader_options(train: TrainConfig) -> dict:
    """Avalanche's data-loader keywords for ``strategy.train``: workers kept alive across the epochs of an
    experience; none (the in-process default) for tensor data, which the slicing loaders ignore anyway."""
    if train.num_workers == 0:
        return {}
    return {"num_workers": train.num_workers, "persistent_workers": True}


@dataclass
class Prepared:
    """A validated run, built up to (but excluding) training."""

    config: RunConfig
    run_dir: Path
    scenario: ScenarioData
    strategy: Any  # an Avalanche strategy template (with the slicing data path)
    device: torch.device
    traits: StrategyTraits
    initial_state: dict  # the model's tensors before training (CPU copies): evaluators rebuild it from them
    attack: Optional[Attack] = None
    progress: bool = False
    backbone_card: Optional[dict] = None  # the card of a pre-trained backbone (strategies may rebuild the model)
    tracker: Optional[Tracker] = None  # an experiment tracker the rows stream to (--tracking)


def prepare(config: RunConfig, out_dir: Path, progress: bool) -> Prepared:
    """Seed, pick the device, build scenario, model and strategy. Raises UserError on bad input."""
    # Avalanche 0.6 warns about its own deprecated internals on every experience
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"avalanche\.")
    seed_everything(config.seed)
    device = select_device(config.train.device)
    scenario_entry = SCENARIOS.get(config.scenario)
    scenario_config = config.components["scenario"]
    scenario = scenario_entry.builder(scenario_config, config.seed)
    if isinstance(scenario_config, ScenarioConfig):
        if scenario_config.train_per_class:
            scenario = cap_per_class(scenario, scenario_config.train_per_class)
        if scenario_config.validation_fraction > 0:
            scenario = split_validation(scenario, scenario_config.validation_fraction, config.seed)
        if scenario_config.exclude:
            scenario = exclude_rows(scenario, scenario_config.exclude, config.seed)
    model_entry = MODELS.get(config.model)
    model = model_entry.builder(config.components["model"], scenario).to(device)
    if config.train.trainable != "all":
        peft.freeze_except(model, peft.select(model, config.train.trainable))
    initial_state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    # a task-free stream trains one mini-batch per experience: the runner draws one bar for the whole stream
    context = StrategyContext(
        model=model,
        train=config.train,
        scenario=scenario,
        device=device,
        plugins=[
            DivergenceGuard(),
            ProgressPlugin(scenario.n_experiences, enabled=progress and scenario.online is None),
        ]
        + ([AuxiliaryLossPlugin()] if MODELS.traits(config.model).auxiliary_loss else []),
    )
    strategy_entry = STRATEGIES.get(config.strategy)
    traits = STRATEGIES.traits(config.strategy)
    strategy = strategy_entry.builder(config.components["strategy"], context)
    attack = None
    if config.attack is not None:
        attack_entry = ATTACKS.get(config.attack)
        attack = attack_entry.builder(config.components["attack"], scenario, config.seed)
        test_time = ATTACKS.traits(config.attack).phase == "test"
        if test_time and not isinstance(attack, TestTimeAttack):
            raise UserError(
                f"attack {config.attack} declares the test phase but is no TestTimeAttack; choose one of "
                f"{', '.join(_training_attacks())}"
            )
        attack.progress = progress
        if not test_time and not attack.poisons_training:  # a training-time attack that would record clean numbers
            raise UserError(
                f"attack {config.attack} does not poison training data although it declares the training phase; "
                f"choose one of {', '.join(_training_attacks())}"
            )
        attack.target_index(scenario.n_experiences)  # validates the target before any work
        attack.check(model)
        attack_traits = ATTACKS.traits(config.attack)
        model_traits = MODELS.traits(config.model)
        if attack_traits.needs_vit and not model_traits.vit:
            raise UserError(f"attack {config.attack} needs a ViT model; {config.model} is not one")
        if attack_traits.needs_compute_statistics and not model_traits.adaptive_compute:
            adaptive = [name for name in MODELS.names() if MODELS.traits(name).adaptive_compute]
            raise UserError(
                f"attack {config.attack} attacks input-adaptive compute, but {config.model} spends the same compute "
                f"on every input; use --model {' or '.join(adaptive)}"
            )
        if traits.train_whole_stream and not test_time:
            raise UserError(
                f"strategy {config.strategy} trains once on the whole stream; "
                f"an attack on one experience needs a continual strategy"
            )
        if not traits.attackable and attack.calls_model:
            raise UserError(
                f"strategy {config.strategy} cannot be attacked by {config.attack} with these settings (the attack "
                f"runs the victim's model, which does not return plain logits); choose another victim"
            )
        if scenario.online is not None:
            raise UserError(
                f"attacks on task-free streams are not supported yet; use an offline scenario "
                f"(e.g. --scenario split_fmnist) with --attack {config.attack}"
            )
    if scenario.online is not None and not traits.task_free:
        raise UserError(
            f"strategy {config.strategy} cannot learn from a task-free stream (one pass over mini-batches); "
            f"use naive, online_er, online_lora, ncm ..."
        )
    return Prepared(
        config,
        Path(out_dir) / config.run_id(),
        scenario,
        strategy,
        device,
        traits,
        initial_state,
        attack,
        progress,
        getattr(model, "backbone_card", None),
    )


def _training_attacks() -> list[str]:
    return [name for name in ATTACKS.names() if ATTACKS.traits(name).phase == "training"]


def execute(
    config: RunConfig,
    out_dir: Path,
    command: str = "",
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    stop_after: Optional[int] = None,
    evaluators: Sequence[EvaluatorSpec] = (),
    tracking: Optional[str] = None,
    tracking_uri: Optional[str] = None,
) -> Path:
    """Run ``config`` into ``out_dir/<run_id>`` and return that directory; then the measurement phase:
    every evaluator of ``evaluators`` on the final model, each written to ``evaluations/``.

    A complete record there is returned as is unless ``force`` (only its missing evaluations are run).
    ``resume`` continues from the last checkpoint. ``stop_after`` (tests only) stops after that many
    experiences, like a kill. ``tracking`` streams the run to an experiment tracker (:mod:`cl_bench.tracking`;
    not part of the run's identity).
    """
    check_tracking(tracking)
    config = materialize(config)  # a config resolved from cards alone gets its components' real configs
    records.check_output_dir(out_dir)
    run_dir = Path(out_dir) / config.run_id()
    if records.is_complete(run_dir) and not force:
        log(f"run {config.run_id()} already complete (use --force to redo it)")
        if evaluators:
            evaluation.evaluate_runs([run_dir], evaluators, command=command, log=log)
        return run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file, not a run directory; remove it or choose another --out")
    if config.train.threads:  # 0: leave torch's (or the sweep worker's) thread count alone
        torch.set_num_threads(config.train.threads)
    started = time.perf_counter()
    prepared = prepare(config, out_dir, progress)
    evaluation.check_requirements(prepared, evaluators)
    created = [path for path in (run_dir, Path(out_dir)) if not path.exists()]
    try:
        return _execute_prepared(
            prepared, run_dir, command, resume, force, log, started, stop_after, evaluators, (tracking, tracking_uri)
        )
    except UserError:
        # a run that diverged (or refused its checkpoint) leaves nothing behind that it did not find
        if run_dir in created:
            shutil.rmtree(run_dir, ignore_errors=True)
        if Path(out_dir) in created and Path(out_dir).is_dir() and not any(Path(out_dir).iterdir()):
            Path(out_dir).rmdir()
        raise


def _execute_prepared(
    prepared: Prepared,
    run_dir: Path,
    command: str,
    resume: bool,
    force: bool,
    log: Callable[[str], None],
    started: float,
    stop_after: Optional[int],
    evaluators: Sequence[EvaluatorSpec] = (),
    tracking: tuple[Optional[str], Optional[str]] = (None, None),
) -> Path:
    config, scenario, strategy = prepared.config, prepared.scenario, prepared.strategy
    test_stream = scenario.benchmark.test_stream
    if resume and not force and checkpoint.exists(run_dir):
        # read (and verify) the checkpoint before anything in the directory changes
        progress = checkpoint.load(run_dir, strategy, prepared.traits.checkpoint_attributes)
        state = LoopState.from_progress(progress, run_dir, scenario.n_experiences)
        attack = prepared.attack
        if isinstance(attack, TestTimeAttack) and len(state.accuracy_matrix) > attack.target_index(
            scenario.n_experiences
        ):
            raise UserError(
                f"{config.run_id()} stopped after its test-time attack observed the stream (its state is not "
                f"checkpointed); rerun it with --force instead of --resume"
            )
        log(f"resuming {config.run_id()} after experience {len(state.accuracy_matrix)}")
    else:
        if force and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        state = LoopState(
            accuracy_initial=evaluate_stream(
                strategy, test_stream, config.train.eval_batch_size, config.train.num_workers
            )
        )
    elapsed_before = state.elapsed_s
    name, uri = tracking
    prepared.tracker = open_tracker(name, run_dir, config.run_id(), uri) if name else None
    try:
        if prepared.tracker is not None:
            prepared.tracker.log_config(config.to_dict())
        if scenario.online is not None:
            train_online(prepared, state, run_dir, started, elapsed_before, stop_after)
        else:
            train_offline(prepared, state, run_dir, started, elapsed_before, stop_after)
        if len(state.accuracy_matrix) < scenario.n_experiences:  # stopped early (stop_after, tests)
            return run_dir
        record = build_record(prepared, state, command)
        if isinstance(prepared.attack, TestTimeAttack):  # measured on the final model before the record is written
            record["test_time_attack"] = evaluation.run_test_time_attack(prepared, record, run_dir, log)
        write_outputs(run_dir, record, prepared)
        written = evaluation.run_phase(prepared, record, run_dir, evaluators, command, log) if evaluators else []
        if prepared.tracker is not None:
            log_record(prepared.tracker, record, [records.read_evaluation(path)[0] or {} for path in written])
    finally:
        if prepared.tracker is not None:
            prepared.tracker.close()
    return run_dir


def train_offline(
    prepared: Prepared,
    state: LoopState,
    run_dir: Path,
    started: float,
    elapsed_before: float,
    stop_after: Optional[int] = None,
) -> None:
    """Train experience by experience, one accuracy-matrix row and a checkpoint after each.

    With a training-time attack on experience k: the experiences before k once, then k and the rest twice from
    the same saved state, clean and poisoned (the paired measurement). ``stop_after`` counts experiences.
    """
    scenario, strategy = prepared.scenario, prepared.strategy
    train_stream = scenario.benchmark.train_stream
    whole_stream = prepared.traits.train_whole_stream
    attack = prepared.attack
    target = attack.target_index(scenario.n_experiences) if attack is not None and attack.poisons_training else None
    for index in range(len(state.accuracy_matrix), scenario.n_experiences if target is None else target):
        if whole_stream:  # trained once on the whole stream; every later row re-evaluates that model
            row = train_and_evaluate(prepared, train_stream if index == 0 else None, state)
        else:  # an experience emptied by scenario.exclude is not trained on (its row is still evaluated)
            experience = train_stream[index]
            row = train_and_evaluate(prepared, experience if len(experience.dataset) else None, state)
        state.accuracy_matrix.append(row)
        if isinstance(attack, TestTimeAttack):  # it may fit or measure on the model of this moment
            evaluation.observe_test_time_attack(prepared, run_dir, index)
        state.elapsed_s = elapsed_before + time.perf_counter() - started
        checkpoint.save(run_dir, strategy, state.to_progress(), prepared.traits.checkpoint_attributes)
        if stop_after is not None and index + 1 >= stop_after:
            return

    if target is not None:
        # the paired measurement: from the same saved state, the rest of the stream clean, then poisoned
        if not state.accuracy_matrix:
            # poisoning the first experience: no prefix checkpoint holds this state yet (it is also the
            # resume point of an interrupted attacked run)
            checkpoint.save(run_dir, strategy, state.to_progress(), prepared.traits.checkpoint_attributes)
        optimizer_state = copy.deepcopy(strategy.optimizer.state_dict())
        clean_rows = [
            train_and_evaluate(prepared, train_stream[index], state, "clean")
            for index in range(target, scenario.n_experiences)
        ]
        checkpoint.load(run_dir, strategy, prepared.traits.checkpoint_attributes)
        strategy.optimizer.load_state_dict(optimizer_state)
        attack_start = time.perf_counter()
        # whatever global randomness the attack uses (dropout in its lookahead), the victim's stream stays
        # the one of the clean branch
        assert attack is not None  # target is set only when there is a training-time attack
        with own_rng(prepared.device):
            poisoned = attack.poison(train_stream[target], strategy)
        state.attack_s = time.perf_counter() - attack_start
        attacked_rows = [
            train_and_evaluate(prepared, poisoned if index == target else train_stream[index], state, "attacked")
            for index in range(target, scenario.n_experiences)
        ]
        state.accuracy_matrix_clean = state.accuracy_matrix + clean_rows
        state.accuracy_matrix = state.accuracy_matrix + attacked_rows
        state.attack_target = target
        state.elapsed_s = elapsed_before + time.perf_counter() - started


def train_and_evaluate(prepared: Prepared, train_data, state: LoopState, branch: Optional[str] = None) -> list[float]:
    """Train on ``train_data`` (an experience or a stream; None: no training), then evaluate every test
    experience; the phase timings go to ``state.per_experience``, tagged with ``branch`` when given."""
    train_start = time.perf_counter()
    if train_data is not None:
        prepared.strategy.train(train_data, eval_streams=[], **loader_options(prepared.config.train))
    eval_start = time.perf_counter()
    row = evaluate_stream(
        prepared.strategy,
        prepared.scenario.benchmark.test_stream,
        prepared.config.train.eval_batch_size,
        prepared.config.train.num_workers,
    )
    if prepared.scenario.validation:  # the held-out part of every experience's training data
        state.validation_rows.setdefault(branch or "main", []).append(
            evaluate_datasets(
                prepared.strategy,
                prepared.scenario.validation,
                prepared.config.train.eval_batch_size,
                prepared.config.train.num_workers,
            )
        )
    attack = prepared.attack
    if attack is not None and attack.measures_rows:  # e.g. a backdoor's success rate after this experience
        with own_rng(prepared.device):
            state.attack_rows.setdefault(branch or "main", []).append(attack.row_metrics(prepared.strategy))
    timing = {"train_s": eval_start - train_start, "eval_s": time.perf_counter() - eval_start}
    if prepared.tracker is not None:
        # a branch's rows start at the poisoned experience: the shared prefix plus the branch's earlier rows
        done = sum(1 for entry in state.per_experience if entry.get("branch") == branch) if branch else 0
        attack_row = state.attack_rows[branch or "main"][-1] if attack is not None and attack.measures_rows else None
        prepared.tracker.log_metrics(row_metrics(row, timing, attack_row, branch), len(state.accuracy_matrix) + done)
    state.per_experience.append({"branch": branch, **timing} if branch else timing)
    return row


def train_online(
    prepared: Prepared,
    state: LoopState,
    run_dir: Path,
    started: float,
    elapsed_before: float,
    stop_after: Optional[int] = None,
) -> None:
    """One pass over a task-free stream, one ``strategy.train`` call per incoming mini-batch.

    The strategy gets each mini-batch as a bare experience (no task id, no boundary, no origin): only
    this loop knows the hidden tasks. It evaluates the anytime accuracy (test images of the classes seen so
    far) every ``online.eval_every`` stream samples, one accuracy-matrix row at each hidden boundary, and
    checkpoints there; ``stop_after`` counts hidden tasks.
    """
    strategy, scenario, online = prepared.strategy, prepared.scenario, prepared.scenario.online
    if online is None:
        raise ValueError("train_online needs a task-free scenario (scenario.online is None)")
    hidden_tasks = scenario.benchmark.train_stream
    if state.online is None:
        state.online = OnlineProgress(anytime=AnytimeCurve(eval_every=online.eval_every))
    progress = state.online
    batch_counts = [-(-len(task.dataset) // online.batch_size) for task in hidden_tasks]
    # disable=None: no bar when stderr is not a terminal (redirected logs)
    bar = tqdm(
        total=sum(batch_counts),
        initial=progress.batches,
        desc="stream",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
        disable=None if prepared.progress else True,
    )
    for task_index in range(len(state.accuracy_matrix), len(hidden_tasks)):
        train_start, anytime_s = time.perf_counter(), 0.0
        batches = split_online_stream(
            [hidden_tasks[task_index]], experience_size=online.batch_size, shuffle=False, access_task_boundaries=False
        )
        for batch in batches:
            strategy.train(
                DatasetExperience(dataset=batch.dataset, current_experience=progress.batches), eval_streams=[]
            )
            progress.batches += 1
            progress.samples += len(batch.dataset)
            progress.seen_classes = sorted(set(progress.seen_classes) | set(batch.dataset.targets.uniques))
            bar.update(1)
            if progress.samples // online.eval_every > len(progress.anytime.samples):
                anytime_start = time.perf_counter()
                record_anytime(prepared, progress)
                anytime_s += time.perf_counter() - anytime_start
        progress.boundaries.append(progress.samples)
        eval_start = time.perf_counter()
        row = evaluate_stream(
            strategy,
            scenario.benchmark.test_stream,
            prepared.config.train.eval_batch_size,
            prepared.config.train.num_workers,
        )
        if task_index == len(hidden_tasks) - 1:
            progress.final_accuracy = anytime_accuracy(prepared, progress.seen_classes)
        state.per_experience.append(
            {"train_s": eval_start - train_start - anytime_s, "eval_s": time.perf_counter() - eval_start + anytime_s}
        )
        if prepared.tracker is not None:
            prepared.tracker.log_metrics(row_metrics(row, state.per_experience[-1]), task_index)
        state.accuracy_matrix.append(row)
        state.elapsed_s = elapsed_before + time.perf_counter() - started
        checkpoint.save(run_dir, strategy, state.to_progress(), prepared.traits.checkpoint_attributes)
        if stop_after is not None and task_index + 1 >= stop_after:
            break
    bar.close()


def anytime_accuracy(prepared: Prepared, seen_classes: Sequence[int]) -> float:
    """Accuracy on the anytime evaluation images of the classes seen so far."""
    online = prepared.scenario.online
    if online is None:
        raise ValueError("anytime_accuracy needs a task-free scenario (scenario.online is None)")
    anytime_test = online.anytime_test
    targets = torch.as_tensor(list(anytime_test.targets), dtype=torch.long)
    rows = torch.isin(targets, torch.as_tensor(list(seen_classes), dtype=torch.long)).nonzero().flatten()
    subset = anytime_test.subset(rows.tolist()).eval()
    return accuracy(
        prepared.strategy,
        make_loader(
            subset, prepared.config.train.eval_batch_size, shuffle=False, num_workers=prepared.config.train.num_workers
        ),
    )


def record_anytime(prepared: Prepared, progress: OnlineProgress) -> None:
    """Append one point of the anytime-accuracy curve (at the current stream position)."""
    curve = progress.anytime
    curve.samples.append(progress.samples)
    curve.accuracy.append(anytime_accuracy(prepared, progress.seen_classes))
    curve.n_classes.append(len(progress.seen_classes))


def build_record(prepared: Prepared, state: LoopState, command: str) -> dict:
    config, scenario = prepared.config, prepared.scenario
    matrix = state.accuracy_matrix
    per_experience = state.per_experience
    # a strategy trained once on the whole stream has no "before experience j" row: no forward transfer
    whole_stream = prepared.traits.train_whole_stream
    peak_memory_mb = torch.cuda.max_memory_allocated() / 2**20 if prepared.device.type == "cuda" else _peak_rss_mb()
    return {
        "schema_version": records.SCHEMA_VERSION,
        "run_id": config.run_id(),
        "config_id": config.config_id(),
        "command": command,
        "config": config.to_dict(),
        "status": "complete",
        "scenario": config.scenario,
        "strategy": config.strategy,
        "model": config.model,
        "attack": config.attack,
        "seed": config.seed,
        "scenario_info": scenario.metadata(),
        "accuracy_matrix": matrix,
        "accuracy_initial": state.accuracy_initial,
        "metrics": {
            **metrics.all_metrics(matrix, None if whole_stream else state.accuracy_initial),
            **online_metrics(state),
        },
        "timing": {
            "total_s": state.elapsed_s,
            "train_s": sum(p["train_s"] for p in per_experience),
            "eval_s": sum(p["eval_s"] for p in per_experience),
            "per_experience": per_experience,
        },
        "peak_memory_mb": peak_memory_mb,
        **validation_fields(state),
        **attack_fields(prepared, state),
        **online_fields(state),
        "strategy_info": strategy_info(prepared.strategy),
        # the card of a pre-trained backbone (data, method, epochs, seed, hash, command), or None
        "backbone_card": prepared.backbone_card,
        "environment": records.environment(prepared.device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def own_rng(device: torch.device):
    """A block whose use of the global random streams (CPU, and the device's) leaves the victim's untouched."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def branch_rows(rows: dict[str, list], branch: str) -> list:
    """A per-experience list of one branch of a paired run: the shared prefix ("main"), then the branch's rows."""
    return rows.get("main", []) + rows.get(branch, [])


def validation_fields(state: LoopState) -> dict:
    """The validation accuracy matrix (row i: after experience i, on every experience's held-out training data)
    and its metrics; with an attack, the clean branch's too. Nothing without ``scenario.validation_fraction``."""
    rows = state.validation_rows
    if not rows:
        return {}
    matrix = branch_rows(rows, "attacked")
    fields = {"accuracy_matrix_validation": matrix, "metrics_validation": metrics.all_metrics(matrix)}
    if "clean" in rows:
        fields["accuracy_matrix_validation_clean"] = branch_rows(rows, "clean")
    return fields


def attack_fields(prepared: Prepared, state: LoopState) -> dict:
    """The attack's part of the record: the clean branch, the budget, and the paired differences."""
    attack = prepared.attack
    clean, target = state.accuracy_matrix_clean, state.attack_target
    if attack is None or clean is None or target is None:
        return {}
    fields: dict = {}
    if state.attack_rows:  # the attack's own measurements after every experience, both branches
        fields = {
            "attack_rows": branch_rows(state.attack_rows, "attacked"),
            "attack_rows_clean": branch_rows(state.attack_rows, "clean"),
        }
    return {
        **fields,
        "accuracy_matrix_clean": clean,
        "metrics_clean": metrics.all_metrics(clean, state.accuracy_initial),
        "attack_info": {
            "name": prepared.config.attack,
            "target_experience": target,
            "budget": attack.budget(),
            "metrics": attack.metrics(),
            "wall_time_s": state.attack_s,
        },
        "attack_effect": {
            **metrics.attack_effect(clean, state.accuracy_matrix, target),
            **(metrics.row_metric_effect(fields["attack_rows_clean"], fields["attack_rows"], target) if fields else {}),
        },
    }


def online_metrics(state: LoopState) -> dict:
    """``a_auc`` (mean anytime accuracy) and ``a_last`` (accuracy on every seen class at the end) of a
    task-free run."""
    online = state.online
    if online is None:
        return {}
    return {"a_auc": metrics.anytime_auc(online.anytime.accuracy), "a_last": online.final_accuracy}


def online_fields(state: LoopState) -> dict:
    """A task-free run's anytime-accuracy curve and its summary numbers (nothing for other runs)."""
    online = state.online
    if online is None:
        return {}
    return {
        "anytime_accuracy": dataclasses.asdict(online.anytime),
        "stream": {
            "batches": online.batches,
            "samples": online.samples,
            "hidden_boundaries": online.boundaries,
            "final_accuracy_seen_classes": online.final_accuracy,
        },
    }


def strategy_info(strategy) -> dict:
    """What the strategy's plugins report about themselves (e.g. GPM's memory occupancy per task)."""
    info: dict = {}
    for plugin in strategy.plugins:
        if isinstance(plugin, ReportingPlugin):
            info.update(plugin.record_info())
    return info


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_outputs(run_dir: Path, record: dict, prepared: Prepared) -> None:
    """accuracy_matrix.csv, the final model and the plots first (forgetting curve; GPM memory occupancy for
    GPM runs), record.json last (it marks completion). The checkpoint goes, unless the strategy's prediction
    reads state beyond the model (then it is the final state `cl-bench evaluate` loads)."""
    from cl_bench import plots

    sha256 = evaluation.write_model(run_dir, prepared.strategy.model)
    record["final_model"] = {"file": evaluation.MODEL_FILE, "sha256": sha256}
    records.atomic_write_text(run_dir / "accuracy_matrix.csv", records.accuracy_matrix_csv(record["accuracy_matrix"]))
    plots.plot_run(record, run_dir / "forgetting_curve.png")
    attack_plots = ATTACKS.traits(prepared.config.attack).run_plots if prepared.config.attack else ()
    for name in prepared.traits.run_plots + attack_plots:  # the pictures the strategy and attack declare
        plots.RUN_PLOTS[name]([record], run_dir / f"{name}.png")
    if record.get("anytime_accuracy", {}).get("samples"):  # a stream shorter than one period has no curve
        plots.plot_anytime([record], run_dir / "anytime_accuracy.png")
    records.write_record(run_dir, record)
    if prepared.traits.predicts_from_model:
        checkpoint.remove(run_dir)


def run_from_spec(spec: dict, sets: Sequence[str], out_dir: Path, force: bool = False, progress: bool = False) -> Path:
    """Entry point for sweeps: resolve a config dict (``--config`` format, with its ``evaluator:`` list and the
    sweep's ``tracking: {name, uri}``, neither part of the run's identity) and execute it. A run that stopped
    part-way (a killed worker, a retried Ray task) resumes from its last checkpoint, as ``--resume`` does."""
    spec = dict(spec)
    tracked = spec.pop("tracking", None) or {}
    config = resolve(spec, None, sets)
    evaluators = evaluation.resolve_evaluators(spec.get("evaluator"), sets)
    command = f"cl-bench sweep (spec: {spec}, set: {list(sets)})"
    return execute(
        config,
        out_dir,
        command=command,
        resume=True,
        force=force,
        progress=progress,
        log=lambda line: None,
        evaluators=evaluators,
        tracking=tracked.get("name"),
        tracking_uri=tracked.get("uri"),
    )
