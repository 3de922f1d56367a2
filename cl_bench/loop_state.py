"""The runner's own state between experiences: typed, and what its checkpoint stores as plain data.

The loop appends to these as it trains; ``checkpoint.save`` stores :meth:`LoopState.to_progress` (plain lists,
numbers and dicts, the format checkpoints have always had) and ``--resume`` reads it back with
:meth:`LoopState.from_progress`, which checks the shape before the run continues.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from cl_bench.errors import UserError


@dataclass
class AnytimeCurve:
    """Anytime accuracy of a task-free run: one point every ``eval_every`` stream samples."""

    eval_every: int
    samples: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    n_classes: list[int] = field(default_factory=list)


@dataclass
class OnlineProgress:
    """Where a task-free run is in its stream."""

    anytime: AnytimeCurve
    batches: int = 0
    samples: int = 0
    seen_classes: list[int] = field(default_factory=list)
    boundaries: list[int] = field(default_factory=list)  # stream positions of the hidden task boundaries
    final_accuracy: Optional[float] = None  # on every class seen, after the last batch


@dataclass
class LoopState:
    """Accuracy rows, timings and branch results of one run so far."""

    accuracy_initial: list[float]  # the untrained model on every test experience
    accuracy_matrix: list[list[float]] = field(default_factory=list)  # row i: after experience i
    per_experience: list[dict] = field(default_factory=list)  # train_s / eval_s (and branch) per trained step
    elapsed_s: float = 0.0
    validation_rows: dict[str, list[list[float]]] = field(default_factory=dict)  # branch -> validation rows
    attack_rows: dict[str, list[dict]] = field(default_factory=dict)  # branch -> the attack's row_metrics
    accuracy_matrix_clean: Optional[list[list[float]]] = None  # an attacked run's clean branch
    attack_target: Optional[int] = None
    attack_s: float = 0.0
    online: Optional[OnlineProgress] = None

    def to_progress(self) -> dict:
        """Plain data for the checkpoint (fields at None are left out, as the loop always wrote them)."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}

    @classmethod
    def from_progress(cls, progress: dict, run_dir: Path, n_experiences: int) -> "LoopState":
        """The state a checkpoint holds; a one-line UserError when it does not fit a stream of ``n_experiences``."""
        try:
            state = cls(**{key: value for key, value in progress.items() if key != "online"})
            online = progress.get("online")
            if online is not None:
                curve = AnytimeCurve(**online["anytime"])
                state.online = OnlineProgress(**{**online, "anytime": curve})
        except (TypeError, KeyError):
            state = None
        if state is None or not _well_formed(state, n_experiences):
            raise UserError(
                f"cannot resume from the checkpoint in {run_dir}: its progress does not fit a stream of "
                f"{n_experiences} experiences; start the run over with --force"
            )
        return state


def _well_formed(state: LoopState, n_experiences: int) -> bool:
    matrix, initial = state.accuracy_matrix, state.accuracy_initial
    return (
        isinstance(matrix, list)
        and len(matrix) <= n_experiences
        and all(isinstance(row, list) and len(row) == n_experiences for row in matrix)
        and isinstance(initial, list)
        and len(initial) == n_experiences
        and isinstance(state.per_experience, list)
        and isinstance(state.elapsed_s, (int, float))
        and isinstance(state.validation_rows, dict)
        and isinstance(state.attack_rows, dict)
    )
