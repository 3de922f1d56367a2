"""GPM and its sparse variants: the spec oracles (gpm.md section 7, gpm_sparse.md section 6) on tiny data."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cl_bench import runner
from cl_bench.config import resolve
from cl_bench.errors import UserError
from cl_bench.models.kwta import KWTA
from strategies.gpm import (
    GPMConfig,
    GPMPlugin,
    energy_rank,
    layer_input_matrix,
    project_out,
    projected_layers,
    update_basis,
)

TOL = 1e-5


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def _low_rank(d, n, rank, seed=0):
    g = _generator(seed)
    return torch.randn(d, rank, generator=g, dtype=torch.float64) @ torch.randn(
        rank, n, generator=g, dtype=torch.float64
    )


def _orthonormality_error(basis):
    return (basis.T @ basis - torch.eye(basis.shape[1], dtype=basis.dtype)).abs().max().item()


# ----------------------------------------------------------------------------- memory maths


def test_memory_stays_orthonormal_over_updates():
    basis = None
    for task in range(5):
        basis = update_basis(
            basis, _low_rank(40, 60, 6, seed=task) + 0.01 * _low_rank(40, 60, 40, seed=99 + task), 0.97
        )
        assert _orthonormality_error(basis) < TOL
    assert 0 < basis.shape[1] <= 40


def test_projected_gradient_is_orthogonal_to_the_memory_and_projection_is_idempotent():
    basis = update_basis(None, _low_rank(30, 50, 8), 0.99).float()
    gradient = torch.randn(7, 30, generator=_generator(1))
    projected = project_out(gradient, basis)
    assert (projected @ basis).abs().max() < TOL
    assert torch.allclose(project_out(projected, basis), projected, atol=TOL)


def test_threshold_rule_on_a_known_spectrum():
    # energies 4, 1, 1, 1, 1 of 8: cumulative 0.5, 0.625, 0.75, 0.875, 1.0, every one exact in binary (a spectrum
    # such as sqrt(0.5) squares to 0.4999999999999999 with some CPUs' vectorised kernels, and the 0.5 case flips)
    singular_values = torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert energy_rank(singular_values, 0.9, "paper") == 5  # smallest k reaching 0.9
    assert energy_rank(singular_values, 0.9, "official") == 4  # the official count of cumsum < eps
    assert energy_rank(singular_values, 0.5, "official") == 0 and energy_rank(singular_values, 0.5, "paper") == 1
    assert energy_rank(singular_values, 0.75, "official") == 2 and energy_rank(singular_values, 0.75, "paper") == 3
    assert energy_rank(singular_values, 1.0 + 1e-9, "paper") == 5


@pytest.mark.parametrize("rule", ["paper", "official"])
def test_energy_criterion_brackets_the_threshold(rule):
    representation = _low_rank(20, 30, 20, seed=3)
    singular_values = torch.linalg.svdvals(representation)
    cumulative = torch.cumsum(singular_values**2, 0) / (singular_values**2).sum()
    for eps in (0.5, 0.8, 0.95):
        k = update_basis(None, representation, eps, rule).shape[1]
        if rule == "paper":
            assert cumulative[k - 1] >= eps and (k == 1 or cumulative[k - 2] < eps)
        else:
            assert (k == 0 or cumulative[k - 1] < eps) and cumulative[k] >= eps


def test_second_update_with_the_same_representation_adds_nothing():
    representation = _low_rank(25, 40, 10, seed=4)
    first = update_basis(None, representation, 0.97)
    second = update_basis(first, representation, 0.97)
    assert update_basis(second, representation, 0.97).shape[1] == second.shape[1]
    assert second.shape[1] - first.shape[1] <= 1  # the official off-by-one may add one vector, no more


def test_new_directions_are_counted_against_the_energy_of_the_full_representation():
    # the memory already explains 90% of R's energy; the residual has two equal directions with 5% each
    basis = torch.eye(6, dtype=torch.float64)[:, :1]
    representation = torch.zeros(6, 3, dtype=torch.float64)
    representation[0, 0] = math.sqrt(0.90)
    representation[1, 1] = math.sqrt(0.05)
    representation[2, 2] = math.sqrt(0.05)
    assert update_basis(basis, representation, 0.94).shape[1] == 2  # 0.90 + 0.05 >= 0.94
    assert update_basis(basis, representation, 0.96).shape[1] == 3
    assert update_basis(basis, representation, 0.89).shape[1] == 1  # already explained: skip


def test_memory_is_capped_at_the_layer_input_dimension_and_then_blocks_every_gradient():
    basis = None
    for task in range(3):
        basis = update_basis(basis, _low_rank(12, 30, 12, seed=task), 1.0 + 1e-9, "paper")
        assert basis.shape[1] <= 12
    assert basis.shape[1] == 12
    gradient = torch.randn(5, 12, generator=_generator(2), dtype=torch.float64)
    assert project_out(gradient, basis).abs().max() < 1e-10


def test_conv_representation_matches_the_conv_output_column_by_column():
    conv = nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1, bias=False)
    inputs = torch.randn(2, 3, 9, 9, generator=_generator(5))
    representation = layer_input_matrix(conv, inputs)
    output = conv(inputs)  # (2, 4, 5, 5)
    positions = output.shape[2] * output.shape[3]
    assert representation.shape == (3 * 3 * 3, 2 * positions)
    for sample in range(2):
        columns = representation[:, sample * positions : (sample + 1) * positions]
        expected = output[sample].reshape(4, -1)
        assert torch.allclose(conv.weight.view(4, -1) @ columns, expected, atol=TOL)


@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_an_update_step_leaves_outputs_on_protected_inputs_unchanged(layer):
    torch.manual_seed(0)
    module = nn.Linear(10, 4, bias=False) if layer == "linear" else nn.Conv2d(2, 3, 2, bias=False)
    inputs = torch.randn(6, 10) if layer == "linear" else torch.randn(3, 2, 4, 4)
    representation = layer_input_matrix(module, inputs)
    basis = update_basis(None, representation, 1.0 + 1e-9, "paper").float()
    gradient = torch.randn_like(module.weight)
    step = project_out(gradient, basis)
    before = module(inputs)
    with torch.no_grad():
        module.weight -= 0.5 * step
    assert torch.allclose(module(inputs), before, atol=1e-4)


# ----------------------------------------------------------------------------- the plugin


def _fake_strategy(model):
    parameters = list(model.parameters())
    return SimpleNamespace(model=model, device=torch.device("cpu"), optimizer=torch.optim.SGD(parameters, lr=0.1))


def test_plugin_projects_every_shared_weight_and_freezes_biases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    plugin = GPMPlugin(GPMConfig())
    plugin.bases = {
        "0": update_basis(None, _low_rank(8, 20, 3), 0.99),
        "2": update_basis(None, _low_rank(6, 20, 2), 0.99),
    }
    plugin.tasks_done = 1
    strategy = _fake_strategy(model)
    plugin.before_training_exp(strategy)
    model(torch.randn(5, 8)).sum().backward()
    plugin.before_update(strategy)
    for name, module in projected_layers(model).items():
        assert (module.weight.grad @ plugin.bases[name].float()).abs().max() < TOL
        assert torch.count_nonzero(module.bias.grad) == 0


@pytest.mark.parametrize("batch", [2, 200])  # input-side projection for small batches, gradient-side for large
def test_plugin_projection_equals_the_oracle_whichever_side_it_projects(batch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32, bias=False), nn.ReLU(), nn.Linear(32, 4, bias=False))
    plugin = GPMPlugin(GPMConfig())
    plugin.bases = {
        "0": update_basis(None, _low_rank(64, 100, 10), 0.999),
        "2": update_basis(None, _low_rank(32, 100, 20), 0.999),
    }
    plugin.tasks_done = 1
    strategy = _fake_strategy(model)
    plugin.before_training_exp(strategy)
    model(torch.randn(batch, 64)).pow(2).sum().backward()
    raw = {name: model[int(name)].weight.grad.clone() for name in plugin.bases}
    plugin.before_update(strategy)
    for name, basis in plugin.bases.items():
        expected = project_out(raw[name], basis.float())
        assert torch.allclose(model[int(name)].weight.grad, expected, atol=TOL)
    plugin._release()  # what after_training_exp does first
    assert not model[0]._forward_hooks


def test_two_tasks_old_outputs_kept_while_the_new_task_learns():
    """Spec oracle 5: task-1 inputs in a q-dim subspace, paper rule, eps = 1 - 1e-9."""
    torch.manual_seed(0)
    d, q = 12, 4
    subspace = torch.linalg.qr(torch.randn(d, q))[0]
    task1_inputs = torch.randn(64, q) @ subspace.T
    task2_inputs, task2_targets = torch.randn(64, d), torch.randn(64, 3)
    model = nn.Sequential(nn.Linear(d, 3, bias=False))
    plugin = GPMPlugin(GPMConfig(threshold=[1.0 - 1e-9], threshold_rule="paper"))
    plugin.bases = {"0": update_basis(None, layer_input_matrix(model[0], task1_inputs), 1.0 - 1e-9, "paper")}
    assert plugin.bases["0"].shape[1] == q
    plugin.tasks_done = 1
    strategy = _fake_strategy(model)
    plugin.before_training_exp(strategy)
    old_outputs = model(task1_inputs).detach()
    losses = []
    for _ in range(50):
        strategy.optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(task2_inputs), task2_targets)
        loss.backward()
        plugin.before_update(strategy)
        strategy.optimizer.step()
        losses.append(loss.item())
    change = (model(task1_inputs) - old_outputs).norm() / old_outputs.norm()
    assert change < 1e-4
    assert losses[-1] < 0.9 * losses[0]


# ----------------------------------------------------------------------------- through the runner


def _prepared(strategy, sets=(), scenario_sets=()):
    config = resolve(
        {},
        {"scenario": "split_digits", "strategy": strategy, "device": "cpu"},
        ["train.epochs=1", "model.widths=[32, 16]", *sets, *scenario_sets],
    )
    return runner.prepare(config, "unused", progress=False)


def _train(prepared, experiences):
    for index in experiences:
        prepared.strategy.train(prepared.scenario.benchmark.train_stream[index], eval_streams=[])


def test_biases_frozen_and_old_heads_untouched_after_the_first_task():
    prepared = _prepared("gpm", scenario_sets=["scenario.task_labels=true"])
    model = prepared.strategy.model
    _train(prepared, [0])
    biases = {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if p.dim() == 1 and not name.startswith("heads.")
    }
    head0 = {name: p.detach().clone() for name, p in model.heads[0].named_parameters()}
    head1_before = model.heads[1].weight.detach().clone()
    _train(prepared, [1, 2])
    assert biases and all(torch.equal(p, dict(model.named_parameters())[n]) for n, p in biases.items())
    assert all(torch.equal(p, dict(model.heads[0].named_parameters())[n]) for n, p in head0.items())
    assert not torch.equal(model.heads[1].weight, head1_before)  # the current head still learns
    gpm_plugin = next(p for p in prepared.strategy.plugins if isinstance(p, GPMPlugin))
    assert "heads.0" not in gpm_plugin.bases and len(gpm_plugin.bases) == 2  # heads are not projected


def test_gpm_sparse_with_k_equal_width_and_no_dropout_is_gpm_bit_for_bit():
    plain = _prepared("gpm")  # prepare() seeds the global RNG: train each run right after preparing it
    _train(plain, range(3))
    sparse = _prepared("gpm_sparse", ["strategy.k_ratio=[1.0]", "strategy.rho=0.0"])
    assert any(isinstance(m, KWTA) for m in sparse.strategy.model.modules())
    _train(sparse, range(3))
    plain_state = plain.strategy.model.state_dict()
    sparse_state = {
        k: v
        for k, v in sparse.strategy.model.state_dict().items()
        if not k.endswith(("activation_count", "keep_probability"))
    }
    assert plain_state.keys() == sparse_state.keys()
    assert all(torch.equal(plain_state[k], sparse_state[k]) for k in plain_state)
    plain_gpm = next(p for p in plain.strategy.plugins if isinstance(p, GPMPlugin))
    sparse_gpm = next(p for p in sparse.strategy.plugins if isinstance(p, GPMPlugin))
    assert plain_gpm.bases.keys() == sparse_gpm.bases.keys()
    assert all(torch.equal(plain_gpm.bases[k], sparse_gpm.bases[k]) for k in plain_gpm.bases)


def test_gpm_sparse_counts_winners_and_sets_keep_probabilities_but_not_in_the_memory_pass():
    prepared = _prepared("gpm_sparse", ["strategy.k_ratio=[0.25]", "strategy.rho=2.0"])
    units = [m for m in prepared.strategy.model.modules() if isinstance(m, KWTA)]
    assert [unit.k for unit in units] == [8, 4]
    _train(prepared, [0])
    n_train = len(prepared.scenario.benchmark.train_stream[0].dataset)
    for unit in units:
        # one epoch: every training sample counted once, at most k winners each
        assert 0 < unit.activation_count.sum() <= n_train * unit.k
        assert math.isclose(unit.keep_probability.min().item(), math.exp(-2.0), rel_tol=1e-5)
        assert unit.keep_probability.max().item() <= 1.0
    counts = [unit.activation_count.clone() for unit in units]
    gpm_plugin = next(p for p in prepared.strategy.plugins if isinstance(p, GPMPlugin))
    prepared.strategy.experience = prepared.scenario.benchmark.train_stream[0]
    gpm_plugin.layer_inputs(prepared.strategy, projected_layers(prepared.strategy.model), 50)
    assert all(torch.equal(before, unit.activation_count) for before, unit in zip(counts, units))


@pytest.mark.parametrize(
    "strategy, sets, fragment",
    [
        ("gpm_kwta", ["strategy.rho=1.0"], "strategy.rho must be <= 0"),
        ("gpm_hd", ["strategy.k_ratio=[0.5]"], "strategy.k_ratio must be >= 1"),
        ("gpm", ["strategy.threshold=[1.5]"], "strategy.threshold must be <= 1"),
        ("gpm", ["strategy.threshold_rule=exact"], "threshold_rule must be one of"),
    ],
)
def test_ablations_and_thresholds_reject_bad_values(strategy, sets, fragment):
    from cl_bench.errors import UserError

    with pytest.raises(UserError, match=fragment):
        resolve({}, {"scenario": "split_digits", "strategy": strategy}, sets)


# ----------------------------------------------------------------------------- CLI and presets


@pytest.mark.parametrize("strategy", ["gpm", "gpm_sparse", "gpm_kwta", "gpm_hd"])
def test_cli_run_of_every_gpm_variant_records_the_memory_occupancy(strategy, tmp_path, capsys):
    from conftest import run_cli

    code, out, err = run_cli(
        [
            "run",
            "--scenario",
            "split_digits",
            "--strategy",
            strategy,
            "--device",
            "cpu",
            "--no-progress",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    record = json.loads((Path(out.strip().splitlines()[-1]) / "record.json").read_text())
    memory = record["strategy_info"]["gpm_memory"]
    assert len(memory["occupancy"]) == 5
    for layer, dim in memory["layer_dims"].items():
        fractions = [after_task[layer] for after_task in memory["occupancy"]]
        assert fractions == sorted(fractions) and 0 < fractions[-1] <= 1  # grows, never past d_l
    assert record["config"]["train"]["momentum"] == 0.0  # the official plain SGD


def test_preset_sets_the_protocol_and_other_strategies_keep_what_they_understand():
    gpm_config = resolve({}, {"preset": "pmnist", "strategy": "gpm_sparse"})
    assert gpm_config.scenario == "permuted_fmnist" and gpm_config.model == "mlp_gpm"
    assert gpm_config.components["strategy"].threshold == [0.95, 0.99, 0.99]
    assert gpm_config.components["scenario"].train_per_experience == 0
    assert (gpm_config.train.epochs, gpm_config.train.batch_size, gpm_config.train.lr) == (5, 10, 0.01)
    ewc_config = resolve({}, {"preset": "swiss_roll", "strategy": "ewc", "lr": 0.05}, ["model.widths=[64]"])
    assert ewc_config.strategy == "ewc" and ewc_config.components["model"].bias is False
    assert ewc_config.components["model"].widths == [64] and ewc_config.train.lr == 0.05
    assert resolve({"preset": "swiss_roll"}).to_dict() == resolve({}, {"preset": "swiss_roll"}).to_dict()


def test_every_preset_resolves_and_an_unknown_one_is_a_one_line_error(tmp_path, capsys):
    from conftest import run_cli

    from cl_bench.presets import preset_names

    assert {"pmnist", "cifar100_10split", "swiss_roll"} <= set(preset_names())
    for name in preset_names():
        resolve({}, {"preset": name})
    code, out, err = run_cli(["run", "--preset", "pmnsit", "--out", str(tmp_path)], capsys)
    assert code == 2 and "unknown preset 'pmnsit'" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())
    code, out, _ = run_cli(["list", "preset"], capsys)
    assert code == 0 and "cifar100_10split" in out


def test_the_cifar100_preset_runs_end_to_end_on_tiny_cifar_files(tmp_path, monkeypatch, capsys, fake_cifar):
    """The paper's CIFAR-100 command, shortened: per-item data path, alexnet_gpm, conv representations."""
    from conftest import run_cli

    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "data"))
    fake_cifar("cifar100", tmp_path / "data" / "cifar100", train_per_class=3, test_per_class=2)
    code, out, err = run_cli(
        [
            "run",
            "--preset",
            "cifar100_10split",
            "--device",
            "cpu",
            "--no-progress",
            "--epochs",
            "1",
            "--set",
            "scenario.n_experiences=2",
            "--set",
            "model.hidden=64",
            "--set",
            "model.channels=[8,8,8]",
            "--out",
            str(tmp_path / "runs"),
        ],
        capsys,
    )
    assert code == 0, err
    record = json.loads((Path(out.strip().splitlines()[-1]) / "record.json").read_text())
    assert record["model"] == "alexnet_gpm" and record["scenario_info"]["setting"] == "task-incremental"
    assert record["config"]["strategy"]["threshold_increment"] == 0.003
    dims = record["strategy_info"]["gpm_memory"]["layer_dims"]
    assert list(dims.values()) == [3 * 4 * 4, 8 * 3 * 3, 8 * 2 * 2, 8 * 2 * 2, 64]  # conv fan-ins, then fc


def _most_used_overlap(rho: float) -> float:
    """Jaccard overlap of the 10 most-used hidden units of task 1 and task 2 (spec gpm_sparse oracle 9)."""
    from cl_bench.models.kwta import insert_kwta

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 100), nn.ReLU(), nn.Linear(100, 2))
    (unit,) = insert_kwta(model, (20,), [0.1])
    unit.hd_enabled = True
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    most_used = []
    for task in range(2):
        inputs = torch.randn(512, 20)  # the same input distribution, another labelling rule
        targets = (inputs[:, task] > 0).long()
        before = unit.activation_count.clone()
        for start in range(0, 512, 32):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs[start : start + 32]), targets[start : start + 32]).backward()
            optimizer.step()
        most_used.append(set(torch.topk(unit.activation_count - before, 10).indices.tolist()))
        unit.update_keep_probability(rho)
    return len(most_used[0] & most_used[1]) / len(most_used[0] | most_used[1])


def test_heterogeneous_dropout_moves_the_next_task_to_other_units():
    assert _most_used_overlap(rho=5.0) < _most_used_overlap(rho=0.0)


def test_gpm_sparse_counting_on_a_clean_pass_runs_and_counts(tmp_path, capsys):
    # regression: the counting hook returned the counter, which replaced the k-WTA output (float64 downstream)
    from conftest import run_cli

    code, out, err = run_cli(
        [
            "run",
            "--scenario",
            "split_digits",
            "--strategy",
            "gpm_sparse",
            "--device",
            "cpu",
            "--no-progress",
            "--epochs",
            "1",
            "--set",
            "strategy.count_on=clean",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    record = json.loads((Path(out.strip().splitlines()[-1]) / "record.json").read_text())
    assert len(record["accuracy_matrix"]) == 5 and record["config"]["strategy"]["count_on"] == "clean"


def test_gpm_sparse_refuses_both_mismatch_flags_and_keeps_old_ids():
    with pytest.raises(UserError, match="set one of them"):
        resolve({}, {"strategy": "gpm_sparse"}, ["strategy.hd_rescale=true", "strategy.hd_eval=expected"])
    strategy = resolve({}, {"strategy": "gpm_sparse"}).to_dict()["strategy"]
    assert "hd_rescale" not in strategy and "hd_eval" not in strategy
    assert (
        resolve({}, {"strategy": "gpm_sparse"}, ["strategy.hd_eval=expected"]).to_dict()["strategy"]["hd_eval"]
        == "expected"
    )
