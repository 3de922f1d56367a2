"""Predictive-multiplicity metrics and dropout exploration: the spec's oracles (rashomon_dropout.md section 7)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from evaluators import multiplicity as mp
from evaluators.rashomon_dropout import (
    DropoutHooks,
    draw_models,
    dropout_multiplier,
    evaluation_pass,
    gaussian_rate_from_variance,
)

PROPERTY_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
SEEDS = st.integers(0, 2**31 - 1)


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def _dirichlet(seed, shape, concentration=1.0):
    """Rows drawn from a symmetric Dirichlet over the last axis, float64."""
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.dirichlet(np.full(shape[-1], concentration), size=shape[:-1]))


def _random_set(seed, n_models, n_samples, n_classes):
    """(m, n, K) probabilities, (n,) targets, (n, K) reference probabilities."""
    probabilities = _dirichlet(seed, (n_models + 1, n_samples, n_classes), concentration=0.5)
    targets = torch.tensor(np.random.default_rng(seed + 1).integers(0, n_classes, n_samples))
    return probabilities[1:], targets, probabilities[0]


def _tiny_net():
    torch.manual_seed(0)  # the weights only; every drawn mask comes from an explicit generator
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 8),
        nn.ReLU(),
        nn.Linear(8, 4),
    ).eval()


def _images(n=6, seed=0):
    return torch.randn(n, 1, 6, 6, generator=_generator(seed))


# ----------------------------------------------------------------------------- metrics by hand


def test_ambiguity_and_discrepancy_by_hand():
    reference = torch.tensor([0, 0, 0, 0])
    predictions = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0]])
    # samples 0, 1, 2 are flipped by some model: 3/4; model 0 flips 1/4, model 1 flips 2/4
    assert mp.ambiguity(predictions, reference) == pytest.approx(0.75)
    assert mp.discrepancy(predictions, reference) == pytest.approx(0.5)


def test_spreads_by_hand():
    scores = torch.tensor([[0.9, 0.5], [0.7, 0.5], [0.2, 0.5]])
    # sample 0: 0.9 - 0.2 = 0.7; mean 0.6, variance ((0.3)^2 + (0.1)^2 + (0.4)^2) / 3 = 0.26 / 3
    assert mp.viable_prediction_range(scores).tolist() == pytest.approx([0.7, 0.0])
    assert mp.score_variance(scores).tolist() == pytest.approx([0.26 / 3, 0.0])


def test_disagreement_by_hand():
    predictions = torch.tensor([[0, 1, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1]])
    # mu = 1/2, 1, 1/2: 4 mu (1 - mu) = 1, 0, 1
    assert mp.disagreement_binary(predictions).tolist() == pytest.approx([1.0, 0.0, 1.0])
    # K = 2: 1 - mu^2 - (1 - mu)^2 = 2 mu (1 - mu), over 1 - 1/2: the binary form
    assert torch.allclose(mp.disagreement_multiclass(predictions, 2), mp.disagreement_binary(predictions))
    three_way = torch.tensor([[0], [1], [2]])
    # f = 1/3 each: 1 - 3/9 = 2/3, normalised by 1 - 1/3 = 2/3 -> 1
    assert mp.disagreement_multiclass(three_way, 3, normalise=False).item() == pytest.approx(2 / 3)
    assert mp.disagreement_multiclass(three_way, 3).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="labels in"):
        mp.disagreement_binary(three_way)


def test_summary_quantiles_by_hand():
    values = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, float("nan")])
    # linear interpolation over the finite values: q0.9 at position 3.6 -> 3.6
    assert mp.quantile(values, 0.5) == pytest.approx(2.0)
    assert mp.quantile(values, 0.9) == pytest.approx(3.6)
    assert math.isnan(mp.quantile(torch.tensor([float("nan")]), 0.5))
    summary = mp.summarise({"viable_prediction_range": values, "disagreement": values})
    assert summary["viable_prediction_range_median"] == pytest.approx(2.0)
    assert summary["disagreement_q90"] == pytest.approx(3.6)
    assert summary["disagreement_mean"] == pytest.approx(2.0)
    assert "score_variance_q99" not in summary


def test_rashomon_mask_is_non_strict_and_nested():
    losses = torch.tensor([0.50, 0.52, 0.55, 0.49])
    mask = mp.rashomon_mask(losses, 0.50, [0.0, 0.03, 0.1])
    # eps = 0 admits the model whose loss equals L(h*) (the official strict rule would not)
    assert mask.tolist() == [[True, False, False, True], [True, True, False, True], [True, True, True, True]]


# ----------------------------------------------------------------------------- Rashomon Capacity


def test_rashomon_capacity_oracles():
    identical = torch.tensor([[0.2, 0.3, 0.5]] * 6)
    four_one_hot = torch.eye(4)
    three_of_five = torch.eye(5)[:3]
    two_by_two = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # C = log2(number of distinguishable one-hot rows): 2^C = 1, 4, 3, 2
    for rows, expected in ((identical, 1.0), (four_one_hot, 4.0), (three_of_five, 3.0), (two_by_two, 2.0)):
        for capacity in (mp.rashomon_capacity, mp.rashomon_capacity_loop):
            assert capacity(rows.unsqueeze(0)).item() == pytest.approx(expected, abs=1e-6)


def test_rashomon_capacity_of_a_binary_z_channel():
    # rows [1, 0] and [1/2, 1/2]: the Z-channel with crossover 1/2, capacity log2(5/4) bits -> RC = 5/4
    rows = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    assert mp.rashomon_capacity(rows).item() == pytest.approx(1.25, abs=1e-5)


@PROPERTY_SETTINGS
@given(seed=SEEDS, n_models=st.integers(1, 12), n_classes=st.integers(2, 6))
def test_rashomon_capacity_bounds_and_batched_equals_loop(seed, n_models, n_classes):
    probabilities = _dirichlet(seed, (3, n_models, n_classes), concentration=0.5)
    batched = mp.rashomon_capacity(probabilities)
    assert torch.all(batched >= 1.0 - 1e-9)
    assert torch.all(batched <= min(n_models, n_classes) + 1e-9)
    assert torch.allclose(batched, mp.rashomon_capacity_loop(probabilities), rtol=0, atol=1e-6)
    # chunking over samples changes nothing
    chunked = mp.rashomon_capacity(probabilities, max_chunk_elements=1)
    assert torch.allclose(batched, chunked, rtol=0, atol=1e-12)


def test_rashomon_capacity_batched_equals_loop_on_many_samples():
    probabilities = _dirichlet(7, (40, 20, 6), concentration=0.3)
    assert torch.allclose(mp.rashomon_capacity(probabilities), mp.rashomon_capacity_loop(probabilities), atol=1e-6)


# ----------------------------------------------------------------------------- structure and invariances


@PROPERTY_SETTINGS
@given(seed=SEEDS, n_models=st.integers(1, 8), n_samples=st.integers(1, 10), n_classes=st.integers(2, 4))
def test_structural_relations(seed, n_models, n_samples, n_classes):
    probabilities, targets, reference = _random_set(seed, n_models, n_samples, n_classes)
    predictions, reference_predictions = probabilities.argmax(-1), reference.argmax(-1)
    alphas = [mp.ambiguity(predictions[: j + 1], reference_predictions) for j in range(n_models)]
    deltas = [mp.discrepancy(predictions[: j + 1], reference_predictions) for j in range(n_models)]
    assert all(delta <= alpha for alpha, delta in zip(alphas, deltas))
    # adding models never lowers alpha or delta
    assert alphas == sorted(alphas) and deltas == sorted(deltas)
    # growing eps: R(eps) is nested, so alpha and delta never decrease (the empty set is NaN)
    losses = torch.tensor(np.random.default_rng(seed).uniform(0.0, 1.0, n_models))
    mask = mp.rashomon_mask(losses, 0.3, torch.linspace(-0.3, 0.8, 12))
    admitted = [(mp.ambiguity(predictions[row], reference_predictions), int(row.sum())) for row in mask]
    previous = -1.0
    for alpha, count in admitted:
        assert math.isnan(alpha) == (count == 0)
        if count:
            assert alpha >= previous
            previous = alpha
    scores = probabilities[:, torch.arange(n_samples), targets]
    spread, variance = mp.viable_prediction_range(scores), mp.score_variance(scores)
    assert torch.all(spread >= 0) and torch.all(spread <= 1)
    assert torch.all(variance <= spread**2 / 4 + 1e-12)  # Popoviciu


@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=SEEDS, n_models=st.integers(2, 6), n_samples=st.integers(2, 8), n_classes=st.integers(2, 4))
def test_permutation_invariances(seed, n_models, n_samples, n_classes):
    probabilities, targets, reference = _random_set(seed, n_models, n_samples, n_classes)
    metrics = mp.multiplicity_metrics(probabilities, targets, reference)
    models = torch.randperm(n_models, generator=_generator(seed))
    by_models = mp.multiplicity_metrics(probabilities[models], targets, reference)
    samples = torch.randperm(n_samples, generator=_generator(seed + 1))
    by_samples = mp.multiplicity_metrics(probabilities[:, samples], targets[samples], reference[samples])
    for name in ("ambiguity", "discrepancy"):
        assert by_models[name] == pytest.approx(metrics[name]) and by_samples[name] == pytest.approx(metrics[name])
    for name, values in metrics["per_sample"].items():
        assert torch.allclose(by_models["per_sample"][name], values, atol=1e-9)
        assert torch.allclose(by_samples["per_sample"][name], values[samples], atol=1e-9)


def test_single_model_has_no_spread():
    probabilities, targets, reference = _random_set(3, 1, 5, 3)
    metrics = mp.multiplicity_metrics(probabilities, targets, reference)
    assert metrics["n_models"] == 1
    for name in ("viable_prediction_range", "score_variance", "disagreement"):
        assert torch.all(metrics["per_sample"][name] == 0)
    assert torch.allclose(metrics["per_sample"]["rashomon_capacity"], torch.ones(5, dtype=torch.float64))


def test_empty_set_is_nan_not_zero():
    _, targets, reference = _random_set(3, 1, 5, 3)
    metrics = mp.multiplicity_metrics(torch.empty(0, 5, 3), targets, reference)
    assert metrics["n_models"] == 0
    scalars = {name: value for name, value in metrics.items() if isinstance(value, float)}
    assert "ambiguity" in scalars and "rashomon_capacity_median" in scalars
    assert all(math.isnan(value) for value in scalars.values())
    assert all(torch.isnan(values).all() for values in metrics["per_sample"].values())


# ----------------------------------------------------------------------------- dropout exploration


def test_rate_zero_gives_no_multiplicity():
    net, images = _tiny_net(), _images(10)
    targets = torch.arange(10) % 4
    reference = evaluation_pass(net, images, targets, batch_size=4)
    for dropout in ("bernoulli", "gaussian"):
        drawn = draw_models(net, net, images, targets, [0.0], 3, dropout, "per_sample", _generator(), batch_size=4)
        assert torch.equal(drawn.losses, torch.full((3,), reference.loss, dtype=torch.float64))
        mask = mp.rashomon_mask(drawn.losses, reference.loss, [0.0])
        assert mask.all()  # with <= every rate-0 model is admitted at eps = 0
        metrics = mp.multiplicity_metrics(drawn.probabilities[mask[0]], targets, reference.probabilities)
        assert metrics["ambiguity"] == 0 and metrics["discrepancy"] == 0
        per_sample = metrics["per_sample"]
        assert torch.all(per_sample["viable_prediction_range"] == 0) and torch.all(per_sample["score_variance"] == 0)
        assert torch.all(per_sample["disagreement"] == 0)
        assert torch.allclose(per_sample["rashomon_capacity"], torch.ones(10, dtype=torch.float64))


def test_hooks_are_exact_at_rate_zero_and_after_removal():
    net, images = _tiny_net(), _images()
    clean = net(images)
    hooks = DropoutHooks(net, "bernoulli", "per_sample", _generator()).attach()
    assert len(hooks.layers) == 3  # the conv, the hidden linear and the logit layer
    assert torch.equal(net(images), clean)
    hooks.rate = 0.3
    assert not torch.equal(net(images), clean)
    hooks.remove()
    assert torch.equal(net(images), clean)
    assert all(not module._forward_hooks for module in net.modules())
    with DropoutHooks(net, "gaussian", "per_model", _generator()) as gaussian:
        gaussian.rate = 0.5
        assert not torch.equal(net(images), clean)
    assert torch.equal(net(images), clean)


def test_same_seed_reproduces_the_draws_and_mode_is_restored():
    net, images = _tiny_net(), _images()
    targets = torch.zeros(6, dtype=torch.long)
    net.train()

    def draw(seed, scope):
        return draw_models(net, net, images, targets, [0.0, 0.1, 0.2], 2, "bernoulli", scope, _generator(seed), 4)

    for scope in ("per_sample", "per_model"):
        first, second, other = draw(1, scope), draw(1, scope), draw(2, scope)
        assert torch.equal(first.probabilities, second.probabilities)
        assert not torch.equal(first.probabilities, other.probabilities)
    assert net.training and all(module.training for module in net.modules())
    assert first.probabilities.shape == (6, 6, 4) and first.probabilities.dtype == torch.float32
    assert first.rates.tolist() == [0.0, 0.0, 0.1, 0.1, 0.2, 0.2]
    assert first.losses.shape == first.accuracies.shape == first.seconds.shape == (6,)
    assert torch.all(first.seconds > 0)


def test_bernoulli_rate_one_gives_zeros_not_nan():
    layer = nn.Linear(5, 3)
    with DropoutHooks(layer, "bernoulli", "per_sample", _generator()) as hooks:
        hooks.rate = 1.0
        assert torch.equal(layer(torch.randn(4, 5, generator=_generator())), torch.zeros(4, 3))
    net = _tiny_net()
    with DropoutHooks(net, "bernoulli", "per_model", _generator()) as hooks:
        hooks.rate = 1.0
        assert torch.equal(net(_images()), torch.zeros(6, 4))
    with pytest.raises(ValueError, match="out of range"):
        hooks.rate = 1.5


def test_gaussian_rate_is_the_standard_deviation():
    assert gaussian_rate_from_variance(0.04) == pytest.approx(0.2)
    noise = dropout_multiplier((200_000,), 0.2, "gaussian", _generator())
    # 1 + 0.2 xi: mean 1, std 0.2 (standard error of the std about 0.2 / sqrt(2 * 200000) = 3e-4)
    assert noise.mean().item() == pytest.approx(1.0, abs=3e-3)
    assert noise.std().item() == pytest.approx(0.2, abs=2e-3)


@pytest.mark.parametrize("dropout, rate", [("bernoulli", 0.3), ("gaussian", 0.5)])
def test_inverted_dropout_mean_matches_the_clean_activation(dropout, rate):
    layer = nn.Linear(4, 3)
    row = torch.randn(1, 4, generator=_generator(5))
    clean = layer(row).detach()
    draws = 40_000
    with DropoutHooks(layer, dropout, "per_sample", _generator()) as hooks, torch.no_grad():
        hooks.rate = rate
        perturbed = layer(row.expand(draws, 4))
    # per-element std of the multiplier: sqrt(p / (1 - p)) (Bernoulli) or sigma (Gaussian); 5 standard errors
    spread = math.sqrt(rate / (1 - rate)) if dropout == "bernoulli" else rate
    tolerance = 5 * spread * clean.abs() / math.sqrt(draws)
    assert torch.all((perturbed.mean(dim=0) - clean[0]).abs() <= tolerance[0])


def test_per_model_scope_shows_every_sample_the_same_network():
    net = _tiny_net()
    images = _images(1).expand(6, 1, 6, 6).contiguous()  # six identical rows
    targets = torch.zeros(6, dtype=torch.long)
    per_model = draw_models(net, net, images, targets, [0.3], 3, "bernoulli", "per_model", _generator(), batch_size=2)
    per_sample = draw_models(net, net, images, targets, [0.3], 3, "bernoulli", "per_sample", _generator(), 2)
    for probabilities in per_model.probabilities:  # same mask across samples and across the three batches
        assert torch.equal(probabilities, probabilities[:1].expand_as(probabilities))
    assert not torch.equal(per_model.probabilities[0], per_model.probabilities[1])  # a fresh mask per model
    for probabilities in per_sample.probabilities:
        assert not torch.equal(probabilities[0], probabilities[1])


# ----------------------------------------------------------------------------- linear regression (spec section 3)


class _DiagonalRegression(nn.Module):
    """``y_hat = sum_j x_j w_j`` through ``Linear(d, d)`` with weight ``diag(w)``: masking that layer's output
    features with one mask per model (``per_model``) is exactly a mask on the regression weights."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.layer = nn.Linear(len(weights), len(weights), bias=False, dtype=weights.dtype)
        with torch.no_grad():
            self.layer.weight.copy_(torch.diag(weights))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.layer(inputs).sum(dim=-1)


def _regression():
    """Least-squares fit on n = 256, d = 64 (so X^T (Xw - y) = 0, which keeps the Monte Carlo variance low)."""
    g = _generator(0)
    inputs = torch.randn(256, 64, generator=g, dtype=torch.float64)
    targets = inputs @ (0.25 * torch.randn(64, generator=g, dtype=torch.float64))
    targets = targets + 1.5 * torch.randn(256, generator=g, dtype=torch.float64)
    weights = torch.linalg.lstsq(inputs, targets.unsqueeze(1)).solution.squeeze(1)
    return inputs, targets, weights


def _mse(predictions, targets):
    return ((predictions - targets) ** 2).mean()


@pytest.mark.parametrize(
    "dropout, scope, rate, rescaled",
    [
        ("bernoulli", "per_model", 0.2, True),
        ("bernoulli", "per_model", 0.2, False),
        ("gaussian", "per_model", 0.5, True),
        ("bernoulli", "per_sample", 0.2, True),  # same expectation with a fresh mask per sample
    ],
)
def test_linear_regression_loss_identities(dropout, scope, rate, rescaled):
    inputs, targets, weights = _regression()
    model = _DiagonalRegression(weights)
    curvature = (weights**2 * (inputs**2).mean(dim=0)).sum()  # sum_j w_j^2 D_jj
    if dropout == "gaussian":
        expected = _mse(inputs @ weights, targets) + rate**2 * curvature
    elif rescaled:
        expected = _mse(inputs @ weights, targets) + rate / (1 - rate) * curvature
    else:  # b without the 1 / (1 - p): the official synthetic notebook's (1 - p)-shrunk reference
        expected = _mse((1 - rate) * inputs @ weights, targets) + rate * (1 - rate) * curvature
    scale = 1.0 if rescaled else 1 - rate  # the hooks rescale; (1 - p) undoes it
    draws = 4000 if scope == "per_model" else 1000
    losses = torch.empty(draws, dtype=torch.float64)
    with DropoutHooks(model, dropout, scope, _generator(1)) as hooks, torch.no_grad():
        hooks.rate = rate
        for index in range(draws):
            hooks.new_model()
            losses[index] = _mse(scale * model(inputs), targets)
    assert losses.mean().item() == pytest.approx(expected.item(), rel=0.01)
    # the dropout term is a large part of the loss, so a wrong identity would miss the 1% band
    assert (expected - _mse(inputs @ weights, targets)).abs() > 0.2 * expected
