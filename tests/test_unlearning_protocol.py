"""The unlearning protocol's cheap tests (spec section 5) on hand-made logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cl_bench.errors import UserError
from evaluators.unlearning_protocol import (
    ForgetSpec,
    accuracy,
    gaps,
    loss_mia,
    mia_efficacy,
    protocol_metrics,
)


def _logits(targets: torch.Tensor, correct: torch.Tensor, n_classes: int = 3, scale: float = 4.0) -> torch.Tensor:
    """Logits that predict ``targets`` where ``correct`` and the next class elsewhere."""
    predicted = torch.where(correct, targets, (targets + 1) % n_classes)
    return torch.nn.functional.one_hot(predicted, n_classes).double() * scale


def _split(seed: int, size: int):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 3, (size,), generator=generator)
    correct = torch.rand(size, generator=generator) < 0.8
    return _logits(targets, correct), targets


def test_accuracy_by_hand_and_ua_plus_fa_is_100():
    targets = torch.tensor([0, 1, 2, 0])
    logits = _logits(targets, torch.tensor([True, True, False, True]))
    assert accuracy(logits, targets) == 75.0  # 3 of 4
    found = protocol_metrics((logits, targets), _split(1, 60), _split(2, 30))
    assert found["ua"] + found["fa"] == 100.0 and found["ua"] == 25.0
    assert np.isnan(found["loss_mia"])  # 4 forget samples: too few for the 10-fold loss MIA


def test_the_retrained_model_as_the_method_has_zero_gaps_and_gaps_are_symmetric():
    retrained = {"ua": 5.0, "mia_efficacy": 12.5, "ra": 99.0, "ta": 94.0}
    unlearned = {"ua": 3.0, "mia_efficacy": 14.5, "ra": 99.5, "ta": 93.0}
    assert gaps(retrained, retrained)["avg_gap"] == 0.0
    forward, backward = gaps(unlearned, retrained), gaps(retrained, unlearned)
    assert forward == backward and all(value >= 0 for value in forward.values())
    # by hand: (2 + 2 + 0.5 + 1) / 4
    assert forward["avg_gap"] == pytest.approx(1.375)


def test_the_identity_method_has_ua_100_minus_train_accuracy_on_the_forget_set():
    forget = _split(3, 50)
    found = protocol_metrics(forget, _split(4, 80), _split(5, 40))
    assert found["ua"] == pytest.approx(100.0 - accuracy(*forget))


def test_loss_mia_is_chance_on_identical_distributions_and_one_on_perfect_separation():
    rng = np.random.default_rng(0)
    same = rng.exponential(1.0, size=2000)
    assert loss_mia(same[:1000], same[1000:], seed=0) == pytest.approx(0.5, abs=0.05)
    assert loss_mia(np.zeros(200), np.full(200, 5.0), seed=0) == 1.0


def test_mia_efficacy_direction_confident_members_are_recognised():
    # members (retain) are confident, non-members (test) are not: a confident forget set looks like members
    # (efficacy near 0: not forgotten), an unconfident one like non-members (near 100: forgotten)
    rng = np.random.default_rng(1)
    retain, test = rng.uniform(0.9, 1.0, 300), rng.uniform(0.1, 0.5, 200)
    assert mia_efficacy(retain, test, rng.uniform(0.9, 1.0, 100)) == 0.0
    assert mia_efficacy(retain, test, rng.uniform(0.1, 0.5, 100)) == 100.0


def test_the_metrics_are_deterministic():
    splits = (_split(6, 50), _split(7, 80), _split(8, 40))
    assert protocol_metrics(*splits, seed=3) == protocol_metrics(*splits, seed=3)


def test_forget_sets_select_a_class_a_fraction_or_an_experience():
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    experiences = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    assert ForgetSpec.parse("class:0").mask(targets, experiences).tolist() == (targets == 0).tolist()
    assert ForgetSpec.parse("experience:1").mask(targets, experiences).sum() == 5
    random = ForgetSpec.parse("random:0.3")
    first = random.mask(targets, experiences, torch.Generator().manual_seed(0))
    assert (
        first.sum() == 3
        and first.tolist() == random.mask(targets, experiences, torch.Generator().manual_seed(0)).tolist()
    )


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("label:3", "write class:K"),
        ("class:x", "is not a number"),
        ("class:1.5", "non-negative integer"),
        ("random:1", "strictly between 0 and 1"),
    ],
)
def test_bad_forget_sets_are_one_line_errors(text, fragment):
    with pytest.raises(UserError, match=fragment):
        ForgetSpec.parse(text)


def test_a_forget_set_that_is_empty_or_everything_is_refused():
    targets, experiences = torch.tensor([0, 0, 1]), torch.tensor([0, 0, 0])
    with pytest.raises(UserError, match="selects no training sample"):
        ForgetSpec.parse("class:7").mask(targets, experiences)
    with pytest.raises(UserError, match="whole training set"):
        ForgetSpec.parse("experience:0").mask(targets, experiences)
