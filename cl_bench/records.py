"""Run records: atomic writing, reading with validation, and the environment block.

``runs/<run_id>/record.json`` is the unit every table and plot is built from (schema in
DESIGN.md). It is written last, atomically (temporary file + rename): a run directory without
it is incomplete and never enters a leaderboard.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

SCHEMA_VERSION = 1
RECORD_FILE = "record.json"
# the fields every table and plot relies on; a record lacking one is treated as incomplete
REQUIRED_FIELDS = ("schema_version", "run_id", "status", "config", "scenario", "strategy", "seed",
                   "accuracy_matrix", "metrics", "timing")


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` through a uniquely named temporary file in the same directory + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", newline="") as tmp:
            tmp.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def publish_report(lines: list[str], out: Optional[Path]) -> None:
    """Print a benchmark's or an analysis script's report and, with ``out``, write it there atomically."""
    report = "\n".join(lines)
    print(report)
    if out:
        atomic_write_text(out, report + "\n")


def write_record(run_dir: Path, record: dict) -> Path:
    path = Path(run_dir) / RECORD_FILE
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


def accuracy_matrix_csv(accuracy_matrix: list[list[float]]) -> str:
    """Rows 'after_exp_i', columns 'exp_j', accuracies with 6 decimals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trained"] + [f"exp_{j}" for j in range(len(accuracy_matrix[0]))])
    for i, row in enumerate(accuracy_matrix):
        writer.writerow([f"after_exp_{i}"] + [f"{value:.6f}" for value in row])
    return buffer.getvalue()


def record_problem(record: Any) -> Optional[str]:
    """Why ``record`` (parsed JSON) is not a complete run record, or None when it is."""
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        return f"missing field {missing[0]!r}"
    if record["status"] != "complete":
        return f"status is {record['status']!r}, not 'complete'"
    if not isinstance(record["metrics"], dict) or not isinstance(record["timing"], dict):
        return "metrics and timing must be objects"
    if not isinstance(record["config"], dict):
        return "config must be an object"
    matrix = record["accuracy_matrix"]
    if (not isinstance(matrix, list) or not matrix
            or not all(isinstance(row, list) and len(row) == len(matrix[0]) for row in matrix)):
        return "accuracy_matrix must be a non-empty list of equal-length rows"
    return None


def read_record(path: Path) -> tuple[Optional[dict], Optional[str]]:
    """(record, None) for a complete, well-formed record; (None, reason) otherwise.

    ``path`` is a record.json file or a run directory.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path} does not exist (incomplete run)"
    except (OSError, UnicodeDecodeError) as error:
        return None, f"{path} is unreadable: {error}"
    except json.JSONDecodeError as error:
        return None, f"{path} is not valid JSON ({error.msg} at line {error.lineno})"
    problem = record_problem(record)
    if problem:
        return None, f"{path} is not a complete run record: {problem}"
    return record, None


def is_complete(path: Path) -> bool:
    """True when ``path`` (a record.json or a run directory) holds a complete run record."""
    return read_record(path)[0] is not None


def git_sha() -> Optional[str]:
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def environment(device: Any) -> dict:
    import avalanche
    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "avalanche": getattr(avalanche, "__version__", "unknown"), "platform": platform.platform(),
            "device": str(device), "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch_threads": torch.get_num_threads(), "git_sha": git_sha()}


def stream_mode(record: dict) -> str:
    """The mode of a task-free stream (``disjoint``, ``blurry`` ...) from a record's config; '' otherwise."""
    scenario = (record.get("config") or {}).get("scenario")
    return str(scenario.get("mode", "")) if isinstance(scenario, dict) else ""
