"""Experiment trackers: a run's numbers streamed to TensorBoard, MLflow or Weights & Biases as it trains.

    cl-bench run ... --tracking tensorboard|mlflow|wandb [--tracking-uri URI]
    cl-bench sweep FILE --tracking ...

What is logged (the same names in every tracker):

* at the start: the resolved config (TensorBoard: a text panel; MLflow: flattened params; W&B: the run config);
* after every evaluated experience (step = the experience's index): ``accuracy/experience_<j>`` for every test
  experience j, ``accuracy/average`` (mean over all test experiences), the phase times ``time/train_s`` and
  ``time/eval_s``, an attack's own row numbers ``attack/<name>`` (a backdoor's ASR); the two branches of an
  attacked run are prefixed ``clean/`` and ``attacked/``;
* at the end: the record's metrics ``final/<name>`` (ACC, BWT, forgetting ...), the attack's paired effect
  ``attack_effect/<name>/<branch>``, every evaluation's metrics ``evaluation/<evaluator>/<name>``, the accuracy
  matrix (and each evaluation's rows) as CSV text.

Local stores that need no server (the defaults): TensorBoard event files in ``<run_dir>/tensorboard``; an MLflow
file store ``<out>/mlruns`` shared by the runs of one output directory (experiment "cl-bench"; MLflow keeps the
file store in maintenance mode and asks for an opt-in, which cl-bench sets for this default only: pass
``--tracking-uri sqlite:///PATH/mlflow.db`` or a server's URL for its database backends); W&B in offline mode
under ``<run_dir>/wandb`` (``wandb sync`` uploads it later). TensorBoard goes through Avalanche's own
``TensorboardLogger``; Avalanche's ``WandBLogger`` does not run with the pinned wandb (it calls
``wandb.util.generate_id`` and ``wandb.viz``, both removed), and Avalanche has no MLflow logger, so those two
call their library directly.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

from cl_bench.errors import UserError

TRACKERS = ("tensorboard", "mlflow", "wandb")
# the Python module each tracker needs, and the extra that installs it
REQUIRED_MODULE = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
EXPERIMENT = "cl-bench"


def check_tracking(name: Optional[str]) -> None:
    """A one-line UserError for an unknown tracker or one whose library is not installed."""
    if name is None:
        return
    if name not in TRACKERS:
        raise UserError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")
    if importlib.util.find_spec(REQUIRED_MODULE[name]) is None:
        raise UserError(f"--tracking {name} needs the {name} package: pip install 'cl-bench[tracking]'")


class Tracker:
    """What the runner calls; each subclass writes to one tracker."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def log_text(self, name: str, text: str) -> None:
        """A text artefact (CSV, JSON) under ``name``."""
        raise NotImplementedError

    def log_config(self, config: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and finish the run (idempotent)."""


class TensorBoardTracker(Tracker):
    def __init__(self, log_dir: Path):
        from avalanche.logging import TensorboardLogger

        self.logger = TensorboardLogger(tb_log_dir=str(log_dir))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.logger.log_single_metric(name, float(value), step)

    def log_text(self, name: str, text: str) -> None:
        self.logger.writer.add_text(name, _markdown_code(text))

    def log_config(self, config: dict) -> None:
        self.log_text("config", json.dumps(config, indent=1, sort_keys=True))

    def close(self) -> None:
        self.logger.writer.flush()
        self.logger.writer.close()


class MLflowTracker(Tracker):
    def __init__(self, uri: str, run_name: str, default_store: bool):
        if default_store:  # the file store is in maintenance mode upstream: opt in for our local default only
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self._create_experiment()
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        self.closed = False

    def _create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(EXPERIMENT)
        except MlflowException:  # a parallel sweep worker created it first
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                raise
            return experiment.experiment_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.client.log_metric(self.run_id, name, float(value), step=step)

    def log_text(self, name: str, text: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_config(self, config: dict) -> None:
        for name, value in flatten(config).items():
            self.client.log_param(self.run_id, name, json.dumps(value) if not isinstance(value, str) else value)
        self.log_text("config.json", json.dumps(config, indent=1, sort_keys=True))

    def close(self) -> None:
        if not self.closed:
            self.client.set_terminated(self.run_id)
            self.closed = True


class WandbTracker(Tracker):
    def __init__(self, run_dir: Path, run_name: str, config: dict, project: str):
        import wandb

        self.wandb = wandb
        self.run: Any = wandb.init(
            project=project,
            name=run_name,
            id=f"{run_name}-{uuid.uuid4().hex[:8]}",  # a rerun (--force) is a new W&B run
            dir=str(run_dir),
            config=config,
            mode="offline",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({**{name: float(value) for name, value in metrics.items()}, "experience": step})

    def log_text(self, name: str, text: str) -> None:
        rows = list(csv.reader(io.StringIO(text))) if name.endswith(".csv") else []
        if len(rows) > 1:
            columns: list[str | int] = list(rows[0])
            self.run.log({name.removesuffix(".csv"): self.wandb.Table(columns=columns, data=rows[1:])})
        else:
            self.run.summary[name] = text

    def log_config(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            # finish() may return before the wandb-core service has written the run file: shut it down (it waits)
            self.wandb.teardown()
            self.run = None


def open_tracker(name: str, run_dir: Path, run_name: str, uri: Optional[str] = None) -> Tracker:
    """The tracker ``name`` for the run in ``run_dir`` (``uri``: MLflow's tracking URI, W&B's project)."""
    check_tracking(name)
    if name == "tensorboard":
        return TensorBoardTracker(Path(uri) / run_name if uri else run_dir / "tensorboard")
    if name == "mlflow":
        store = uri or (run_dir.resolve().parent / "mlruns").as_uri()
        return MLflowTracker(store, run_name, default_store=uri is None)
    return WandbTracker(run_dir, run_name, {}, project=uri or EXPERIMENT)


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``a.b.c`` keys (lists and scalars are leaves)."""
    if not isinstance(values, dict):
        return {prefix: values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def row_metrics(
    row: Sequence[float], timing: dict, attack_row: Optional[dict] = None, branch: Optional[str] = None
) -> dict[str, float]:
    """The numbers logged after one evaluated experience."""
    metrics = {f"accuracy/experience_{j}": float(value) for j, value in enumerate(row)}
    metrics["accuracy/average"] = sum(row) / max(len(row), 1)
    metrics.update({f"time/{name}": float(value) for name, value in timing.items() if name != "branch"})
    metrics.update({f"attack/{name}": float(value) for name, value in (attack_row or {}).items()})
    return {f"{branch}/{name}": value for name, value in metrics.items()} if branch else metrics


def _numbers(values: dict) -> dict[str, float]:
    return {
        name: float(value)
        for name, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def record_metrics(record: dict) -> dict[str, float]:
    """The numbers of a finished record logged at the end: final metrics and the attack's paired effect."""
    metrics = {f"final/{name}": value for name, value in _numbers(record.get("metrics") or {}).items()}
    for name, branches in (record.get("attack_effect") or {}).items():
        if isinstance(branches, dict):
            metrics.update({f"attack_effect/{name}/{branch}": v for branch, v in _numbers(branches).items()})
    test_time = record.get("test_time_attack") or {}
    metrics.update(
        {f"test_time_attack/{name}": value for name, value in _numbers(test_time.get("metrics") or {}).items()}
    )
    return metrics


def log_record(tracker: Tracker, record: dict, evaluations: Sequence[dict] = ()) -> None:
    """The end of a run: its final numbers, the accuracy matrix and every evaluation."""
    from cl_bench.records import accuracy_matrix_csv

    step = len(record["accuracy_matrix"]) - 1
    metrics = record_metrics(record)
    for artefact in evaluations:
        name = artefact["evaluator"]
        metrics.update({f"evaluation/{name}/{key}": v for key, v in _numbers(artefact.get("metrics") or {}).items()})
        if artefact.get("rows"):
            tracker.log_text(f"evaluation_{name}.csv", rows_csv(artefact["rows"]))
    tracker.log_metrics(metrics, step)
    tracker.log_text("accuracy_matrix.csv", accuracy_matrix_csv(record["accuracy_matrix"]))


def rows_csv(rows: Sequence[dict]) -> str:
    """A list of flat dicts as CSV text (columns in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _markdown_code(text: str) -> str:
    """TensorBoard renders text panels as Markdown: keep CSV and JSON verbatim in a code block."""
    return "\n".join("    " + line for line in text.splitlines())
