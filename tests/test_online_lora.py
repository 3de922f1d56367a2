"""Online-LoRA: the spec oracles (online_lora.md section 8) on a tiny timm ViT, plus runner and resume."""

import json
import math
import warnings

import pytest
import torch
from avalanche.benchmarks.scenarios.online import split_online_stream
from avalanche.core import SupervisedPlugin
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from cl_bench import runner
from cl_bench.config import ComponentConfig, TrainConfig, build_config, resolve
from cl_bench.errors import UserError
from cl_bench.models.heads import SingleHeadNet
from cl_bench.registry import MODELS, SCENARIOS, Entry
from cl_bench.scenario import tensor_scenario
from cl_bench.templates import StrategyContext
from strategies.online_lora import (
    LoRAQKV,
    OnlineLoRAConfig,
    OnlineLoRAPlugin,
    PlateauDetector,
    add_lora,
    build_online_lora,
    hard_buffer_importance,
    importance_penalty,
    per_sample_gradients,
    running_average,
    trainable_lora_parameters,
    update_hard_buffer,
)

warnings.filterwarnings("ignore", category=DeprecationWarning)


def tiny_vit_model(num_classes: int = 10, depth: int = 2, seed: int = 0) -> SingleHeadNet:
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=depth, num_heads=2, num_classes=0)
    return SingleHeadNet(vit, 16, num_classes)


def config(**values) -> OnlineLoRAConfig:
    return build_config(OnlineLoRAConfig, values, "strategy")


def digits_scenario():
    return SCENARIOS.get("split_digits").builder(
        build_config(SCENARIOS.get("split_digits").config_class, {}, "scenario"), 0
    )


def make_strategy(scenario=None, model=None, plugins=(), lr=1e-2, **values):
    scenario = scenario or digits_scenario()
    model = model or tiny_vit_model(scenario.num_classes)
    train = TrainConfig(epochs=1, batch_size=64, lr=lr, optimizer="adam", device="cpu")
    context = StrategyContext(
        model=model, train=train, scenario=scenario, device=torch.device("cpu"), plugins=list(plugins)
    )
    return build_online_lora(config(**values), context)


def plugin_of(strategy) -> OnlineLoRAPlugin:
    return next(p for p in strategy.plugins if isinstance(p, OnlineLoRAPlugin))


def online_stream(scenario, size=16, boundaries=False):
    return split_online_stream(
        scenario.benchmark.train_stream, experience_size=size, shuffle=True, seed=0, access_task_boundaries=boundaries
    )


def train_on(strategy, stream, limit=None):
    for index, experience in enumerate(stream):
        if limit is not None and index >= limit:
            break
        strategy.train(experience, eval_streams=[])


def inputs(n=6, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def randomise_trainable_pairs(model, seed=2):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in trainable_lora_parameters(model).values():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def frozen_state(model):
    names = {n for n, _ in model.named_parameters() if not n.rsplit(".", 1)[-1].startswith("lora_")}
    return {
        n: t.clone()
        for n, t in model.state_dict().items()
        if (n in names and not n.startswith("head.")) or ".frozen_" in n
    }


# ----------------------------------------------------------------------------- oracles 1, 2, 4: the model


@pytest.mark.parametrize("merge_mode", ["paper", "official"])
def test_oracle1_zero_init_is_the_identity_and_k_is_never_adapted(merge_mode):
    model = tiny_vit_model()
    x = inputs()
    with torch.no_grad():
        before = model.backbone(x)
        add_lora(model, 4, merge_mode)
        assert (model.backbone(x) - before).abs().max() < 1e-6
        randomise_trainable_pairs(model)
        qkv = model.backbone.blocks[0].attn.qkv
        tokens = torch.randn(3, 5, 16)
        adapted, plain = qkv(tokens), qkv.base(tokens)
    assert torch.equal(adapted[..., 16:32], plain[..., 16:32])  # key slice untouched
    assert (adapted[..., :16] - plain[..., :16]).abs().max() > 1e-3
    assert (adapted[..., 32:] - plain[..., 32:]).abs().max() > 1e-3


def test_lora_shapes_init_and_trainable_set():
    model = add_lora(tiny_vit_model(), 4, "paper")
    lora = trainable_lora_parameters(model)
    assert len(lora) == 2 * 2 * 2  # 2 blocks x (q, v) x (A, B)
    for name, parameter in lora.items():
        assert parameter.requires_grad
        assert parameter.shape == ((4, 16) if ".lora_A_" in name else (16, 4))
        if ".lora_B_" in name:
            assert torch.count_nonzero(parameter) == 0
        else:  # Kaiming-uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            assert 0 < parameter.abs().max() <= 1 / math.sqrt(16)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(lora) | {"head.weight", "head.bias"}


def test_oracle2_frozen_weights_and_factors_stay_bitwise_frozen():
    scenario = digits_scenario()
    strategy = make_strategy(scenario, merge_mode="official", tau_mean=0.0)  # no plateau: nothing merges
    model = strategy.model
    frozen = frozen_state(model)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    train_on(strategy, online_stream(scenario), limit=6)
    assert plugin_of(strategy).plateau_batches == []
    state = model.state_dict()
    assert frozen and all(torch.equal(state[n], value) for n, value in frozen.items())
    assert any(".frozen_A_" in n for n in frozen)
    for name, value in trainable.items():
        assert not torch.equal(state[name], value), name  # every trainable LoRA matrix and the head moved


def test_oracle4_vit_b16_has_exactly_147456_trainable_lora_parameters():
    import timm

    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    model = add_lora(SingleHeadNet(vit, 768, 100), 4, "paper")
    lora = trainable_lora_parameters(model)
    assert sum(p.numel() for p in lora.values()) == 147_456
    head = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n not in lora)
    assert head == 76_900


# ----------------------------------------------------------------------------- oracle 3: merges


def test_oracle3_paper_merge_is_function_preserving_and_restarts_the_pair():
    model = add_lora(tiny_vit_model(), 4, "paper")
    x = inputs()
    for merge in range(2):
        randomise_trainable_pairs(model, seed=10 + merge)
        qkv = model.backbone.blocks[1].attn.qkv
        old_a, old_b = qkv.lora_A_v.detach().clone(), qkv.lora_B_v.detach().clone()
        old_delta = qkv.frozen_delta_v.clone()
        parameter_ids = [id(p) for p in model.parameters()]
        with torch.no_grad():
            before = model(x)
            for module in model.modules():
                if isinstance(module, LoRAQKV):
                    module.merge_and_reset()
            after = model(x)
        assert (after - before).abs().max() < 1e-5
        assert [id(p) for p in model.parameters()] == parameter_ids  # modified in place, never replaced
        assert torch.allclose(qkv.frozen_delta_v, old_delta + old_b @ old_a, atol=1e-6)
        assert torch.count_nonzero(qkv.lora_B_v) == 0 and not torch.equal(qkv.lora_A_v, old_a)
        assert 0 < qkv.lora_A_v.abs().max() <= 1 / math.sqrt(16)


def test_oracle3_official_merge_preserves_the_function_only_at_the_first_merge():
    model = add_lora(tiny_vit_model(), 4, "official")
    x = inputs()
    modules = [m for m in model.modules() if isinstance(m, LoRAQKV)]
    changes, factors = [], []
    for merge in range(2):
        randomise_trainable_pairs(model, seed=20 + merge)
        factors.append((modules[0].lora_A_q.detach().clone(), modules[0].lora_B_q.detach().clone()))
        with torch.no_grad():
            before = model(x)
            for module in modules:
                module.merge_and_reset()
            changes.append((model(x) - before).abs().max().item())
        assert all(torch.count_nonzero(p) == 0 for p in trainable_lora_parameters(model).values())
    assert changes[0] < 1e-5
    assert changes[1] > 1e-3  # the cross terms B_fz A + B A_fz
    (a1, b1), (a2, b2) = factors
    assert torch.allclose(modules[0].frozen_update("q"), (b1 + b2) @ (a1 + a2), atol=1e-5)


# ----------------------------------------------------------------------------- oracle 5: the detector


def fires(detector, values):
    return [index for index, value in enumerate(values) if detector.update(value)]


def test_oracle5_constant_high_loss_never_fires():
    assert fires(PlateauDetector(5, 6.0, 0.1), [8.0] * 50) == []


def test_oracle5_a_low_flat_stretch_fires_once_until_a_new_peak():
    detector = PlateauDetector(5, 6.0, 0.1)
    high, low = [8.0, 9.0, 8.5, 8.2, 8.8], [4.0, 4.2] * 10
    # the window mean crosses 6 while the variance is still large; it fires when the window is flat
    assert fires(detector, high + low) == [9]
    assert detector.last_mean == pytest.approx(4.08) and detector.last_var == pytest.approx(0.0096)
    assert not detector.peak
    # staying below mu_last + sqrt(var_last) = 4.178 is no new peak: a later low, flat stretch does not fire
    assert fires(detector, [4.15] * 10 + [3.0] * 10) == []
    # a real rise re-arms the detector; it fires again once the window is low and flat
    assert fires(detector, [9.0] * 5 + [3.5] * 10) == [9]


def test_oracle5_first_value_below_tau_mean_fires_immediately():
    # pitfall 2: peak starts True and a one-value window has variance 0
    assert fires(PlateauDetector(5, 6.0, 0.1), [4.6, 4.5, 4.4]) == [0]


def test_oracle5_variance_is_the_population_variance_of_the_last_window():
    detector = PlateauDetector(2, 10.0, 0.25 + 1e-9)
    assert fires(detector, [20.0, 1.0, 2.0]) == [2]  # window (1, 2): population variance 0.25 (sample: 0.5)


# ----------------------------------------------------------------------------- oracle 6: the hard buffer


def test_oracle6_update_keeps_the_highest_loss_entries():
    generator = torch.Generator().manual_seed(0)
    pool = [
        [torch.full((2, 1), float(i)), torch.tensor([i, i]), float(loss)]
        for i, loss in enumerate(torch.rand(9, generator=generator))
    ]
    kept = update_hard_buffer(pool, 4)
    assert [entry[2] for entry in kept] == sorted((entry[2] for entry in pool), reverse=True)[:4]
    assert update_hard_buffer(pool[:2], 4) == sorted(pool[:2], key=lambda e: e[2], reverse=True)
    assert update_hard_buffer(pool, 0) == []


class PoolSpy(SupervisedPlugin):
    """Runs before the Online-LoRA plugin and records each step's candidate pool losses."""

    def __init__(self):
        super().__init__()
        self.pools = []
        self.lora = None

    def after_update(self, strategy, **kwargs):
        step = self.lora.step
        self.pools.append([step["current"]] + step["hard"])


def test_oracle6_buffer_holds_the_top_of_each_steps_pool():
    scenario = digits_scenario()
    spy = PoolSpy()
    strategy = make_strategy(scenario, plugins=[spy], hard_buffer_size=3)
    spy.lora = plugin_of(strategy)
    for experience in list(online_stream(scenario))[:8]:
        strategy.train(experience, eval_streams=[])
        buffer = spy.lora.hard_buffer
        assert len(buffer) == min(len(spy.pools), 3)
        assert [entry[2] for entry in buffer] == sorted(spy.pools[-1], reverse=True)[:3]
        assert all(len(entry[0]) == len(entry[1]) == 16 for entry in buffer)  # whole mini-batches


# ----------------------------------------------------------------------------- oracle 7: importance


def test_oracle7_running_average_is_the_mean_of_the_estimates():
    generator = torch.Generator().manual_seed(0)
    estimates = [
        {"a": torch.rand(3, 2, generator=generator), "b": torch.rand(4, generator=generator)} for _ in range(5)
    ]
    average = None
    for count, estimate in enumerate(estimates, start=1):
        average = running_average(average, estimate, count)
        for name in ("a", "b"):
            expected = torch.stack([e[name] for e in estimates[:count]]).mean(0)
            assert torch.allclose(average[name], expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["official_flat", "per_sample"])
def test_oracle7_importance_is_nonnegative_with_the_lora_shapes(mode):
    model = add_lora(tiny_vit_model(), 4, "paper")
    randomise_trainable_pairs(model)
    parameters = trainable_lora_parameters(model)
    buffer = [[inputs(5, seed), torch.zeros(5, dtype=torch.long), 1.0] for seed in (1, 2)]
    importance = hard_buffer_importance(model, parameters, buffer, mode)
    assert set(importance) == set(parameters)
    for name, value in importance.items():
        assert value.shape == parameters[name].shape and bool((value >= 0).all())
        assert value.sum() > 0 and not value.requires_grad  # a constant for the later penalties
    assert model.training and all(p.grad is None for p in model.parameters())  # no side effects
    assert all(
        torch.equal(v, torch.zeros_like(v)) for v in hard_buffer_importance(model, parameters, [], mode).values()
    )


def test_oracle7_importance_matches_a_hand_computation():
    model = add_lora(tiny_vit_model(), 4, "paper")
    randomise_trainable_pairs(model)
    model.eval()
    parameters = trainable_lora_parameters(model)
    names, values = list(parameters), tuple(parameters.values())
    x = inputs(4)
    flat = hard_buffer_importance(model, parameters, [[x, None, 0.0]], "official_flat")
    row = model(x).reshape(-1)  # the whole mini-batch as one sample of B*C logits
    grads = torch.autograd.grad(-torch.log_softmax(row, 0)[row.argmax()], values)
    per_sample = hard_buffer_importance(model, parameters, [[x, None, 0.0]], "per_sample")
    looped = [torch.zeros_like(v) for v in values]
    for sample in x:
        logits = model(sample.unsqueeze(0))[0]
        sample_grads = torch.autograd.grad(-torch.log_softmax(logits, 0)[logits.argmax()], values)
        looped = [acc + g**2 for acc, g in zip(looped, sample_grads)]
    vmapped = per_sample_gradients(model, names, values, x)
    for name, g, loop_value, batched in zip(names, grads, looped, vmapped):
        assert torch.allclose(flat[name], g**2, atol=1e-7)
        assert torch.allclose(per_sample[name], loop_value, rtol=1e-4, atol=1e-7)
        assert batched.shape == (4, *parameters[name].shape)


@pytest.mark.parametrize("mode", ["official_flat", "per_sample"])
def test_strategy_trains_through_plateaus_with_a_full_buffer(mode):
    scenario = digits_scenario()
    strategy = make_strategy(scenario, importance_mode=mode, tau_mean=100.0, tau_var=100.0)
    train_on(strategy, online_stream(scenario), limit=6)
    lora = plugin_of(strategy)
    assert len(lora.plateau_batches) >= 2 and lora.plateau_batches[0] == 1
    assert sum(float(v.sum()) for v in lora.importance.values()) > 0  # estimated on a non-empty buffer


# ----------------------------------------------------------------------------- oracle 8: the regulariser


def test_oracle8_regulariser_value_and_gradient():
    generator = torch.Generator().manual_seed(0)
    parameters = {
        "A": torch.randn(4, 6, generator=generator).requires_grad_(),
        "B": torch.randn(6, 4, generator=generator).requires_grad_(),
    }
    omega = {n: torch.rand(p.shape, generator=generator) for n, p in parameters.items()}
    zeros = {n: torch.zeros_like(p) for n, p in parameters.items()}
    assert importance_penalty(parameters, zeros, {}, 2000.0).item() == 0.0
    assert importance_penalty({n: torch.zeros_like(p) for n, p in parameters.items()}, omega, {}, 2000.0) == 0.0
    penalty = importance_penalty(parameters, omega, {}, 2000.0)
    grads = torch.autograd.grad(penalty, list(parameters.values()))
    for (name, p), g in zip(parameters.items(), grads):
        assert torch.allclose(g, 2000.0 * omega[name] * p, rtol=1e-5)
    # an anchored A (paper mode, anchor=reset) is pulled towards its anchor, B towards 0
    anchor = {"A": torch.randn(4, 6, generator=generator)}
    assert importance_penalty({"A": anchor["A"].clone()}, omega, anchor, 5.0).item() == 0.0
    (grad_a,) = torch.autograd.grad(importance_penalty(parameters, omega, anchor, 5.0), [parameters["A"]])
    assert torch.allclose(grad_a, 5.0 * omega["A"] * (parameters["A"] - anchor["A"]), rtol=1e-5)


class LossSpy(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.losses = []

    def after_backward(self, strategy, **kwargs):
        self.losses.append(float(strategy.loss))


def test_regulariser_enters_the_training_loss_after_the_first_plateau():
    scenario = digits_scenario()
    spy = LossSpy()
    strategy = make_strategy(scenario, plugins=[spy], tau_mean=100.0, tau_var=0.1, reg_lambda=1e6)
    lora = plugin_of(strategy)
    stream = list(online_stream(scenario))
    train_on(strategy, stream[:3])  # plateau at mini-batch 1 (empty buffer: Omega = 0), then no other
    assert lora.plateau_batches == [1] and lora.importance is not None
    assert spy.losses[1:] == pytest.approx(lora.loss_trace[1:], rel=1e-6)  # Omega = 0: no penalty
    lora.importance = {n: torch.ones_like(p) for n, p in trainable_lora_parameters(strategy.model).items()}
    strategy.train(stream[3], eval_streams=[])
    assert spy.losses[-1] > lora.loss_trace[-1] + 1.0  # the window value is taken before the penalty


# ----------------------------------------------------------------------------- oracle 9: dead LoRA


def adam_steps(model, optimizer, steps, x, y):
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def merge_all(model):
    for module in model.modules():
        if isinstance(module, LoRAQKV):
            module.merge_and_reset()


def test_oracle9_official_zero_reset_stays_dead_with_a_fresh_adam():
    model = add_lora(tiny_vit_model(), 4, "official")
    x, y = inputs(8), torch.arange(8) % 10
    adam_steps(model, torch.optim.Adam(model.parameters(), lr=1e-2), 3, x, y)
    merge_all(model)
    head = model.head.weight.detach().clone()
    adam_steps(model, torch.optim.Adam(model.parameters(), lr=1e-2), 10, x, y)
    assert all(torch.count_nonzero(p) == 0 for p in trainable_lora_parameters(model).values())
    assert not torch.equal(model.head.weight, head)  # only the head learns


def lora_moved(model, kind):
    return all(torch.count_nonzero(p) > 0 for n, p in trainable_lora_parameters(model).items() if f"_{kind}_" in n)


def test_oracle9_official_zero_reset_revives_with_the_kept_adam_state():
    x, y = inputs(8), torch.arange(8) % 10
    # merge after step 1: A had no gradient yet (B was 0), so B revives first and A one step later
    model = add_lora(tiny_vit_model(), 4, "official")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    adam_steps(model, optimizer, 1, x, y)
    merge_all(model)
    adam_steps(model, optimizer, 1, x, y)
    assert lora_moved(model, "B") and not any(
        torch.count_nonzero(p) for n, p in trainable_lora_parameters(model).items() if "_A_" in n
    )
    adam_steps(model, optimizer, 1, x, y)
    assert lora_moved(model, "A")
    # merge after several steps: both had momentum, both move at the first step
    model = add_lora(tiny_vit_model(), 4, "official")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    adam_steps(model, optimizer, 3, x, y)
    merge_all(model)
    adam_steps(model, optimizer, 1, x, y)
    assert lora_moved(model, "A") and lora_moved(model, "B")


def test_strategy_keeps_the_adam_state_and_the_parameters_across_merges():
    scenario = digits_scenario()
    strategy = make_strategy(scenario, merge_mode="official", tau_mean=100.0, tau_var=0.1)
    parameters = list(strategy.model.parameters())
    train_on(strategy, online_stream(scenario), limit=4)
    assert plugin_of(strategy).plateau_batches == [1]  # pitfall 2: merged at mini-batch 1
    assert [id(p) for p in strategy.model.parameters()] == [id(p) for p in parameters]
    assert all(torch.count_nonzero(p) > 0 for p in trainable_lora_parameters(strategy.model).values())
    lora_ids = {id(p) for p in trainable_lora_parameters(strategy.model).values()}
    assert lora_ids <= {id(p) for p in strategy.optimizer.state}


# ----------------------------------------------------------------------------- the strategy


def test_pitfall2_first_plateau_and_merge_at_the_first_mini_batch():
    scenario = digits_scenario()
    strategy = make_strategy(scenario, tau_mean=10.0, tau_var=0.1)
    lora = plugin_of(strategy)
    train_on(strategy, online_stream(scenario), limit=1)
    assert lora.plateau_batches == [1] and lora.plateau_samples == [16]
    assert all(torch.count_nonzero(v) == 0 for v in lora.importance.values())  # empty hard buffer
    assert lora.anchors and all(".lora_A_" in n for n in lora.anchors)
    delta = strategy.model.backbone.blocks[0].attn.qkv.frozen_delta_q
    assert torch.count_nonzero(delta) > 0  # the first step's B A was merged


def test_plateaus_are_counted_across_train_calls_and_recorded():
    scenario = digits_scenario()
    strategy = make_strategy(scenario, tau_mean=100.0, tau_var=100.0, window_length=1, hard_buffer_size=0)
    stream = list(online_stream(scenario, size=32))
    train_on(strategy, stream)
    info = runner.strategy_info(strategy)["online_lora"]
    sizes = [len(e.dataset) for e in stream]
    assert info["batches_seen"] == len(stream) and info["samples_seen"] == sum(sizes)
    # window 1, no buffer: the window value is the batch loss, and a plateau fires whenever it exceeds the
    # last plateau's value (a new peak with zero variance); replay the recorded losses through the rule
    expected = [i + 1 for i in fires(PlateauDetector(1, 100.0, 100.0), info["loss_window_values"])]
    assert info["plateau_batches"] == expected and len(expected) >= 2 and expected[0] == 1
    assert info["merges"] == len(expected)
    assert info["plateau_samples"] == [sum(sizes[:b]) for b in expected]
    json.dumps(info)


def test_strategy_never_reads_task_labels_or_boundaries():
    generator = torch.Generator().manual_seed(0)
    parts = [(torch.rand(40, 1, 8, 8, generator=generator), c + torch.arange(40) % 2) for c in (0, 2, 4)]
    results = []
    for task_labels, boundaries in ((False, False), (True, True)):
        scenario = tensor_scenario(parts, parts, setting="class-incremental", task_labels=task_labels, num_classes=6)
        scenario.task_labels = False  # the builder's check; the datasets still carry task ids 0, 1, 2
        strategy = make_strategy(scenario, model=tiny_vit_model(6), tau_mean=100.0, tau_var=100.0)
        torch.manual_seed(1)
        train_on(strategy, online_stream(scenario, boundaries=boundaries))
        results.append((strategy.model.state_dict(), plugin_of(strategy).plateau_batches))
    (state_a, plateaus_a), (state_b, plateaus_b) = results
    assert plateaus_a == plateaus_b
    assert all(torch.equal(state_a[n], state_b[n]) for n in state_a)


def test_offline_split_experiences_are_consumed_as_mini_batches():
    scenario = digits_scenario()
    strategy = make_strategy(scenario, tau_mean=100.0, tau_var=100.0)
    experience = scenario.benchmark.train_stream[0]
    strategy.train(experience, eval_streams=[])
    assert plugin_of(strategy).batches_seen == math.ceil(len(experience.dataset) / 64)


def test_bad_settings_are_user_errors():
    scenario = digits_scenario()
    train = TrainConfig(optimizer="sgd", device="cpu")
    with pytest.raises(UserError, match="Adam"):
        build_online_lora(config(), StrategyContext(tiny_vit_model(), train, scenario, torch.device("cpu")))
    train = TrainConfig(optimizer="adam", device="cpu")
    with pytest.raises(UserError, match="holds no timm VisionTransformer"):
        build_online_lora(
            config(), StrategyContext(SingleHeadNet(nn.Flatten(), 64, 10), train, scenario, torch.device("cpu"))
        )
    scenario.task_labels = True
    with pytest.raises(UserError, match="task labels"):
        build_online_lora(config(), StrategyContext(tiny_vit_model(), train, scenario, torch.device("cpu")))
    with pytest.raises(UserError, match="merge_mode"):
        config(merge_mode="mixed")


# ----------------------------------------------------------------------------- runner, record, resume


@pytest.fixture
def vit_model_args(monkeypatch):
    """``--model`` arguments for a tiny ViT: vit_micro when registered, else a test-only registry entry."""
    if "vit_micro" in MODELS:
        return ["model.patch_size=4", "model.embed_dim=16", "model.depth=1", "model.num_heads=2"], "vit_micro"

    def build(model_config, scenario):
        vit = VisionTransformer(
            img_size=scenario.input_shape[-1],
            patch_size=4,
            in_chans=scenario.input_shape[0],
            embed_dim=16,
            depth=1,
            num_heads=2,
            num_classes=0,
        )
        return SingleHeadNet(vit, 16, scenario.num_classes)

    MODELS.names()  # load the catalogs first
    monkeypatch.setitem(
        MODELS._entries,
        "test_tiny_vit",
        Entry("test_tiny_vit", "model", build, ComponentConfig, "tiny ViT (tests only)"),
    )
    return [], "test_tiny_vit"


def test_runner_end_to_end_and_resume_is_bit_identical(tmp_path, vit_model_args):
    sets, model = vit_model_args
    config_ = resolve(
        {},
        {"scenario": "split_digits", "strategy": "online_lora", "model": model, "device": "cpu"},
        sets + ["strategy.tau_mean=11.0"],
    )
    assert config_.train.optimizer == "adam" and config_.train.batch_size == 64 and config_.train.epochs == 1
    whole = runner.execute(config_, tmp_path / "whole", progress=False, log=lambda line: None)
    runner.execute(config_, tmp_path / "resumed", progress=False, log=lambda line: None, stop_after=2)
    resumed = runner.execute(config_, tmp_path / "resumed", resume=True, progress=False, log=lambda line: None)
    record = json.loads((whole / "record.json").read_text())
    resumed_record = json.loads((resumed / "record.json").read_text())
    assert record["accuracy_matrix"] == resumed_record["accuracy_matrix"]
    info = record["strategy_info"]["online_lora"]
    assert info == resumed_record["strategy_info"]["online_lora"]
    assert info["merge_mode"] == "paper" and info["merges"] == len(info["plateau_batches"]) >= 1
    assert info["samples_seen"] == sum(len(e.dataset) for e in digits_scenario().benchmark.train_stream)
    assert len(record["accuracy_matrix"]) == 5


def test_task_free_stream_through_the_runner_counts_plateaus_across_calls_and_resumes(
    tmp_path, monkeypatch, fake_fmnist
):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "data"))
    fake_fmnist(tmp_path / "data" / "fashion-mnist", train_per_class=48, test_per_class=6)
    sets = [
        "scenario.stream_batch_size=16",
        "scenario.anytime_eval_every=80",
        "model.embed_dim=16",
        "model.depth=1",
        "model.num_heads=2",
        "strategy.tau_mean=100.0",
        "strategy.tau_var=100.0",
    ]
    config_ = resolve(
        {}, {"scenario": "task_free_fmnist", "strategy": "online_lora", "model": "vit_micro", "device": "cpu"}, sets
    )
    whole = json.loads(
        (runner.execute(config_, tmp_path / "whole", progress=False, log=lambda line: None) / "record.json").read_text()
    )
    runner.execute(config_, tmp_path / "split", progress=False, stop_after=2, log=lambda line: None)
    resumed = json.loads(
        (
            runner.execute(config_, tmp_path / "split", resume=True, progress=False, log=lambda line: None)
            / "record.json"
        ).read_text()
    )
    info = whole["strategy_info"]["online_lora"]
    assert resumed["strategy_info"] == whole["strategy_info"]
    assert resumed["anytime_accuracy"] == whole["anytime_accuracy"]
    # one train() call per 16-image mini-batch: the counters run across the calls, 1-based
    assert info["batches_seen"] == whole["stream"]["batches"] == 25
    assert info["samples_seen"] == whole["stream"]["samples"] == 400
    expected = [i + 1 for i in fires(PlateauDetector(5, 100.0, 100.0), info["loss_window_values"])]
    assert info["plateau_batches"] == expected and expected[0] == 1 and len(expected) >= 2
    assert info["plateau_samples"] == [16 * b for b in expected]


def test_cli_runs_online_lora_on_a_task_free_stream_and_marks_its_plateaus(tmp_path, monkeypatch, fake_fmnist, capsys):
    from conftest import run_cli

    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "data"))
    fake_fmnist(tmp_path / "data" / "fashion-mnist", train_per_class=48, test_per_class=6)
    sets = [
        "scenario.mode=blurry",
        "scenario.stream_batch_size=16",
        "scenario.anytime_eval_every=80",
        "model.embed_dim=16",
        "model.depth=1",
        "model.num_heads=2",
        "strategy.tau_mean=100.0",
        "strategy.tau_var=100.0",
    ]
    code, out, err = run_cli(
        [
            "run",
            "--scenario",
            "task_free_fmnist",
            "--model",
            "vit_micro",
            "--strategy",
            "online_lora",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "runs"),
            *[item for assignment in sets for item in ("--set", assignment)],
        ],
        capsys,
    )
    assert code == 0, err
    run_dir = tmp_path / "runs" / out.strip().splitlines()[-1].split("/")[-1]
    record = json.loads((run_dir / "record.json").read_text())
    assert "A_auc" in out and record["strategy"] == "online_lora"
    assert record["strategy_info"]["online_lora"]["plateau_samples"] and (run_dir / "anytime_accuracy.png").is_file()
