"""The lean training epoch of `fast` templates: the same callbacks, in the same order, as Avalanche's loop; the
declared plugin and template types the engine reads instead of probing attributes."""

from __future__ import annotations

import json

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.supervised import DER, Naive
from torch import nn

from cl_bench import checkpoint
from cl_bench.templates import (
    PER_STEP_EVENTS,
    CustomPrediction,
    DivergenceGuard,
    ProgressPlugin,
    PrunedDispatchMixin,
    ReportingPlugin,
    StatelessPlugin,
    fast,
    predict_logits,
)


class Recorder(SupervisedPlugin):
    """Overrides three per-step callbacks and writes down every call."""

    def __init__(self, calls: list, name: str):
        super().__init__()
        self.calls, self.name = calls, name

    def after_forward(self, strategy, **kwargs):
        self.calls.append((self.name, "after_forward"))

    def before_update(self, strategy, **kwargs):
        self.calls.append((self.name, "before_update"))

    def after_training_iteration(self, strategy, **kwargs):
        self.calls.append((self.name, "after_training_iteration"))


class Dynamic:
    """A plugin that answers every callback through ``__getattr__``: it cannot be pruned."""

    def __init__(self, calls: list):
        self.calls = calls

    def __getattr__(self, event: str):
        if event.startswith(("before_", "after_")):
            return lambda strategy, **kwargs: self.calls.append(("dynamic", event))
        raise AttributeError(event)


class AddsBeforeForward(SupervisedPlugin):
    """Adds a constant to the empty loss before the forward pass, in place (as a regulariser may)."""

    def before_forward(self, strategy, **kwargs):
        strategy.loss += 0.5


def _epoch(template_class: type, plugins: list, steps: int = 3) -> tuple[object, list[float]]:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    strategy = template_class(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        plugins=plugins,
        train_mb_size=2,
        device="cpu",
    )
    inputs, targets = torch.randn(2 * steps, 4), torch.randint(0, 3, (2 * steps,))
    strategy.dataloader = [
        [inputs[i : i + 2], targets[i : i + 2], torch.zeros(2, dtype=torch.long)] for i in range(0, 2 * steps, 2)
    ]
    strategy.experience = None
    strategy._stop_training = False
    losses: list[float] = []
    strategy.plugins.append(LossLog(losses))
    strategy.training_epoch()
    return strategy, losses


class LossLog(SupervisedPlugin):
    def __init__(self, losses: list):
        super().__init__()
        self.losses = losses

    def after_backward(self, strategy, **kwargs):
        self.losses.append(float(strategy.loss.detach().sum()))


def test_the_lean_epoch_calls_what_avalanche_calls_in_the_same_order():
    stock_calls: list = []
    lean_calls: list = []
    _, stock_losses = _epoch(Naive, [Recorder(stock_calls, "a"), Dynamic(stock_calls), Recorder(stock_calls, "b")])
    _, lean_losses = _epoch(fast(Naive), [Recorder(lean_calls, "a"), Dynamic(lean_calls), Recorder(lean_calls, "b")])
    per_step = [call for call in stock_calls if call[1] in PER_STEP_EVENTS]
    assert [call for call in lean_calls if call[1] in PER_STEP_EVENTS] == per_step
    assert ("a", "before_update") in per_step and ("dynamic", "before_forward") in per_step
    assert lean_losses == stock_losses  # the same loss values, step by step


def test_a_loss_touched_before_the_criterion_is_kept():
    _, stock = _epoch(Naive, [AddsBeforeForward()])
    _, lean = _epoch(fast(Naive), [AddsBeforeForward()])
    _, plain = _epoch(fast(Naive), [])
    assert lean == stock
    assert all(abs(with_term - without - 0.5) < 1e-6 for with_term, without in zip(lean, plain))


def test_a_plugin_added_later_is_called_and_a_template_with_its_own_hooks_keeps_the_stock_loop():
    calls: list = []
    strategy, _ = _epoch(fast(Naive), [])
    strategy.plugins.append(Recorder(calls, "late"))
    strategy.dataloader = strategy.dataloader[:1]
    strategy.training_epoch()
    assert calls == [("late", "after_forward"), ("late", "before_update"), ("late", "after_training_iteration")]
    assert issubclass(fast(Naive), PrunedDispatchMixin) and not issubclass(fast(DER), PrunedDispatchMixin)


# ----------------------------------------------------------------------------- declared types, not probes


class Counter(StatelessPlugin):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def after_training_iteration(self, strategy, **kwargs):
        self.steps += 1


class ProbedStateless(SupervisedPlugin):
    """Says it is stateless the old way (an attribute): it is checkpointed like any plugin."""

    stateless = True

    def __init__(self):
        super().__init__()
        self.steps = 7


def test_checkpoints_skip_exactly_the_stateless_plugin_types(tmp_path):
    strategy, _ = _epoch(fast(Naive), [Counter(), ProbedStateless(), DivergenceGuard(), ProgressPlugin(1, False)])
    checkpoint.save(tmp_path, strategy, {})
    plugins = json.loads((tmp_path / checkpoint.CHECKPOINT_STRUCTURE).read_text())["plugins"]
    kinds = [type(plugin).__name__ for plugin in strategy.plugins]
    states = dict(zip(kinds, plugins))
    assert states["Counter"] == states["DivergenceGuard"] == states["ProgressPlugin"] == {}
    assert states["ProbedStateless"] == {"steps": 7}


def test_a_reporting_plugin_must_define_record_info():
    class Silent(ReportingPlugin):
        pass

    class Talks(ReportingPlugin):
        def record_info(self) -> dict:
            return {"talks": 1}

    with pytest.raises(TypeError, match="record_info"):
        Silent()
    assert Talks().record_info() == {"talks": 1}


class _Doubled(CustomPrediction, Naive):
    def predict_logits(self, inputs, task_labels):
        return 2 * self.model(inputs)


class _NotDeclared(Naive):
    def predict_logits(self, inputs, task_labels):  # a method of that name alone is not a prediction rule
        raise AssertionError("probed")


def test_predict_logits_follows_the_declared_type_only():
    inputs, tasks = torch.randn(3, 4), torch.zeros(3, dtype=torch.long)
    for template, factor in ((_Doubled, 2), (_NotDeclared, 1), (Naive, 1)):
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        strategy = fast(template)(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu")
        assert isinstance(strategy, CustomPrediction) is (template is _Doubled)
        assert torch.allclose(predict_logits(strategy, inputs, tasks), factor * model(inputs))


class _RuleMissing(CustomPrediction, Naive):
    pass


def test_a_custom_prediction_template_must_define_its_rule():
    model = nn.Linear(4, 3)
    with pytest.raises(TypeError, match="predict_logits"):
        fast(_RuleMissing)(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu")
