"""The evaluator contract: a measurement on a trained model, run after training (the measurement phase).

An evaluator module registers ``build(config) -> Evaluator`` with
``EVALUATORS.register(name, config=..., traits=EvaluatorTraits(columns=..., row_keys=..., row_columns=...))``.
After a run's last experience (``cl-bench run --evaluator NAME``) or later on a finished run
(``cl-bench evaluate RUN_DIR --evaluator NAME``), the phase hands it an :class:`EvaluationContext` and writes
what it returns to ``runs/<run_id>/evaluations/<name>-<eval_id>.json`` (atomically; ``eval_id`` hashes the
evaluator's resolved config). Evaluations are artefacts of a training run, not part of its identity: adding
one to a finished sweep trains nothing again.

What the context offers (and nothing else; an evaluator declares what it needs in its traits):

* ``model``: a frozen copy of the final model (eval mode, no gradients), and ``predict(inputs, model=None)``:
  the strategy's own prediction rule (NCM's class means, L2P's prompts ...) applied to that copy or to any
  model of the same architecture the evaluator derives from it (perturbed, unlearned);
* ``initial_model()``: the run's model before training, rebuilt exactly (the same seed, the same init);
* ``tensors(split, experiences=..., classes=..., fraction=...)``: rows of the scenario as tensors;
* ``record``: the training run's record; ``device``; ``generator``: the evaluator's own random stream,
  fixed by the run seed and the eval id (the training RNG is never touched);
* ``reference_run(sets, seed=...)``: another training run of the same config with ``--set`` overrides
  (retraining baselines): found by its run id when complete, otherwise run on demand into ``references/``
  beside the run (which no board reads); it returns the record and the final model.

It returns an :class:`EvaluationResult`: scalar ``metrics``, optional multi-row ``rows`` (one per epsilon, rate
or experience, keyed by the traits' ``row_keys``), and free-form ``details``; the phase adds the timing. NaN
stands for "undefined" (e.g. a metric over an empty set) and is written as JSON ``null``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import torch
from torch import nn

from cl_bench.errors import UserError
from cl_bench.params import ComponentConfig
from cl_bench.tensor_data import gather

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # inputs, targets, task labels


@dataclass
class EvaluationResult:
    metrics: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReferenceRun:
    """A training run the evaluator compares against: its directory, record and final model."""

    run_dir: Any
    record: dict
    model: nn.Module


class Evaluator:
    """Base class: subclasses implement :meth:`evaluate`. ``config`` is the evaluator's resolved config."""

    def __init__(self, config: ComponentConfig):
        self.config = config

    def evaluate(self, context: "EvaluationContext") -> EvaluationResult:
        raise NotImplementedError

    def check(self, scenario: Any, model: nn.Module) -> None:
        """Raise a one-line UserError when this configuration cannot evaluate a run of ``scenario`` (a
        :class:`cl_bench.scenario.ScenarioData`) with ``model`` (the run's model, untrained); called before
        anything is trained or written."""


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every parameter's gradient off."""
    clone = copy.deepcopy(model)
    clone.eval()
    for parameter in clone.parameters():
        parameter.requires_grad_(False)
    return clone


@dataclass
class EvaluationContext:
    """What an evaluator sees of a finished run (see the module docstring)."""

    model: nn.Module
    record: dict
    device: torch.device
    generator: torch.Generator
    _predict: Callable[[nn.Module, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
    _datasets: dict[str, Sequence[Any]]  # split -> one Avalanche dataset per experience
    _initial_model: Callable[[], nn.Module]
    _reference_run: Callable[[Sequence[str], Optional[int]], ReferenceRun]
    n_classes: int = 0
    eval_batch_size: int = 1000

    def predict(
        self, inputs: torch.Tensor, model: Optional[nn.Module] = None, task_labels: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Logits of the strategy's prediction rule on ``model`` (default: the frozen final model)."""
        return self._predict(self.model if model is None else model, inputs, task_labels)

    def initial_model(self) -> nn.Module:
        return self._initial_model()

    def reference_run(self, sets: Sequence[str] = (), seed: Optional[int] = None) -> ReferenceRun:
        return self._reference_run(sets, seed)

    _cache: dict[tuple[str, int], Tensors] = field(default_factory=dict)

    @property
    def n_experiences(self) -> int:
        return len(self._datasets["test"])

    def _part(self, split: str, index: int) -> Tensors:
        key = (split, index)
        if key not in self._cache:
            tensors = gather(self._datasets[split][index].eval())
            if tensors is None:
                raise UserError(
                    "this evaluator reads whole splits as tensors; this scenario streams images one by one "
                    "(224-px CIFAR, ImageNet-R): choose a tensor-resident scenario"
                )
            self._cache[key] = tensors
        return self._cache[key]

    def tensors(
        self,
        split: str = "test",
        experiences: Optional[Sequence[int]] = None,
        classes: Optional[Sequence[int]] = None,
        fraction: Optional[float] = None,
    ) -> Tensors:
        """Rows of ``split`` (test, train or validation) as tensors on the CPU, concatenated in experience order:
        only ``experiences`` (indices) and ``classes`` when given, then the first ``fraction`` of what is left
        in a random order drawn from the evaluator's generator."""
        if split not in self._datasets:
            raise UserError(f"unknown data split {split!r}; choose one of {', '.join(sorted(self._datasets))}")
        count = len(self._datasets[split])
        if not count:
            raise UserError(
                f"this run has no {split} split (a validation split needs scenario.validation_fraction > 0)"
            )
        chosen = range(count) if experiences is None else experiences
        selected: list[Tensors] = []
        for index in chosen:
            if not 0 <= index < count:
                raise UserError(f"experience {index} is outside the {count} experiences of this run")
            selected.append(self._part(split, index))
        inputs = torch.cat([part[0] for part in selected])
        targets = torch.cat([part[1] for part in selected])
        task_labels = torch.cat([part[2] for part in selected])
        if classes is not None:
            keep = torch.isin(targets, torch.as_tensor(list(classes), dtype=targets.dtype))
            inputs, targets, task_labels = inputs[keep], targets[keep], task_labels[keep]
        if fraction is not None:
            if not 0.0 < fraction <= 1.0 or not math.isfinite(fraction):
                raise UserError(f"a data fraction must be in (0, 1], got {fraction!r}")
            order = torch.randperm(len(targets), generator=self.generator)[: max(1, round(fraction * len(targets)))]
            inputs, targets, task_labels = inputs[order], targets[order], task_labels[order]
        return inputs, targets, task_labels

    @torch.no_grad()
    def logits(self, inputs: torch.Tensor, model: Optional[nn.Module] = None) -> torch.Tensor:
        """:meth:`predict` over ``inputs`` in evaluation mini-batches, on the device, returned on the CPU."""
        outputs = [
            self.predict(inputs[start : start + self.eval_batch_size].to(self.device), model).float().cpu()
            for start in range(0, len(inputs), self.eval_batch_size)
        ]
        return torch.cat(outputs) if outputs else torch.empty(0, self.n_classes)


class Measurement(Protocol):
    """What the phase runs: an evaluator, or a test-time attack (:class:`cl_bench.attack.TestTimeAttack`)."""

    def evaluate(self, context: "EvaluationContext") -> Any: ...


def run_evaluator(evaluator: Measurement, context: EvaluationContext) -> tuple[EvaluationResult, float]:
    """(result, wall seconds) of one evaluator or test-time attack; its result is checked for the shape the
    artefact needs."""
    started = time.perf_counter()
    result = evaluator.evaluate(context)
    elapsed = time.perf_counter() - started
    if not isinstance(result, EvaluationResult):
        raise TypeError(f"{type(evaluator).__name__}.evaluate must return an EvaluationResult, got {result!r}")
    return result, elapsed
