"""SLCA: Slow Learner with Classifier Alignment (Zhang, Wang, Kang, Chen, Wei; ICCV 2023, arXiv 2303.05118).

Official code: github.com/GengDavid/SLCA (``models/slca.py``, ``models/base.py``, ``convs/linears.py``).
Class-incremental learning on a (pre-trained) backbone, no exemplars.

Model. The runner's ``SingleHeadNet`` keeps its backbone; its head is replaced, once at build time,
by :class:`SLCAClassifier`: one ``Linear(d, n_t, bias=True)`` per experience of the scenario
(trunc-normal std 0.02, bias 0), built for all experiences up front so that the state dict never
changes shape (``--resume``). It returns ``num_classes`` logits in the original label space: head
t fills the columns of its own classes, classes of experiences not started yet read ``MASKED_LOGIT``
(so inference is the official argmax over the concatenated logits of the heads seen so far).

Stage 1, slow learner (every experience T). SGD, momentum and weight decay from the train config
(registered defaults: the official 0.9 and 5e-4, lr 0.01, batch 128), two parameter groups:
backbone ``lr * lr_ratio`` (official ``bcb_lrscale`` 1/100) and head T ``lr``; a fresh optimizer
(and optional MultiStepLR, ``milestones``/``lr_decay``) per experience. ``lr_ratio = 0`` freezes
the backbone and runs it under ``no_grad``. Old heads are frozen, and the loss is a separated
softmax over head T only (pitfall 7)::

    L_1 = CE(z_T(x), y - known)         z_T = logits of head T; samples of other classes ignored

Class statistics (after stage 1, eval mode, the experience's training data, new classes only,
float64; old classes are never recomputed)::

    mu_c = mean_i f(x_i),   Sigma_c = cov_unbiased(f(x_i)) + ridge * I     (ridge = 1e-4)

Stage 2, classifier alignment (from the second experience on; backbone untouched). Back up the
heads, then ``ca_epochs`` epochs of SGD (lr 0.01, momentum 0.9, wd 5e-4, cosine over the epochs)
on all heads seen so far, each epoch drawing ``ca_samples_per_class`` features per seen class from
``N(s_c mu_c, Sigma_c)``, shuffling them globally and stepping on mini-batches of ``ca_batch_size``::

    s_c = floor + (1 - floor) (t_c + 1) / (T + 1)         (floor 0.9; 1.0 for classes of task T)
    n_k = ||z_k||_2 + 1e-7 per head k,  n = mean_k n_k,   z_hat = z / n / tau      (tau = 0.1)
    L_2 = CE(z_hat, y)                                     (plain CE on z when tau = 0)

The runner evaluates right after ``train()`` returns, i.e. with the aligned heads; the pre-alignment
heads are put back at the start of the next experience (official ``fc.recall()``;
``restore_after_ca``), so every alignment starts again from the un-aligned heads.

Deviations from the official code (and the flags behind every suite choice):

* Task of a class (pitfall 6): ``class_task_rule=explicit`` (default) reads it from the scenario's
  ``classes_per_experience``; ``official`` reproduces ``position_in_class_order // current_task_size``,
  which mis-assigns tasks (factors > 1) when experiences have unequal sizes. Equal sizes: identical.
* ``reinit_final_norm`` (default true, pitfall 1): the final LayerNorm of the first timm
  ``VisionTransformer`` in the model (``norm``, or ``fc_norm`` for average pooling) is reset to
  weight 1, bias 0 at build time, keeping the model's eps (timm 1e-6; the official fresh
  ``nn.LayerNorm`` has 1e-5). A backbone without a timm ViT (an MLP, a CNN): the flag has no effect.
* No data augmentation; statistics are computed on the scenario's own (eval) tensors, not on a
  separately transformed copy of the images; a fixed number of epochs (the scenario's), and
  ``milestones`` empty by default (official: [18] of 20 epochs on CIFAR, [40] of 50 otherwise).
* The alignment lr is its own flag (``ca_lr``, default 0.01); the official code reuses the stage-1 lr.
* Covariances are kept in float32 (as the official code stores them) after a float64 computation,
  made exactly symmetric; sampling uses a float64 Cholesky factor cast to float32 and noise from the
  global CPU generator (the official code builds a float32 ``MultivariateNormal`` per class). A class
  with one training sample gets covariance ``ridge * I``; a class with none gets no statistics.
* Samples of the experience whose label is not a class of that experience (e.g. flipped by an
  attack) are ignored in stage 1 (the official ignore-index), and do not enter the statistics.
* Once an experience's training ends every model parameter is left trainable again (stage 1 freezes
  old heads and, with ``lr_ratio = 0``, the backbone) so that attacks and evaluators see a plain model.
* SLCA needs task boundaries and disjoint classes: task-free, task-incremental (task labels, a
  multi-head model) and domain-incremental scenarios, and ``train.optimizer=adam``, are rejected.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional, Sequence, cast

import torch
import torch.nn.functional as F
from avalanche.training.supervised import Naive
from torch import nn

from cl_bench.config import ComponentConfig, TrainConfig, param
from cl_bench.errors import UserError
from cl_bench.models.heads import MASKED_LOGIT
from cl_bench.registry import STRATEGIES
from cl_bench.tensor_data import make_loader
from cl_bench.templates import SMOKE_DIGITS_MLP, ReportingPlugin, StrategyContext, eval_mode, fast
from cl_bench.traits import StrategyTraits

SLCA_TRAIN_DEFAULTS = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128}  # official
IGNORED_TARGET = -100  # F.cross_entropy's default ignore_index
NORM_EPSILON = 1e-7  # added to each head's logit norm (official)


@dataclass
class SLCAConfig(ComponentConfig):
    lr_ratio: float = param(0.01, "stage 1: backbone lr / head lr (official 1/100); 0 freezes the backbone", low=0.0)
    milestones: list[int] = param(
        [],
        "stage 1: epochs after which the lr is multiplied by lr_decay (official "
        "[18] of 20 on CIFAR, [40] of 50); empty: constant lr",
        low=1,
    )
    lr_decay: float = param(0.1, "stage 1: MultiStepLR factor gamma (official)", low=0.0, low_open=True)
    classifier_alignment: bool = param(True, "stage 2: align all heads on features sampled from class Gaussians")
    ca_epochs: int = param(5, "stage 2: alignment epochs (official)", low=1)
    ca_samples_per_class: int = param(256, "stage 2: features drawn per seen class per epoch (official)", low=1)
    ca_batch_size: int = param(256, "stage 2: mini-batch size over the shuffled samples (official)", low=1)
    ca_lr: float = param(
        0.01, "stage 2: SGD lr, cosine-annealed over ca_epochs (official: the stage-1 lr, 0.01)", low=0.0, low_open=True
    )
    ca_momentum: float = param(0.9, "stage 2: SGD momentum (official)", low=0.0, high=1.0, high_open=True)
    ca_weight_decay: float = param(5e-4, "stage 2: SGD weight decay (official)", low=0.0)
    logit_norm_tau: float = param(
        0.1, "stage 2: logit-normalisation temperature (official 0.1, Cars 0.05); 0: plain cross-entropy", low=0.0
    )
    covariance_ridge: float = param(
        1e-4, "added to the diagonal of every class covariance (official)", low=0.0, low_open=True
    )
    mean_scale_floor: float = param(
        0.9,
        "class means of task t scaled by floor + (1-floor)(t+1)/(T+1) (official 0.9); 1.0: no scaling",
        low=0.0,
        high=1.0,
    )
    class_task_rule: str = param(
        "explicit",
        "task of a class for the mean scaling: explicit (the scenario's "
        "experiences) or official (class position // current task size)",
        choices=("explicit", "official"),
    )
    restore_after_ca: bool = param(True, "put the pre-alignment heads back before the next experience (official)")
    reinit_final_norm: bool = param(
        True,
        "reset the timm ViT's final LayerNorm to weight 1, bias 0 at build "
        "time (official); no effect without a timm ViT",
    )

    def validate(self) -> None:
        if any(later <= earlier for earlier, later in zip(self.milestones, self.milestones[1:])):
            raise UserError(f"strategy.milestones must be strictly increasing epochs, got {self.milestones}")


@dataclass
class SLCASlowLearnerConfig(SLCAConfig):
    classifier_alignment: bool = param(
        False, "stage 2: align all heads on features sampled from class Gaussians (off: the slow learner alone)"
    )


@dataclass
class SLCAAlignmentConfig(SLCAConfig):
    lr_ratio: float = param(
        1.0,
        "stage 1: backbone lr / head lr (1: the backbone at the head's lr, the paper's "
        "'Seq FT w/ CA'); 0 freezes the backbone",
        low=0.0,
    )


# ----------------------------------------------------------------------------- pure maths


def class_statistics(features: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean float64, covariance float32) of one class's ``(N, d)`` features: unbiased, symmetric, + ridge I."""
    features = features.to(torch.float64)
    dim = features.shape[1]
    if len(features) > 1:
        covariance = torch.cov(features.T)
        covariance = (covariance + covariance.T) / 2  # exactly symmetric
    else:
        covariance = torch.zeros(dim, dim, dtype=torch.float64)
    covariance = covariance + ridge * torch.eye(dim, dtype=torch.float64)
    return features.mean(0), covariance.float()


def mean_scale(class_task: int, current_task: int, floor: float = 0.9) -> float:
    """Factor on the mean of a class of task ``class_task`` during the alignment at task ``current_task``."""
    return floor + (1.0 - floor) * (class_task + 1) / (current_task + 1)


def normalized_logits(per_head: list[torch.Tensor], tau: float) -> torch.Tensor:
    """Concatenated logits divided by the mean of the per-head L2 norms and by ``tau`` (raw when tau = 0)."""
    logits = torch.cat(per_head, dim=1)
    if tau <= 0:
        return logits
    norms = torch.stack([head.norm(p=2, dim=1) + NORM_EPSILON for head in per_head], dim=1).mean(1, keepdim=True)
    return logits / norms / tau


def sample_features(means: torch.Tensor, cholesky_factors: torch.Tensor, n_per_class: int) -> torch.Tensor:
    """``(C, n, d)`` float32 samples of ``N(means[c], L_c L_c^T)``; noise from the global CPU generator."""
    noise = torch.randn(means.shape[0], n_per_class, means.shape[1]).to(means.device)
    return means[:, None, :] + torch.bmm(noise, cholesky_factors.transpose(1, 2))


def reset_final_norm(model: nn.Module) -> bool:
    """Reset the final LayerNorm of the first timm ViT in ``model`` to weight 1, bias 0; False if there is none."""
    vit_module = sys.modules.get("timm.models.vision_transformer")
    if vit_module is None:  # timm never imported in this process: the model cannot hold a timm ViT
        return False
    vit = next((m for m in model.modules() if isinstance(m, vit_module.VisionTransformer)), None)
    if vit is None:
        return False
    norm = vit.norm if isinstance(vit.norm, nn.LayerNorm) else getattr(vit, "fc_norm", None)
    if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine:
        return False
    with torch.no_grad():
        norm.weight.fill_(1.0)
        if norm.bias is not None:
            norm.bias.zero_()
    return True


# ----------------------------------------------------------------------------- the classifier


class SLCAClassifier(nn.Module):
    """One linear head per experience; logits in the original label space, unstarted experiences masked."""

    # buffers registered in __init__
    columns: torch.Tensor
    task_of_class: torch.Tensor
    position_in_task: torch.Tensor
    started_tasks: torch.Tensor

    def __init__(self, feature_dim: int, classes_per_task: list[list[int]], num_classes: int):
        super().__init__()
        self.classes_per_task = [list(classes) for classes in classes_per_task]
        self.num_classes = num_classes
        heads = [nn.Linear(feature_dim, len(classes)) for classes in classes_per_task]
        self.heads = nn.ModuleList(heads)
        for head in heads:
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
        self.offsets = [0]
        for classes in classes_per_task:
            self.offsets.append(self.offsets[-1] + len(classes))
        task_of_class = torch.full((num_classes,), -1, dtype=torch.long)
        position_in_task = torch.full((num_classes,), IGNORED_TARGET, dtype=torch.long)
        for task, classes in enumerate(classes_per_task):
            task_of_class[classes] = task
            position_in_task[classes] = torch.arange(len(classes))
        self.register_buffer("columns", torch.tensor([c for cs in classes_per_task for c in cs]), persistent=False)
        self.register_buffer("task_of_class", task_of_class, persistent=False)
        self.register_buffer("position_in_task", position_in_task, persistent=False)
        # part of the state dict: how many experiences have started (the rest stay masked)
        self.register_buffer("started_tasks", torch.zeros((), dtype=torch.long))

    def head_logits(self, features: torch.Tensor, n_tasks: int) -> list[torch.Tensor]:
        """Logits of heads 0..n_tasks-1, computed as one matrix product (far cheaper than one per head)."""
        heads = cast(Sequence[nn.Linear], self.heads[:n_tasks])
        weight, bias = torch.cat([head.weight for head in heads]), torch.cat([head.bias for head in heads])
        logits = F.linear(features, weight, bias)
        return list(logits.split([head.out_features for head in heads], dim=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n_tasks = int(self.started_tasks)
        logits = features.new_full((features.shape[0], self.num_classes), MASKED_LOGIT)
        if n_tasks == 0:
            return logits
        seen = torch.cat(self.head_logits(features, n_tasks), dim=1)
        return logits.index_copy(1, self.columns[: self.offsets[n_tasks]], seen)

    def current_task_loss(self, logits: torch.Tensor, targets: torch.Tensor, task: int) -> torch.Tensor:
        """Cross-entropy over the columns of ``task`` only, targets as positions in that head."""
        task_logits = logits[:, self.columns[self.offsets[task] : self.offsets[task + 1]]]
        in_task = self.task_of_class[targets] == task
        if not bool(in_task.any()):
            return task_logits.sum() * 0.0  # nothing to learn from this batch (all labels foreign)
        positions = torch.where(in_task, self.position_in_task[targets], IGNORED_TARGET)
        return F.cross_entropy(task_logits, positions, ignore_index=IGNORED_TARGET)

    def head_state(self) -> list[torch.Tensor]:
        heads = cast(Sequence[nn.Linear], self.heads)
        return [tensor.detach().clone() for head in heads for tensor in (head.weight, head.bias)]

    @torch.no_grad()
    def load_head_state(self, state: list[torch.Tensor]) -> None:
        heads = cast(Sequence[nn.Linear], self.heads)
        for parameter, saved in zip((p for head in heads for p in (head.weight, head.bias)), state):
            parameter.copy_(saved)


# ----------------------------------------------------------------------------- the plugin (state, stage 2)


class SLCAPlugin(ReportingPlugin):
    """Experience bookkeeping, class statistics and classifier alignment; holds everything checkpointed."""

    def __init__(self, config: SLCAConfig, classes_per_task: list[list[int]], final_norm_reset: bool):
        super().__init__()
        self.config = config
        self.classes_per_task = [list(classes) for classes in classes_per_task]
        self.final_norm_reset = final_norm_reset
        self.current_task = -1
        self.class_means: dict[int, torch.Tensor] = {}  # class -> (d,) float64, CPU
        self.class_covariances: dict[int, torch.Tensor] = {}  # class -> (d, d) float32, CPU
        self.pre_alignment_heads: Optional[list[torch.Tensor]] = None  # weight, bias per head
        self.alignment_log: list[dict] = []

    def begin_task(self, strategy) -> None:
        """Before stage 1: restore the un-aligned heads, unmask the experience's classes, freeze the rest."""
        task = getattr(strategy.experience, "current_experience", None)
        if task is None or not 0 <= task < len(self.classes_per_task):
            raise UserError(
                f"slca needs experiences numbered 0..{len(self.classes_per_task) - 1} (current_experience), got {task}"
            )
        classifier = strategy.model.head
        if self.pre_alignment_heads is not None and self.config.restore_after_ca:
            classifier.load_head_state(self.pre_alignment_heads)
        self.pre_alignment_heads = None
        self.current_task = task
        classifier.started_tasks.fill_(max(int(classifier.started_tasks), task + 1))
        for index, head in enumerate(classifier.heads):
            head.requires_grad_(index == task)
        strategy.model.backbone.requires_grad_(self.config.lr_ratio > 0)

    def after_training_exp(self, strategy, **kwargs):
        if self.config.classifier_alignment:
            self.update_statistics(strategy)
            if self.current_task > 0:
                self.pre_alignment_heads = strategy.model.head.head_state()
                loss = self.align(strategy.model.head, strategy.device)
                self.alignment_log.append({"task": self.current_task, "ca_loss_last_epoch": loss})
        strategy.model.requires_grad_(True)

    @torch.no_grad()
    def update_statistics(self, strategy) -> None:
        """Mean and covariance of every class of the current experience, from eval-mode backbone features."""
        features, targets = [], []
        with eval_mode(strategy.model) as model:
            for inputs, labels, _ in make_loader(strategy.experience.dataset.eval(), strategy.eval_mb_size, False):
                features.append(model.backbone(inputs.to(strategy.device)).to("cpu", torch.float64))
                targets.append(labels.cpu())
        if not features:
            return
        all_features, all_targets = torch.cat(features), torch.cat(targets)
        for label in self.classes_per_task[self.current_task]:
            rows = all_features[all_targets == label]
            if len(rows) > 0:
                self.class_means[label], self.class_covariances[label] = class_statistics(
                    rows, self.config.covariance_ridge
                )

    def scale_factors(self, classes: list[int]) -> list[float]:
        """Mean-scaling factor of each class at the current task (``class_task_rule``, pitfall 6)."""
        task = self.current_task
        if self.config.class_task_rule == "official":
            order = [c for cs in self.classes_per_task for c in cs]
            task_size = len(self.classes_per_task[task])
            class_tasks = [order.index(c) // task_size for c in classes]
        else:
            class_tasks = [next(t for t, cs in enumerate(self.classes_per_task) if c in cs) for c in classes]
        return [mean_scale(t, task, self.config.mean_scale_floor) for t in class_tasks]

    def align(self, classifier: SLCAClassifier, device: torch.device) -> Optional[float]:
        """Stage 2 on the heads of tasks 0..T; returns the mean loss of the last epoch (None: nothing to align)."""
        config, task = self.config, self.current_task
        seen = [c for cs in self.classes_per_task[: task + 1] for c in cs]  # = concatenated head order
        positions = [i for i, c in enumerate(seen) if c in self.class_means]
        classes = [seen[i] for i in positions]
        if not classes:
            return None
        factors = torch.tensor(self.scale_factors(classes), dtype=torch.float64)
        means = (torch.stack([self.class_means[c] for c in classes]) * factors[:, None]).float().to(device)
        cholesky = (
            torch.stack([torch.linalg.cholesky(self.class_covariances[c].double()) for c in classes]).float().to(device)
        )
        labels = torch.tensor(positions, device=device).repeat_interleave(config.ca_samples_per_class)
        heads = classifier.heads[: task + 1]
        heads.requires_grad_(True)
        optimizer = torch.optim.SGD(
            heads.parameters(), lr=config.ca_lr, momentum=config.ca_momentum, weight_decay=config.ca_weight_decay
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.ca_epochs)
        epoch_loss = 0.0
        for _ in range(config.ca_epochs):
            samples = sample_features(means, cholesky, config.ca_samples_per_class).reshape(-1, means.shape[1])
            order = torch.randperm(len(samples)).to(device)
            samples, targets = samples[order], labels[order]
            losses = []
            for start in range(0, len(samples), config.ca_batch_size):
                batch = samples[start : start + config.ca_batch_size]
                logits = normalized_logits(classifier.head_logits(batch, task + 1), config.logit_norm_tau)
                loss = F.cross_entropy(logits, targets[start : start + config.ca_batch_size])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())
            scheduler.step()
            epoch_loss = float(torch.stack(losses).mean())
        return epoch_loss

    def record_info(self) -> dict:
        return {
            "slca": {
                "classes_with_statistics": len(self.class_means),
                "final_norm_reset": self.final_norm_reset,
                "alignment": list(self.alignment_log),
            }
        }


# ----------------------------------------------------------------------------- the template (stage 1)


class SLCATemplate(Naive):
    """Avalanche's SGD template with SLCA's stage 1: two-lr optimizer per experience, current-head loss."""

    def __init__(self, *, slca_plugin: SLCAPlugin, train_config: TrainConfig, **kwargs):
        kwargs["plugins"] = list(kwargs.get("plugins") or []) + [slca_plugin]
        super().__init__(**kwargs)
        self.slca = slca_plugin
        self.train_config = train_config
        self.lr_scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None

    def _before_training_exp(self, **kwargs):
        self.slca.begin_task(self)  # before Avalanche builds the optimizer (make_optimizer) and the plugins run
        super()._before_training_exp(**kwargs)

    def make_optimizer(self, **kwargs):
        train, ratio = self.train_config, self.slca.config.lr_ratio
        groups = [{"params": list(self.model.backbone.parameters()), "lr": train.lr * ratio}] if ratio > 0 else []
        groups.append({"params": list(self.model.head.heads[self.slca.current_task].parameters()), "lr": train.lr})
        self.optimizer = torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
        milestones = self.slca.config.milestones
        self.lr_scheduler = (
            torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones, self.slca.config.lr_decay)
            if milestones
            else None
        )

    def forward(self):
        if self.is_training and self.slca.config.lr_ratio == 0:
            with torch.no_grad():  # frozen backbone: no graph through it (official)
                features = self.model.backbone(self.mb_x)
            return self.model.head(features)
        return super().forward()

    def criterion(self):
        if not self.is_training:
            return super().criterion()
        return self.model.head.current_task_loss(self.mb_output, self.mb_y, self.slca.current_task)

    def _after_training_epoch(self, **kwargs):
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        super()._after_training_epoch(**kwargs)


def check_supported(context: StrategyContext) -> None:
    """UserError unless the scenario is class-incremental with boundaries and the model a SingleHeadNet."""
    scenario, model = context.scenario, context.model
    if scenario.setting == "task-free":
        raise UserError("slca needs task boundaries; a task-free scenario gives none")
    if scenario.task_labels:
        raise UserError("slca is class-incremental (own per-task heads, no task id); set scenario.task_labels=false")
    if not (isinstance(getattr(model, "head", None), nn.Linear) and hasattr(model, "backbone")):
        raise UserError("slca needs a single-head model (backbone + one Linear head over all classes)")
    classes = [c for cs in scenario.classes_per_experience for c in cs]
    if len(classes) != len(set(classes)):
        raise UserError(
            "slca needs experiences with disjoint classes (class-incremental), not a domain-incremental stream"
        )
    if context.train.optimizer != "sgd":
        raise UserError("slca trains with SGD (two learning-rate groups); set train.optimizer=sgd")


def build_slca_strategy(config: SLCAConfig, context: StrategyContext):
    check_supported(context)
    model, scenario = context.model, context.scenario
    final_norm_reset = config.reinit_final_norm and reset_final_norm(model)
    model.head = SLCAClassifier(
        cast(nn.Linear, model.head).in_features, scenario.classes_per_experience, scenario.num_classes
    ).to(context.device)
    plugin = SLCAPlugin(config, scenario.classes_per_experience, final_norm_reset)
    # the optimizer in the kwargs is a placeholder: make_optimizer builds SLCA's own at every experience
    return fast(SLCATemplate)(slca_plugin=plugin, train_config=context.train, **context.template_kwargs())


# needs task boundaries (check_supported refuses a task-free stream)
SLCA_TRAITS = StrategyTraits(task_free=False, smoke=SMOKE_DIGITS_MLP)


@STRATEGIES.register("slca", config=SLCAConfig, traits=SLCA_TRAITS, train_defaults=SLCA_TRAIN_DEFAULTS)
def build_slca(config: SLCAConfig, context: StrategyContext):
    """SLCA: slow backbone (lr x0.01) + per-task heads aligned on sampled class Gaussians (ICCV 2023)."""
    return build_slca_strategy(config, context)


@STRATEGIES.register(
    "slca_slow_learner", config=SLCASlowLearnerConfig, traits=SLCA_TRAITS, train_defaults=SLCA_TRAIN_DEFAULTS
)
def build_slca_slow_learner(config: SLCASlowLearnerConfig, context: StrategyContext):
    """SLCA ablation: the slow learner alone (per-task heads, backbone lr x0.01, no classifier alignment)."""
    return build_slca_strategy(config, context)


@STRATEGIES.register(
    "slca_alignment", config=SLCAAlignmentConfig, traits=SLCA_TRAITS, train_defaults=SLCA_TRAIN_DEFAULTS
)
def build_slca_alignment(config: SLCAAlignmentConfig, context: StrategyContext):
    """SLCA ablation: classifier alignment alone (backbone at the head's lr, i.e. lr ratio 1)."""
    return build_slca_strategy(config, context)
