"""The NTK-scrubbing closed form's exact identities (spec section 7), in float64 on tiny data."""

from __future__ import annotations

import torch
from torch import nn

from cl_bench.peft import bn_affine_names
from evaluators.ntk_scrub import (
    DualSystem,
    NormalEquations,
    accumulate,
    apply_update,
    dual_direction,
    dual_step,
    jacobian,
    primal_direction,
    residual,
    ridge_step,
    schur_direction,
    stacked,
)

LAM = 0.5


def _random_system(seed: int, n_r: int = 24, n_f: int = 6, p: int = 9):
    generator = torch.Generator().manual_seed(seed)
    j_r, j_f = (
        torch.randn(n_r, p, generator=generator, dtype=torch.float64),
        torch.randn(n_f, p, generator=generator, dtype=torch.float64),
    )
    e_r, e_f = (
        torch.randn(n_r, generator=generator, dtype=torch.float64),
        torch.randn(n_f, generator=generator, dtype=torch.float64),
    )
    return (j_r, e_r), (j_f, e_f)


def _equations(rows: torch.Tensor, residuals: torch.Tensor) -> NormalEquations:
    equations = NormalEquations.empty(rows.shape[1])
    equations.add(rows, residuals)
    return equations


def test_primal_equals_dual_equals_the_schur_form():
    retain, forget = _random_system(0)
    primal, diagnostics = primal_direction(_equations(*retain), _equations(*forget), LAM)
    assert torch.allclose(primal, dual_direction(retain, forget, LAM), atol=1e-12)
    assert torch.allclose(primal, schur_direction(retain, forget, LAM), atol=1e-12)
    assert diagnostics["condition_retain"] >= 1.0 and diagnostics["condition_whole"] >= 1.0


def test_an_empty_forget_set_gives_exactly_zero_update():
    retain, _ = _random_system(1)
    delta, _ = primal_direction(_equations(*retain), NormalEquations.empty(retain[0].shape[1]), LAM)
    assert torch.equal(delta, torch.zeros_like(delta))


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net.eval()


def test_the_jacobian_matches_autograd_and_finite_differences():
    net, inputs = _net(), torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    names = bn_affine_names(net)
    assert names == ["1.weight", "1.bias"]
    found = jacobian(net, names, inputs)
    assert found.shape == (10 * 3, 10)  # (B * K, p): sample-major, then class
    parameters = [dict(net.named_parameters())[name] for name in names]
    for sample in range(10):
        for k in range(3):
            grads = torch.autograd.grad(net(inputs[sample : sample + 1])[0, k], parameters)
            assert torch.allclose(found[sample * 3 + k], torch.cat([g.reshape(-1) for g in grads]), atol=1e-12)
    step, column = 1e-6, 7  # the bias of BN unit 2
    bias = dict(net.named_parameters())["1.bias"]
    with torch.no_grad():
        bias[2] += step
        up = net(inputs)
        bias[2] -= 2 * step
        down = net(inputs)
        bias[2] += step
    assert torch.allclose(found[:, column], ((up - down) / (2 * step)).reshape(-1), atol=1e-8)


def test_a_linear_model_with_mse_is_exact():
    """The linearisation of a linear model is the model: the retain-set fit is the closed-form ridge solution."""
    generator = torch.Generator().manual_seed(3)
    inputs, targets = (
        torch.randn(40, 7, dtype=torch.float64, generator=generator),
        torch.randn(40, 3, dtype=torch.float64, generator=generator),
    )
    model = nn.Linear(7, 3, bias=False).double()
    centre = model.weight.detach().clone()
    step, _ = ridge_step(accumulate(model, ["weight"], [(inputs[:32], targets[:32])], "mse"), LAM)
    expected = torch.linalg.solve(
        inputs[:32].T @ inputs[:32] + LAM * torch.eye(7, dtype=torch.float64),
        inputs[:32].T @ targets[:32] + LAM * centre.T,
    ).T  # one ridge problem per output row, centred at the current weights
    assert torch.allclose(centre + step.reshape(3, 7), expected, atol=1e-12)


def test_streaming_is_invariant_to_batch_size_and_sample_order():
    net = _net()
    generator = torch.Generator().manual_seed(4)
    inputs, targets = (
        torch.randn(21, 4, dtype=torch.float64, generator=generator),
        torch.randint(0, 3, (21,), generator=generator),
    )
    names = bn_affine_names(net)

    def direction(batch: int, order: torch.Tensor) -> torch.Tensor:
        x, y = inputs[order], targets[order]
        retain = accumulate(
            net, names, [(x[i : min(i + batch, 16)], y[i : min(i + batch, 16)]) for i in range(0, 16, batch)], "ce"
        )
        forget = accumulate(net, names, [(x[16:], y[16:])], "ce")
        return primal_direction(retain, forget, LAM)[0]

    identity = torch.arange(21)
    reference = direction(16, identity)
    for batch in (1, 7):
        assert torch.allclose(direction(batch, identity), reference, atol=1e-10)
    shuffled = torch.cat([torch.randperm(16, generator=generator), 16 + torch.randperm(5, generator=generator)])
    assert torch.allclose(direction(16, shuffled), reference, atol=1e-10)


def test_the_update_changes_only_the_subset_and_not_the_input_model():
    net = _net()
    names = bn_affine_names(net)
    before = {name: value.clone() for name, value in net.state_dict().items()}
    updated = apply_update(net, names, torch.ones(10, dtype=torch.float64), scale=0.5)
    for name, value in updated.state_dict().items():
        if name in names:
            assert torch.allclose(value, before[name] + 0.5)
        else:
            assert torch.equal(value, before[name])  # frozen parameters and buffers bit-identical
    assert all(torch.equal(value, before[name]) for name, value in net.state_dict().items())


def test_the_cached_spectrum_gives_the_condition_number_of_every_ridge_system():
    generator = torch.Generator().manual_seed(3)
    rows = torch.randn(6, 9, generator=generator, dtype=torch.float64)  # rank 6 < 9: J^T J is singular
    equations = NormalEquations.empty(9)
    equations.add(rows, torch.randn(6, generator=generator, dtype=torch.float64))
    for lam in (1e-3, 1.0, 100.0):
        expected = float(torch.linalg.cond(equations.gram + lam * torch.eye(9, dtype=torch.float64)))
        assert abs(equations.condition(lam) - expected) <= 1e-6 * expected
    assert equations.condition(0.0) > 1e12  # singular: inf, or a rounding-error eigenvalue away from it


def test_the_block_dual_system_equals_the_dual_solves_of_the_stacked_sets():
    generator = torch.Generator().manual_seed(5)
    retain = (torch.randn(12, 20, generator=generator, dtype=torch.float64), torch.randn(12, dtype=torch.float64))
    forget = (torch.randn(4, 20, generator=generator, dtype=torch.float64), torch.randn(4, dtype=torch.float64))
    system = DualSystem(retain, forget)
    whole = (torch.cat([retain[0], forget[0]]), torch.cat([retain[1], forget[1]]))
    for lam in (0.1, 10.0):
        for (step, condition), (expected, expected_condition) in (
            (system.step_retain(lam), dual_step(*retain, lam)),
            (system.step_whole(lam), dual_step(*whole, lam)),
        ):
            assert torch.allclose(step, expected, atol=1e-12)
            assert abs(condition - expected_condition) <= 1e-8 * expected_condition


def test_stacking_writes_every_batch_in_order():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    inputs = torch.randn(7, 3, dtype=torch.float64)
    targets = torch.randint(0, 2, (7,))
    names = bn_affine_names(model)
    batches = [(inputs[:3], targets[:3]), (inputs[3:], targets[3:])]
    jacobians, residuals = stacked(model, names, batches, "ce")
    assert torch.equal(jacobians, jacobian(model, names, inputs))
    assert torch.allclose(residuals, residual(model(inputs).detach(), targets, "ce"))
