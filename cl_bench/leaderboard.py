"""Leaderboards: many run records -> one CSV per board, mean and std over seeds.

A board kind is a function ``records -> list[Board]`` registered in :data:`BOARD_KINDS`; the
engine runs every kind over the complete records and writes each board it returns. Three kinds exist:
clean continual learning (``cl_<scenario>.csv``, and ``cl_<scenario>_pretrained.csv`` for runs whose
backbone comes from a pre-training card), task-free streams (``online_<scenario>.csv``, any backbone: final accuracy,
forgetting and the anytime area ``a_auc`` per stream mode) and attacks (``attack_<attack>.csv``: the
paired clean and attacked numbers per victim and their difference); evaluator boards are added the same
way, as one more function.

Conventions (so that a rerun over the same records gives byte-identical files):

- A record is complete when ``record.json`` parses, holds the required fields and has
  ``status == "complete"``. Anything else is skipped with a one-line warning, never a crash.
- Rows group runs that differ only by seed (and device or loader workers): key (scenario, setting, strategy,
  model, config_id). Two records of the same group with the same seed (e.g. one on cpu, one on
  cuda) count once: the most recently created one is kept, with a warning.
- ``<metric>_std`` is the sample standard deviation (ddof=1) over seeds. With one seed it is
  undefined and written as an empty cell (as are metrics a run does not report, e.g. ``fwt``
  without a reference). Means and stds ignore seeds that lack the metric.
- Floats are written with 4 decimals; rows are ordered by setting, then ``acc_mean``
  descending, then strategy, then config_id.
- Files are written atomically (temporary file + rename).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from cl_bench.config import RUNTIME_TRAIN_FIELDS, config_id_of
from cl_bench.errors import UserError
from cl_bench.records import (
    EVALUATIONS_DIR,
    RECORD_FILE,
    REFERENCES_DIR,
    atomic_write_text,
    read_evaluation,
    read_record,
    stream_mode,
)

FLOAT_FORMAT = "{:.4f}"
# (column stem, how to read it from a record) for the per-seed numbers of the clean CL board
CL_METRICS: tuple[tuple[str, Callable[[dict], Any]], ...] = (
    ("acc", lambda r: r["metrics"].get("acc")),
    ("bwt", lambda r: r["metrics"].get("bwt")),
    ("forgetting", lambda r: r["metrics"].get("forgetting")),
    ("learning_acc", lambda r: r["metrics"].get("learning_acc")),
    ("fwt", lambda r: r["metrics"].get("fwt")),
    ("wall_time_s", lambda r: r["timing"].get("total_s")),
)
GROUP_COLUMNS = ("scenario", "setting", "strategy", "model", "config_id")
CONFIG_COLUMNS = ("strategy_config", "model_config", "scenario_config", "train_config")
CL_COLUMNS = (
    GROUP_COLUMNS
    + ("n_seeds", "seeds")
    + tuple(f"{stem}_{stat}" for stem, _ in CL_METRICS for stat in ("mean", "std"))
    + CONFIG_COLUMNS
)

# validation numbers (``scenario.validation_fraction`` > 0): a board whose records have them gets these columns
# and is ranked by validation ACC, the number hyperparameters are selected by
VALIDATION_METRICS: tuple[tuple[str, Callable[[dict], Any]], ...] = (
    ("val_acc", lambda r: (r.get("metrics_validation") or {}).get("acc")),
    ("val_bwt", lambda r: (r.get("metrics_validation") or {}).get("bwt")),
)
CL_VALIDATION_COLUMNS = (
    CL_COLUMNS[: -len(CONFIG_COLUMNS)]
    + tuple(f"{stem}_{stat}" for stem, _ in VALIDATION_METRICS for stat in ("mean", "std"))
    + CONFIG_COLUMNS
)

MARKDOWN_COLUMNS = (
    "setting",
    "strategy",
    "n_seeds",
    "acc_mean",
    "acc_std",
    "bwt_mean",
    "bwt_std",
    "forgetting_mean",
    "learning_acc_mean",
    "wall_time_s_mean",
)

Warn = Callable[[str], None]


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- reading records


def _record_files(paths_or_dirs: Union[Path, str, Iterable[Union[Path, str]]], warn: Warn) -> list[Path]:
    """Expand record files, run directories and runs directories into record.json paths."""
    if isinstance(paths_or_dirs, (str, os.PathLike)):
        paths_or_dirs = [paths_or_dirs]
    files: list[Path] = []
    for item in paths_or_dirs:
        path = Path(item)
        if path.is_file():
            files.append(path)
        elif (path / RECORD_FILE).is_file():
            files.append(path / RECORD_FILE)
        elif path.is_dir():
            # hidden entries are temporary directories of runs being written, not runs
            # references/ holds the retraining baselines evaluators trained on demand, not runs of a sweep
            children = sorted(
                child
                for child in path.iterdir()
                if child.is_dir() and not child.name.startswith(".") and child.name != REFERENCES_DIR
            )
            if not children:
                warn(f"{path} holds no run directories")
            for child in children:
                if (child / RECORD_FILE).is_file():
                    files.append(child / RECORD_FILE)
                else:
                    warn(f"skipping {child}: no {RECORD_FILE} (incomplete run)")
        else:
            warn(f"skipping {path}: no such file or directory")
    return files


def load_records(
    paths_or_dirs: Union[Path, str, Iterable[Union[Path, str]]], warn: Optional[Warn] = None
) -> list[dict]:
    """Complete run records from record files, run directories or directories of runs.

    Incomplete, corrupt or partial records are skipped with a one-line warning through ``warn``
    (default: stderr). Records come back in path order.
    """
    warn = warn or _warn_stderr
    records = []
    for path in _record_files(paths_or_dirs, warn):
        record, problem = read_record(path)
        if record is None:
            warn(f"skipping {problem}")
        else:
            record["evaluations"] = _load_evaluations(path.parent, record, warn)
            records.append(record)
    return records


def _load_evaluations(run_dir: Path, record: dict, warn: Warn) -> list[dict]:
    """The well-formed evaluation artefacts of one run (``evaluations/*.json``), in file-name order."""
    folder = run_dir / EVALUATIONS_DIR
    if not folder.is_dir():
        return []
    artefacts = []
    for path in sorted(folder.glob("*.json")):
        artefact, problem = read_evaluation(path)
        if artefact is None:
            warn(f"skipping {problem}")
        elif artefact["run_id"] != record["run_id"]:
            warn(f"skipping {path}: it evaluates run {artefact['run_id']}, not {record['run_id']}")
        else:
            artefacts.append(artefact)
    return artefacts


# ----------------------------------------------------------------------------- statistics


def _number(value: Any) -> Optional[float]:
    """A finite float, or None for a missing / non-numeric / NaN value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def mean_std(values: Sequence[Any]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample std (ddof=1) of the numeric values; None where undefined."""
    numbers = [v for v in map(_number, values) if v is not None]
    if not numbers:
        return None, None
    mean = math.fsum(numbers) / len(numbers)
    if len(numbers) < 2:
        return mean, None
    variance = math.fsum((v - mean) ** 2 for v in numbers) / (len(numbers) - 1)
    return mean, math.sqrt(variance)


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        text = FLOAT_FORMAT.format(value)
        # -0.0000 and 0.0000 are the same number; write one spelling so reruns never differ
        return text[1:] if text.startswith("-") and float(text) == 0.0 else text
    return str(value)


def _compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _component_fields(record: dict, kind: str, drop: Sequence[str] = ("name",)) -> str:
    """The non-name config fields of one component as compact JSON ('' when the kind is absent)."""
    entry = record["config"].get(kind)
    if not isinstance(entry, dict):
        return ""
    return _compact_json({k: v for k, v in entry.items() if k not in drop})


def record_config_id(record: dict) -> str:
    """The record's config_id; recomputed from its config (minus seed and runtime settings) when absent."""
    if record.get("config_id"):
        return str(record["config_id"])
    return config_id_of(record["config"])


def record_model(record: dict) -> str:
    if record.get("model"):
        return str(record["model"])
    model = record["config"].get("model")
    return str(model.get("name", "")) if isinstance(model, dict) else str(model or "")


def record_setting(record: dict) -> str:
    info = record.get("scenario_info")
    return str(info.get("setting", "unknown")) if isinstance(info, dict) else "unknown"


# ----------------------------------------------------------------------------- boards


@dataclass
class Board:
    """One CSV: its file stem (``cl_split_fmnist``), its columns in order and its rows."""

    name: str
    columns: tuple[str, ...]
    rows: list[dict]

    @property
    def markdown_columns(self) -> Sequence[str]:
        return headline_columns(self.name)

    def to_csv(self) -> str:
        """The CSV text: header, then rows with every float in the fixed format."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([_format_cell(row.get(column)) for column in self.columns])
        return buffer.getvalue()

    def to_markdown(self, columns: Optional[Sequence[str]] = None) -> str:
        """A Markdown table of the headline columns (for the README), values as in the CSV."""
        shown = [column for column in (columns or self.markdown_columns) if column in self.columns]
        lines = [f"| {' | '.join(shown)} |", "|" + "---|" * len(shown)]
        for row in self.rows:
            lines.append("| " + " | ".join(_format_cell(row.get(column)) for column in shown) + " |")
        return "\n".join(lines)


def _dedupe_seeds(group: list[dict], warn: Warn) -> list[dict]:
    """One record per seed (the most recently created wins), ordered by seed."""
    by_seed: dict[Any, dict] = {}
    for record in sorted(group, key=lambda r: (str(r.get("created", "")), str(r["run_id"]))):
        seed = record["seed"]
        if seed in by_seed:
            warn(
                f"runs {by_seed[seed]['run_id']} and {record['run_id']} share config and seed {seed}; "
                f"keeping {record['run_id']} (newer)"
            )
        by_seed[seed] = record
    return [by_seed[seed] for seed in sorted(by_seed, key=lambda s: (str(type(s)), s))]


def _group_columns(group: list[dict]) -> dict[str, Any]:
    """What identifies one group of same-config records (one per seed): names, seeds, config columns."""
    first = group[0]
    return {
        "scenario": first["scenario"],
        "setting": record_setting(first),
        "strategy": first["strategy"],
        "model": record_model(first),
        "config_id": record_config_id(first),
        "n_seeds": len(group),
        "seeds": ";".join(str(r["seed"]) for r in group),
        "strategy_config": _component_fields(first, "strategy"),
        "model_config": _component_fields(first, "model"),
        "scenario_config": _component_fields(first, "scenario"),
        "train_config": _component_fields(first, "train", drop=RUNTIME_TRAIN_FIELDS),
    }


def _seed_row(group: list[dict], board_metrics: Sequence[tuple[str, Callable[[dict], Any]]] = CL_METRICS) -> dict:
    """The summary row of one group of same-config records (one per seed): mean and std of each metric."""
    row = _group_columns(group)
    for stem, read in board_metrics:
        row[f"{stem}_mean"], row[f"{stem}_std"] = mean_std([read(r) for r in group])
    return row


def _row_order(row: dict, by: str = "acc_mean") -> tuple:
    acc = row.get(by)
    # NaN / missing accuracies sort last within their setting
    return (row["setting"], acc is None, -(acc or 0.0), row["strategy"], row["config_id"])


def _validation_row_order(row: dict) -> tuple:
    return _row_order(row, "val_acc_mean")


def is_task_free(record: dict) -> bool:
    return record_setting(record) == "task-free"


def board_scenario(record: dict) -> str:
    """The scenario part of a board name: ``<scenario>``, or ``<scenario>_pretrained`` when the run's
    backbone comes from a pre-training card (those runs are compared among themselves)."""
    return f"{record['scenario']}_pretrained" if record.get("backbone_card") else str(record["scenario"])


def clean_cl_boards(records: list[dict], warn: Warn = _warn_stderr) -> list[Board]:
    """``cl_<scenario>``: offline runs without an attack, one row per config, mean/std over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        if record.get("attack") is not None or is_task_free(record):
            continue
        key = (
            board_scenario(record),
            record_setting(record),
            record["strategy"],
            record_model(record),
            record_config_id(record),
        )
        groups.setdefault(key, []).append(record)
    validated = {key[0] for key, group in groups.items() if any(r.get("metrics_validation") for r in group)}
    rows_by_scenario: dict[str, list[dict]] = {}
    for key in sorted(groups):
        board_metrics = CL_METRICS + (VALIDATION_METRICS if key[0] in validated else ())
        rows_by_scenario.setdefault(key[0], []).append(_seed_row(_dedupe_seeds(groups[key], warn), board_metrics))
    return [
        Board(f"cl_{scenario}", CL_VALIDATION_COLUMNS, sorted(rows, key=_validation_row_order))
        if scenario in validated
        else Board(f"cl_{scenario}", CL_COLUMNS, sorted(rows, key=_row_order))
        for scenario, rows in sorted(rows_by_scenario.items())
    ]


# (column stem, how to read it) for the per-seed numbers of a task-free stream
ONLINE_METRICS: tuple[tuple[str, Callable[[dict], Any]], ...] = (
    ("acc", lambda r: r["metrics"].get("acc")),
    ("forgetting", lambda r: r["metrics"].get("forgetting")),
    ("a_auc", lambda r: r["metrics"].get("a_auc")),
    ("a_last", lambda r: r["metrics"].get("a_last")),
    ("bwt", lambda r: r["metrics"].get("bwt")),
    ("wall_time_s", lambda r: r["timing"].get("total_s")),
)
ONLINE_COLUMNS = (
    ("scenario", "mode", "strategy", "strategy_setting", "model", "config_id", "n_seeds", "seeds")
    + tuple(f"{stem}_{stat}" for stem, _ in ONLINE_METRICS for stat in ("mean", "std"))
    + CONFIG_COLUMNS
)
ONLINE_MARKDOWN_COLUMNS = (
    "mode",
    "strategy",
    "strategy_setting",
    "n_seeds",
    "acc_mean",
    "acc_std",
    "forgetting_mean",
    "a_auc_mean",
    "a_auc_std",
    "a_last_mean",
    "wall_time_s_mean",
)


def online_boards(records: list[dict], warn: Warn = _warn_stderr) -> list[Board]:
    """``online_<scenario>``: task-free runs, one row per stream mode and config, mean/std over seeds (one board
    whatever the backbone: task-free streams are meant for pre-trained ones; the model columns tell them apart).

    ``acc`` is the final accuracy (mean over the hidden tasks' test sets), ``forgetting`` is computed at the
    hidden boundaries, ``a_auc`` is the mean anytime accuracy and ``a_last`` the accuracy on every class
    seen, at the end of the stream."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        if record.get("attack") is None and is_task_free(record):
            key = (
                record["scenario"],
                stream_mode(record),
                record["strategy"],
                record_model(record),
                record_config_id(record),
            )
            groups.setdefault(key, []).append(record)
    rows_by_scenario: dict[str, list[dict]] = {}
    for key in sorted(groups):
        group = _dedupe_seeds(groups[key], warn)
        strategy_config = group[0]["config"].get("strategy") or {}
        row = {
            **_seed_row(group, ONLINE_METRICS),
            "mode": key[1],
            "strategy_setting": component_setting("strategy", key[2], strategy_config),
        }
        rows_by_scenario.setdefault(key[0], []).append(row)

    def order(row: dict) -> tuple:
        return row["mode"], row["a_auc_mean"] is None, -(row["a_auc_mean"] or 0.0), row["strategy"], row["config_id"]

    return [
        Board(f"online_{scenario}", ONLINE_COLUMNS, sorted(rows, key=order))
        for scenario, rows in sorted(rows_by_scenario.items())
    ]


ATTACK_EFFECTS = ("acc", "bwt", "forgetting", "previous_acc", "poisoned_acc")
ATTACK_COLUMNS = (
    ("attack",)
    + GROUP_COLUMNS
    + ("attack_setting", "attack_config", "n_seeds", "seeds")
    + tuple(
        f"{name}_{branch}_{stat}"
        for name in ATTACK_EFFECTS
        for branch in ("clean", "attacked", "difference")
        for stat in ("mean", "std")
    )
    + ("attack_wall_time_s_mean", "attack_wall_time_s_std", "wall_time_s_mean", "wall_time_s_std")
    + CONFIG_COLUMNS
)
ATTACK_MARKDOWN_COLUMNS = (
    "scenario",
    "strategy",
    "attack_setting",
    "n_seeds",
    "acc_clean_mean",
    "acc_attacked_mean",
    "bwt_clean_mean",
    "bwt_attacked_mean",
    "bwt_difference_mean",
    "bwt_difference_std",
    "poisoned_acc_attacked_mean",
    "attack_wall_time_s_mean",
)


def headline_columns(board_name: str) -> Sequence[str]:
    """A board's headline (Markdown) columns, told by its name: ``attack_*``, ``online_*``, else ``cl_*``."""
    if board_name.startswith("attack_"):
        attack = board_name[len("attack_") :]
        extra = tuple(f"{name}_attacked_mean" for name in attack_row_effects(attack))
        return test_time_headline(attack) or ATTACK_MARKDOWN_COLUMNS + extra
    if board_name.startswith("online_"):
        return ONLINE_MARKDOWN_COLUMNS
    if board_name.startswith("eval_"):
        return evaluation_headline(board_name[len("eval_") :])
    return MARKDOWN_COLUMNS


def evaluation_headline(evaluator: str) -> Sequence[str]:
    """An evaluator board's headline columns, from the evaluator's declared traits."""
    from cl_bench.generator_unlearning_config import BOARD_HEADLINE, BOARD_NAME
    from cl_bench.registry import EVALUATORS

    if f"eval_{evaluator}" == BOARD_NAME:  # the board of `cl-bench unlearn-generator`: one row per run
        return BOARD_HEADLINE
    if evaluator not in EVALUATORS:
        return ("setting", "strategy", "model", "n_seeds")
    traits = EVALUATORS.traits(evaluator)
    shown = traits.headline or traits.row_columns + traits.columns
    return ("setting", "strategy", "model", "n_seeds", *result_headline(traits, shown))


def component_setting(kind: str, name: str, component_config: dict, always: Sequence[str] = ()) -> str:
    """The fields of a component's config that differ from its registered defaults (and the ``always``
    fields first), e.g. ``epsilon=0.3 objective=cautious steps=50``; ``defaults`` when none differs."""
    from cl_bench.registry import REGISTRIES

    registry = REGISTRIES[kind]
    defaults = registry.card(name).config_class() if name in registry else None  # unregistered: every field
    changed = [
        f"{field}={value}"
        for field, value in sorted(component_config.items(), key=lambda item: item[0] not in always)
        if field != "name" and (field in always or defaults is None or getattr(defaults, field, object()) != value)
    ]
    return " ".join(changed) or "defaults"


def attack_setting(attack: str, attack_config: dict) -> str:
    """The fields the attack declares for its labels (``AttackTraits.label_fields``: e.g. budget and objective),
    then its other fields that differ from the registered defaults."""
    from cl_bench.registry import ATTACKS

    always = ATTACKS.traits(attack).label_fields if attack in ATTACKS else ()
    return component_setting("attack", attack, attack_config, always=always)


def _attack_key(record: dict) -> tuple:
    """What one row of an attack board groups by: the attack, then the victim's group columns."""
    return (
        record["attack"],
        record["scenario"],
        record_setting(record),
        record["strategy"],
        record_model(record),
        record_config_id(record),
    )


def attack_row_effects(attack: str) -> tuple[str, ...]:
    """The paired numbers a training-time attack adds from its own per-experience measurements (its declared
    ``row_metrics``): each right after the poisoned experience and at the end of the stream."""
    from cl_bench.registry import ATTACKS

    declared = ATTACKS.traits(attack).row_metrics if attack in ATTACKS else ()
    return tuple(f"{name}_{when}" for name in declared for when in ("at_target", "final"))


def attack_columns(attack: str) -> tuple[str, ...]:
    """ATTACK_COLUMNS with the attack's own paired numbers before the timings."""
    extra = tuple(
        f"{name}_{branch}_{stat}"
        for name in attack_row_effects(attack)
        for branch in ("clean", "attacked", "difference")
        for stat in ("mean", "std")
    )
    split = ATTACK_COLUMNS.index("attack_wall_time_s_mean")
    return ATTACK_COLUMNS[:split] + extra + ATTACK_COLUMNS[split:]


def attack_boards(records: list[dict], warn: Warn = _warn_stderr) -> list[Board]:
    """``attack_<attack>``: paired clean vs attacked numbers per victim config, mean/std over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        if record.get("attack") is None or "attack_effect" not in record:
            continue
        groups.setdefault(_attack_key(record), []).append(record)
    rows_by_attack: dict[str, list[dict]] = {}
    for key in sorted(groups):
        group = _dedupe_seeds(groups[key], warn)
        row = _group_columns(group)
        row["wall_time_s_mean"], row["wall_time_s_std"] = mean_std([r["timing"].get("total_s") for r in group])
        row["attack"] = key[0]
        row["attack_config"] = _component_fields(group[0], "attack")
        row["attack_setting"] = attack_setting(key[0], group[0]["config"].get("attack") or {})
        for name in ATTACK_EFFECTS + attack_row_effects(key[0]):
            for branch in ("clean", "attacked", "difference"):
                values = [r["attack_effect"].get(name, {}).get(branch) for r in group]
                row[f"{name}_{branch}_mean"], row[f"{name}_{branch}_std"] = mean_std(values)
        row["attack_wall_time_s_mean"], row["attack_wall_time_s_std"] = mean_std(
            [r["attack_info"].get("wall_time_s") for r in group]
        )
        rows_by_attack.setdefault(key[0], []).append(row)
    return [
        Board(
            f"attack_{attack}",
            attack_columns(attack),
            sorted(
                rows, key=lambda r: (r["scenario"], r["setting"], r["strategy"], r["attack_config"], r["config_id"])
            ),
        )
        for attack, rows in sorted(rows_by_attack.items())
    ]


def _key_order(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def result_columns(traits: Any) -> tuple[str, ...]:
    """The columns of declared results (evaluator or test-time attack traits): the row keys, then mean and std of
    each row column and scalar column."""
    return traits.row_keys + tuple(
        f"{column}_{stat}" for column in traits.row_columns + traits.columns for stat in ("mean", "std")
    )


def result_headline(traits: Any, shown: Sequence[str]) -> tuple[str, ...]:
    """The headline part of declared results: the row keys, then the means of ``shown``."""
    return (*traits.row_keys, *(f"{column}_mean" for column in shown))


def result_rows(base: dict, results: Sequence[dict], traits: Any) -> list[dict]:
    """Board rows of one group's results (evaluation artefacts or test-time attack blocks, one per seed): the
    scalar ``traits.columns`` as mean/std on every row; with ``traits.row_keys``, one row per key value with the
    mean/std of its ``traits.row_columns``."""
    base = dict(base)
    for column in traits.columns:
        base[f"{column}_mean"], base[f"{column}_std"] = mean_std([result["metrics"].get(column) for result in results])
    if not traits.row_keys:
        return [base]
    by_key: dict[tuple, list[dict]] = {}
    for result in results:
        for result_row in result["rows"]:
            by_key.setdefault(tuple(result_row.get(k) for k in traits.row_keys), []).append(result_row)
    rows = []
    for row_key in sorted(by_key, key=lambda values: tuple(_key_order(v) for v in values)):
        row = {**base, **dict(zip(traits.row_keys, row_key))}
        for column in traits.row_columns:
            row[f"{column}_mean"], row[f"{column}_std"] = mean_std([r.get(column) for r in by_key[row_key]])
        rows.append(row)
    return rows


def test_time_attack_boards(records: list[dict], warn: Warn = _warn_stderr) -> list[Board]:
    """``attack_<attack>`` of a test-time attack: what it measured on the trained model (the columns its traits
    declare, as an evaluator board), per victim and attack config, mean/std over seeds."""
    from cl_bench.registry import ATTACKS

    groups: dict[tuple, list[dict]] = {}
    for record in records:
        if record.get("attack") is None or not record.get("test_time_attack"):
            continue
        groups.setdefault(_attack_key(record), []).append(record)
    boards: dict[str, Board] = {}
    for key in sorted(groups):
        attack = key[0]
        if attack not in ATTACKS:
            warn(f"skipping runs of unknown attack {attack!r}")
            continue
        traits = ATTACKS.traits(attack)
        group = _dedupe_seeds(groups[key], warn)
        base = _group_columns(group)
        base["attack"] = attack
        base["attack_config"] = _component_fields(group[0], "attack")
        base["attack_setting"] = attack_setting(attack, group[0]["config"].get("attack") or {})
        base["attack_wall_time_s_mean"], base["attack_wall_time_s_std"] = mean_std(
            [r["test_time_attack"].get("wall_time_s") for r in group]
        )
        columns = (
            ("attack",)
            + GROUP_COLUMNS
            + ("attack_setting", "attack_config", "n_seeds", "seeds")
            + result_columns(traits)
            + ("attack_wall_time_s_mean", "attack_wall_time_s_std")
            + CONFIG_COLUMNS
        )
        board = boards.setdefault(attack, Board(f"attack_{attack}", columns, []))
        board.rows.extend(result_rows(base, [r["test_time_attack"] for r in group], traits))
    return [boards[name] for name in sorted(boards)]


def test_time_headline(attack: str) -> Optional[Sequence[str]]:
    """The headline columns of a test-time attack's board (None for a training-time attack)."""
    from cl_bench.registry import ATTACKS

    if attack not in ATTACKS or ATTACKS.traits(attack).phase != "test":
        return None
    traits = ATTACKS.traits(attack)
    return ("strategy", "attack_setting", "n_seeds", *result_headline(traits, traits.row_columns or traits.columns))


def evaluation_boards(records: list[dict], warn: Warn = _warn_stderr) -> list[Board]:
    """``eval_<evaluator>``: one board per evaluator, from the columns its traits declare (scalar ``columns``;
    with ``row_keys``, one row per key value with its ``row_columns`` too), grouped by the training run's group
    columns plus the evaluator's config, mean/std over seeds. No evaluator is named here."""
    from cl_bench.registry import EVALUATORS

    groups: dict[tuple, list[tuple[dict, dict]]] = {}
    for record in records:
        for artefact in record.get("evaluations", []):
            key = (
                artefact["evaluator"],
                record["scenario"],
                record_setting(record),
                record["strategy"],
                record_model(record),
                record_config_id(record),
                _compact_json({k: v for k, v in artefact["config"].items() if k != "name"}),
            )
            groups.setdefault(key, []).append((record, artefact))
    boards: dict[str, Board] = {}
    for key in sorted(groups):
        evaluator = key[0]
        if evaluator not in EVALUATORS:
            warn(f"skipping evaluations of unknown evaluator {evaluator!r}")
            continue
        traits = EVALUATORS.traits(evaluator)
        artefact_of = {record["run_id"]: artefact for record, artefact in groups[key]}
        seeds = _dedupe_seeds([record for record, _ in groups[key]], warn)  # one per seed, as the cl_ boards
        ordered = [(record, artefact_of[record["run_id"]]) for record in seeds]
        base = _group_columns(seeds)
        base["eval_config"] = key[-1]
        base["eval_wall_time_s_mean"], base["eval_wall_time_s_std"] = mean_std(
            [artefact["timing"]["total_s"] for _, artefact in ordered]
        )
        columns = (
            GROUP_COLUMNS
            + ("n_seeds", "seeds", "eval_config")
            + result_columns(traits)  # no row keys for an evaluator of scalars only
            + ("eval_wall_time_s_mean", "eval_wall_time_s_std")
            + CONFIG_COLUMNS
        )
        board_rows = result_rows(base, [artefact for _, artefact in ordered], traits)
        board = boards.setdefault(evaluator, Board(f"eval_{evaluator}", columns, []))
        board.rows.extend(board_rows)
    return [boards[name] for name in sorted(boards)]


BoardKind = Callable[[list[dict], Warn], list[Board]]
# every board kind; an evaluator's board comes from its declared columns (evaluation_boards), not from code here
BOARD_KINDS: dict[str, BoardKind] = {
    "cl": clean_cl_boards,
    "online": online_boards,
    "attack": attack_boards,
    "test_attack": test_time_attack_boards,
    "eval": evaluation_boards,
}


def summarize(records: list[dict], kinds: Optional[Sequence[str]] = None, warn: Optional[Warn] = None) -> list[Board]:
    """Every board (of the given kinds, default all) built from complete ``records``."""
    warn = warn or _warn_stderr
    unknown = [kind for kind in (kinds or ()) if kind not in BOARD_KINDS]
    if unknown:
        raise UserError(f"unknown board kind {unknown[0]!r}; valid: {', '.join(BOARD_KINDS)}")
    boards: list[Board] = []
    for kind in kinds or BOARD_KINDS:
        boards.extend(BOARD_KINDS[kind](records, warn))
    return boards


def build_leaderboards(
    runs_dir: Path,
    out_dir: Path,
    warn: Optional[Warn] = None,
    kinds: Optional[Sequence[str]] = None,
    markdown: Optional[Callable[[str], None]] = None,
) -> list[Path]:
    """Scan ``runs_dir/*/record.json`` and write one CSV per board into ``out_dir``.

    Incomplete or corrupt records are skipped with a warning. Returns the written paths, sorted.
    """
    warn = warn or _warn_stderr
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"runs directory {runs_dir} does not exist")
    records = load_records([runs_dir], warn)
    boards = summarize(records, kinds, warn)
    written = [atomic_write_text(Path(out_dir) / f"{board.name}.csv", board.to_csv()) for board in boards]
    if markdown is not None:
        for board in boards:
            markdown(f"### {board.name}\n\n{board.to_markdown()}\n")
    return sorted(written)
