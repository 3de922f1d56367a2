"""Fast-NTK unlearning (Li, Hsu, Chen, Marculescu; CVPR 2024 Workshops, arXiv 2312.14923), the full-model NTK
scrubbing it builds on (Golatkar, Achille, Soatto; ECCV 2020), the protocol's cheap baselines, and retraining.

A trained model is told to forget D_f (``forget``: ``class:K``, ``random:FRACTION``, ``experience:K``) of its
training data D = D_f U D_r. Every method is measured with the standard protocol (:mod:`evaluators.
unlearning_protocol`: UA, MIA-Efficacy, RA, TA, the gaps to the retrained model and their mean, Avg. Gap) next to
the original model and the **retrained reference**: the same run config with ``scenario.exclude=<forget>``, so
the same recipe (same PEFT subset, same seed, same strategy) on D_r only. It is a training run of its own, found
by its run id or trained into ``references/``; its training time is the denominator of every ``time_ratio``.

NTK scrubbing (:mod:`evaluators.ntk_scrub`) on a parameter subset theta (``subset``; ``auto``: the BatchNorm
affine parameters of a CNN or the prompt tokens of a ViT, plus the head unless ``head=false``), linearised at
theta_c (``centre``: theta_D, the trained values as in Golatkar's code, or theta_0, the values before training):

    theta_S = theta_c + (J_S^T J_S + lam_S I)^-1 J_S^T e_S   (primal; dual: J_S^T (J_S J_S^T + lam_S I)^-1 e_S)
    Delta = theta_{D_r} - theta_D,   theta_u = theta_D + s Delta

with e = one-hot(y) - softmax (``loss=ce``, the official Gauss-Newton surrogate) or 2 one-hot(y) - 1 - f
(``loss=mse``, Golatkar's targets). ``fast_ntk`` uses the subset, ``full_ntk`` every parameter (the reference
Fast-NTK is measured against; skipped, with the memory it would need, when it exceeds ``max_memory_gb``). Solves
are float64 (``solver=auto``: primal when p <= n K, else dual) and their condition numbers are recorded.

Rows: one per method, ridge term (``lam`` is a list; the Jacobians are computed once and every lam is solved)
and held-out split (``splits``: test, and validation to select lam and the baselines' settings on).

Suite choices and deviations: one absolute lam for both solves (``lambda_scaling=golatkar`` gives the official
lam n and lam n_r); s = 1 (``scale=golatkar``: the notebook's predicted scale, clipped to [0, 5]); BN
recalibration on D_r (``recalibrate_bn``) adds a ``<method>+bn`` row per NTK method, re-estimated from reset
statistics as the cumulative average over one pass in training mode (the notebook runs 10 passes with
momentum); ``ntk_retain`` caps the D_r rows the solves see (both solves see the same rows, so a tiny forget set
still gives Delta = 0).
The baselines (:mod:`evaluators.unlearning_baselines`) update the same subset as ``fast_ntk``, so every method
edits what the run's PEFT recipe trained; with ``subset=all`` they fine-tune everything.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from cl_bench import peft
from cl_bench.errors import UserError
from cl_bench.evaluator import EvaluationContext, EvaluationResult, Evaluator
from cl_bench.forget_sets import ForgetSpec, forget_generator
from cl_bench.params import ComponentConfig, param
from cl_bench.registry import EVALUATORS
from cl_bench.scenario import training_rows
from cl_bench.traits import EvaluatorTraits
from evaluators import ntk_scrub, unlearning_protocol
from evaluators.unlearning_baselines import BASELINES, random_label_set, sgd_epochs

NTK_METHODS = ("fast_ntk", "full_ntk")
METHODS = NTK_METHODS + BASELINES
ROW_COLUMNS = (
    "ua",
    "fa",
    "ra",
    "ta",
    "mia_efficacy",
    "loss_mia",
    "test_forgotten",
    "test_kept",
    "gap_ua",
    "gap_mia_efficacy",
    "gap_ra",
    "gap_ta",
    "avg_gap",
    "seconds",
    "time_ratio",
    "weight_distance",
    "output_distance_forget",
)


@dataclass
class FastNTKConfig(ComponentConfig):
    forget: str = param("class:0", "what to forget: class:K, random:FRACTION (of all training rows) or experience:K")
    methods: list[str] = param(
        ["fast_ntk", "finetune", "grad_ascent", "random_labels"],
        f"unlearning methods measured against retraining: {', '.join(METHODS)}",
    )
    subset: str = param(
        "auto",
        "parameters the NTK linearises and the baselines update: auto (BatchNorm affine, else prompt tokens; "
        "plus the head unless head=false), or all, head, bn, bn+head, prompts, prompts+head",
        choices=("auto",) + peft.SELECTORS,
    )
    head: bool = param(True, "subset=auto includes the classifier head (a fine-tuned head holds D_f too)")
    lam: list[float] = param(
        [1.0],
        "ridge terms lambda of the NTK solves (absolute; one row per value, the Jacobians computed once)",
        low=0.0,
    )
    lambda_scaling: str = param(
        "absolute",
        "absolute: one lam; golatkar: lam n for D and lam n_r for D_r (official)",
        choices=("absolute", "golatkar"),
    )
    scale: str = param(
        "one", "step scale s: one, or golatkar (the notebook's predicted scale)", choices=("one", "golatkar")
    )
    centre: str = param(
        "trained",
        "linearisation centre: trained (theta_D, Golatkar's code) or initial (theta_0, the paper)",
        choices=("trained", "initial"),
    )
    loss: str = param(
        "ce", "residual: ce (one-hot - softmax) or mse (2 one-hot - 1 - logits)", choices=ntk_scrub.LOSSES
    )
    solver: str = param("auto", "auto (primal when p <= n K), primal or dual", choices=("auto", "primal", "dual"))
    recalibrate_bn: bool = param(False, "also report each NTK method after recomputing BN statistics on D_r")
    ntk_retain: int = param(0, "D_r rows the NTK solves see (a seeded draw); 0: all", low=0)
    jacobian_batch: int = param(32, "samples per per-sample-Jacobian batch", low=1)
    max_memory_gb: float = param(4.0, "an NTK method that would need more memory than this is skipped", low=0.0)
    finetune_epochs: int = param(2, "fine-tune baseline: epochs on D_r", low=1)
    finetune_lr: float = param(0.01, "fine-tune baseline: SGD learning rate", low=0.0, low_open=True)
    ascent_epochs: int = param(5, "gradient-ascent baseline: epochs on D_f (OPTML: 5)", low=1)
    ascent_lr: float = param(1e-4, "gradient-ascent baseline: SGD learning rate (OPTML: 1e-4)", low=0.0, low_open=True)
    random_labels_epochs: int = param(1, "random-labels baseline: epochs on D_f (wrong labels) + D_r", low=1)
    random_labels_lr: float = param(0.01, "random-labels baseline: SGD learning rate", low=0.0, low_open=True)
    splits: list[str] = param(
        ["test"],
        "held-out splits TA, the MIA's non-members and the per-experience accuracies are measured on: test, and "
        "validation (needs scenario.validation_fraction > 0; select lam and the baselines' settings there)",
    )
    mia_samples: int = param(2000, "at most this many test (and member) rows train the MIA classifiers", low=10)

    def validate(self) -> None:
        ForgetSpec.parse(self.forget)
        unknown = [method for method in self.methods if method not in METHODS]
        if unknown or not self.methods:
            raise UserError(f"evaluator.methods: {unknown or 'none'}; choose among {', '.join(METHODS)}")
        if not self.splits or set(self.splits) - {"test", "validation"} or len(set(self.splits)) < len(self.splits):
            raise UserError(f"evaluator.splits: {self.splits}; give test and/or validation, each once")
        if not self.lam:
            raise UserError("evaluator.lam: give at least one ridge term, e.g. [1.0]")


@dataclass
class HeldOut:
    """A held-out split the unlearned models are measured on (TA, MIA non-members, per-experience accuracy)."""

    inputs: Tensor
    targets: Tensor
    experience: Tensor  # the experience of each row
    forgotten: Tensor  # mask of the rows of the forgotten class / experience (none for random forgetting)


@dataclass
class UnlearningData:
    forget: tuple[Tensor, Tensor]
    retain: tuple[Tensor, Tensor]
    held_out: dict[str, HeldOut]  # split name -> rows


@dataclass
class Unlearned:
    method: str  # e.g. fast_ntk, fast_ntk+bn, finetune
    lam: Optional[float]  # the ridge term of an NTK method
    model: nn.Module
    seconds: float


class TooLarge(Exception):
    pass


class FastNTK(Evaluator):
    """Unlearning of a forget set by NTK scrubbing and baselines, measured against retraining."""

    config: FastNTKConfig

    def check(self, scenario: Any, model: nn.Module) -> None:
        if scenario.online is not None or scenario.task_labels:
            raise UserError("evaluator fast_ntk needs an offline single-head stream (no task labels)")
        if "validation" in self.config.splits and not scenario.validation:
            raise UserError(
                "evaluator.splits=[validation] needs a validation split; add --set scenario.validation_fraction=0.1"
            )
        targets, experiences = training_rows(scenario)
        ForgetSpec.parse(self.config.forget).mask(targets, experiences, forget_generator(0))
        if set(self.config.methods) - {"full_ntk"}:
            self.subset(model)
        if self.config.recalibrate_bn and not peft.bn_affine_names(model):
            raise UserError("evaluator.recalibrate_bn needs a model with BatchNorm (--set model.batch_norm=true)")

    def subset(self, model: nn.Module) -> list[str]:
        selector = self.config.subset
        if selector == "auto":
            if peft.bn_affine_names(model):
                selector = "bn"
            elif peft.prompt_names(model):
                selector = "prompts"
            else:
                raise UserError(
                    "evaluator.subset=auto: the model has neither BatchNorm nor prompt tokens; set "
                    "evaluator.subset=all (or head), or use --set model.batch_norm=true / model.prompts=N"
                )
            selector += "+head" if self.config.head else ""
        return peft.select(model, selector)

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        config = self.config
        data = self.data(context)
        reference = context.reference_run([f"scenario.exclude={config.forget}"])
        retrain_s = float(reference.record["timing"]["train_s"])
        names = self.subset(context.model) if set(config.methods) - {"full_ntk"} else []
        distance_names = names or [name for name, _ in context.model.named_parameters()]
        details: dict[str, Any] = {
            "forget": config.forget,
            "subset": names,
            "retrain_run": reference.record["run_id"],
            "mia": "mia_efficacy: % of D_f an SVC on true-label confidence calls non-member (higher = more "
            "forgotten); loss_mia: accuracy of a loss-threshold attack telling D_f from held-out rows (0.5 = none)",
            "skipped": {},
            "methods": {},
            "accuracy_per_experience": {},
        }
        unlearned = [Unlearned("original", None, context.model, math.nan)]
        for method in config.methods:
            try:
                models, diagnostics = self.unlearn(method, context, names, data)
            except TooLarge as error:
                details["skipped"][method] = str(error)
                continue
            unlearned += models
            details["methods"][method] = diagnostics
        rows = []
        for split, held_out in data.held_out.items():
            retrained = self.measure(context, reference.model, data, held_out)
            for entry in [Unlearned("retrain", None, reference.model, retrain_s)] + unlearned:
                found = retrained if entry.method == "retrain" else self.measure(context, entry.model, data, held_out)
                row = {"method": entry.method, "lam": entry.lam, "split": split}
                row.update({key: value for key, value in found.items() if key != "per_experience"})
                row.update(unlearning_protocol.gaps(found, retrained))
                row["seconds"] = entry.seconds
                row["time_ratio"] = entry.seconds / retrain_s if retrain_s > 0 else math.nan
                row["weight_distance"] = weight_distance(entry.model, reference.model, distance_names)
                row["output_distance_forget"] = output_distance(context, entry.model, reference.model, data.forget[0])
                details["accuracy_per_experience"][f"{split}/{entry.method}/{entry.lam}"] = found["per_experience"]
                rows.append(row)
        metrics = {
            "n_forget": float(len(data.forget[1])),
            "n_retain": float(len(data.retain[1])),
            "subset_size": float(ntk_scrub.subset_size(context.model, names)),
            "retrain_s": retrain_s,
        }
        return EvaluationResult(metrics, rows, details)

    # -- data and metrics

    def data(self, context: EvaluationContext) -> UnlearningData:
        spec = ForgetSpec.parse(self.config.forget)
        inputs, targets, experiences = split_rows(context, "train")
        mask = spec.mask(targets, experiences, forget_generator(int(context.record["seed"])))
        held_out = {}
        for split in self.config.splits:
            split_inputs, split_targets, experience = split_rows(context, split)
            forgotten = spec.members(split_targets, experience)
            if forgotten is None:
                forgotten = torch.zeros(len(split_targets), dtype=torch.bool)
            held_out[split] = HeldOut(split_inputs, split_targets, experience, forgotten)
        return UnlearningData((inputs[mask], targets[mask]), (inputs[~mask], targets[~mask]), held_out)

    def measure(
        self, context: EvaluationContext, model: nn.Module, data: UnlearningData, held_out: HeldOut
    ) -> dict[str, Any]:
        forget, retain = ((context.logits(part[0], model), part[1]) for part in (data.forget, data.retain))
        test = (context.logits(held_out.inputs, model), held_out.targets)
        cap = self.config.mia_samples
        pick = torch.randperm(len(test[1]), generator=torch.Generator().manual_seed(0))[:cap]
        found: dict[str, Any] = unlearning_protocol.protocol_metrics(
            forget, (retain[0][:cap], retain[1][:cap]), (test[0][pick], test[1][pick])
        )
        found["ra"] = unlearning_protocol.accuracy(*retain)  # the MIA saw a sample; the accuracies see everything
        found["ta"] = unlearning_protocol.accuracy(*test)
        mask = held_out.forgotten
        found["test_forgotten"] = unlearning_protocol.accuracy(test[0][mask], test[1][mask])
        found["test_kept"] = unlearning_protocol.accuracy(test[0][~mask], test[1][~mask])
        found["per_experience"] = [
            unlearning_protocol.accuracy(test[0][held_out.experience == index], test[1][held_out.experience == index])
            for index in range(context.n_experiences)
        ]
        return found

    # -- the methods

    def unlearn(
        self, method: str, context: EvaluationContext, names: list[str], data: UnlearningData
    ) -> tuple[list[Unlearned], dict]:
        config, model = self.config, context.model
        batch_size = int(context.record["config"]["train"]["batch_size"])
        generator = torch.Generator().manual_seed(int(context.record["seed"]))
        if method in NTK_METHODS:
            chosen = names if method == "fast_ntk" else [name for name, _ in model.named_parameters()]
            return self.scrub(method, context, chosen, data)
        started = time.perf_counter()
        if method == "finetune":
            inputs, targets, epochs, lr, ascent = *data.retain, config.finetune_epochs, config.finetune_lr, False
        elif method == "grad_ascent":
            inputs, targets, epochs, lr, ascent = *data.forget, config.ascent_epochs, config.ascent_lr, True
        else:
            inputs, targets = random_label_set(data.forget, data.retain, context.n_classes, generator)
            epochs, lr, ascent = config.random_labels_epochs, config.random_labels_lr, False
        updated = sgd_epochs(model, names, inputs, targets, epochs, lr, batch_size, generator, context.device, ascent)
        seconds = time.perf_counter() - started
        return [Unlearned(method, None, updated, seconds)], {"epochs": epochs, "lr": lr, "rows": len(targets)}

    def scrub(
        self, method: str, context: EvaluationContext, names: list[str], data: UnlearningData
    ) -> tuple[list[Unlearned], dict]:
        """theta_u = theta_D + s (theta_{D_r} - theta_D) by the linearised ridge fits on the subset ``names``, one
        model per lam; the Jacobians are computed once."""
        config, model = self.config, context.model
        retain_inputs, retain_targets = data.retain
        if config.ntk_retain and len(retain_targets) > config.ntk_retain:
            keep = torch.randperm(len(retain_targets), generator=context.generator)[: config.ntk_retain]
            retain_inputs, retain_targets = retain_inputs[keep], retain_targets[keep]
        n_r, n_f = len(retain_targets), len(data.forget[1])
        size = ntk_scrub.subset_size(model, names)
        rows = (n_r + n_f) * context.n_classes
        solver = config.solver if config.solver != "auto" else auto_solver(size, rows)
        needed = solve_memory_bytes(size, rows, solver)
        if needed > config.max_memory_gb * 2**30:
            raise TooLarge(
                f"{solver} solve over p={size} parameters and n K={rows} rows needs {needed / 2**30:.1f} GB "
                f"> evaluator.max_memory_gb={config.max_memory_gb:g}"
            )
        started = time.perf_counter()
        centre = self.centre(context, names)
        retain_batches = self.batches(retain_inputs, retain_targets, context)
        forget_batches = self.batches(*data.forget, context)
        if solver == "primal":
            retain_eq = ntk_scrub.accumulate(centre, names, retain_batches, config.loss)
            forget_eq = ntk_scrub.accumulate(centre, names, forget_batches, config.loss)
            whole = ntk_scrub.NormalEquations(retain_eq.gram + forget_eq.gram, retain_eq.rhs + forget_eq.rhs)
        else:
            dual = ntk_scrub.DualSystem(
                ntk_scrub.stacked(centre, names, retain_batches, config.loss),
                ntk_scrub.stacked(centre, names, forget_batches, config.loss),
            )
        motion = self.fine_tuning_motion(context, names) if config.scale == "golatkar" else None
        jacobian_s = time.perf_counter() - started
        found, per_lam = [], []
        for lam in config.lam:
            solve_start = time.perf_counter()
            lam_r, lam_d = (lam * n_r, lam * (n_r + n_f)) if config.lambda_scaling == "golatkar" else (lam, lam)
            if solver == "primal":
                step_retain, condition_retain = ntk_scrub.ridge_step(retain_eq, lam_r)
                step_whole, condition_whole = ntk_scrub.ridge_step(whole, lam_d)
            else:
                step_retain, condition_retain = dual.step_retain(lam_r)
                step_whole, condition_whole = dual.step_whole(lam_d)
            delta = step_retain - step_whole
            scale = 1.0 if motion is None else ntk_scrub.predicted_scale(delta, motion - step_retain)
            updated = ntk_scrub.apply_update(model, names, delta.to(context.device), scale)
            seconds = jacobian_s + time.perf_counter() - solve_start
            found.append(Unlearned(method, lam, updated, seconds))
            if config.recalibrate_bn:
                recalibration = time.perf_counter()
                recalibrated = recalibrate_bn(updated, data.retain[0], context.device)
                found.append(
                    Unlearned(f"{method}+bn", lam, recalibrated, seconds + time.perf_counter() - recalibration)
                )
            per_lam.append(
                {
                    "lam": lam,
                    "lambda_retain": lam_r,
                    "lambda_whole": lam_d,
                    "condition_retain": condition_retain,
                    "condition_whole": condition_whole,
                    "delta_norm": float(delta.norm()),
                    "scale": scale,
                    "solve_s": time.perf_counter() - solve_start,
                }
            )
        diagnostics = {
            "solver": solver,
            "p": size,
            "rows": rows,
            "retain_rows_seen": n_r,
            "centre": config.centre,
            "jacobian_s": jacobian_s,
            "per_lam": per_lam,
        }
        return found, diagnostics

    def centre(self, context: EvaluationContext, names: list[str]) -> nn.Module:
        """The model at theta_c: the trained one, or a copy with the subset at its initial values."""
        if self.config.centre == "trained":
            return context.model
        initial = dict(context.initial_model().named_parameters())
        centre = copy.deepcopy(context.model)
        with torch.no_grad():
            for name, parameter in centre.named_parameters():
                if name in names:
                    parameter.copy_(initial[name].to(parameter.device))
        return centre.eval()

    def fine_tuning_motion(self, context: EvaluationContext, names: list[str]) -> Tensor:
        """theta_D - theta_init over ``names`` in float64 (the scale heuristic's m is this minus w_retain)."""
        initial = dict(context.initial_model().named_parameters())
        trained = dict(context.model.named_parameters())
        moved = [(trained[n].detach().cpu() - initial[n].detach().cpu()).reshape(-1) for n in names]
        return torch.cat(moved).double()

    def batches(self, inputs: Tensor, targets: Tensor, context: EvaluationContext) -> list[tuple[Tensor, Tensor]]:
        size, found = self.config.jacobian_batch, []
        for start in range(0, len(targets), size):
            labels = targets[start : start + size].to(context.device)
            if self.config.loss == "mse":  # Golatkar's regression targets 2 y - 1 over one-hot y
                labels = 2.0 * nn.functional.one_hot(labels, context.n_classes).double() - 1.0
            found.append((inputs[start : start + size].to(context.device), labels))
        return found


def split_rows(context: EvaluationContext, split: str) -> tuple[Tensor, Tensor, Tensor]:
    """(inputs, targets, experience index) of every row of ``split``, concatenated in experience order."""
    parts = [context.tensors(split, experiences=[index]) for index in range(context.n_experiences)]
    experience = torch.cat([torch.full((len(part[1]),), index) for index, part in enumerate(parts)])
    return torch.cat([part[0] for part in parts]), torch.cat([part[1] for part in parts]), experience


def auto_solver(size: int, rows: int) -> str:
    """The cheaper form for p = ``size`` parameters and n K = ``rows`` Jacobian rows: primal when p <= n K."""
    return "primal" if size <= rows else "dual"


def solve_memory_bytes(size: int, rows: int, solver: str) -> int:
    """Bytes an NTK solve holds in float64: three p x p systems (primal), or the stacked n K x p Jacobian and three
    n K x n K kernels (dual: the kernel, its regularised copy and the retain block)."""
    return 3 * size**2 * 8 if solver == "primal" else rows * size * 8 + 3 * rows**2 * 8


def recalibrate_bn(model: nn.Module, inputs: Tensor, device: torch.device, batch_size: int = 128) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated on ``inputs`` alone: reset, then one
    pass in training mode with momentum None (PyTorch's cumulative average of the per-batch statistics; exact for
    a single batch); every parameter unchanged."""
    updated = copy.deepcopy(model)
    layers = [module for module in updated.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    updated.train()
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            updated(inputs[start : start + batch_size].to(device))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    return updated.eval()


def weight_distance(model: nn.Module, reference: nn.Module, names: Sequence[str]) -> float:
    """||theta_u - theta_rt|| / ||theta_rt|| over the parameters ``names``."""
    ours, theirs = dict(model.named_parameters()), dict(reference.named_parameters())
    difference = torch.cat([(ours[n] - theirs[n]).detach().cpu().reshape(-1) for n in names]).double()
    base = torch.cat([theirs[n].detach().cpu().reshape(-1) for n in names]).double()
    return float(difference.norm() / base.norm().clamp_min(1e-12))


def output_distance(context: EvaluationContext, model: nn.Module, reference: nn.Module, inputs: Tensor) -> float:
    """Mean L1 distance between the softmax outputs of ``model`` and the retrained ``reference`` on ``inputs``."""
    ours = torch.softmax(context.logits(inputs, model).double(), dim=1)
    theirs = torch.softmax(context.logits(inputs, reference).double(), dim=1)
    return float((ours - theirs).abs().sum(dim=1).mean()) if len(inputs) else math.nan


SMOKE = (
    "scenario=split_digits",
    "train.epochs=1",
    "model.widths=[16]",
    "evaluator.subset=all",
    "evaluator.methods=[fast_ntk,full_ntk,finetune,grad_ascent,random_labels]",
    "evaluator.finetune_epochs=1",
    "evaluator.ascent_epochs=1",
    "evaluator.mia_samples=50",
)


@EVALUATORS.register(
    "fast_ntk",
    config=FastNTKConfig,
    traits=EvaluatorTraits(
        columns=("n_forget", "n_retain", "subset_size", "retrain_s"),
        row_keys=("method", "lam", "split"),
        row_columns=ROW_COLUMNS,
        headline=("avg_gap", "ua", "mia_efficacy", "ra", "ta", "seconds", "time_ratio"),
        offline_only=True,
        smoke=SMOKE,
    ),
)
def build_fast_ntk(config: FastNTKConfig) -> FastNTK:
    """Unlearning by Fast-NTK (Li et al., CVPR-W 2024), full NTK, FT/GA/RL baselines, against retraining."""
    return FastNTK(config)
