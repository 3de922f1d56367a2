"""BrainWash (attacks/brainwash.py): the oracles of the suite's BrainWash spec, the threat model, the CLI.

Every test is tiny and seeded: a toy two-task multi-head MLP on synthetic data in [0,1]^20 for the noise and
the inversion, split_digits for the attack's contract, a 3-task Swiss roll for the end-to-end runs.
"""

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from conftest import run_cli
from torch import nn

from attacks.brainwash import (
    BrainWash,
    BrainWashConfig,
    ProxySet,
    attacker_copy,
    invert,
    make_batch_objective,
    optimise_noise,
    surrogate_loss,
)
from cl_bench import runner
from cl_bench.config import TrainConfig, resolve
from cl_bench.data_prepare import FMNIST_DEBIAN_DIR, prepare
from cl_bench.models.heads import MultiHeadNet
from cl_bench.models.mlp import MLPConfig
from cl_bench.registry import MODELS, STRATEGIES
from cl_bench.scenario import ScenarioData, add_classes_timeline
from cl_bench.tensor_data import TensorBank, gather
from cl_bench.templates import StrategyContext

UNIT = (0.0, 1.0)  # the valid input range of every toy problem here


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These problems are far too small for intra-op threads; on a busy 2-core machine two OpenMP threads that
    spin against other processes made single calls 20x slower (0.3 s vs 27 s). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# shared tiny builders
# ---------------------------------------------------------------------------------------------


def linear_rule_task(generator, n=256, dim=20):
    """n inputs uniform in [0,1]^dim, labelled by the sign of a random linear rule on x - 0.5."""
    inputs = torch.rand(n, dim, generator=generator)
    weights = torch.randn(dim, generator=generator)
    return inputs, ((inputs - 0.5) @ weights > 0).long()


def two_head_mlp(hidden=32, batch_norm=False):
    layers = [nn.Linear(20, hidden)] + ([nn.BatchNorm1d(hidden)] if batch_norm else []) + [nn.ReLU()]
    return MultiHeadNet(nn.Sequential(*layers), hidden, 2, [[0, 1], [0, 1]])


def fit(model, inputs, targets, task, steps=300, lr=0.1):
    """Full-batch plain SGD on one head."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs, task), targets).backward()
        optimizer.step()
    return model


def toy_problem(seed, batch_norm=False):
    """Spec oracle 5's toy: a 2-task multi-head MLP trained on task A (head 0); task B (head 1) is poisoned."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xa, ya = linear_rule_task(generator)
    xb, yb = linear_rule_task(generator)
    model = fit(two_head_mlp(batch_norm=batch_norm), xa, ya, 0)
    return model, xa, ya, xb, yb


def toy_config(**overrides):
    settings = dict(epsilon=0.3, steps=20, step_size=0.015, lookahead_lr=0.1, batch_size=64)
    return BrainWashConfig(**{**settings, **overrides})


def task_a_proxy(xa, ya):
    """The old task's real data as the surrogate (isolates stage 2 from the inversion)."""
    return ProxySet(xa.unsqueeze(0), ya.unsqueeze(0), [0])


def noise_for(model, xb, yb, proxy, config, seed, **kwargs):
    return optimise_noise(
        attacker_copy(model, "train"), xb, yb, 1, proxy, config, UNIT, torch.Generator().manual_seed(seed), **kwargs
    )


def record_of(out_dir):
    (run_dir,) = [path for path in out_dir.iterdir() if path.is_dir()]
    return json.loads((run_dir / "record.json").read_text())


# ---------------------------------------------------------------------------------------------
# oracles 1-2: budget and labels, through BrainWash.poison on split_digits (task-incremental, pixels in [0,1])
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_victim():
    """A naive learner with a small multi-head MLP, trained one epoch on experiences 0 and 1 of split_digits."""
    config = resolve(
        {},
        {"scenario": "split_digits", "strategy": "naive", "device": "cpu"},
        ["scenario.task_labels=true", "train.epochs=1", "model.widths=[32]"],
    )
    prepared = runner.prepare(config, "unused", progress=False)
    for index in (0, 1):
        prepared.strategy.train(prepared.scenario.benchmark.train_stream[index], eval_streams=[])
    return prepared.scenario, prepared.strategy


def tiny_attack_config(**overrides):
    settings = dict(steps=2, inversion_steps=8, inversion_samples=8, batch_size=128)
    return BrainWashConfig(**{**settings, **overrides})


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_poison_stays_in_the_budget_and_range_and_leaves_labels_alone(epsilon, digits_victim):
    scenario, strategy = digits_victim
    assert scenario.input_range == UNIT and scenario.task_labels
    experience = scenario.benchmark.train_stream[2]
    clean_inputs, clean_targets, clean_tasks = gather(experience.dataset)
    weights_before = copy.deepcopy(strategy.model.state_dict())
    attack = BrainWash(tiny_attack_config(epsilon=epsilon), scenario, seed=0)
    poisoned = attack.poison(experience, strategy)
    inputs, targets, tasks = gather(poisoned.dataset)
    assert inputs.shape == clean_inputs.shape and len(poisoned.dataset) == len(experience.dataset)
    assert poisoned.current_experience == 2
    assert torch.equal(targets, clean_targets) and torch.equal(tasks, clean_tasks)  # labels and order untouched
    assert (inputs - clean_inputs).abs().max() <= epsilon + 1e-6
    assert inputs.min() >= 0.0 and inputs.max() <= 1.0
    if epsilon == 0:
        assert torch.equal(inputs, clean_inputs)  # a zero budget is the identity, bit for bit
    else:
        assert not torch.equal(inputs, clean_inputs)
    metrics = attack.metrics()
    assert metrics["linf"] <= epsilon + 1e-6 and len(metrics["surrogate_history"]) == 2
    assert attack.budget()["epsilon"] == epsilon
    # the victim is untouched (the attack works on a copy), and the attack is seeded by its own generator
    assert all(torch.equal(value, strategy.model.state_dict()[name]) for name, value in weights_before.items())
    again = BrainWash(tiny_attack_config(epsilon=epsilon), scenario, seed=0).poison(experience, strategy)
    assert torch.equal(gather(again.dataset)[0], inputs)


# ---------------------------------------------------------------------------------------------
# oracle 3: signed update size
# ---------------------------------------------------------------------------------------------


def test_one_outer_step_is_a_signed_step_of_exactly_step_size():
    model, xa, ya, xb, yb = toy_problem(0)
    step = 0.01
    config = toy_config(steps=1, init="zero", step_size=step)
    delta, _ = noise_for(model, xb, yb, task_a_proxy(xa, ya), config, seed=0)
    step32 = torch.tensor(step, dtype=delta.dtype)
    assert delta.abs().max() <= step + 1e-7
    assert bool(((delta.abs() == step32) | (delta == 0)).all())  # every entry -step, 0 or +step
    assert (delta.abs() == step32).float().mean() > 0.9  # almost every gradient entry is non-zero

    # a step larger than the budget is clipped to the ball
    clipped, _ = noise_for(
        model, xb, yb, task_a_proxy(xa, ya), toy_config(steps=1, init="zero", step_size=0.5, epsilon=0.1), seed=0
    )
    assert clipped.abs().max() <= 0.1 + 1e-7 and (clipped.abs() == torch.tensor(0.1)).float().mean() > 0.9

    # the second step (same generator stream: the first step is replayed) moves each entry by at most one step
    two, _ = noise_for(model, xb, yb, task_a_proxy(xa, ya), toy_config(steps=2, init="zero", step_size=step), seed=0)
    assert (two - delta).abs().max() <= step + 1e-7 and not torch.equal(two, delta)


# ---------------------------------------------------------------------------------------------
# oracle 4: the delta-gradient goes through the lookahead (second order)
# ---------------------------------------------------------------------------------------------


def lookahead_gradient_inputs(dtype=torch.float32):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = two_head_mlp().to(dtype)
    clean = (0.2 + 0.6 * torch.rand(16, 20, generator=generator)).to(dtype)  # away from the clip bounds
    delta = ((torch.rand(16, 20, generator=generator) * 2 - 1) * 0.05).to(dtype)
    targets = torch.randint(2, (16,), generator=generator)
    proxy_inputs = torch.rand(8, 20, generator=generator).to(dtype)
    proxy_labels = torch.randint(2, (8,), generator=generator)
    params = {name: value.detach() for name, value in model.named_parameters()}
    return model, params, (delta, clean, targets, proxy_inputs, proxy_labels)


@pytest.mark.parametrize("objective", ["reckless", "cautious"])
def test_noise_gradient_is_second_order_and_zero_without_it(objective):
    model, params, arguments = lookahead_gradient_inputs()
    config = BrainWashConfig(objective=objective, lookahead_lr=0.1)
    full = make_batch_objective(model, config, UNIT, 1, [0])
    gradient, old_loss = torch.func.grad(full, argnums=1, has_aux=True)(params, *arguments)
    assert gradient.shape == arguments[0].shape and gradient.abs().max() > 0
    assert torch.isfinite(old_loss)
    first_order = make_batch_objective(model, config, UNIT, 1, [0], second_order=False)
    cut, _ = torch.func.grad(first_order, argnums=1, has_aux=True)(params, *arguments)
    assert torch.equal(cut, torch.zeros_like(cut))  # the first-order shortcut carries no signal: the guard


def test_noise_gradient_matches_finite_differences():
    """The mixed second derivative is the true derivative of the lookahead objective (float64, no clipping)."""
    model, params, (delta, *rest) = lookahead_gradient_inputs(torch.float64)
    objective = make_batch_objective(model, BrainWashConfig(objective="cautious", lookahead_lr=0.5), UNIT, 1, [0])
    gradient, _ = torch.func.grad(objective, argnums=1, has_aux=True)(params, delta, *rest)
    direction = torch.randn(delta.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = 1e-5
    numeric = (
        objective(params, delta + h * direction, *rest)[0] - objective(params, delta - h * direction, *rest)[0]
    ) / (2 * h)
    assert float((gradient * direction).sum()) == pytest.approx(float(numeric), rel=1e-4, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# oracle 5: the attacker's surrogate goes up; vmap equals the per-batch loop
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_optimised_noise_raises_the_surrogate_above_clean_and_uniform(seed):
    # spec oracle 5 with 20 steps of 0.015 instead of 200 of 0.005 (same reach, 10x faster); it held in seeds
    # 0-4 and at 200 steps of 0.005. The rise is small on this toy (~1e-5 to 1e-4): compared strictly.
    model, xa, ya, xb, yb = toy_problem(seed)
    proxy, config = task_a_proxy(xa, ya), toy_config()
    delta, history = noise_for(model, xb, yb, proxy, config, seed)
    assert delta.abs().max() <= config.epsilon + 1e-7 and len(history) == config.steps
    victim = attacker_copy(model, "train")
    uniform = (torch.rand(xb.shape, generator=torch.Generator().manual_seed(100 + seed)) * 2 - 1) * config.epsilon
    clean = surrogate_loss(victim, xb, yb, 1, torch.zeros_like(xb), proxy, config, UNIT)
    random_noise = surrogate_loss(victim, xb, yb, 1, uniform, proxy, config, UNIT)
    optimised = surrogate_loss(victim, xb, yb, 1, delta, proxy, config, UNIT)
    assert optimised > clean and optimised > random_noise


def test_vmap_and_per_batch_loop_give_the_same_noise():
    model, xa, ya, xb, yb = toy_problem(0)
    proxy, config = task_a_proxy(xa, ya), toy_config(steps=3)
    # 256 samples, batches of 64 plus a ragged one of 40 (vmap: the full batches, loop: the rest)
    xb, yb = xb[:232], yb[:232]
    vectorized, history_v = noise_for(model, xb, yb, proxy, config, 0, vectorize=True)
    looped, history_l = noise_for(model, xb, yb, proxy, config, 0, vectorize=False)
    assert torch.equal(vectorized, looped)
    # the per-step old-task CE differs in the last float bits (batched vs single matmuls), not more
    assert history_v == pytest.approx(history_l, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# oracle 6: reckless vs cautious
# ---------------------------------------------------------------------------------------------


def test_cautious_noise_keeps_the_current_task_better_than_reckless():
    # Victim accuracy on task B after a few steps is not robust on this toy (it flips with seeds and step
    # counts); the quantity the cautious term controls is: the clean task-B CE after the victim's SGD step
    # (lookahead_lr) on the poisoned data. It was lower for cautious in seeds 0-4.
    model, xa, ya, xb, yb = toy_problem(0)
    proxy = task_a_proxy(xa, ya)
    after_step = {}
    for objective in ("reckless", "cautious"):
        config = toy_config(objective=objective, cautious_weight=100.0)
        delta, _ = noise_for(model, xb, yb, proxy, config, seed=0)
        victim = fit(copy.deepcopy(model), (xb + delta).clamp(0, 1), yb, 1, steps=1, lr=config.lookahead_lr)
        with torch.no_grad():
            after_step[objective] = float(F.cross_entropy(victim(xb, 1), yb))
    assert after_step["cautious"] < after_step["reckless"]


# ---------------------------------------------------------------------------------------------
# oracle 7: model inversion
# ---------------------------------------------------------------------------------------------


def inversion_problem(batch_norm=False, per_group=64):
    """A 2-task multi-head MLP trained on both tasks, labels (2, M) and uniform starts (2, M, 20)."""
    model, xa, ya, xb, yb = toy_problem(0, batch_norm=batch_norm)  # training forwards set the BN running stats
    fit(model, xb, yb, 1)
    generator = torch.Generator().manual_seed(5)
    labels = torch.randint(2, (2, per_group), generator=generator)
    init = torch.rand(2, per_group, 20, generator=generator)
    return model, labels, init


def head_accuracy(model, images, labels, group_tasks):
    with torch.no_grad():
        model.eval()
        return [
            float((model(images[g], task).argmax(1) == labels[g]).float().mean()) for g, task in enumerate(group_tasks)
        ]


def test_inversion_finds_inputs_each_head_assigns_to_their_labels():
    model, labels, init = inversion_problem()
    start_accuracy = head_accuracy(model, init, labels, [0, 1])
    images, info = invert(
        attacker_copy(model, "eval"), labels, [0, 1], init, BrainWashConfig(inversion_steps=300), UNIT
    )
    assert images.shape == (2, 64, 20)
    assert images.min() >= 0.0 and images.max() <= 1.0
    accuracy = head_accuracy(model, images, labels, [0, 1])
    assert min(accuracy) > 0.9 and min(start_accuracy) < 0.9  # the inversion did the work
    assert info["inversion_accuracy"] > 0.9
    assert info["inversion_accuracy"] == pytest.approx(sum(accuracy) / 2)
    assert info["inversion_loss_last"] < info["inversion_loss_first"]
    assert torch.equal(init, init.clamp(0, 1))  # the start is not modified in place


def test_inversion_of_groups_together_equals_one_at_a_time():
    model, labels, init = inversion_problem(batch_norm=True, per_group=16)
    config = BrainWashConfig(inversion_steps=20)
    together, _ = invert(attacker_copy(model, "eval"), labels, [0, 1], init, config, UNIT)
    for group in (0, 1):
        alone, _ = invert(
            attacker_copy(model, "eval"), labels[group : group + 1], [group], init[group : group + 1], config, UNIT
        )
        torch.testing.assert_close(alone[0], together[group], rtol=0, atol=1e-5)


def test_inversion_reduces_the_batch_norm_term():
    model, labels, init = inversion_problem(batch_norm=True)
    batch_norm = model.backbone[1]
    assert batch_norm.num_batches_tracked > 0 and batch_norm.running_mean.abs().sum() > 0
    running_mean = batch_norm.running_mean.clone()
    images, info = invert(
        attacker_copy(model, "eval"), labels, [0, 1], init, BrainWashConfig(inversion_steps=300), UNIT
    )
    assert info["inversion_bn_first"] > 0
    assert info["inversion_bn_last"] < info["inversion_bn_first"]
    assert min(head_accuracy(model, images, labels, [0, 1])) > 0.9
    assert torch.equal(batch_norm.running_mean, running_mean)  # running statistics are read, never updated


# ---------------------------------------------------------------------------------------------
# threat model: the attacker never reads data of earlier experiences
# ---------------------------------------------------------------------------------------------


class OldDataRead(RuntimeError):
    pass


class TrapBank(TensorBank):
    """A bank whose inputs and targets cannot be read once armed (after the victim trained on it)."""

    armed = False

    def __getattribute__(self, name):
        if name in ("inputs", "targets") and object.__getattribute__(self, "armed"):
            raise OldDataRead(f"read {name} of {object.__getattribute__(self, 'name')}")
        return object.__getattribute__(self, name)


def trapped_scenario(task_labels, n_experiences=3, n=64):
    """Like tensor_scenario, but every training experience lives in its own TrapBank."""
    generator = torch.Generator().manual_seed(0)
    train, test, banks = [], [], []
    for index in range(n_experiences):
        x, y = linear_rule_task(generator, n=2 * n)
        y = y + 2 * index  # experience i holds classes 2i, 2i+1
        tasks = torch.full((2 * n,), index if task_labels else 0)
        bank = TrapBank(x[:n], y[:n], tasks[:n], name=f"trap-train{index}")
        banks.append(bank)
        train.append(bank.dataset())
        test.append(TensorBank(x[n:], y[n:], tasks[n:], name=f"trap-test{index}").dataset())
    scenario = add_classes_timeline(
        ScenarioData(
            benchmark=with_task_labels(benchmark_from_datasets(train=train, test=test)),
            input_shape=(20,),
            num_classes=2 * n_experiences,
            setting="task-incremental" if task_labels else "class-incremental",
            task_labels=task_labels,
            classes_per_experience=[[2 * i, 2 * i + 1] for i in range(n_experiences)],
            input_range=UNIT,
        )
    )
    return scenario, banks


def attack_after_trapped_training(task_labels, proxy):
    torch.manual_seed(0)
    scenario, banks = trapped_scenario(task_labels)
    model = MODELS.get("mlp").builder(MLPConfig(widths=[16]), scenario)
    context = StrategyContext(
        model=model, train=TrainConfig(epochs=1, batch_size=16, lr=0.1), scenario=scenario, device=torch.device("cpu")
    )
    strategy = STRATEGIES.get("naive").builder(None, context)
    stream = scenario.benchmark.train_stream
    for index in range(len(banks) - 1):
        strategy.train(stream[index], eval_streams=[])
        banks[index].armed = True
    config = tiny_attack_config(epsilon=0.2, proxy=proxy)
    target = stream[len(banks) - 1]
    poisoned = BrainWash(config, scenario, seed=0).poison(target, strategy)
    return gather(poisoned.dataset), gather(target.dataset)


@pytest.mark.parametrize("task_labels", [True, False])
def test_the_attacker_never_reads_earlier_experiences(task_labels):
    (inputs, targets, _), (clean_inputs, clean_targets, _) = attack_after_trapped_training(task_labels, "inversion")
    assert torch.equal(targets, clean_targets) and (inputs - clean_inputs).abs().max() <= 0.2 + 1e-6


def test_the_trap_catches_the_real_data_ablation():
    # proxy=real_data legitimately reads old experiences: the trap must fire, or the test above proves nothing
    with pytest.raises(OldDataRead):
        attack_after_trapped_training(True, "real_data")


# ---------------------------------------------------------------------------------------------
# the CLI: bad input, the headline command end to end, paired branches with a zero budget
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--attack", "brainwash", "--set", "attack.epsilon=-1"], "attack.epsilon must be >= 0"),
        (["--attack", "no_such_attack"], "unknown attack 'no_such_attack'"),
        (["--attack", "brainwash", "--set", "attack.objective=bogus"], "attack.objective must be one of"),
        (["--attack", "brainwash", "--set", "attack.target_experience=0"], "needs at least one earlier experience"),
    ],
)
def test_bad_brainwash_input_is_one_line_exit_2_and_nothing_written(args, fragment, tmp_path, capsys):
    code, _, err = run_cli(
        [
            "run",
            "--scenario",
            "split_digits",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "runs"),
            *args,
        ],
        capsys,
    )
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


SWISS_ROLL_TINY = [
    "--scenario",
    "continual_swiss_roll",
    "--strategy",
    "gpm_sparse",
    "--attack",
    "brainwash",
    "--device",
    "cpu",
    "--no-progress",
    "--set",
    "scenario.n_tasks=3",
    "--set",
    "scenario.n_train=40",
    "--set",
    "model.widths=[32,32]",
    "--set",
    "attack.steps=2",
    "--set",
    "attack.inversion_steps=5",
    "--set",
    "attack.inversion_samples=8",
]


def test_headline_command_end_to_end_is_paired_and_deterministic(tmp_path, capsys):
    records = []
    for name in ("first", "second"):
        code, out, err = run_cli(
            [
                "run",
                *SWISS_ROLL_TINY,
                "--epochs",
                "1",
                "--set",
                "scenario.n_test=20",
                "--set",
                "attack.epsilon=0.5",
                "--out",
                str(tmp_path / name),
            ],
            capsys,
        )
        assert code == 0, err
        records.append(record_of(tmp_path / name))
    record = records[0]
    clean, attacked = record["accuracy_matrix_clean"], record["accuracy_matrix"]
    assert len(clean) == len(attacked) == 3
    info = record["attack_info"]
    assert info["name"] == "brainwash" and info["target_experience"] == 2
    assert info["budget"]["epsilon"] == 0.5 and info["budget"]["input_range"] is None  # the roll is unbounded
    assert {"surrogate_final", "surrogate_clean", "inversion_s", "noise_s", "linf"} <= set(info["metrics"])
    assert info["metrics"]["linf"] <= 0.5 + 1e-6 and info["metrics"]["vectorized"] is False  # k-WTA: the loop
    assert set(record["attack_effect"]["bwt"]) == {"clean", "attacked", "difference"}
    assert clean[:2] == attacked[:2]  # the rows before the target are shared
    # same seed, same command: bit-identical on CPU, both branches
    assert records[1]["accuracy_matrix"] == attacked and records[1]["accuracy_matrix_clean"] == clean
    assert records[1]["attack_info"]["metrics"]["surrogate_final"] == info["metrics"]["surrogate_final"]


def test_zero_budget_branches_are_bit_identical_for_a_dropout_victim(tmp_path, capsys):
    # gpm_sparse draws heterogeneous-dropout masks from the global RNG in training mode, and so does the attack's
    # lookahead (model_mode=train): the runner must keep the victim's RNG stream the one of the clean branch. This
    # configuration (5 epochs, 3 of 10 winners, 400 test points per task) is sensitive to it: with the runner's
    # fork_rng replaced by a no-op the last rows differed (0.730 vs 0.735 on task 1), checked by hand.
    code, _, err = run_cli(
        [
            "run",
            *SWISS_ROLL_TINY,
            "--epochs",
            "5",
            "--set",
            "scenario.n_test=200",
            "--set",
            "strategy.k_ratio=[0.3]",
            "--set",
            "attack.epsilon=0",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    record = record_of(tmp_path)
    assert record["accuracy_matrix"] == record["accuracy_matrix_clean"]
    assert record["attack_info"]["metrics"]["linf"] == 0.0
    assert all(value["difference"] == 0 for value in record["attack_effect"].values())


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST_DEBIAN_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_brainwash_makes_ewc_forget_more_than_uniform_noise_on_split_fmnist(tmp_path, monkeypatch, capsys):
    # real forgetting, end to end: the committed sweep's EWC cell at eps 0.3, seed 2 (BWT -0.062 vs uniform -0.011
    # with one torch thread, as in the sweep); the assertion leaves room for other thread counts
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "data"))
    prepare("fmnist", source=FMNIST_DEBIAN_DIR, root=tmp_path / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        differences = {}
        for attack in ("brainwash", "uniform_noise"):
            code, out, err = run_cli(
                [
                    "run",
                    "--scenario",
                    "split_fmnist",
                    "--set",
                    "scenario.task_labels=true",
                    "--strategy",
                    "ewc",
                    "--attack",
                    attack,
                    "--set",
                    "attack.epsilon=0.3",
                    "--seed",
                    "2",
                    "--device",
                    "cpu",
                    "--no-progress",
                    "--out",
                    str(tmp_path),
                ],
                capsys,
            )
            assert code == 0, err
            record = json.loads((Path(out.strip().splitlines()[-1]) / "record.json").read_text())
            differences[attack] = record["attack_effect"]["bwt"]["difference"]
    finally:
        torch.set_num_threads(threads)
    assert differences["brainwash"] < -0.03
    assert differences["brainwash"] < differences["uniform_noise"] - 0.02


@pytest.mark.parametrize("preset", ["brainwash_paper", "brainwash_cifar100"])
def test_the_paper_strength_presets_carry_the_official_attack_settings(preset):
    from cl_bench.config import resolve

    config = resolve({}, {"preset": preset, "strategy": "ewc"})
    attack = config.components["attack"]
    assert config.attack == "brainwash" and config.strategy == "ewc" and config.scenario.startswith("split_")
    assert (attack.steps, attack.step_size, attack.batch_size, attack.lookahead_lr) == (5000, 0.005, 128, 0.001)
    assert (attack.inversion_steps, attack.inversion_samples, attack.inversion_lr) == (10000, 128, 0.01)
    assert config.components["scenario"].task_labels
    # the same-budget control: another attack keeps the preset's epsilon
    control = resolve({}, {"preset": preset, "attack": "uniform_noise"})
    assert control.components["attack"].epsilon == attack.epsilon == 0.3
