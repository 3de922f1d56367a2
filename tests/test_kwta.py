"""k-WTA activation and heterogeneous dropout: the cheap oracles of the suite's spec for gpm_sparse."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cl_bench.models.kwta import KWTA, insert_kwta, keep_probability


def make_input(*shape: int, seed: int = 0, requires_grad: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).requires_grad_(requires_grad)


# 1. sparsity and kept values
def test_exactly_k_nonzeros_without_relu_and_kept_values_are_top_k():
    layer = KWTA(0.2, (50,), relu=False).eval()
    z = make_input(8, 50)
    out = layer(z)
    assert layer.k == 10
    assert torch.all((out != 0).sum(1) == layer.k)
    top_values = torch.topk(z, layer.k, dim=1).values
    kept = torch.sort(out[out != 0].reshape(8, layer.k), dim=1, descending=True).values
    assert torch.equal(kept, top_values)


def test_at_most_k_nonzeros_with_relu():
    layer = KWTA(0.2, (50,), relu=True).eval()
    z = make_input(8, 50) - 1.5  # many rows then have fewer than k positive entries
    out = layer(z)
    nonzeros = (out != 0).sum(1)
    assert torch.all(nonzeros <= layer.k)
    assert torch.all(nonzeros == torch.clamp((z > 0).sum(1), max=layer.k))
    assert torch.all(out >= 0)
    assert torch.equal(out[out != 0], z[out != 0])


# 2. gradient
@pytest.mark.parametrize("relu", [False, True])
def test_gradient_flows_through_winners_only(relu):
    layer = KWTA(0.3, (20,), relu=relu).train()
    z = make_input(6, 20, requires_grad=True)
    upstream = make_input(6, 20, seed=1)
    out = layer(z)
    out.backward(upstream)
    winners = out != 0
    assert torch.equal(z.grad[~winners], torch.zeros_like(z.grad[~winners]))
    assert torch.equal(z.grad[winners], upstream[winners])


# 3. ratio 1.0 is ReLU, bitwise, and draws no random numbers
@pytest.mark.parametrize("feature_shape", [(30,), (4, 5, 5)])
@pytest.mark.parametrize("conv_mode", ["global", "channel"])
def test_full_ratio_is_relu_bitwise_and_draws_no_random_numbers(feature_shape, conv_mode):
    layer = KWTA(1.0, feature_shape, conv_mode=conv_mode).train()
    layer.hd_enabled = True
    z = make_input(7, *feature_shape, requires_grad=True)
    reference_input = z.detach().clone().requires_grad_(True)
    upstream = make_input(7, *feature_shape, seed=2)
    rng_before = torch.get_rng_state()
    out = layer(z)
    assert torch.equal(torch.get_rng_state(), rng_before)
    reference = torch.relu(reference_input)
    assert torch.equal(out, reference)
    out.backward(upstream)
    reference.backward(upstream)
    assert torch.equal(z.grad, reference_input.grad)


def test_hd_with_all_ones_keep_probability_draws_no_random_numbers():
    layer = KWTA(0.2, (40,)).train()
    layer.hd_enabled = True
    for sampling in ("bernoulli", "subset"):
        layer.hd_sampling = sampling
        rng_before = torch.get_rng_state()
        layer(make_input(5, 40))
        assert torch.equal(torch.get_rng_state(), rng_before)


# 4. keep probabilities
def test_keep_probability_formula():
    counts = torch.tensor([0.0, 3.0, 10.0, 7.0, 10.0], dtype=torch.float64)
    rho = 2.0
    p = keep_probability(counts, rho)
    assert p.dtype == torch.float32
    assert p[0] == 1.0
    assert torch.allclose(p[2], torch.tensor(math.exp(-rho)))
    assert torch.allclose(p, torch.exp(-rho * counts / 10.0).float())
    order = torch.argsort(counts)
    assert torch.all(p[order][1:] <= p[order][:-1])  # non-increasing in the count
    assert torch.equal(keep_probability(counts, 0.0), torch.ones(5))
    assert torch.equal(keep_probability(torch.zeros(5), rho), torch.ones(5))
    assert torch.equal(counts, torch.tensor([0.0, 3.0, 10.0, 7.0, 10.0], dtype=torch.float64))  # pure


def test_update_keep_probability_uses_counts():
    layer = KWTA(0.5, (4,))
    layer.activation_count.copy_(torch.tensor([0.0, 1.0, 2.0, 4.0], dtype=torch.float64))
    layer.update_keep_probability(1.0)
    assert torch.allclose(layer.keep_probability, torch.exp(-torch.tensor([0.0, 0.25, 0.5, 1.0])))


# 5. eval mode: no HD, no counting
def test_eval_is_deterministic_and_does_not_count():
    layer = KWTA(0.25, (40,))
    layer.hd_enabled = True
    layer.keep_probability.fill_(0.5)
    layer.activation_count.fill_(3.0)
    layer.eval()
    z = make_input(9, 40)
    first, second = layer(z), layer(z)
    assert torch.equal(first, second)
    assert torch.equal(first, z * layer.winners(z).float() * (z > 0))
    assert torch.all(layer.activation_count == 3.0)


# 6. masked units cannot win
@pytest.mark.parametrize("sampling", ["bernoulli", "subset"])
def test_dropped_unit_outputs_zero_for_every_sample(sampling):
    layer = KWTA(0.3, (10,), relu=False, hd_sampling=sampling, subset_factor=3.0).train()
    layer.hd_enabled = True
    dropped = 4
    layer.keep_probability[dropped] = 0.0
    z = make_input(64, 10)
    z[:, dropped] = 100.0  # it would win in every row if it were retained
    torch.manual_seed(0)
    out = layer(z)
    assert torch.all(out[:, dropped] == 0)
    assert torch.all((out != 0).sum(1) == layer.k)


# 7. counts
def test_counts_sum_to_samples_times_k():
    layer = KWTA(0.1, (100,), relu=False).train()
    layer(make_input(32, 100))
    assert layer.activation_count.dtype == torch.float64
    assert layer.activation_count.sum().item() == 32 * layer.k
    layer.counting = False
    layer(make_input(32, 100, seed=1))
    assert layer.activation_count.sum().item() == 32 * layer.k


def test_counts_match_outputs_with_hd():
    layer = KWTA(0.2, (30,), relu=True).train()
    layer.hd_enabled = True
    layer.keep_probability.fill_(0.7)
    torch.manual_seed(1)
    out = layer(make_input(16, 30))
    assert torch.equal(layer.activation_count, (out != 0).sum(0).double())


# 8. conv maps
def test_conv_global_mode_has_k_nonzeros_per_sample():
    layer = KWTA(0.1, (4, 5, 5), relu=False).eval()
    assert layer.k == 10
    out = layer(make_input(3, 4, 5, 5))
    assert torch.all((out != 0).reshape(3, -1).sum(1) == layer.k)


def test_conv_channel_mode_has_k_nonzeros_per_location():
    layer = KWTA(0.25, (8, 3, 4), relu=False, conv_mode="channel").train()
    assert layer.k == 2
    z = make_input(5, 8, 3, 4)
    out = layer(z)
    assert torch.all((out != 0).sum(1) == layer.k)
    top_values = torch.topk(z, layer.k, dim=1).values
    assert torch.equal(
        torch.sort(torch.where(out != 0, out, -math.inf), dim=1, descending=True).values[:, :2], top_values
    )
    assert layer.activation_count.sum().item() == 5 * 3 * 4 * layer.k


def test_conv_counts_follow_feature_layout():
    layer = KWTA(0.5, (2, 2, 2), relu=False, conv_mode="channel").train()
    z = torch.zeros(1, 2, 2, 2)
    z[0, 1] = 1.0  # channel 1 wins at every location
    z[0, 0] = -1.0
    layer(z)
    assert torch.equal(layer.activation_count, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1], dtype=torch.float64))


# 9. insertion into backbones
def test_insert_kwta_into_mlp():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 6), nn.ReLU())
    backbone.train()
    inserted = insert_kwta(backbone, (4,), [0.5, 0.34], relu=False)
    assert [type(m) for m in backbone] == [nn.Flatten, nn.Linear, KWTA, nn.Linear, KWTA]
    assert inserted == [backbone[2], backbone[4]]
    assert [m.feature_shape for m in inserted] == [(10,), (6,)]
    assert [m.k for m in inserted] == [5, 2]
    assert all(not m.relu for m in inserted)
    assert backbone.training and all(m.training for m in inserted)
    out = backbone(make_input(3, 4))
    assert torch.all((out != 0).sum(1) == 2)


def test_insert_kwta_into_conv_stack_repeats_last_ratio():
    backbone = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 8),
        nn.ReLU(),
    )
    backbone.eval()
    inserted = insert_kwta(backbone, (1, 6, 6), [0.1])
    assert isinstance(backbone[0][1], KWTA) and isinstance(backbone[3], KWTA)
    assert [m.feature_shape for m in inserted] == [(4, 6, 6), (8,)]
    assert [m.k for m in inserted] == [round(0.1 * 144), 1]
    assert not backbone.training and not any(m.training for m in inserted)
    assert backbone(make_input(2, 1, 6, 6)).shape == (2, 8)


def test_insert_kwta_rejects_shared_relu():
    relu = nn.ReLU()
    backbone = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu)
    with pytest.raises(ValueError):
        insert_kwta(backbone, (3,), [0.5])


# 10. guard
def test_row_with_fewer_than_k_retained_units_keeps_all_units():
    layer = KWTA(0.4, (10,), relu=False).train()  # k = 4
    layer.hd_enabled = True
    layer.keep_probability.zero_()
    layer.keep_probability[:3] = 1.0  # only 3 < k units can survive
    z = make_input(6, 10)
    keep = layer.sample_keep_mask(6)
    assert torch.all(keep)
    assert torch.equal(layer(z), layer.eval()(z))


def test_guard_applies_per_row():
    layer = KWTA(0.2, (20,), relu=False).train()  # k = 4
    layer.hd_enabled = True
    layer.keep_probability.fill_(0.2)
    torch.manual_seed(3)
    keep = layer.sample_keep_mask(200)
    retained = keep.sum(1)
    assert torch.all((retained >= layer.k) | (retained == 20))
    assert torch.any(retained == 20) and torch.any(retained < 20)


# 11. subset sampler
def test_subset_sampler_shares_m_units_across_the_batch():
    layer = KWTA(0.2, (50,), relu=False, hd_sampling="subset").train()  # k = 10, m = 11
    layer.hd_enabled = True
    layer.keep_probability.copy_(torch.linspace(0.1, 1.0, 50))
    torch.manual_seed(4)
    keep = layer.sample_keep_mask(8)
    assert torch.all(keep == keep[0])
    assert keep[0].sum().item() == math.ceil(1.1 * layer.k)
    torch.manual_seed(4)
    out = layer(make_input(8, 50))
    assert torch.all(keep[out != 0])
    assert torch.all((out != 0).sum(1) == layer.k)


def test_subset_sampler_in_channel_mode_draws_per_location():
    layer = KWTA(0.25, (8, 2, 2), hd_sampling="subset", conv_mode="channel").train()  # k = 2, m = 3
    layer.hd_enabled = True
    layer.keep_probability.fill_(0.5)
    keep = layer.sample_keep_mask(4)
    assert torch.all(keep == keep[0])
    assert torch.all(keep.sum(1) == 3)


# 12. checkpoints carry the HD state
def test_state_dict_carries_counts_and_keep_probability():
    layer = KWTA(0.5, (6,))
    layer.activation_count.fill_(2.0)
    layer.update_keep_probability(1.0)
    state = layer.state_dict()
    assert {"activation_count", "keep_probability"} <= set(state)
    restored = KWTA(0.5, (6,))
    restored.load_state_dict(state)
    assert torch.equal(restored.activation_count, layer.activation_count)
    assert torch.equal(restored.keep_probability, layer.keep_probability)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        KWTA(0.0, (5,))
    with pytest.raises(ValueError):
        KWTA(0.5, (4, 5), conv_mode="channel")
    with pytest.raises(ValueError):
        KWTA(0.5, (5,))(torch.zeros(2, 6))
    with pytest.raises(ValueError):
        keep_probability(torch.ones(3), -1.0)


def test_full_ratio_and_rho_zero_reproduce_relu_training_bitwise():
    def train(use_kwta: bool) -> list[torch.Tensor]:
        torch.manual_seed(5)
        backbone = nn.Sequential(nn.Flatten(), nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
        if use_kwta:
            for layer in insert_kwta(backbone, (6,), [1.0]):
                layer.activation_count.fill_(4.0)
                layer.update_keep_probability(0.0)
                layer.hd_enabled = True
        optimizer = torch.optim.SGD(backbone.parameters(), lr=0.1)
        for step in range(3):
            x, y = make_input(10, 6, seed=step), torch.arange(10) % 3
            optimizer.zero_grad()
            nn.functional.cross_entropy(nn.functional.dropout(backbone(x), 0.2), y).backward()
            optimizer.step()
        return [p.detach().clone() for p in backbone.parameters()]

    for kwta_param, relu_param in zip(train(True), train(False), strict=True):
        assert torch.equal(kwta_param, relu_param)


def test_full_ratio_with_hd_is_heterogeneous_dropout_on_relu_units():
    """The HD-only ablation (k = width): no winner selection, so the guard is off and dropped units output 0."""
    layer = KWTA(1.0, (50,)).train()
    layer.hd_enabled = True
    layer.keep_probability[:10] = 0.0  # the ten most used units are always dropped
    z = make_input(64, 50).abs() + 0.1
    out = layer(z)
    assert torch.count_nonzero(out[:, :10]) == 0
    assert torch.equal(out[:, 10:], z[:, 10:])
    layer.eval()
    assert torch.equal(layer(z), z)  # no dropout in evaluation


# the two flags for the train/eval mismatch (suite flags, both off by default)
def test_rescale_divides_retained_units_by_their_keep_probability():
    layer = KWTA(1.0, (4,), rescale=True).train()
    layer.hd_enabled = True
    layer.keep_probability.copy_(torch.tensor([1.0, 0.5, 0.25, 1.0]))
    torch.manual_seed(0)
    z = torch.ones(2000, 4)
    out = layer(z)
    retained = out != 0
    assert torch.equal(out[retained], (1 / layer.keep_probability).expand(2000, 4)[retained])
    # inverted dropout: the mean output is the evaluation output, 1, up to sampling error
    assert torch.allclose(out.mean(0), torch.ones(4), atol=0.1)
    layer.eval()
    assert torch.equal(layer(z), z)


def test_rescale_changes_which_units_win():
    """With k-WTA the 1/p factor acts before the winner selection: a rare unit can beat a larger, frequent one."""
    layer = KWTA(0.5, (2,), rescale=True).train()
    layer.hd_enabled = True
    layer.keep_probability.copy_(torch.tensor([1.0, 0.25]))
    torch.manual_seed(0)
    z = torch.tensor([[1.0, 0.5]]).expand(400, 2)
    out = layer(z)
    kept_second = out[:, 1] != 0
    assert kept_second.any() and torch.all(out[kept_second, 1] == 2.0) and torch.all(out[kept_second, 0] == 0)


def test_expected_eval_mask_scales_by_the_keep_probability_the_last_task_trained_with():
    layer = KWTA(1.0, (3,), eval_mask="expected")
    layer.hd_enabled = True
    layer.activation_count.copy_(torch.tensor([4.0, 2.0, 0.0], dtype=torch.float64))
    layer.update_keep_probability(1.0)  # for the next task; the last one trained with all ones
    z = torch.ones(5, 3)
    layer.eval()
    assert torch.equal(layer(z), z)
    trained_with = layer.keep_probability.clone()
    layer.update_keep_probability(2.0)
    assert torch.equal(layer.trained_keep_probability, trained_with)
    assert torch.equal(layer(z), trained_with.expand(5, 3))
    layer.train()
    layer.hd_enabled = False
    assert torch.equal(layer(z), z)  # training: the usual path (HD off here)


def test_the_two_mismatch_flags_are_not_combined():
    with pytest.raises(ValueError, match="use one"):
        KWTA(0.5, (4,), rescale=True, eval_mask="expected")
    with pytest.raises(ValueError, match="eval_mask"):
        KWTA(0.5, (4,), eval_mask="always")
