"""Dropout-based Rashomon set exploration (Hsu, Li, Hu, Chen; ICLR 2024, arXiv 2402.00728).

Official code: github.com/jpmorganchase/dropout-rashomon-set-exploration (``utils/dropout.py``,
``utils/compute_metrics.py``); spec ``rashomon_dropout.md``. Instead of retraining many models, one trained
model h* is perturbed by dropout at inference time, and every full pass over the evaluation set counts as
one model of the (approximate) Rashomon set.

* Instrumenting (spec section 3.1): a forward hook on every ``nn.Linear`` and ``nn.Conv2d``, the logit layer
  included, replaces the layer's output, also in ``eval()`` mode (BatchNorm keeps its running statistics):

  - Bernoulli, rate p: ``out <- out * b / (1 - p)``, ``b ~ Bernoulli(1 - p)`` elementwise (inverted dropout,
    ``F.dropout(training=True)`` semantics); p = 1 gives zeros (not 0/0).
  - Gaussian, rate sigma: ``out <- out * (1 + sigma * xi)``, ``xi ~ N(0, 1)``. The rate is the standard deviation,
    as in the official code; the paper parameterises Gaussian dropout by its variance alpha, so
    ``sigma = sqrt(alpha)`` (:func:`gaussian_rate_from_variance`). Grids must be converted before comparing.
  - Rate 0 leaves the output untouched (bit for bit).

* Drawing models (section 3.2): for each rate of the grid, ``models_per_rate`` passes over the evaluation set;
  each records its softmax probabilities, mean cross-entropy, accuracy and time.
* Filtering (section 3.3) and the metrics live in :mod:`evaluators.multiplicity`: pooled over all rates, a
  model is in R(eps) when ``L(h) <= L(h*) + eps``; an empty set gives NaN.

Deviations from the official code:

* ``mask_scope``: the official hooks draw fresh noise for every activation of every sample and every batch
  (``per_sample``, kept to reproduce the official numbers), so each test point sees a different network and
  a "model's" loss averages over random networks. ``per_model`` draws one mask per layer and model, with the
  layer's output shape minus the batch dimension, broadcast over the batch and reused across batches: every
  sample sees the same network.
* Membership uses ``<=``, not the official strict ``<`` (see :mod:`evaluators.multiplicity`).
* All noise comes from an explicit ``torch.Generator``, never the global RNG; it is drawn on the generator's
  device and moved to the layer's, so a CPU generator gives the same draws on every device.
* One rate for all instrumented layers (the official code sets the same attribute on every module).
* Layers whose weights are used functionally, not through their ``forward`` (``nn.MultiheadAttention``'s
  ``out_proj``), are not perturbed; a layer called several times in one pass reuses its per-model mask.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bench.errors import UserError
from cl_bench.evaluator import EvaluationContext, EvaluationResult, Evaluator
from cl_bench.params import ComponentConfig, param
from cl_bench.registry import EVALUATORS
from cl_bench.traits import EvaluatorTraits
from evaluators import multiplicity

DROPOUT_KINDS = ("bernoulli", "gaussian")
MASK_SCOPES = ("per_sample", "per_model")
INSTRUMENTED_LAYERS = (nn.Linear, nn.Conv2d)


def gaussian_rate_from_variance(variance: float) -> float:
    """The hooks' Gaussian rate (standard deviation sigma) for the paper's variance parameter alpha."""
    if variance < 0:
        raise ValueError(f"Gaussian dropout variance must be >= 0, got {variance}")
    return math.sqrt(variance)


def dropout_multiplier(
    shape: Sequence[int], rate: float, dropout: str, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Multiplicative noise of the given shape, on the generator's device.

    Bernoulli: ``b / (1 - p)`` with ``b ~ Bernoulli(1 - p)`` (all zeros for p = 1); Gaussian: ``1 + sigma * xi``.
    """
    size = tuple(shape)
    if dropout == "bernoulli":
        if rate >= 1.0:
            return torch.zeros(size, dtype=dtype, device=generator.device)
        keep = torch.rand(size, generator=generator, device=generator.device) >= rate
        return keep.to(dtype) / (1.0 - rate)
    if dropout == "gaussian":
        noise = torch.randn(size, generator=generator, device=generator.device)
        return (1.0 + rate * noise).to(dtype)
    raise ValueError(f"dropout must be one of {DROPOUT_KINDS}, got {dropout!r}")


class DropoutHooks:
    """Forward hooks perturbing the output of every ``nn.Linear`` / ``nn.Conv2d`` of ``model``.

    Use as a context manager (``with DropoutHooks(...) as hooks:``) or with :meth:`attach` / :meth:`remove`;
    removing the hooks restores the model exactly. Set :attr:`rate` (0 until set) and call :meth:`new_model`
    before each drawn model; with ``mask_scope="per_model"`` it discards the cached masks so the next pass
    draws fresh ones.
    """

    def __init__(self, model: nn.Module, dropout: str, mask_scope: str, generator: torch.Generator) -> None:
        if dropout not in DROPOUT_KINDS:
            raise ValueError(f"dropout must be one of {DROPOUT_KINDS}, got {dropout!r}")
        if mask_scope not in MASK_SCOPES:
            raise ValueError(f"mask_scope must be one of {MASK_SCOPES}, got {mask_scope!r}")
        self.model, self.dropout, self.mask_scope, self.generator = model, dropout, mask_scope, generator
        self.layers = [module for module in model.modules() if isinstance(module, INSTRUMENTED_LAYERS)]
        self._rate = 0.0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._masks: dict[int, Tensor] = {}

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        value = float(value)
        if not value >= 0.0 or (self.dropout == "bernoulli" and value > 1.0) or math.isinf(value):
            raise ValueError(f"{self.dropout} dropout rate out of range: {value}")
        self._rate = value
        self._masks.clear()

    def new_model(self) -> None:
        """Start a new drawn model: per-model masks are drawn afresh at the next pass."""
        self._masks.clear()

    def attach(self) -> "DropoutHooks":
        if not self._handles:
            self._handles = [layer.register_forward_hook(self._perturb) for layer in self.layers]
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._masks.clear()

    def __enter__(self) -> "DropoutHooks":
        return self.attach()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def _perturb(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Optional[Tensor]:
        if self._rate == 0.0:
            return None  # the hook leaves the output untouched
        if self.mask_scope == "per_sample":
            multiplier = dropout_multiplier(output.shape, self._rate, self.dropout, self.generator, output.dtype)
            return output * multiplier.to(output.device)
        mask = self._masks.get(id(module))
        if mask is None:
            mask = dropout_multiplier(output.shape[1:], self._rate, self.dropout, self.generator, output.dtype)
            mask = self._masks[id(module)] = mask.to(output.device)
        elif mask.shape != output.shape[1:]:
            raise ValueError(
                f"per_model dropout needs a fixed output shape per layer: {type(module).__name__} gave "
                f"{tuple(output.shape[1:])} after {tuple(mask.shape)}"
            )
        return output * mask.unsqueeze(0)


@dataclass
class DrawnModels:
    """Outputs of the dropout models, model-major (rate by rate, ``models_per_rate`` each)."""

    probabilities: Tensor  # (n_models, n, K) float32 softmax
    losses: Tensor  # (n_models,) float64 mean cross-entropy over the evaluation set (or draw_models' loss_rows)
    accuracies: Tensor  # (n_models,) float64
    rates: Tensor  # (n_models,) float64, the dropout rate of each model
    seconds: Tensor  # (n_models,) float64 wall time of each model's pass


@dataclass
class ModelPass:
    """One pass of a (possibly perturbed) model over the evaluation set."""

    probabilities: Tensor  # (n, K) float32 on the CPU
    loss: float
    accuracy: float
    seconds: float


def evaluation_pass(
    predict: Callable[..., Tensor],
    inputs: Tensor,
    targets: Tensor,
    batch_size: int,
    task_labels: Optional[Tensor] = None,
) -> ModelPass:
    """Softmax, mean cross-entropy and accuracy of ``predict`` over ``inputs`` in batches of ``batch_size``.

    ``h*``'s reference pass and every drawn model use this, so a rate-0 model reproduces L(h*) exactly.
    Batches are handed to ``predict`` as they are (on the device of ``inputs``), with their task labels as a
    second argument when ``task_labels`` is given (multi-head models).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    chunks: list[Tensor] = []
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for begin in range(0, len(inputs), batch_size):
            batch = inputs[begin : begin + batch_size]
            logits = predict(batch) if task_labels is None else predict(batch, task_labels[begin : begin + batch_size])
            labels = targets[begin : begin + batch_size].to(logits.device).long()
            total_loss += float(F.cross_entropy(logits.double(), labels, reduction="sum"))
            correct += int((logits.argmax(dim=-1) == labels).sum())
            chunks.append(torch.softmax(logits.float(), dim=-1).cpu())
    n_samples = max(1, len(inputs))
    return ModelPass(torch.cat(chunks), total_loss / n_samples, correct / n_samples, time.perf_counter() - start)


def draw_models(
    predict: Callable[..., Tensor],
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    rates: Sequence[float],
    models_per_rate: int,
    dropout: str,
    mask_scope: str,
    generator: torch.Generator,
    batch_size: int,
    task_labels: Optional[Tensor] = None,
    loss_rows: Optional[tuple[Tensor, Tensor, Optional[Tensor]]] = None,
) -> DrawnModels:
    """Draw ``models_per_rate`` dropout models of ``model`` at every rate; ``predict(inputs[, task_labels]) ->
    logits`` is the strategy's prediction rule, which calls the (hooked) model (see :func:`evaluation_pass`). The
    model runs in ``eval()`` mode (restored afterwards) without gradients. With ``loss_rows`` (inputs, targets,
    task labels of the split that decides membership), each model's loss is its mean cross-entropy there, from a
    second pass that sees the same per-model masks; probabilities, accuracies and times stay those on ``inputs``."""
    if models_per_rate < 1:
        raise ValueError(f"models_per_rate must be >= 1, got {models_per_rate}")
    modes = {module: module.training for module in model.modules()}
    model.eval()
    passes: list[ModelPass] = []
    losses: list[float] = []
    model_rates: list[float] = []
    try:
        with DropoutHooks(model, dropout, mask_scope, generator) as hooks:
            for rate in rates:
                hooks.rate = rate
                for _ in range(models_per_rate):
                    hooks.new_model()
                    drawn = evaluation_pass(predict, inputs, targets, batch_size, task_labels)
                    if loss_rows is not None:
                        losses.append(evaluation_pass(predict, *loss_rows[:2], batch_size, loss_rows[2]).loss)
                    passes.append(drawn)
                    model_rates.append(float(rate))
    finally:
        for module, training in modes.items():
            module.training = training
    if not passes:
        raise ValueError("draw_models needs at least one rate")
    return DrawnModels(
        probabilities=torch.stack([drawn.probabilities for drawn in passes]),
        losses=torch.tensor(losses if loss_rows is not None else [drawn.loss for drawn in passes], dtype=torch.float64),
        accuracies=torch.tensor([drawn.accuracy for drawn in passes], dtype=torch.float64),
        rates=torch.tensor(model_rates, dtype=torch.float64),
        seconds=torch.tensor([drawn.seconds for drawn in passes], dtype=torch.float64),
    )


# ----------------------------------------------------------------------------- the evaluator

# the official UCI grids (spec section 3.2): 21 rates per dropout kind, 11 tolerances in [0, 0.04]
UCI_RATES = {
    "bernoulli": [round(0.01 * step, 10) for step in range(21)],
    "gaussian": [round(0.03 * step, 10) for step in range(21)],
}
UCI_EPSILONS = [round(0.004 * step, 10) for step in range(11)]
LOSS_SPLITS = ("test", "validation", "train")
ROW_COLUMNS = (
    "n_admitted",
    "ambiguity",
    "discrepancy",
    "viable_prediction_range_median",
    "score_variance_q99",
    "rashomon_capacity_median",
    "disagreement_q90",
    "mean_accuracy",
)


@dataclass
class RashomonDropoutConfig(ComponentConfig):
    dropout: str = param(
        "bernoulli",
        "bernoulli (rate p) or gaussian (rate = std sigma; the paper's variance alpha is sigma^2)",
        choices=DROPOUT_KINDS,
    )
    rates: list[float] = param(
        [],
        "dropout rates explored (models pooled over all of them); empty: the paper's "
        "UCI grid, 21 rates in [0, 0.2] (bernoulli) or [0, 0.6] (gaussian)",
        low=0.0,
    )
    models_per_rate: int = param(100, "dropout models drawn per rate (the paper's UCI setting: 100)", low=1)
    epsilons: list[float] = param(
        [],
        "Rashomon tolerances: a model is admitted when its loss <= L(h*) + epsilon; "
        "empty: the paper's UCI grid, 11 values in [0, 0.04]",
        low=0.0,
    )
    mask_scope: str = param(
        "per_model",
        "per_model: one mask per model, every sample sees the same network "
        "(suite default); per_sample: fresh noise per sample and batch (the official code)",
        choices=MASK_SCOPES,
    )
    loss_split: str = param(
        "test",
        "split whose loss decides Rashomon membership (the official code: test; "
        "validation needs scenario.validation_fraction > 0)",
        choices=LOSS_SPLITS,
    )
    max_samples: int = param(0, "evaluate on at most this many test rows (a seeded random subset); 0: all", low=0)
    per_experience: bool = param(
        False, "also report every test experience's rows on their own (membership stays decided on the whole split)"
    )
    retraining_seeds: int = param(
        0,
        "re-training baseline: models per epoch count, each a training run of this "
        "config with another seed (found or run into references/); 0: off",
        low=0,
    )
    retraining_epochs: list[int] = param(
        [],
        "epoch counts of the re-trained models (the paper's UCI setting: 20, 25, ..., 55); empty: the run's own",
        low=1,
    )
    ensemble_sizes: list[int] = param(
        [],
        "dropout-ensemble mitigation: sizes E of the ensembles (averaged softmax of E dropout models); empty: off",
        low=1,
    )
    ensembles_per_size: int = param(100, "ensembles built per size (the official code: 100)", low=1)
    ensemble_pool: int = param(1000, "dropout models drawn for the ensembles (the official code: 10,000)", low=1)
    ensemble_rate: Optional[float] = param(
        None, "rate of the ensembles' dropout models; default: the largest rate explored", low=0.0
    )

    def validate(self) -> None:
        if self.dropout == "bernoulli" and any(rate > 1.0 for rate in self.grid() + [self.ensemble_rate or 0.0]):
            raise UserError("evaluator.rates: a Bernoulli dropout rate must lie in [0, 1]")

    def grid(self) -> list[float]:
        return list(self.rates) or list(UCI_RATES[self.dropout])

    def tolerances(self) -> list[float]:
        return sorted(self.epsilons or UCI_EPSILONS)


@dataclass
class EvaluationSet:
    inputs: Tensor
    targets: Tensor
    task_labels: Tensor
    experience: Tensor  # the test experience of each row


class RashomonDropout(Evaluator):
    """Dropout exploration of the Rashomon set of a trained model, its multiplicity per epsilon, and baselines."""

    config: RashomonDropoutConfig

    def check(self, scenario: Any, model: nn.Module) -> None:
        if self.config.loss_split == "validation" and not scenario.validation:
            raise UserError(
                "evaluator.loss_split=validation needs a validation split; add --set scenario.validation_fraction=0.1"
            )

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        config, started = self.config, time.perf_counter()
        test = self._test_set(context)
        loss_set = test if config.loss_split == "test" else self._split(context, config.loss_split)
        reference = self._pass(context, context.model, test)
        reference_loss = reference.loss if loss_set is test else self._pass(context, context.model, loss_set).loss
        drawn = self._draw(context, test, loss_set, config.grid(), config.models_per_rate)
        rows = self._rows("dropout", drawn.probabilities, drawn.losses, reference_loss, reference.probabilities, test)
        seconds = float(drawn.seconds.mean())
        metrics: dict[str, float] = {
            "reference_loss": reference_loss,
            "reference_accuracy": reference.accuracy,
            "models_drawn": float(len(drawn.losses)),
            "seconds_per_model": seconds,
            "retraining_seconds_per_model": math.nan,  # undefined without the re-training baseline
            "speedup": math.nan,
        }
        if config.retraining_seeds:
            retrained, retrained_losses, retrain_seconds = self._retrain(context, test, loss_set)
            rows += self._rows("retraining", retrained, retrained_losses, reference_loss, reference.probabilities, test)
            metrics["retraining_seconds_per_model"] = retrain_seconds
            metrics["speedup"] = retrain_seconds / max(seconds, 1e-12)
        if config.ensemble_sizes:
            rows += self._ensembles(context, test, reference.probabilities)
        details = {
            "loss_split": config.loss_split,
            "evaluated_rows": len(test.targets),
            "rows_per_experience": torch.bincount(test.experience, minlength=context.n_experiences).tolist(),
            "rates": drawn.rates.tolist(),
            "losses": drawn.losses.tolist(),
            "wall_time_s": time.perf_counter() - started,
        }
        return EvaluationResult(metrics, rows, details)

    # -- data

    def _test_set(self, context: EvaluationContext) -> EvaluationSet:
        parts = [context.tensors("test", experiences=[index]) for index in range(context.n_experiences)]
        experience = torch.cat([torch.full((len(part[1]),), index) for index, part in enumerate(parts)])
        inputs, targets, task_labels = (torch.cat([part[i] for part in parts]) for i in range(3))
        full = EvaluationSet(inputs, targets, task_labels, experience)
        return self._capped(context, full)

    def _split(self, context: EvaluationContext, split: str) -> EvaluationSet:
        inputs, targets, task_labels = context.tensors(split)
        return self._capped(context, EvaluationSet(inputs, targets, task_labels, torch.zeros_like(targets)))

    def _capped(self, context: EvaluationContext, rows: EvaluationSet) -> EvaluationSet:
        if not self.config.max_samples or len(rows.targets) <= self.config.max_samples:
            return rows
        keep = torch.randperm(len(rows.targets), generator=context.generator)[: self.config.max_samples].sort().values
        return EvaluationSet(rows.inputs[keep], rows.targets[keep], rows.task_labels[keep], rows.experience[keep])

    # -- models

    def _pass(self, context: EvaluationContext, model: nn.Module, rows: EvaluationSet) -> ModelPass:
        def predict(inputs: Tensor, task_labels: Tensor) -> Tensor:
            return context.predict(inputs, model, task_labels)

        return evaluation_pass(predict, rows.inputs, rows.targets, context.eval_batch_size, rows.task_labels)

    def _draw(
        self,
        context: EvaluationContext,
        test: EvaluationSet,
        loss_set: EvaluationSet,
        rates: Sequence[float],
        count: int,
    ) -> DrawnModels:
        """``count`` dropout models per rate of the final model: probabilities on the test rows, losses on the
        loss split (with per_model masks a model's two passes see the same network)."""

        def predict(inputs: Tensor, task_labels: Tensor) -> Tensor:
            return context.predict(inputs, context.model, task_labels)

        return draw_models(
            predict,
            context.model,
            test.inputs,
            test.targets,
            rates,
            count,
            self.config.dropout,
            self.config.mask_scope,
            context.generator,
            context.eval_batch_size,
            task_labels=test.task_labels,
            loss_rows=None if loss_set is test else (loss_set.inputs, loss_set.targets, loss_set.task_labels),
        )

    def _retrain(self, context: EvaluationContext, test: EvaluationSet, loss_set: EvaluationSet):
        """The re-training baseline: the run's config trained again with other seeds (and epoch counts)."""
        epochs = self.config.retraining_epochs or [int(context.record["config"]["train"]["epochs"])]
        probabilities, losses, seconds = [], [], []
        for epoch_count in epochs:
            for offset in range(1, self.config.retraining_seeds + 1):
                reference = context.reference_run([f"train.epochs={epoch_count}"], seed=context.record["seed"] + offset)
                drawn = self._pass(context, reference.model, test)
                probabilities.append(drawn.probabilities)
                losses.append(drawn.loss if loss_set is test else self._pass(context, reference.model, loss_set).loss)
                seconds.append(float(reference.record["timing"]["train_s"]))
        return torch.stack(probabilities), torch.tensor(losses, dtype=torch.float64), sum(seconds) / len(seconds)

    def _ensembles(self, context: EvaluationContext, test: EvaluationSet, reference: Tensor) -> list[dict]:
        """Dropout-ensemble mitigation: per size E, ensembles averaging the softmax of E random dropout models."""
        rate = self.config.ensemble_rate if self.config.ensemble_rate is not None else max(self.config.grid())
        pool = self._draw(context, test, test, [rate], self.config.ensemble_pool).probabilities
        rows = []
        for size in self.config.ensemble_sizes:
            members = torch.stack(
                [
                    torch.randperm(len(pool), generator=context.generator)[:size]
                    for _ in range(self.config.ensembles_per_size)
                ]
            )
            ensembles = pool[members].mean(dim=1)  # (ensembles, n, K)
            found = multiplicity.multiplicity_metrics(ensembles, test.targets, reference)
            row = self._row(f"ensemble{size}", "all", None, found)
            row["mean_accuracy"] = float((ensembles.argmax(-1) == test.targets).double().mean())
            rows.append(row)
        return rows

    # -- metrics

    def _rows(
        self,
        explorer: str,
        probabilities: Tensor,
        losses: Tensor,
        reference_loss: float,
        reference: Tensor,
        test: EvaluationSet,
    ) -> list[dict]:
        """One row per epsilon (and per test experience with ``per_experience``) of the admitted models."""
        rows = []
        admitted = multiplicity.rashomon_mask(losses, reference_loss, self.config.tolerances())
        for epsilon, members in zip(self.config.tolerances(), admitted):
            chosen = probabilities[members]
            found = multiplicity.multiplicity_metrics(chosen, test.targets, reference)
            row = self._row(explorer, "all", epsilon, found)
            row["mean_accuracy"] = float((chosen.argmax(-1) == test.targets).double().mean()) if len(chosen) else None
            rows.append(row)
            if not self.config.per_experience:
                continue
            predictions, reference_predictions = chosen.argmax(-1), reference.argmax(-1)
            for index in sorted(set(test.experience.tolist())):
                mask = test.experience == index
                part = {name: values[mask] for name, values in found["per_sample"].items()}
                found_part = {
                    "n_models": found["n_models"],
                    "ambiguity": multiplicity.ambiguity(predictions[:, mask], reference_predictions[mask]),
                    "discrepancy": multiplicity.discrepancy(predictions[:, mask], reference_predictions[mask]),
                    **multiplicity.summarise(part),
                }
                row = self._row(explorer, index, epsilon, found_part)
                hits = (predictions[:, mask] == test.targets[mask]).double().mean() if len(chosen) else None
                row["mean_accuracy"] = None if hits is None else float(hits)
                rows.append(row)
        return rows

    @staticmethod
    def _row(explorer: str, experience: object, epsilon: Optional[float], found: dict) -> dict:
        row = {"explorer": explorer, "experience": experience, "epsilon": epsilon}
        row["n_admitted"] = int(found["n_models"])
        row.update({name: found.get(name) for name in ROW_COLUMNS[1:-1]})
        return row


SMOKE = (
    "scenario=split_digits",
    "train.epochs=1",
    "model.widths=[16]",
    "evaluator.models_per_rate=2",
    "evaluator.rates=[0.0,0.1]",
    "evaluator.epsilons=[0.0,0.05]",
    "evaluator.ensemble_sizes=[2]",
    "evaluator.ensemble_pool=4",
)


@EVALUATORS.register(
    "rashomon_dropout",
    config=RashomonDropoutConfig,
    traits=EvaluatorTraits(
        columns=(
            "reference_accuracy",
            "reference_loss",
            "models_drawn",
            "seconds_per_model",
            "retraining_seconds_per_model",
            "speedup",
        ),
        row_keys=("explorer", "experience", "epsilon"),
        row_columns=ROW_COLUMNS,
        headline=("n_admitted", "ambiguity", "discrepancy", "rashomon_capacity_median", "mean_accuracy"),
        smoke=SMOKE,
    ),
)
def build_rashomon_dropout(config: RashomonDropoutConfig) -> RashomonDropout:
    """Predictive multiplicity by dropout exploration of the Rashomon set (Hsu et al., ICLR 2024)."""
    return RashomonDropout(config)
