"""Run records: atomic writing, reading with validation, and the environment block.

``runs/<run_id>/record.json`` is the unit every table and plot is built from. It is written last,
atomically (temporary file + rename): a run directory without it is incomplete and never enters a
leaderboard.

Reading trusts nothing: a record is strict JSON (no ``NaN`` or ``Infinity`` literals) and must pass
:class:`RunRecord`, one schema every reader uses (leaderboard, plot, run's skip-if-complete, sweep). A
record that fails it is corrupt everywhere: the leaderboard skips it with a warning, ``plot`` refuses it
in one line, ``run`` and ``sweep`` redo the run.

Temporary files are named ``.<name>.<host>-<pid>.<random>.tmp`` beside their target, so two processes
writing the same file never share one, and a leftover of a killed process (a dead pid on this host) is
removed by the next write of the same file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cl_bench.errors import UserError

# 2: the final model's tensors are kept (``final_model``) and evaluations live beside the record; readers
# accept 1 (a run without a kept model cannot be evaluated later, everything else reads the same)
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
RECORD_FILE = "record.json"
# beside the record: the final model's tensors, the evaluations of the measurement phase (cl_bench.evaluation),
# and under a runs directory, the reference runs evaluators train on demand (boards do not read them)
MODEL_FILE = "model.safetensors"
EVALUATIONS_DIR = "evaluations"
REFERENCES_DIR = "references"
# a leftover temporary file whose name does not say which process wrote it is stale after this long
UNTAGGED_TEMPORARY_AGE_S = 3600.0


# ----------------------------------------------------------------------------- atomic files


def _process_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except (OverflowError, OSError):
        return False
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files of ``path`` left by killed processes (never a live writer's)."""
    path = Path(path)
    prefix = f".{path.name}."
    host = socket.gethostname()
    try:
        candidates = [c for c in path.parent.iterdir() if c.name.startswith(prefix) and c.name.endswith(".tmp")]
    except OSError:
        return
    for candidate in candidates:
        middle = candidate.name[len(prefix) : -len(".tmp")]
        tag = middle.rsplit(".", 1)[0]
        owner_host, _, pid_text = tag.rpartition("-")
        try:
            if owner_host and pid_text.isdigit():
                stale = owner_host == host and not _pid_alive(int(pid_text))
            else:  # written before temporaries were tagged
                stale = time.time() - candidate.stat().st_mtime > UNTAGGED_TEMPORARY_AGE_S
            if stale:
                candidate.unlink(missing_ok=True)
        except OSError:
            continue


def temporary_path(path: Path) -> Path:
    """A fresh temporary name beside ``path``, unique to this process; stale ones of ``path`` are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    return path.parent / f".{path.name}.{_process_tag()}.{secrets.token_hex(4)}.tmp"


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On any error (a kill aside) the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def install_directory(staging: Path, destination: Path) -> None:
    """Move a finished ``staging`` directory to ``destination`` by renames, replacing an old copy only on success:
    ``destination`` is at every moment the old directory, absent, or the new one."""
    backup = None
    if destination.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
        backup.rmdir()
        destination.rename(backup)
    try:
        staging.rename(destination)
    except OSError:
        if backup is not None:
            backup.rename(destination)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextmanager
def atomic_directory(destination: Path) -> Iterator[Path]:
    """Yield a fresh staging directory beside ``destination`` to fill; on success it is installed there
    (:func:`install_directory`), on any error it is removed and ``destination`` is left as it was."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        staging.chmod(0o755)
        yield staging
        install_directory(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) through a uniquely named temporary file in the same directory + rename."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    return Path(path)


def check_output_dir(out_dir: Path, what: str = "the runs") -> None:
    """A UserError unless ``out_dir`` is (or can be created as) a writable directory; creates nothing."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a directory; choose a directory for {what}")
    existing = out_dir
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--out {out_dir} lies under {existing}, which is a file; choose another directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out_dir}: {existing} is not writable; choose a directory you can write to")


def publish_report(lines: list[str], out: Optional[Path]) -> None:
    """Print a benchmark's or an analysis script's report and, with ``out``, write it there atomically."""
    report = "\n".join(lines)
    print(report)
    if out:
        atomic_write_text(out, report + "\n")


def strict_json(value: Any, **options: Any) -> str:
    """``json.dumps`` that refuses NaN and infinities (they are not JSON): a UserError names the first one."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:
        where = _first_non_finite(value)
        raise UserError(
            f"refusing to write a non-finite number at {where}; the run produced NaN or "
            f"infinity there (training diverged?)"
        ) from None


def _first_non_finite(value: Any, where: str = "$") -> Optional[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _first_non_finite(item, f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]")
        if found:
            return found
    return None


def write_record(run_dir: Path, record: dict) -> Path:
    path = Path(run_dir) / RECORD_FILE
    atomic_write_text(path, strict_json(record, indent=2, sort_keys=False) + "\n")
    return path


def accuracy_matrix_csv(accuracy_matrix: list[list[float]]) -> str:
    """Rows 'after_exp_i', columns 'exp_j', accuracies with 6 decimals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trained"] + [f"exp_{j}" for j in range(len(accuracy_matrix[0]))])
    for i, row in enumerate(accuracy_matrix):
        writer.writerow([f"after_exp_{i}"] + [f"{value:.6f}" for value in row])
    return buffer.getvalue()


# ----------------------------------------------------------------------------- the record schema

Finite = Annotated[float, Field(allow_inf_nan=False)]
Accuracy = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]


class _Schema(BaseModel):
    # strict: "0.5" is not a number and true is not 1; extra fields are allowed (plain JSON, read as data)
    model_config = ConfigDict(strict=True, extra="allow")


def _check_square(matrix: Optional[list[list[float]]], name: str) -> None:
    if matrix is not None and (not matrix or any(len(row) != len(matrix) for row in matrix)):
        raise ValueError(f"{name} must be a non-empty square matrix (one row and one column per experience)")


class Metrics(_Schema):
    acc: Accuracy
    bwt: Finite
    forgetting: Finite
    learning_acc: Accuracy
    fwt: Optional[Finite] = None
    a_auc: Optional[Accuracy] = None
    a_last: Optional[Accuracy] = None


class PhaseTiming(_Schema):
    train_s: Seconds
    eval_s: Seconds
    branch: Optional[str] = None


class Timing(_Schema):
    total_s: Seconds
    train_s: Seconds
    eval_s: Seconds
    per_experience: list[PhaseTiming]


class Component(_Schema):
    name: str


class ResolvedConfig(_Schema):
    scenario: Component
    model: Component
    strategy: Component
    attack: Optional[Component] = None
    train: dict[str, Any]
    seed: Count


class AttackInfo(_Schema):
    name: str
    target_experience: Count
    budget: dict[str, Any]
    metrics: dict[str, Any]
    wall_time_s: Seconds


class PairedNumber(_Schema):
    clean: Finite
    attacked: Finite
    difference: Finite


class AnytimeCurve(_Schema):
    eval_every: Annotated[int, Field(ge=1)]
    samples: list[Count]
    accuracy: list[Accuracy]
    n_classes: list[Count]

    @model_validator(mode="after")
    def _aligned(self) -> "AnytimeCurve":
        if not len(self.samples) == len(self.accuracy) == len(self.n_classes):
            raise ValueError("anytime_accuracy's samples, accuracy and n_classes must have equal lengths")
        return self


class TestTimeAttackInfo(_Schema):
    """What a test-time attack measured on the final model (the measurement phase)."""

    name: str
    metrics: dict[str, Optional[Finite]]  # None: undefined
    rows: list[dict[str, Any]]
    details: dict[str, Any]
    wall_time_s: Seconds


class FinalModel(_Schema):
    file: Literal["model.safetensors"]  # MODEL_FILE
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class RunRecord(_Schema):
    """What every reader relies on in a complete run record (other fields are kept as plain JSON)."""

    schema_version: Literal[1, 2]
    run_id: str
    status: Literal["complete"]
    config: ResolvedConfig
    scenario: str
    strategy: str
    model: Optional[str] = None
    attack: Optional[str] = None
    seed: Count
    accuracy_matrix: list[list[Accuracy]]
    accuracy_initial: Optional[list[Accuracy]] = None
    metrics: Metrics
    timing: Timing
    strategy_info: dict[str, Any] = {}
    backbone_card: Optional[dict[str, Any]] = None
    accuracy_matrix_clean: Optional[list[list[Accuracy]]] = None
    metrics_clean: Optional[Metrics] = None
    attack_info: Optional[AttackInfo] = None
    attack_effect: Optional[dict[str, PairedNumber]] = None
    anytime_accuracy: Optional[AnytimeCurve] = None
    accuracy_matrix_validation: Optional[list[list[Accuracy]]] = None
    metrics_validation: Optional[Metrics] = None
    final_model: Optional[FinalModel] = None  # schema 2
    test_time_attack: Optional["TestTimeAttackInfo"] = None  # schema 2
    # a training-time attack's own measurements after every experience (attacked and clean branch), e.g. ASR
    attack_rows: Optional[list[dict[str, Finite]]] = None
    attack_rows_clean: Optional[list[dict[str, Finite]]] = None

    @model_validator(mode="after")
    def _consistent(self) -> "RunRecord":
        _check_square(self.accuracy_matrix, "accuracy_matrix")
        _check_square(self.accuracy_matrix_clean, "accuracy_matrix_clean")
        _check_square(self.accuracy_matrix_validation, "accuracy_matrix_validation")
        if self.accuracy_matrix_validation is not None and len(self.accuracy_matrix_validation) != len(
            self.accuracy_matrix
        ):
            raise ValueError("accuracy_matrix_validation must have the shape of accuracy_matrix")
        size = len(self.accuracy_matrix)
        if self.accuracy_initial is not None and len(self.accuracy_initial) != size:
            raise ValueError("accuracy_initial must hold one accuracy per experience")
        if self.accuracy_matrix_clean is not None and len(self.accuracy_matrix_clean) != size:
            raise ValueError("accuracy_matrix_clean must have the shape of accuracy_matrix")
        if (self.attack_effect is None) != (self.attack_info is None) or (
            self.attack_effect is not None and self.accuracy_matrix_clean is None
        ):
            raise ValueError("an attacked record needs attack_info, attack_effect and accuracy_matrix_clean together")
        if self.attack_info is not None and self.attack_info.target_experience >= size:
            raise ValueError("attack_info.target_experience is past the last experience")
        if self.config.scenario.name != self.scenario or self.config.strategy.name != self.strategy:
            raise ValueError("scenario and strategy disagree with the resolved config")
        return self


EvaluationNumber = Optional[Finite]  # None: undefined (e.g. a metric over an empty Rashomon set)


class EvaluationTiming(_Schema):
    total_s: Seconds


class EvaluationRecord(_Schema):
    """``<run_dir>/evaluations/<evaluator>-<eval_id>.json``: one evaluator's results on one run's final model."""

    schema_version: Literal[1]
    kind: Literal["evaluation"]
    evaluator: str
    eval_id: Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]
    config: Component
    run_id: str
    seed: Count
    metrics: dict[str, EvaluationNumber]
    rows: list[dict[str, Any]]
    details: dict[str, Any]
    timing: EvaluationTiming

    @model_validator(mode="after")
    def _consistent(self) -> "EvaluationRecord":
        if self.config.name != self.evaluator:
            raise ValueError("config.name disagrees with evaluator")
        return self


def evaluation_problem(content: Any) -> Optional[str]:
    """Why ``content`` (parsed JSON) is not a well-formed evaluation artefact, or None when it is."""
    if not isinstance(content, dict):
        return "not a JSON object"
    try:
        EvaluationRecord.model_validate(content)
    except ValidationError as error:
        return schema_problem(error)
    return None


def read_evaluation(path: Path) -> tuple[Optional[dict], Optional[str]]:
    """(artefact, None) for a well-formed evaluation file; (None, one-line reason) otherwise."""
    path = Path(path)
    try:
        content = read_json(path)
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"{path} is not readable JSON ({str(error).splitlines()[0][:120]})"
    problem = evaluation_problem(content)
    if problem:
        return None, f"{path} is not an evaluation artefact: {problem}"
    return content, None


def schema_problem(error: ValidationError) -> str:
    """The first problem a pydantic schema found, as ``location: message`` (one line)."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "record"
    return f"{location}: {first['msg']}"


def record_problem(record: Any) -> Optional[str]:
    """Why ``record`` (parsed JSON) is not a complete run record, or None when it is."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if "status" in record and record["status"] != "complete":
        return f"status is {record['status']!r}, not 'complete'"
    try:
        RunRecord.model_validate(record)
    except ValidationError as error:
        return schema_problem(error)
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: Path) -> Any:
    """Strict JSON from ``path`` (UTF-8, no NaN/Infinity); ValueError/OSError with a one-line reason."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_record(path: Path) -> tuple[Optional[dict], Optional[str]]:
    """(record, None) for a complete, well-formed record; (None, reason) otherwise.

    ``path`` is a record.json file or a run directory.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    try:
        record = read_json(path)
    except FileNotFoundError:
        return None, f"{path} does not exist (incomplete run)"
    except UnicodeDecodeError:
        return None, f"{path} is not UTF-8 text"
    except OSError as error:
        return None, f"{path} is unreadable: {error.strerror or error}"
    except json.JSONDecodeError as error:
        return None, f"{path} is not valid JSON ({error.msg} at line {error.lineno})"
    except ValueError as error:
        return None, f"{path} is not valid JSON ({error})"
    problem = record_problem(record)
    if problem:
        return None, f"{path} is not a complete run record: {problem}"
    return record, None


def complete_records(runs: Path, having: str) -> list[dict]:
    """The complete records under ``runs`` (``*/record.json``, sorted) that hold a non-empty ``having`` block,
    each with its run directory under ``"_dir"`` (for analysis scripts that reload a run's model)."""
    found = []
    for path in sorted(Path(runs).glob("*/record.json")):
        record = json.loads(path.read_text())
        if record.get("status") == "complete" and record.get(having):
            record["_dir"] = str(path.parent)
            found.append(record)
    return found


def is_complete(path: Path) -> bool:
    """True when ``path`` (a record.json or a run directory) holds a complete run record."""
    return read_record(path)[0] is not None


def git_sha() -> Optional[str]:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def environment(device: Any) -> dict:
    import avalanche
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "avalanche": getattr(avalanche, "__version__", "unknown"),
        "platform": platform.platform(),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "git_sha": git_sha(),
    }


def stream_mode(record: dict) -> str:
    """The mode of a task-free stream (``disjoint``, ``blurry`` ...) from a record's config; '' otherwise."""
    scenario = (record.get("config") or {}).get("scenario")
    return str(scenario.get("mode", "")) if isinstance(scenario, dict) else ""
