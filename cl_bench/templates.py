"""What every strategy shares: the slicing data path, the build context, progress and prediction.

Strategies are Avalanche templates. :func:`fast` returns a subclass of any Avalanche template
whose train/eval data loaders batch tensor-bank datasets by slicing (see ``tensor_data``) and whose
per-step callbacks skip plugins' empty base methods; the algorithm itself (loss terms, gradient hooks,
buffers) is untouched.

What a plugin or template offers the engine is a type it declares, never an attribute the engine probes:

* :class:`StatelessPlugin`: holds no learning state, so checkpoints skip it (progress bar, divergence guard);
* :class:`ReportingPlugin`: reports about itself in the run record (``record_info``, e.g. GPM's memory);
* :class:`CustomPrediction`: a template with its own prediction rule (``predict_logits``, e.g. NCM's class
  means), which :func:`predict_logits` calls instead of the model.

What a strategy declares as a whole (trains on the whole stream, attackable, template attributes to
checkpoint ...) is in its registered :class:`cl_bench.traits.StrategyTraits`.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, TypeVar

import torch
from avalanche.core import SupervisedPlugin
from avalanche.models.utils import avalanche_forward
from avalanche.training.plugins import EvaluationPlugin
from torch import nn
from tqdm.auto import tqdm

from cl_bench.config import TrainConfig
from cl_bench.errors import UserError
from cl_bench.tensor_data import SliceLoader, gather


# smoke settings (``cl_bench.traits``) the strategies share: one epoch of split digits on a 32-wide MLP, or on a
# one-block ViT for the strategies that need one (8x8 digits: 4 patches of 4x4)
SMOKE_DIGITS_MLP = ("scenario=split_digits", "train.epochs=1", "model.widths=[32]")
SMOKE_DIGITS_VIT = (
    "scenario=split_digits",
    "model=vit_micro",
    "train.epochs=1",
    "model.patch_size=4",
    "model.embed_dim=16",
    "model.depth=1",
    "model.num_heads=2",
)


class SlicingDataMixin:
    """Replaces Avalanche's per-item loaders by slicing loaders when the data is bank-backed."""

    device: torch.device  # provided by the Avalanche template this is mixed into

    def _slice_loader(self, dataset, batch_size: int, shuffle: bool, drop_last: bool) -> Optional[SliceLoader]:
        tensors = gather(dataset)
        if tensors is None:
            return None
        if self.device.type != "cpu":
            # small scenarios fit on the accelerator: one copy per experience, no per-batch transfer
            inputs, targets, task_labels = tensors
            tensors = (inputs.to(self.device), targets.to(self.device), task_labels.to(self.device))
        return SliceLoader(tensors, batch_size, shuffle, drop_last)

    def make_train_dataloader(
        self, num_workers=0, shuffle=True, pin_memory=None, persistent_workers=False, drop_last=False, **kwargs
    ):
        loader = self._slice_loader(self.adapted_dataset, self.train_mb_size, shuffle, drop_last)
        if loader is None:
            return super().make_train_dataloader(
                num_workers=num_workers,
                shuffle=shuffle,
                pin_memory=pin_memory,
                persistent_workers=persistent_workers,
                drop_last=drop_last,
                **kwargs,
            )
        self.dataloader = loader

    def make_eval_dataloader(self, num_workers=0, shuffle=False, pin_memory=None, persistent_workers=False, **kwargs):
        loader = self._slice_loader(self.adapted_dataset, self.eval_mb_size, False, False)
        if loader is None:
            return super().make_eval_dataloader(
                num_workers=num_workers,
                shuffle=shuffle,
                pin_memory=pin_memory,
                persistent_workers=persistent_workers,
                **kwargs,
            )
        self.dataloader = loader


# the callbacks the template fires on every mini-batch; most plugins leave most of them as the base no-op
PER_STEP_EVENTS = (
    "before_training_iteration",
    "before_forward",
    "after_forward",
    "before_backward",
    "after_backward",
    "after_training_iteration",
    "before_update",
    "after_update",
)


def _is_base_no_op(plugin: Any, event: str) -> bool:
    """True when ``plugin``'s ``event`` is the empty method of Avalanche's plugin base classes."""
    if type(plugin).__getattribute__ is not object.__getattribute__ or hasattr(type(plugin), "__getattr__"):
        return False  # a plugin that answers attribute lookups itself is always called
    method = getattr(type(plugin), event, None)
    return method is not None and getattr(method, "__module__", None) == "avalanche.core"


class PrunedDispatchMixin:
    """Fires each per-step callback only on the plugins that override it, in a leaner training epoch.

    Avalanche's ``trigger_plugins`` looks up and calls ``event`` on every plugin for each of the eight
    callbacks of every mini-batch, empty base methods included; at GPM's batch of 10 that is a measurable part
    of a step (``benchmarks/gpm_protocol.py``). The plugins called, their order and their arguments are
    unchanged: only calls to Avalanche's empty base methods are skipped. The listeners are recomputed when the
    plugin list changes.
    """

    plugins: list

    def _listeners(self, event: str) -> list:
        cache: dict = self.__dict__.setdefault("_listener_cache", {})
        cached = cache.get(event)
        if cached is None or cached[0] != self.plugins:
            listeners = [getattr(p, event) for p in self.plugins if hasattr(p, event) and not _is_base_no_op(p, event)]
            cached = cache[event] = (list(self.plugins), listeners)
        return cached[1]

    def _fire(self, event: str, **kwargs: Any) -> None:
        for callback in self._listeners(event):
            callback(self, **kwargs)

    def training_epoch(self, **kwargs):
        """Avalanche's ``SGDUpdate.training_epoch``: the same callbacks in the same order, with one saving. The
        stock loop starts each step's loss at ``zeros(1)`` and adds the criterion to it; when no callback has
        touched that zero by then, the loss here is the criterion's value itself (the same number and the same
        gradients, without an extra add and graph node per step; the loss is a 0-d tensor instead of shape (1,))."""
        for self.mbatch in self.dataloader:
            if self._stop_training:
                break
            self._unpack_minibatch()
            self._fire("before_training_iteration", **kwargs)
            self.optimizer.zero_grad()
            empty = self.loss = self._make_empty_loss()
            self._fire("before_forward", **kwargs)
            self.mb_output = self.forward()
            self._fire("after_forward", **kwargs)
            if self.loss is empty and empty._version == 0:
                self.loss = self.criterion()
            else:
                self.loss += self.criterion()
            self._fire("before_backward", **kwargs)
            self.backward()
            self._fire("after_backward", **kwargs)
            self._fire("before_update", **kwargs)
            self.optimizer_step()
            self._fire("after_update", **kwargs)
            self._fire("after_training_iteration", **kwargs)


_fast_classes: dict[type, type] = {}


def fast(template_class: type) -> type:
    """``template_class`` with the slicing data path and the pruned per-step dispatch (one cached subclass per
    template)."""
    if template_class not in _fast_classes:
        # a template that customises a per-step hook or the epoch itself (Avalanche's DER, SCR, online
        # strategies) keeps the stock loop
        def defined_in(name: str, owner: str) -> bool:
            return getattr(getattr(template_class, name, None), "__qualname__", "").startswith(owner + ".")

        stock = (
            all(defined_in(f"_{event}", "BaseSGDTemplate") for event in PER_STEP_EVENTS)
            and defined_in("training_epoch", "SGDUpdate")
            and defined_in("_make_empty_loss", "BaseSGDTemplate")
        )
        bases = (SlicingDataMixin, PrunedDispatchMixin, template_class) if stock else (SlicingDataMixin, template_class)
        _fast_classes[template_class] = type(template_class.__name__, bases, {})
    return _fast_classes[template_class]


class StatelessPlugin(SupervisedPlugin):
    """A plugin that holds no learning state (a progress bar, a guard, a test's probe): checkpoints skip it, and
    a resumed run starts it afresh."""


class AuxiliaryLossPlugin(StatelessPlugin):
    """Adds the term of every :class:`cl_bench.models.heads.AuxiliaryLossModule` in the model to the training
    loss, after the criterion (the model's traits declare ``auxiliary_loss``)."""

    def before_backward(self, strategy, **kwargs):
        from cl_bench.models.heads import AuxiliaryLossModule

        for module in strategy.model.modules():
            if isinstance(module, AuxiliaryLossModule):
                strategy.loss = strategy.loss + module.auxiliary_loss()


class ReportingPlugin(SupervisedPlugin):
    """A plugin that reports about itself in the run record: :meth:`record_info` is merged into
    ``strategy_info`` at the end of the run."""

    @abstractmethod
    def record_info(self) -> dict:
        """Plain JSON data about the plugin's state, keyed by a name of its own (e.g. ``{"gpm_memory": ...}``)."""


class CustomPrediction(ABC):
    """A template whose prediction rule is not ``model(inputs)`` (e.g. the nearest class mean): evaluation and
    attacks call :meth:`predict_logits` (through :func:`predict_logits`) instead of the model."""

    @abstractmethod
    def predict_logits(self, inputs: torch.Tensor, task_labels: torch.Tensor) -> torch.Tensor:
        """(batch, classes) scores whose argmax is the prediction; differentiable where attacks need it."""


class ProgressPlugin(StatelessPlugin):
    """A tqdm bar per experience, advanced after every training iteration."""

    def __init__(self, n_experiences: int, enabled: bool = True):
        super().__init__()
        self.n_experiences = n_experiences
        self.enabled = enabled
        self.bar = None

    def before_training_exp(self, strategy, **kwargs):
        if not self.enabled:
            return
        steps = strategy.train_epochs * len(strategy.dataloader)
        index = strategy.experience.current_experience
        # disable=None: no bar when stderr is not a terminal (redirected logs)
        self.bar = tqdm(
            total=steps,
            desc=f"experience {index + 1}/{self.n_experiences}",
            unit="step",
            leave=False,
            dynamic_ncols=True,
            disable=None,
        )

    def after_training_iteration(self, strategy, **kwargs):
        if self.bar is not None:
            self.bar.update(1)
            if self.bar.n % 50 == 0:
                self.bar.set_postfix(loss=f"{float(strategy.loss.detach()):.3f}", refresh=False)

    def after_training_exp(self, strategy, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class DivergenceGuard(StatelessPlugin):
    """Stops a run whose training loss or weights stop being finite, with a one-line UserError.

    First in every strategy's plugin list, so it looks before any other plugin acts on NaNs (GPM's SVD of
    the representations at the end of an experience, a penalty's importances). Every step's loss is added to
    a running sum on the device, which is checked every ``check_every`` steps and at the end of each
    experience: a non-finite loss anywhere makes the sum non-finite, and no step waits for the device (one
    host sync per ``check_every`` steps instead of one per step, which also costs a batch-10 step on a CPU).
    """

    check_every = 50

    def __init__(self) -> None:
        super().__init__()
        self._loss_sum: Optional[torch.Tensor] = None
        self._steps = 0

    def after_training_iteration(self, strategy, **kwargs):
        loss = strategy.loss.detach()
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._steps += 1
        if self._steps % self.check_every == 0:
            self._check_loss(strategy)

    def _check_loss(self, strategy) -> None:
        loss_sum, self._loss_sum = self._loss_sum, None  # every check starts the next window
        if loss_sum is not None and not bool(torch.isfinite(loss_sum).all()):
            raise UserError(_diverged(strategy, f"the training loss became {float(loss_sum.sum())}"))

    def after_training_exp(self, strategy, **kwargs):
        self._check_loss(strategy)
        for name, parameter in strategy.model.named_parameters():
            if not bool(torch.isfinite(parameter.detach()).all()):
                raise UserError(_diverged(strategy, f"parameter {name} holds non-finite values"))


def _diverged(strategy, what: str) -> str:
    return (
        f"training diverged on experience {strategy.clock.train_exp_counter + 1} ({what}); lower the learning "
        f"rate (--lr) or the loss weights and run again"
    )


@dataclass
class StrategyContext:
    """Everything a strategy builder needs besides its own config."""

    model: nn.Module
    train: TrainConfig
    scenario: Any  # ScenarioData
    device: torch.device
    plugins: list = field(default_factory=list)

    def optimizer(self, parameters=None) -> torch.optim.Optimizer:
        parameters = self.model.parameters() if parameters is None else parameters
        if self.train.optimizer == "adam":
            return torch.optim.Adam(parameters, lr=self.train.lr, weight_decay=self.train.weight_decay)
        return torch.optim.SGD(
            parameters, lr=self.train.lr, momentum=self.train.momentum, weight_decay=self.train.weight_decay
        )

    def template_kwargs(self, extra_plugins: Optional[list] = None) -> dict:
        """Keyword arguments common to every Avalanche template."""
        return dict(
            model=self.model,
            optimizer=self.optimizer(),
            criterion=nn.CrossEntropyLoss(),
            train_mb_size=self.train.batch_size,
            train_epochs=self.train.epochs,
            eval_mb_size=self.train.eval_batch_size,
            device=self.device,
            plugins=list(self.plugins) + list(extra_plugins or []),
            evaluator=_silent_evaluator(),
        )


class _SilentEvaluator(EvaluationPlugin):
    """An evaluator with no metrics and no loggers that also costs nothing per callback.

    Avalanche's ``EvaluationPlugin`` answers every ``before_*`` / ``after_*`` lookup through a Python
    ``__getattribute__`` and copies the experience for logging on each callback, with or without metrics:
    about 0.06 ms per training iteration, a tenth of a batch-10 step of the 2x100 MLP. The runner
    evaluates by itself, so the lookups go back to the plain ones and the update is a no-op.
    """

    __getattribute__ = object.__getattribute__

    def _update_metrics_and_loggers(self, strategy, callback: str):
        return []


def _silent_evaluator() -> EvaluationPlugin:
    """The runner evaluates by itself; Avalanche's own metrics and loggers would only cost time."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        return _SilentEvaluator(loggers=[])


def predict_logits(strategy, inputs: torch.Tensor, task_labels: torch.Tensor) -> torch.Tensor:
    """The strategy's prediction rule: its own for a :class:`CustomPrediction` template, else the model."""
    if isinstance(strategy, CustomPrediction):
        return strategy.predict_logits(inputs, task_labels)
    return avalanche_forward(strategy.model, inputs, task_labels)


ModuleT = TypeVar("ModuleT", bound=nn.Module)


@contextmanager
def eval_mode(model: ModuleT) -> Iterator[ModuleT]:
    """``model`` in eval mode for the block, then back in the mode it was in (also on errors)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
