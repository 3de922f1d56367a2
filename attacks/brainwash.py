"""``brainwash``: poisoning the newest task so that a continual learner forgets the old ones.

Paper: Abbasi, Nooralinejad, Pirsiavash, Kolouri, "BrainWash: A Poisoning Attack to Forget in
Continual Learning", CVPR 2024 (arXiv 2311.11995); official code github.com/mint-vu/Brainwash.

Threat model. The attacker sees the victim's current weights (every head included) and the clean,
labelled training data of the experience it poisons, nothing else: no data of earlier experiences,
no knowledge of the victim's continual-learning regulariser. It adds a per-sample perturbation
delta_i with ||delta_i||_inf <= epsilon to every training input of that experience; the victim
trains on clip(x + delta, valid range). Labels are untouched.

Stage 1, model inversion (spec 2.2): for every old task t, M images x_hat start uniform in the
valid input range and minimise, with Adam (lr x0.1 after ``inversion_lr_drop`` of the steps) and a
clamp to the valid range after every step,

    L_inv = w_ce CE(head_t(x_hat), y_hat) + w_tv TV(x_hat) + w_l2 mean_pixels ||x_hat||_2 (over channels)
            + w_bn sum_BN ( ||mu_batch - mu_running|| + ||var_batch - var_running|| )

with the victim in eval mode (BatchNorm statistics read through forward hooks, on each task's own
images). Labels y_hat are drawn uniformly from the head's classes. All old tasks are inverted in
one batch; every term is computed per task, so this equals inverting them one at a time.

Stage 2, the noise (spec 2.3), a one-step-lookahead bilevel problem:

    theta'(delta) = theta_0 - alpha grad_theta CE(f(clip(x_b + delta_b); theta_0), y_b)
    reckless:  maximise  sum_old CE(f(x_hat; theta'(delta)), y_hat)
    cautious:  maximise  sum_old CE(f(x_hat; theta'(delta)), y_hat) - eta CE(f(x_b; theta'(delta)), y_b)

The gradient with respect to delta goes through theta' (``create_graph=True``: a mixed second
derivative; detaching theta' gives zero). One outer step is one pass over the experience in
batches of ``batch_size`` in a fixed random order, each batch's lookahead starting from the same
theta_0, then one signed step on all delta: ``delta <- clip(delta - step * sign(grad L), -eps, eps)``
with L the negated objective. Each batch is scored on ``floor(batch_size / #old tasks)`` inverted
samples per old task, redrawn every batch, each through its own head.

Single-head victims (class- or domain-incremental) have no per-task heads: the inverted samples
are drawn from the shared head with labels from the classes of the earlier experiences, and the
surrogate is their CE through that head (the CVPR version's replay experiments are single-head).

Deviations from the official code, each behind a flag:

* ``steps`` (official 5000 outer epochs: 10) and ``inversion_steps`` (official 10 000: 100) are
  scaled down so that the attack costs at most about 20 times the victim's own training of the
  experience on a CPU (``benchmarks/brainwash.py``); ``step_size`` defaults to epsilon / 5 (so ten
  signed steps can cross the ball) instead of the official 0.005, which assumes 5000 steps;
  ``batch_size`` is 512 instead of 128 (the same arithmetic per pass with a quarter of the
  overhead on a CPU) [suite choices].
* The full batches of one pass go through ``torch.func.vmap`` in one call (the lookahead of every
  batch starts from the same theta_0, so they are independent); models with BatchNorm running
  statistics in training mode or k-WTA layers (data-dependent masks) take the same computation one
  batch at a time (``vectorized`` in the record).
* The official code keeps the noise with the lowest proxy accuracy when it evaluates periodically
  (``noise``) but evaluates with the latest one (``latest_noise``); this module returns the latest.
* The official loop takes one real optimiser step on the first batch of every epoch and discards
  it by reloading the checkpoint; here the victim's model is never touched (the attack works on a
  copy, the victim's RNG state is restored by the runner).
* ``inversion_bn_norm``: the code uses plain l2 norms in the BatchNorm term (default), the paper
  squared ones (``squared``).
* Total variation applies to inputs with two spatial dimensions; flat inputs (the Swiss roll) have
  none. The l2 prior treats a flat input as pixels of one channel (mean |x|).
* Scenarios without a valid input range (the Swiss roll) are not clipped; the inversion starts
  uniform in the bounding box of the poisoned experience's inputs [suite choice].
* ``model_mode="train"`` (official) runs the lookahead with the victim in training mode (batch
  statistics, dropout, and the k-WTA heterogeneous-dropout masks of ``gpm_sparse``); ``eval`` is
  the deterministic alternative. Adam victims' pseudo-update is not implemented (the lookahead is
  always one plain SGD step of size ``lookahead_lr``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from cl_bench.attack import Attack, attack_generator, clip_to_range, experience_tensors, linf_budget, with_inputs
from cl_bench.config import ComponentConfig, param
from cl_bench.errors import UserError
from cl_bench.models.heads import MASKED_LOGIT, MultiHeadNet
from cl_bench.models.kwta import KWTA
from cl_bench.registry import ATTACKS
from cl_bench.traits import AttackTraits
from cl_bench.templates import eval_mode


DIAGNOSTIC_SAMPLES = 1024  # poisoned samples on which the surrogate is re-measured with a fixed proxy set


@dataclass
class BrainWashConfig(ComponentConfig):
    epsilon: float = param(
        0.1, "L-infinity budget in input units (Fashion-MNIST pixels in [0,1]; paper: 0.1, 0.3)", low=0.0
    )
    objective: str = param(
        "reckless",
        "reckless: only make old tasks forget; cautious: also keep the clean current-task loss low after the lookahead",
        choices=("reckless", "cautious"),
    )
    cautious_weight: float = param(
        1.0, "eta, weight of the clean current-task loss in the cautious objective (official w_cur = 1)", low=0.0
    )
    target_experience: int = param(-1, "index of the poisoned training experience; -1 = the last")
    steps: int = param(
        10, "outer signed-gradient steps, one pass over the experience each (official 5000) [suite: CPU budget]", low=0
    )
    step_size: Optional[float] = param(
        None,
        "signed step in input units; default epsilon / 5, so that the steps "
        "can cross the ball (official 0.005 with 5000 steps)",
        low=0.0,
        low_open=True,
    )
    lookahead_lr: float = param(
        1e-3, "alpha, learning rate of the one-step SGD lookahead (official 1e-3)", low=0.0, low_open=True
    )
    batch_size: int = param(
        512,
        "poisoned samples per lookahead (official 128) [suite: 512 costs the same "
        "arithmetic with less overhead on a CPU]",
        low=1,
    )
    init: str = param("uniform", "initial noise: uniform U(-eps, eps) (official) or zero", choices=("uniform", "zero"))
    model_mode: str = param(
        "train",
        "victim mode during the lookahead: train (official; batch statistics, dropout) or eval",
        choices=("train", "eval"),
    )
    proxy_per_task: Optional[int] = param(
        None,
        "inverted samples per old task in each lookahead batch; default batch_size // number of old tasks (official)",
        low=1,
    )
    proxy: str = param(
        "inversion",
        "surrogate of the old tasks: inversion (the threat model) or real_data (the "
        "paper's ablation: the attacker reads earlier experiences' training data)",
        choices=("inversion", "real_data"),
    )
    inversion_samples: int = param(
        128, "inverted samples per old task (official 128); with proxy=real_data, real samples per old task", low=1
    )
    inversion_steps: int = param(100, "Adam steps of the model inversion (official 10000) [suite: CPU budget]", low=0)
    inversion_lr: float = param(0.01, "Adam learning rate of the inversion (official 1e-2)", low=0.0, low_open=True)
    inversion_lr_drop: float = param(
        0.5, "fraction of the inversion steps after which the lr is x0.1 (official 0.5)", low=0.0, high=1.0
    )
    inversion_ce_weight: float = param(1e5, "weight of the inverted samples' CE (official 1e5)", low=0.0)
    inversion_tv_weight: float = param(1e2, "weight of total variation, images only (official 1e2)", low=0.0)
    inversion_l2_weight: float = param(1e4, "weight of the per-pixel l2 prior (official 1e4)", low=0.0)
    inversion_bn_weight: float = param(1e4, "weight of the BatchNorm-statistics prior (official 1e4)", low=0.0)
    inversion_bn_norm: str = param(
        "l2", "BatchNorm term: l2 norms (official code) or squared (paper)", choices=("l2", "squared")
    )


# ---------------------------------------------------------------------------------------------
# the victim seen as a function of its parameters
# ---------------------------------------------------------------------------------------------


def attacker_copy(model: nn.Module, mode: str) -> nn.Module:
    """A detached copy of the victim (hooks of the victim's plugins removed), in ``mode``."""
    clone = copy.deepcopy(model)
    for module in clone.modules():
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
        module._backward_hooks.clear()
    for module in clone.modules():
        if isinstance(module, KWTA):
            module.counting = False  # the victim's winner statistics are not the attacker's to update
    for parameter in clone.parameters():
        parameter.requires_grad_(False)
    return clone.train(mode == "train")


# ---------------------------------------------------------------------------------------------
# stage 1: model inversion
# ---------------------------------------------------------------------------------------------


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean |horizontal neighbour difference| + mean |vertical neighbour difference| (per sample)."""
    horizontal = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    vertical = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    return horizontal + vertical


def pixel_l2(inputs: torch.Tensor) -> torch.Tensor:
    """Per sample, the mean over pixels of the l2 norm over channels (a flat input: one channel per feature)."""
    if inputs.dim() >= 4:
        return inputs.norm(dim=1).flatten(1).mean(1)
    return inputs.flatten(1).abs().mean(1)


def invert(
    model: nn.Module,
    labels: torch.Tensor,
    group_tasks: list[int],
    init: torch.Tensor,
    config: BrainWashConfig,
    input_range: Optional[tuple[float, float]],
) -> tuple[torch.Tensor, dict]:
    """Model inversion of ``G`` groups at once: ``labels`` (G, M), ``init`` (G, M, *shape), group g through the
    head of task ``group_tasks[g]`` (single-head victims: the shared head).

    Returns the inverted inputs (G, M, *shape) and diagnostics (first/last loss, BN term, accuracy).
    Every term is computed per group, so the result equals inverting the groups one by one.
    """
    groups, per_group = labels.shape
    images = init.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([images], lr=config.inversion_lr)
    drop_at = int(config.inversion_lr_drop * config.inversion_steps)
    batch_norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]
    bn_terms: list[torch.Tensor] = []

    def bn_hook(module, args, output):
        features = args[0].reshape(groups, per_group, args[0].shape[1], -1).transpose(2, 3).flatten(1, 2)
        mean, var = features.mean(1), features.var(1, unbiased=False)  # (G, C)
        if config.inversion_bn_norm == "squared":
            bn_terms.append(((mean - module.running_mean) ** 2).sum(1) + ((var - module.running_var) ** 2).sum(1))
        else:
            bn_terms.append((mean - module.running_mean).norm(dim=1) + (var - module.running_var).norm(dim=1))

    handles = [m.register_forward_hook(bn_hook) for m in batch_norms]
    flat_labels = labels.reshape(-1)
    params = dict(model.named_parameters())
    history = []
    try:
        with eval_mode(model):
            for step in range(config.inversion_steps + 1):
                if step == drop_at and step > 0:
                    for group in optimizer.param_groups:
                        group["lr"] = config.inversion_lr * 0.1
                bn_terms.clear()
                flat = images.flatten(0, 1)
                logits = proxy_logits(model, params, flat, group_tasks)
                ce = F.cross_entropy(logits, flat_labels, reduction="none").reshape(groups, per_group).mean(1)
                loss = config.inversion_ce_weight * ce + config.inversion_l2_weight * pixel_l2(flat).reshape(
                    groups, per_group
                ).mean(1)
                if flat.dim() >= 4:  # images (N, C, H, W); flat inputs have no neighbours
                    loss = loss + config.inversion_tv_weight * total_variation(flat).reshape(groups, per_group).mean(1)
                bn_total = torch.stack(bn_terms).sum(0) if bn_terms else torch.zeros_like(ce)
                loss = (loss + config.inversion_bn_weight * bn_total).sum()
                history.append((float(loss.detach()), float(bn_total.sum().detach())))
                if step == config.inversion_steps:
                    accuracy = float((logits.argmax(1) == flat_labels).float().mean())
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    images.copy_(clip_to_range(images, input_range))
    finally:
        for handle in handles:
            handle.remove()
    diagnostics = {
        "inversion_loss_first": history[0][0],
        "inversion_loss_last": history[-1][0],
        "inversion_bn_first": history[0][1],
        "inversion_bn_last": history[-1][1],
        "inversion_accuracy": accuracy,
    }
    return images.detach(), diagnostics


# ---------------------------------------------------------------------------------------------
# stage 2: the noise
# ---------------------------------------------------------------------------------------------


@dataclass
class ProxySet:
    """Surrogates of the old tasks: inputs (G, M, *shape), labels (G, M), and the head (task label) of each group."""

    inputs: torch.Tensor
    labels: torch.Tensor
    group_tasks: list[int]

    def sample(self, per_group: int, generator: torch.Generator, batches: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``batches`` proxy batches of ``per_group`` samples per group, grouped: (batches, G * per_group, ...)."""
        groups, size = self.labels.shape
        rows = torch.randint(size, (batches, groups, per_group), generator=generator).to(self.labels.device)
        pick = (rows + torch.arange(groups, device=rows.device).view(1, groups, 1) * size).reshape(batches, -1)
        return self.inputs.flatten(0, 1)[pick], self.labels.reshape(-1)[pick]


def current_logits(model: nn.Module, params: dict, inputs: torch.Tensor, task: Optional[int]) -> torch.Tensor:
    """Logits of the poisoned experience's own head (``task`` None: the single shared head)."""
    return functional_call(model, params, (inputs,) if task is None else (inputs, task), strict=False)


def proxy_logits(model: nn.Module, params: dict, inputs: torch.Tensor, group_tasks: list[int]) -> torch.Tensor:
    """Logits of a grouped proxy batch (equal-size groups in order), each group through its task's head.

    Multi-head victims: one backbone pass, then a static loop over the heads (no data-dependent branching, so
    it runs under ``vmap``). Single-head victims: the shared head.
    """
    if not isinstance(model, MultiHeadNet):
        return functional_call(model, params, (inputs,), strict=False)
    prefix = "backbone."
    backbone_params = {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}
    features = functional_call(model.backbone, backbone_params, (inputs,), strict=False)
    per_group = features.shape[0] // len(group_tasks)
    logits = []
    for group, task in enumerate(group_tasks):
        head = F.linear(
            features[group * per_group : (group + 1) * per_group],
            params[f"heads.{task}.weight"],
            params.get(f"heads.{task}.bias"),
        )
        logits.append(head.masked_fill(model.masked_classes[task], MASKED_LOGIT))
    return torch.cat(logits)


def make_batch_objective(
    model: nn.Module,
    config: BrainWashConfig,
    input_range: Optional[tuple[float, float]],
    task: Optional[int],
    group_tasks: list[int],
    second_order: bool = True,
) -> Callable:
    """The attacker's loss of one batch as a pure function (for ``torch.func.grad`` / ``vmap``):

    ``(params, delta, clean, targets, proxy_inputs, proxy_labels) -> (L, old-task CE)``, with
    L = -CE_old(theta') [+ eta CE_current(clean; theta')] to be minimised over delta and
    theta' = params - alpha grad CE(f(clip(clean + delta)), targets). ``second_order=False`` cuts the
    dependency of theta' on delta (the first-order shortcut, whose delta-gradient is zero: a test guard).
    """

    def inner_loss(params: dict, poisoned: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(current_logits(model, params, poisoned, task), targets)

    def objective(params, delta, clean, targets, proxy_inputs, proxy_labels):
        poisoned = clip_to_range(clean + delta, input_range)
        gradient = torch.func.grad(inner_loss)(params, poisoned, targets)
        updated = {
            name: value - config.lookahead_lr * (gradient[name] if second_order else gradient[name].detach())
            for name, value in params.items()
        }
        old_loss = F.cross_entropy(proxy_logits(model, updated, proxy_inputs, group_tasks), proxy_labels)
        loss = -old_loss
        if config.objective == "cautious":
            loss = loss + config.cautious_weight * F.cross_entropy(current_logits(model, updated, clean, task), targets)
        return loss, old_loss

    return objective


def can_vectorize(model: nn.Module) -> bool:
    """vmap needs a stateless forward: no BatchNorm running statistics, no k-WTA (data-dependent masks, counters)."""
    return not any(
        isinstance(m, KWTA) or (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training)
        for m in model.modules()
    )


def noise_gradient(
    model: nn.Module,
    params: dict,
    objective: Callable,
    inputs: torch.Tensor,
    delta: torch.Tensor,
    targets: torch.Tensor,
    order: torch.Tensor,
    proxy: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    vectorize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """d L / d delta for every sample (batches of ``order``, each with its own lookahead from ``params``) and the
    old-task CE of every batch. Vectorized: all full batches in one ``vmap`` call; else one batch at a time."""
    gradient_fn = torch.func.grad(objective, argnums=1, has_aux=True)
    gradient = torch.zeros_like(delta)
    proxy_inputs, proxy_labels = proxy
    n_full = len(order) // batch_size if vectorize else 0
    old_losses = []
    if n_full:
        rows = order[: n_full * batch_size].reshape(n_full, batch_size)
        batched = torch.func.vmap(gradient_fn, in_dims=(None, 0, 0, 0, 0, 0), randomness="different")
        chunk_gradient, chunk_old = batched(
            params, delta[rows], inputs[rows], targets[rows], proxy_inputs[:n_full], proxy_labels[:n_full]
        )
        gradient[rows.reshape(-1)] = chunk_gradient.flatten(0, 1)
        old_losses.append(chunk_old)
    for index, start in enumerate(range(n_full * batch_size, len(order), batch_size), start=n_full):
        rows = order[start : start + batch_size]
        batch_gradient, old = gradient_fn(
            params, delta[rows], inputs[rows], targets[rows], proxy_inputs[index], proxy_labels[index]
        )
        gradient[rows] = batch_gradient
        old_losses.append(old.reshape(1))
    return gradient, torch.cat(old_losses)


def surrogate_loss(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    task: Optional[int],
    delta: torch.Tensor,
    proxy_set: ProxySet,
    config: BrainWashConfig,
    input_range: Optional[tuple[float, float]],
) -> float:
    """Mean old-task CE after one lookahead step on each poisoned batch, scored on every proxy sample (diagnostic)."""
    objective = make_batch_objective(model, config, input_range, task, proxy_set.group_tasks)
    params = {name: value.detach() for name, value in model.named_parameters()}
    proxy_inputs, proxy_labels = proxy_set.inputs.flatten(0, 1), proxy_set.labels.reshape(-1)
    losses = [
        float(
            objective(
                params,
                delta[start : start + config.batch_size],
                inputs[start : start + config.batch_size],
                targets[start : start + config.batch_size],
                proxy_inputs,
                proxy_labels,
            )[1]
        )
        for start in range(0, len(targets), config.batch_size)
    ]
    return sum(losses) / max(len(losses), 1)


def initial_noise(shape: tuple[int, ...], config: BrainWashConfig, generator: torch.Generator) -> torch.Tensor:
    if config.init == "zero":
        return torch.zeros(shape)
    return (torch.rand(shape, generator=generator) * 2 - 1) * config.epsilon


def optimise_noise(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    task: Optional[int],
    proxy_set: ProxySet,
    config: BrainWashConfig,
    input_range: Optional[tuple[float, float]],
    generator: torch.Generator,
    progress: bool = False,
    vectorize: Optional[bool] = None,
) -> tuple[torch.Tensor, list[float]]:
    """Signed-gradient descent of the bilevel objective; returns delta and the mean old-task CE per step."""
    epsilon = config.epsilon
    step_size = config.step_size if config.step_size is not None else epsilon / 5
    vectorize = can_vectorize(model) if vectorize is None else vectorize
    n = len(targets)
    delta = initial_noise(tuple(inputs.shape), config, generator).to(inputs.device)
    order = torch.randperm(n, generator=generator).to(inputs.device)  # fixed data order (official)
    n_batches = -(-n // config.batch_size)
    per_group = config.proxy_per_task or max(1, config.batch_size // len(proxy_set.group_tasks))
    objective = make_batch_objective(model, config, input_range, task, proxy_set.group_tasks)
    params = {name: value.detach() for name, value in model.named_parameters()}
    history: list[float] = []
    # disable=None: no bar when stderr is not a terminal (redirected logs)
    bar = tqdm(
        range(config.steps), desc="brainwash noise", unit="step", leave=False, disable=None if progress else True
    )
    for _ in bar:
        proxy = proxy_set.sample(per_group, generator, n_batches)  # redrawn for every batch
        gradient, old_losses = noise_gradient(
            model, params, objective, inputs, delta, targets, order, proxy, config.batch_size, vectorize
        )
        history.append(float(old_losses.mean()))
        bar.set_postfix(old_ce=f"{history[-1]:.4f}", refresh=False)
        delta = (delta - step_size * gradient.sign()).clamp(-epsilon, epsilon)
    return delta, history


# ---------------------------------------------------------------------------------------------
# the attack
# ---------------------------------------------------------------------------------------------


class BrainWash(Attack):
    poisons_training = True

    def __init__(self, config: BrainWashConfig, scenario, seed: int):
        super().__init__(config, scenario, seed)
        self._metrics: dict = {}

    def target_index(self, n_experiences: int) -> int:
        index = super().target_index(n_experiences)
        if index == 0:
            raise UserError(
                "brainwash needs at least one earlier experience to make the learner forget; "
                "set attack.target_experience to 1 or later (default -1: the last)"
            )
        return index

    def proxy_groups(self, target: int) -> tuple[list[int], list[list[int]]]:
        """(head, classes) of each old experience: its own head, or the shared head with every class seen so far."""
        if self.scenario.task_labels:
            return list(range(target)), self.scenario.classes_per_experience[:target]
        seen = sorted({c for classes in self.scenario.classes_per_experience[:target] for c in classes})
        return [0] * target, [seen] * target

    def poison(self, experience, strategy):
        target = experience.current_experience
        config, device = self.config, strategy.device
        inputs, targets, task_labels = (t.to(device) for t in experience_tensors(experience))
        task = int(task_labels[0]) if self.scenario.task_labels and len(task_labels) else None
        generator = attack_generator(self.seed, target)
        model = attacker_copy(strategy.model, config.model_mode)
        input_range = self.scenario.input_range

        started = time.perf_counter()
        group_tasks, group_classes = self.proxy_groups(target)
        if config.proxy == "real_data":
            proxy_images, labels, inversion_info = self.real_old_samples(
                target, config.inversion_samples, generator, device
            )
        else:
            labels, init = self.inversion_start(inputs, group_classes, generator)
            proxy_images, inversion_info = invert(model, labels, group_tasks, init, config, input_range)
        proxy_set = ProxySet(proxy_images, labels, group_tasks)
        inverted = time.perf_counter()

        replay = torch.Generator().set_state(generator.get_state())  # replays the initial noise for the diagnostic
        vectorized = can_vectorize(model)
        delta, history = optimise_noise(
            model,
            inputs,
            targets,
            task,
            proxy_set,
            config,
            input_range,
            generator,
            progress=self.progress,
            vectorize=vectorized,
        )
        poisoned = clip_to_range(inputs + delta, input_range)
        noised = time.perf_counter()
        # the attacker's objective on one fixed proxy set (every proxy sample), on the first DIAGNOSTIC_SAMPLES
        # samples: clean, initial noise, final noise (the per-step history redraws its proxy batches: noisier)
        rows = slice(0, DIAGNOSTIC_SAMPLES)
        initial_delta = initial_noise(tuple(inputs.shape), config, replay).to(device)
        surrogate = {
            name: surrogate_loss(model, inputs[rows], targets[rows], task, value[rows], proxy_set, config, input_range)
            for name, value in (("clean", torch.zeros_like(inputs)), ("initial", initial_delta), ("final", delta))
        }
        self._metrics = {
            **inversion_info,
            "surrogate_clean": surrogate["clean"],
            "surrogate_initial": surrogate["initial"],
            "surrogate_final": surrogate["final"],
            "surrogate_history": history,
            "vectorized": vectorized,
            "inversion_s": inverted - started,
            "noise_s": noised - inverted,
            "diagnostic_s": time.perf_counter() - noised,
            "linf": float((poisoned - inputs).abs().max()) if len(inputs) else 0.0,
        }
        return with_inputs(experience, poisoned, "brainwash")

    def inversion_start(
        self, inputs: torch.Tensor, group_classes: list[list[int]], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels drawn uniformly from each group's classes, and inputs uniform in the valid range (no range:
        the bounding box of the poisoned experience's inputs)."""
        m, device = self.config.inversion_samples, inputs.device
        labels = torch.stack(
            [
                torch.as_tensor(classes)[torch.randint(len(classes), (m,), generator=generator)]
                for classes in group_classes
            ]
        ).to(device)
        if self.scenario.input_range is not None:
            low, high = (torch.tensor(float(v)) for v in self.scenario.input_range)
        else:
            low, high = inputs.min(0).values.cpu(), inputs.max(0).values.cpu()
        uniform = torch.rand((len(group_classes), m) + tuple(inputs.shape[1:]), generator=generator)
        return labels, (low + (high - low) * uniform).to(device, inputs.dtype)

    def real_old_samples(
        self, target: int, per_task: int, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``per_task`` random training samples of every earlier experience (the ablation outside the threat model)."""
        inputs, labels = [], []
        for index in range(target):
            old_inputs, old_targets, _ = experience_tensors(self.scenario.benchmark.train_stream[index])
            rows = torch.randint(len(old_targets), (per_task,), generator=generator)
            inputs.append(old_inputs[rows])
            labels.append(old_targets[rows])
        return torch.stack(inputs).to(device), torch.stack(labels).to(device), {"proxy": "real_data"}

    def budget(self) -> dict:
        return linf_budget(self.config.epsilon, self.scenario)

    def metrics(self) -> dict:
        return dict(self._metrics)


@ATTACKS.register(
    "brainwash",
    config=BrainWashConfig,
    traits=AttackTraits(
        phase="training",
        label_fields=("objective", "epsilon"),
        budget_field="epsilon",
        # two outer steps on 8 inverted samples per old task: seconds on split digits
        smoke=(
            "scenario=split_digits",
            "train.epochs=1",
            "model.widths=[32]",
            "attack.steps=2",
            "attack.inversion_steps=8",
            "attack.inversion_samples=8",
            "attack.batch_size=128",
        ),
    ),
)
def build_brainwash(config: BrainWashConfig, scenario, seed: int) -> Attack:
    """BrainWash (Abbasi et al., CVPR 2024): model inversion + bilevel L-inf noise that makes old tasks forget."""
    return BrainWash(config, scenario, seed)
