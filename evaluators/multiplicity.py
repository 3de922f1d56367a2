"""Predictive-multiplicity metrics over a set of models, as pure functions of their outputs.

Hsu, Li, Hu, Chen, "Dropout-Based Rashomon Set Exploration for Efficient Predictive Multiplicity
Estimation", ICLR 2024 (arXiv 2402.00728); the definitions follow the official code's
``utils/evaluation.py`` (spec ``rashomon_dropout.md`` section 2). No model and no I/O here: the inputs are
the models' losses, predicted labels, true-label scores or softmax probabilities.

Notation: m models h_1..h_m (the admitted ones), n samples, K classes; predicted label
``y_j(x_i) = argmax_k h_j(x_i)_k``, reference label ``y*(x_i)`` from the trained model h*, true-label score
``s_j(x_i) = h_j(x_i)_{y_i}`` (the softmax probability of the *true* label, as the official code uses).

* Empirical Rashomon set (paper Eq. 2): ``R(eps) = {h : L(h) <= L(h*) + eps}``, L the mean cross-entropy.
  The rule here is non-strict; the official ``get_Rashomon_models_sampling`` uses a strict ``<``, which at
  eps = 0 drops the unperturbed models (whose loss equals L(h*)) and leaves zeros for an empty set. An
  empty set gives NaN metrics here, never 0.
* Ambiguity: ``alpha = (1/n) sum_i 1[exists j : y_j(x_i) != y*(x_i)]``.
* Discrepancy: ``delta = max_j (1/n) sum_i 1[y_j(x_i) != y*(x_i)]`` (so ``delta <= alpha``).
* Viable prediction range: ``VPR(x_i) = max_j s_j(x_i) - min_j s_j(x_i)``.
* Score variance: ``Var(x_i) = (1/m) sum_j (s_j(x_i) - mean_j s_j(x_i))^2`` (population variance).
* Rashomon Capacity (Hsu & Calmon, NeurIPS 2022): ``C(x_i) = max_{pi in simplex_m} min_{q in simplex_K}
  sum_j pi_j KL(h_j(x_i) || q)`` in bits, reported as ``RC = 2^C`` in ``[1, min(m, K)]``; computed by
  Blahut-Arimoto, see :func:`rashomon_capacity`.
* Disagreement (Kulynych et al., FAccT 2023): ``D(x_i) = 4 mu_i (1 - mu_i)``, ``mu_i`` the fraction of models
  predicting label 1; defined for labels {0, 1} only (the official ``disagreement_hat`` averages class
  indices, meaningless for K > 2). For K classes the suite uses ``1 - sum_k f_ik^2`` (f_ik the fraction of
  models predicting k), divided by ``1 - 1/K`` when normalised; this is the suite's choice, not the paper's,
  and it equals the binary form for K = 2.
* Reporting (the official notebooks): median VPR and RC, 0.99 quantile of the score variance and 0.9
  quantile of the disagreement over samples (:data:`SUMMARY_QUANTILES`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence, Union

import torch
from torch import Tensor

PROBABILITY_FLOOR = 1e-12
BLAHUT_ARIMOTO_TOLERANCE = 1e-12
BLAHUT_ARIMOTO_MAX_ITERATIONS = 1000
# per-sample metric -> the quantile over samples the official notebooks report
SUMMARY_QUANTILES = {
    "viable_prediction_range": 0.5,
    "score_variance": 0.99,
    "rashomon_capacity": 0.5,
    "disagreement": 0.9,
}


def rashomon_mask(losses: Tensor, reference_loss: float, epsilons: Union[Sequence[float], Tensor]) -> Tensor:
    """Membership of every model in R(eps) for every eps: bool ``(n_eps, n_models)``.

    Non-strict rule ``L(h) <= L(h*) + eps`` (paper Eq. 2). The official code is strict (``<``), which excludes
    the rate-0 models at eps = 0; compared in float64.
    """
    losses = torch.as_tensor(losses, dtype=torch.float64).reshape(-1)
    tolerances = torch.as_tensor(epsilons, dtype=torch.float64).reshape(-1, 1)
    return losses.unsqueeze(0) <= float(reference_loss) + tolerances


def _mismatches(predictions: Tensor, reference_predictions: Tensor) -> Tensor:
    if predictions.ndim != 2 or reference_predictions.shape != predictions.shape[1:]:
        raise ValueError(
            f"predictions must be (m, n) and reference predictions (n,), got {tuple(predictions.shape)} and "
            f"{tuple(reference_predictions.shape)}"
        )
    return predictions != reference_predictions.unsqueeze(0)


def ambiguity(predictions: Tensor, reference_predictions: Tensor) -> float:
    """alpha: fraction of samples on which at least one model's label differs from h*'s; NaN for m = 0."""
    mismatches = _mismatches(predictions, reference_predictions)
    if mismatches.shape[0] == 0:
        return float("nan")
    return float(mismatches.any(dim=0).double().mean())


def discrepancy(predictions: Tensor, reference_predictions: Tensor) -> float:
    """delta: the largest fraction of samples on which one model's label differs from h*'s; NaN for m = 0."""
    mismatches = _mismatches(predictions, reference_predictions)
    if mismatches.shape[0] == 0:
        return float("nan")
    return float(mismatches.double().mean(dim=1).max())


def _scores(true_label_scores: Tensor) -> Tensor:
    if true_label_scores.ndim != 2:
        raise ValueError(f"true-label scores must be (m, n), got {tuple(true_label_scores.shape)}")
    return true_label_scores.double()


def viable_prediction_range(true_label_scores: Tensor) -> Tensor:
    """VPR per sample, ``max_j s_j - min_j s_j`` over the (m, n) true-label scores: float64 (n,); NaN for m = 0."""
    scores = _scores(true_label_scores)
    if scores.shape[0] == 0:
        return torch.full(scores.shape[1:], float("nan"), dtype=torch.float64, device=scores.device)
    return scores.amax(dim=0) - scores.amin(dim=0)


def score_variance(true_label_scores: Tensor) -> Tensor:
    """Population variance of the (m, n) true-label scores over models: float64 (n,); NaN for m = 0."""
    scores = _scores(true_label_scores)
    if scores.shape[0] == 0:
        return torch.full(scores.shape[1:], float("nan"), dtype=torch.float64, device=scores.device)
    return scores.var(dim=0, correction=0)


def _probability_rows(probabilities: Tensor) -> Tensor:
    """Probabilities in float64, clamped at the floor and renormalised so every row sums to 1."""
    if probabilities.ndim != 3:
        raise ValueError(f"probabilities must be (n, m, K), got {tuple(probabilities.shape)}")
    rows = probabilities.double().clamp_min(PROBABILITY_FLOOR)
    return rows / rows.sum(dim=-1, keepdim=True)


def _capacity_bits(weights: Tensor, previous: Tensor, divergence: Tensor) -> Tensor:
    """Step 3: ``C = sum_jk r_j P_jk log(q_jk / r_j) / log 2`` with ``q_jk = pi_j P_jk / sum_j' pi_j' P_j'k``.

    Since every row of P sums to 1, ``sum_k P_jk log(q_jk / r_j) = log(pi_j / r_j) + KL(P_j || pi P)``;
    entries with r_j = 0 (or pi_j = 0, hence q_jk = 0) are skipped.
    """
    admitted = weights > 0
    terms = weights * (previous.log() - weights.log() + divergence)
    return torch.where(admitted, terms, torch.zeros_like(terms)).sum(dim=-1) / math.log(2.0)


def rashomon_capacity(
    probabilities: Tensor,
    *,
    max_iterations: int = BLAHUT_ARIMOTO_MAX_ITERATIONS,
    tolerance: float = BLAHUT_ARIMOTO_TOLERANCE,
    max_chunk_elements: int = 2**24,
) -> Tensor:
    """Rashomon Capacity ``RC = 2^C`` per sample of (n, m, K) softmax probabilities: float64 (n,).

    Blahut-Arimoto (spec section 2), batched over samples in float64 on the input's device, probabilities
    clamped at 1e-12 (and renormalised). From pi uniform over the m models, each iteration computes
    ``q_jk proportional to pi_j P_jk`` (normalised over j) and ``r_j proportional to prod_k q_jk^{P_jk}``, which
    for rows summing to 1 is ``r_j proportional to pi_j exp(KL(P_j || pi P))`` (the form computed here, with
    two batched matrix products per iteration); a sample stops once ``mean_j (r_j - pi_j)^2 < tolerance`` or
    after ``max_iterations`` iterations, otherwise ``pi <- r``. Samples are processed in chunks of at most
    ``max_chunk_elements`` probabilities. NaN for every sample when m = 0.
    """
    rows = _probability_rows(probabilities)
    n_samples, n_models, _ = rows.shape
    capacity = torch.full((n_samples,), float("nan"), dtype=torch.float64, device=rows.device)
    if n_models == 0 or n_samples == 0:
        return capacity
    chunk = max(1, max_chunk_elements // max(1, rows[0].numel()))
    for start in range(0, n_samples, chunk):
        capacity[start : start + chunk] = _blahut_arimoto_bits(rows[start : start + chunk], max_iterations, tolerance)
    return torch.exp2(capacity)


def _blahut_arimoto_bits(rows: Tensor, max_iterations: int, tolerance: float) -> Tensor:
    """C in bits per sample of (a, m, K) float64 rows summing to 1.

    A sample's C is taken at the iteration where it stops; the rows of stopped samples are dropped from the
    batch once they are at least half of it (dropping them at every iteration would copy the batch each time).
    """
    n_samples, n_models, _ = rows.shape
    bits = torch.empty(n_samples, dtype=torch.float64, device=rows.device)
    negative_entropy = (rows * rows.log()).sum(dim=-1)  # sum_k P_jk log P_jk, (a, m)
    weights = torch.full((n_samples, n_models), 1.0 / n_models, dtype=torch.float64, device=rows.device)
    samples = torch.arange(n_samples, device=rows.device)  # which sample each row of the batch is
    running = torch.ones(n_samples, dtype=torch.bool, device=rows.device)
    for iteration in range(max_iterations):
        marginal = torch.bmm(weights.unsqueeze(1), rows).squeeze(1)  # (pi P)_k, (a, K)
        cross = torch.bmm(rows, marginal.log().unsqueeze(-1)).squeeze(-1)  # sum_k P_jk log (pi P)_k, (a, m)
        divergence = negative_entropy - cross  # KL(P_j || pi P), (a, m)
        updated = weights * torch.exp(divergence - divergence.amax(dim=1, keepdim=True))
        updated = updated / updated.sum(dim=1, keepdim=True)
        converged = ((updated - weights) ** 2).mean(dim=1) < tolerance
        stopping = running if iteration == max_iterations - 1 else running & converged
        if bool(stopping.any()):
            bits[samples[stopping]] = _capacity_bits(updated[stopping], weights[stopping], divergence[stopping])
            running = running & ~stopping
            if not bool(running.any()):
                break
            if 2 * int(running.sum()) <= len(running):
                samples, rows, negative_entropy = samples[running], rows[running], negative_entropy[running]
                updated, running = updated[running], running[running]
        weights = updated
    return bits


def rashomon_capacity_loop(probabilities: Tensor) -> Tensor:
    """Reference for :func:`rashomon_capacity`: the spec's Blahut-Arimoto steps literally, one sample at a time.

    Same floor, stopping rule and iteration cap; q and r are formed as written (``q`` normalised over models,
    ``r proportional to prod_k q_jk^{P_jk}``). Slow: for the tests and the benchmark only.
    """
    rows = _probability_rows(probabilities)
    capacity = torch.full((rows.shape[0],), float("nan"), dtype=torch.float64)
    if rows.shape[1] == 0:
        return capacity
    for sample, matrix in enumerate(rows):
        weights = torch.full((matrix.shape[0],), 1.0 / matrix.shape[0], dtype=torch.float64, device=matrix.device)
        for _ in range(BLAHUT_ARIMOTO_MAX_ITERATIONS):
            joint = weights.unsqueeze(1) * matrix
            posterior = joint / joint.sum(dim=0, keepdim=True)  # q_jk, normalised over j
            updated = torch.exp((matrix * posterior.log()).sum(dim=1))
            updated = updated / updated.sum()
            if float(((updated - weights) ** 2).mean()) < BLAHUT_ARIMOTO_TOLERANCE:
                break
            weights = updated
        terms = updated.unsqueeze(1) * matrix * (posterior / updated.unsqueeze(1)).log()
        admitted = (updated.unsqueeze(1) > 0) & (posterior > 0)
        bits = torch.where(admitted, terms, torch.zeros_like(terms)).sum() / math.log(2.0)
        capacity[sample] = float(bits)
    return torch.exp2(capacity)


def _label_matrix(predictions: Tensor) -> Tensor:
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be (m, n), got {tuple(predictions.shape)}")
    return predictions.long()


def disagreement_binary(predictions: Tensor) -> Tensor:
    """Kulynych et al.'s ``4 mu (1 - mu)`` per sample of (m, n) labels in {0, 1}: float64 (n,); NaN for m = 0.

    Raises ValueError for any label outside {0, 1} (the official code would average class indices).
    """
    labels = _label_matrix(predictions)
    if bool(((labels != 0) & (labels != 1)).any()):
        raise ValueError("disagreement_binary needs labels in {0, 1}; use disagreement_multiclass for K > 2")
    if labels.shape[0] == 0:
        return torch.full(labels.shape[1:], float("nan"), dtype=torch.float64, device=labels.device)
    positive = labels.double().mean(dim=0)
    return 4.0 * positive * (1.0 - positive)


def disagreement_multiclass(predictions: Tensor, n_classes: int, normalise: bool = True) -> Tensor:
    """Suite's K-class disagreement ``1 - sum_k f_ik^2`` per sample of (m, n) labels: float64 (n,).

    ``f_ik`` is the fraction of models predicting class k on sample i; with ``normalise`` the value is divided
    by ``1 - 1/K`` so it spans [0, 1] (then it equals :func:`disagreement_binary` for K = 2). Not the paper's
    definition (the paper's is binary only). NaN for m = 0.
    """
    labels = _label_matrix(predictions)
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    if bool(((labels < 0) | (labels >= n_classes)).any()):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    n_models, n_samples = labels.shape
    if n_models == 0:
        return torch.full((n_samples,), float("nan"), dtype=torch.float64, device=labels.device)
    counts = torch.zeros(n_classes, n_samples, dtype=torch.float64, device=labels.device)
    counts.scatter_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
    fractions = counts / n_models
    spread = 1.0 - (fractions**2).sum(dim=0)
    return spread / (1.0 - 1.0 / n_classes) if normalise else spread


def quantile(values: Tensor, level: float) -> float:
    """Linear-interpolation quantile (numpy's default) of the finite entries; NaN when there are none."""
    finite = values.double().reshape(-1)
    finite = finite[torch.isfinite(finite)]
    if finite.numel() == 0:
        return float("nan")
    return float(torch.quantile(finite, level))


def summarise(per_sample: Mapping[str, Tensor]) -> dict[str, float]:
    """The official notebooks' summaries: ``<metric>_median`` for VPR and RC, ``score_variance_q99``,
    ``disagreement_q90``, plus ``<metric>_mean`` for each; metrics absent from ``per_sample`` are skipped."""
    summary: dict[str, float] = {}
    for name, level in SUMMARY_QUANTILES.items():
        if name not in per_sample:
            continue
        values = per_sample[name]
        summary[f"{name}_median" if level == 0.5 else f"{name}_q{round(level * 100)}"] = quantile(values, level)
        finite = values.double()[torch.isfinite(values.double())]
        summary[f"{name}_mean"] = float(finite.mean()) if finite.numel() else float("nan")
    return summary


def multiplicity_metrics(probabilities: Tensor, targets: Tensor, reference_probabilities: Tensor) -> dict[str, Any]:
    """All metrics of one admitted set: (m, n, K) softmax probabilities, (n,) true labels, h*'s (n, K).

    Returns ``n_models``, ``ambiguity``, ``discrepancy``, the :func:`summarise` entries, and ``per_sample``
    (float64 (n,) tensors ``viable_prediction_range``, ``score_variance``, ``rashomon_capacity``,
    ``disagreement``: the suite's normalised K-class form, equal to Kulynych et al.'s for K = 2). Every value
    is NaN for an empty set (m = 0).
    """
    if probabilities.ndim != 3 or reference_probabilities.shape != probabilities.shape[1:]:
        raise ValueError(
            f"probabilities must be (m, n, K) and reference probabilities (n, K), got "
            f"{tuple(probabilities.shape)} and {tuple(reference_probabilities.shape)}"
        )
    n_models, n_samples, n_classes = probabilities.shape
    targets = targets.long().to(probabilities.device)
    predictions = probabilities.argmax(dim=-1)
    reference_predictions = reference_probabilities.to(probabilities.device).argmax(dim=-1)
    true_label_scores = probabilities[:, torch.arange(n_samples, device=probabilities.device), targets]
    per_sample = {
        "viable_prediction_range": viable_prediction_range(true_label_scores),
        "score_variance": score_variance(true_label_scores),
        "rashomon_capacity": rashomon_capacity(probabilities.transpose(0, 1)),
        "disagreement": disagreement_multiclass(predictions, max(n_classes, 2)),
    }
    return {
        "n_models": n_models,
        "ambiguity": ambiguity(predictions, reference_predictions),
        "discrepancy": discrepancy(predictions, reference_predictions),
        **summarise(per_sample),
        "per_sample": per_sample,
    }
