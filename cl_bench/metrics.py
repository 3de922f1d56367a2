"""Continual-learning metrics as pure functions of the accuracy matrix.

``R[i][j]`` is the accuracy on test experience j after training experience i (T x T, 0-based).

* ``acc = mean_j R[T-1][j]``
* ``bwt = mean_{j<T-1} (R[T-1][j] - R[j][j])``  (Lopez-Paz & Ranzato 2017)
* ``forgetting = mean_{j<T-1} (max_{j<=i<T-1} R[i][j] - R[T-1][j])``  (Chaudhry et al. 2018)
* ``learning_acc = mean_j R[j][j]``
* ``fwt = mean_{j>0} (R[j-1][j] - b[j])`` with b the accuracies of the initial model.
* ``a_auc = mean_k a_k`` over the anytime accuracies a_k of a task-free stream, measured at evenly spaced
  points of the stream (the area under the anytime-accuracy curve divided by its length; Koh et al. 2022,
  Si-Blurry's A_auc).

With a single experience, bwt and forgetting are 0 and fwt is undefined (None).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _matrix(accuracy_matrix: Sequence[Sequence[float]]) -> np.ndarray:
    matrix = np.asarray(accuracy_matrix, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square and non-empty, got shape {matrix.shape}")
    return matrix


def average_accuracy(accuracy_matrix: Sequence[Sequence[float]]) -> float:
    return float(_matrix(accuracy_matrix)[-1].mean())


def backward_transfer(accuracy_matrix: Sequence[Sequence[float]]) -> float:
    matrix = _matrix(accuracy_matrix)
    last = len(matrix) - 1
    if last == 0:
        return 0.0
    return float(np.mean([matrix[last, j] - matrix[j, j] for j in range(last)]))


def forgetting(accuracy_matrix: Sequence[Sequence[float]]) -> float:
    matrix = _matrix(accuracy_matrix)
    last = len(matrix) - 1
    if last == 0:
        return 0.0
    return float(np.mean([matrix[j:last, j].max() - matrix[last, j] for j in range(last)]))


def learning_accuracy(accuracy_matrix: Sequence[Sequence[float]]) -> float:
    return float(np.diag(_matrix(accuracy_matrix)).mean())


def forward_transfer(
    accuracy_matrix: Sequence[Sequence[float]], initial_accuracies: Optional[Sequence[float]]
) -> Optional[float]:
    matrix = _matrix(accuracy_matrix)
    if initial_accuracies is None or len(matrix) < 2:
        return None
    initial = np.asarray(initial_accuracies, dtype=float)
    return float(np.mean([matrix[j - 1, j] - initial[j] for j in range(1, len(matrix))]))


def seen_average_curve(accuracy_matrix: Sequence[Sequence[float]]) -> list[float]:
    """Mean accuracy over the experiences seen so far, after each experience."""
    matrix = _matrix(accuracy_matrix)
    return [float(matrix[i, : i + 1].mean()) for i in range(len(matrix))]


def anytime_auc(anytime_accuracies: Sequence[float]) -> Optional[float]:
    """Mean of the anytime accuracies (evenly spaced evaluation points); None without any."""
    if len(anytime_accuracies) == 0:
        return None
    return float(np.mean(np.asarray(anytime_accuracies, dtype=float)))


def all_metrics(
    accuracy_matrix: Sequence[Sequence[float]], initial_accuracies: Optional[Sequence[float]] = None
) -> dict[str, Optional[float]]:
    return {
        "acc": average_accuracy(accuracy_matrix),
        "bwt": backward_transfer(accuracy_matrix),
        "forgetting": forgetting(accuracy_matrix),
        "fwt": forward_transfer(accuracy_matrix, initial_accuracies),
        "learning_acc": learning_accuracy(accuracy_matrix),
    }


def attack_effect(
    clean_matrix: Sequence[Sequence[float]], attacked_matrix: Sequence[Sequence[float]], target: int
) -> dict[str, dict[str, float]]:
    """Clean vs attacked numbers of a paired run, and their difference (attacked - clean).

    ``previous_acc``: final accuracy on the experiences before the poisoned one (mean of the last
    row over j < target; absent when the first experience is poisoned). ``poisoned_acc``: final
    accuracy on the poisoned experience itself.
    """
    effect: dict[str, dict[str, float]] = {}
    readers = {
        "acc": average_accuracy,
        "bwt": backward_transfer,
        "forgetting": forgetting,
        "poisoned_acc": lambda m: float(_matrix(m)[-1, target]),
    }
    if target > 0:
        readers["previous_acc"] = lambda m: float(_matrix(m)[-1, :target].mean())
    for name, read in readers.items():
        clean, attacked = read(clean_matrix), read(attacked_matrix)
        effect[name] = {"clean": clean, "attacked": attacked, "difference": attacked - clean}
    return effect


def row_metric_effect(
    clean_rows: Sequence[dict], attacked_rows: Sequence[dict], target: int
) -> dict[str, dict[str, float]]:
    """Clean vs attacked values of an attack's own per-experience measurements (e.g. a backdoor's ``asr``):
    ``<name>_at_target`` right after the poisoned experience, ``<name>_final`` after the last one (the
    persistence of what the attack planted), and their differences (attacked - clean)."""
    effect: dict[str, dict[str, float]] = {}
    for name in attacked_rows[-1] if attacked_rows else {}:
        for when, index in (("at_target", target), ("final", -1)):
            clean, attacked = float(clean_rows[index][name]), float(attacked_rows[index][name])
            effect[f"{name}_{when}"] = {"clean": clean, "attacked": attacked, "difference": attacked - clean}
    return effect
