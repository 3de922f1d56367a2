"""The standard classifier-unlearning protocol: forget sets, accuracies, membership inference, gaps to retraining.

Pure functions over arrays, shared by the unlearning evaluators. Definitions follow the protocol used by SalUn
(Fan et al., ICLR 2024) and "Model Sparsity Can Simplify Machine Unlearning" (Jia et al., NeurIPS 2023), the
NeurIPS 2023 Machine Unlearning Challenge kit and SCRUB (Kurmanji et al., NeurIPS 2023):

* D_train = D_f (forget) U D_r (retain); the unlearned model theta_u is compared with theta_rt, retrained from
  scratch on D_r with the original recipe.
* UA = 100 - acc(theta_u, D_f); RA = acc(theta_u, D_r); TA = acc(theta_u, D_test), in %.
* MIA-Efficacy (SalUn's ``confidence`` variant): an RBF SVC (C = 3, gamma = "auto") on the softmax confidence of
  the true label, trained with the first |D_test| samples of D_r as members (1) and D_test as non-members (0),
  applied to D_f; the efficacy is the % of D_f predicted **non-member** (higher = more forgotten; the target is
  the retrained model's value, not 100).
* Loss MIA (the challenge kit): a logistic regression on per-sample cross-entropy, D_f sub-sampled to |D_test|
  (label 1) against D_test (label 0), mean accuracy over 10 stratified shuffle splits; ideal ~0.5 (the
  retrained model's value). Its direction is the opposite of the efficacy's: higher = the forget set is still
  recognisable.
* gap_m = |m(theta_u) - m(theta_rt)| for m in UA, MIA-Efficacy, RA, TA; Avg. Gap = their mean (points).

Suite choices: forget sets are written ``class:K``, ``random:FRACTION`` or ``experience:K`` and drawn from an
explicit generator; the loss MIA's folds are seeded (``seed``) and the SVC is deterministic. The OPTML code's
``m_entropy`` feature (a column gather bug) is not ported.
"""

from __future__ import annotations

import math
import numpy as np
import torch

from cl_bench.forget_sets import FORGET_KINDS, ForgetSpec, forget_generator  # noqa: F401  (re-exported)

GAP_METRICS = ("ua", "mia_efficacy", "ra", "ta")
MIN_MIA_SAMPLES = 10


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """acc(theta, S) in %."""
    if len(targets) == 0:
        return math.nan
    return 100.0 * float((logits.argmax(dim=1) == targets).double().mean())


def true_label_confidence(logits: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    probabilities = torch.softmax(logits.double(), dim=1)
    return probabilities[torch.arange(len(targets)), targets].numpy()


def cross_entropy_per_sample(logits: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.cross_entropy(logits.double(), targets, reduction="none").numpy()


def mia_efficacy(retain: np.ndarray, test: np.ndarray, forget: np.ndarray) -> float:
    """SalUn's MIA-Efficacy in %: an RBF SVC (C=3, gamma="auto") on one feature (the true-label confidence),
    trained on the first |test| retain values (members) against the test values (non-members), applied to the
    forget values; the share predicted non-member."""
    from sklearn.svm import SVC

    members = retain[: len(test)]
    features = np.concatenate([members, test]).reshape(-1, 1)
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(test))])
    classifier = SVC(C=3, kernel="rbf", gamma="auto").fit(features, labels)
    return 100.0 * float((classifier.predict(forget.reshape(-1, 1)) == 0).mean())


def loss_mia(forget_losses: np.ndarray, test_losses: np.ndarray, seed: int = 0, folds: int = 10) -> float:
    """The challenge kit's loss MIA: logistic regression on per-sample loss, the forget set sub-sampled to |test|
    (label 1) against the test set (label 0), mean accuracy over ``folds`` stratified shuffle splits (10 % held
    out each); NaN (undefined) with fewer than 10 samples on either side."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    rng = np.random.default_rng(seed)
    count = min(len(forget_losses), len(test_losses))
    if count < MIN_MIA_SAMPLES:  # a 10 % test fold needs a sample of each label
        return math.nan
    forget = rng.choice(forget_losses, size=count, replace=False)
    test = rng.choice(test_losses, size=count, replace=False)
    features = np.concatenate([forget, test]).reshape(-1, 1)
    labels = np.concatenate([np.ones(count), np.zeros(count)])
    splits = StratifiedShuffleSplit(n_splits=folds, random_state=seed)
    return float(cross_val_score(LogisticRegression(), features, labels, cv=splits, scoring="accuracy").mean())


def protocol_metrics(
    forget: tuple[torch.Tensor, torch.Tensor],
    retain: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    seed: int = 0,
) -> dict[str, float]:
    """UA, FA, RA, TA (%), MIA-Efficacy (%) and the loss MIA of one model, from its (logits, targets) on D_f, D_r
    and D_test."""
    forget_accuracy = accuracy(*forget)
    return {
        "ua": 100.0 - forget_accuracy,
        "fa": forget_accuracy,
        "ra": accuracy(*retain),
        "ta": accuracy(*test),
        "mia_efficacy": mia_efficacy(
            true_label_confidence(*retain), true_label_confidence(*test), true_label_confidence(*forget)
        ),
        "loss_mia": loss_mia(cross_entropy_per_sample(*forget), cross_entropy_per_sample(*test), seed),
    }


def gaps(unlearned: dict[str, float], retrained: dict[str, float]) -> dict[str, float]:
    """gap_<m> = |m(theta_u) - m(theta_rt)| for UA, MIA-Efficacy, RA, TA, and their mean ``avg_gap``."""
    found = {f"gap_{name}": abs(unlearned[name] - retrained[name]) for name in GAP_METRICS}
    found["avg_gap"] = sum(found.values()) / len(GAP_METRICS)
    return found
