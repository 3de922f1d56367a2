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
from pathlib import Path
from typing import Any, Optional

SCHEMA_VERSION = 1
RECORD_FILE = "record.json"
REQUIRED_FIELDS = ("schema_version", "run_id", "config", "status", "scenario", "strategy", "seed",
                   "accuracy_matrix", "metrics", "timing")


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


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


def read_record(path: Path) -> tuple[Optional[dict], Optional[str]]:
    """(record, None) for a complete, well-formed record; (None, reason) otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    if not path.is_file():
        return None, "no record.json (incomplete run)"
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, f"not valid JSON ({error.__class__.__name__})"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        return None, f"missing fields: {', '.join(missing)}"
    if record.get("status") != "complete":
        return None, f"status is {record.get('status')!r}, not 'complete'"
    return record, None


def is_complete(run_dir: Path) -> bool:
    record, _ = read_record(Path(run_dir) / RECORD_FILE)
    return record is not None


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
