"""Baselines for pre-trained backbones: linear probe, nearest class mean (SimpleCIL) and online ER.

All three work on any :class:`~cl_bench.models.heads.SingleHeadNet` (``model.backbone`` -> features,
``model.head`` over all classes), offline (one ``train`` call per experience) and on task-free streams
(one ``train`` call per incoming mini-batch). Sequential fine-tuning of the whole network is the
existing ``naive`` strategy.

``linear_probe`` — frozen backbone, trainable linear head.
    Every backbone parameter gets ``requires_grad=False``; the training forward runs the backbone
    under ``torch.no_grad()`` and in **eval mode** (suite choice: BatchNorm uses and keeps its running
    statistics, dropout is off, so the features are a fixed function of the input and the backbone's
    parameters and buffers stay bitwise unchanged). Only ``model.head`` is in the optimizer (Avalanche
    would add every model parameter; ``make_optimizer`` is overridden). Loss: cross-entropy of
    ``W phi(x) + b`` over all classes, ``phi`` the frozen features. The evaluation forward is the
    model's own (``head(backbone(x))``, the runner puts the model in eval mode), so attacks that
    differentiate through ``strategy.model`` see the same function. No hyperparameters of its own.

``ncm`` — nearest class mean on frozen features (SimpleCIL: Zhou, Cai, Ye, Zhan, Liu, "Revisiting
Class-Incremental Learning with Pre-Trained Models: Generalizability and Adaptivity are All You
Need", 2023).
    No gradient step. For every class c, the prototype is the exact mean of the frozen features of
    every training sample of c seen so far, ``p_c = (1/n_c) sum_{i: y_i = c} phi(x_i)``, kept as a
    float64 running sum and a count (so a stream fed in mini-batches gives the same prototypes as one
    batch, up to float64 summation order). Prediction: ``logit_c = cos(phi(x), p_c)`` (SimpleCIL's
    prototype classifier; its cosine scale does not change the argmax) or, with
    ``similarity=euclidean``, ``logit_c = -||phi(x) - p_c||^2``; classes never seen get
    ``MASKED_LOGIT``. Features: ``model.backbone`` in eval mode (for a ViT, the final-LayerNorm [CLS]
    token, as in SimpleCIL). The training epoch only accumulates features (no loss, no backward) and
    runs once per experience whatever ``train.epochs`` says (another pass would count every sample
    again and leave the means unchanged). The model's own head is never trained or used.

``online_er`` — online experience replay (Chaudhry et al., "On Tiny Episodic Memories in Continual
Learning", 2019; Aljundi et al., "Online Continual Learning with Maximally Interfered Retrieval",
NeurIPS 2019, whose ER baseline is the same).
    A memory of ``mem_size`` samples (suite choice: 500) filled by reservoir sampling (Vitter's
    algorithm R): the n-th stream sample (0-based) takes slot n while n < mem_size, otherwise it
    replaces slot j ~ U{0..n} when j < mem_size, so the memory is a uniform sample of the stream.
    For every incoming mini-batch B: ``updates_per_batch`` times (default 1, the paper's single
    update), draw ``replay_batch_size`` memory samples uniformly without replacement (default: |B|,
    suite choice; the paper uses 10 with |B| = 10) and take one optimizer step on the cross-entropy
    of the concatenation ``B ∪ M`` (Avalanche's own update loop, plugins included); then offer B to
    the reservoir. The memory holds tensors (inputs, targets, task labels), not datasets. Its
    randomness (replacement draws, replay draws) comes from a dedicated ``torch.Generator`` seeded
    with a hash of the run seed, whose state is a tensor that the checkpoint saves. In an offline
    scenario, every epoch is one pass over the experience; ``train.epochs`` > 1 offers every sample
    to the reservoir once per pass (train default: 1 epoch, the online protocol).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from cl_bench.config import ComponentConfig, param
from cl_bench.errors import UserError
from cl_bench.models.heads import MASKED_LOGIT
from cl_bench.registry import STRATEGIES
from cl_bench.templates import SMOKE_DIGITS_MLP, CustomPrediction, ReportingPlugin, StrategyContext, eval_mode, fast
from cl_bench.traits import StrategyTraits


def require_single_head(model: nn.Module, strategy: str) -> tuple[nn.Module, nn.Linear]:
    """``(model.backbone, model.head)``; a UserError unless ``model`` has a ``backbone`` and one linear ``head``
    over all classes."""
    backbone, head = getattr(model, "backbone", None), getattr(model, "head", None)
    if not isinstance(backbone, nn.Module) or not isinstance(head, nn.Linear):
        raise UserError(
            f"{strategy} needs a single-head model (model.backbone + one linear model.head); "
            f"task-incremental multi-head models are not supported (drop scenario.task_labels)"
        )
    return backbone, head


# ----------------------------------------------------------------------------- linear probe


@dataclass
class LinearProbeConfig(ComponentConfig):
    """No hyperparameters of its own: the head is trained with the ``train.*`` settings."""


class LinearProbeTemplate(SupervisedTemplate):
    """Trains ``model.head`` on features of the frozen backbone (see module docstring)."""

    def forward(self) -> torch.Tensor:
        with torch.no_grad(), eval_mode(self.model.backbone):
            features = self.model.backbone(self.mb_x)
        return self.model.head(features)

    def make_optimizer(self, reset_optimizer_state: bool = False, **kwargs) -> None:
        # the optimizer was built over the head only and the head never changes shape: keep it as is
        if reset_optimizer_state:
            self.optimizer.state = defaultdict(dict)
        self.optimized_param_id = dict(self.model.head.named_parameters())


@STRATEGIES.register("linear_probe", config=LinearProbeConfig, traits=StrategyTraits(smoke=SMOKE_DIGITS_MLP))
def build_linear_probe(config: LinearProbeConfig, context: StrategyContext):
    """Frozen backbone (eval mode, no grad) with a trainable linear head over all classes."""
    backbone, head = require_single_head(context.model, "linear_probe")
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    kwargs = context.template_kwargs()
    kwargs["optimizer"] = context.optimizer(head.parameters())
    return fast(LinearProbeTemplate)(**kwargs)


# ----------------------------------------------------------------------------- nearest class mean


@dataclass
class NCMConfig(ComponentConfig):
    similarity: str = param(
        "cosine",
        "cosine (SimpleCIL) or euclidean (minus the squared distance) between the features and each class mean",
        choices=("cosine", "euclidean"),
    )


class ClassMeans(ReportingPlugin):
    """Exact running per-class means of frozen features: float64 sums and counts, class-indexed."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.class_counts = torch.zeros(num_classes, dtype=torch.long)
        self.feature_sums: Optional[torch.Tensor] = None  # (num_classes, feature_dim) float64, set on first add

    def add(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        features = features.detach().double()
        if self.feature_sums is None:
            self.feature_sums = features.new_zeros((len(self.class_counts), features.shape[1]))
        self.feature_sums = self.feature_sums.to(features.device)
        self.class_counts = self.class_counts.to(features.device)
        # one-hot matmul rather than index_add_: deterministic on CUDA too
        one_hot = F.one_hot(targets, len(self.class_counts)).double()
        self.feature_sums += one_hot.T @ features
        self.class_counts += one_hot.sum(0).long()

    def prototypes(self) -> Optional[torch.Tensor]:
        """(num_classes, feature_dim) float64 means; rows of unseen classes are zero. None before any add."""
        if self.feature_sums is None:
            return None
        return self.feature_sums / self.class_counts.clamp(min=1).unsqueeze(1).to(self.feature_sums)

    def logits(self, features: torch.Tensor, similarity: str) -> torch.Tensor:
        prototypes = self.prototypes()
        if prototypes is None:
            return features.new_full((len(features), len(self.class_counts)), MASKED_LOGIT)
        prototypes = prototypes.to(features)
        if similarity == "cosine":
            scores = F.normalize(features, dim=1) @ F.normalize(prototypes, dim=1).T
        else:
            scores = -(
                features.pow(2).sum(1, keepdim=True)
                - 2 * features @ prototypes.T
                + prototypes.pow(2).sum(1).unsqueeze(0)
            )
        unseen = (self.class_counts == 0).to(features.device)
        return scores.masked_fill(unseen.unsqueeze(0), MASKED_LOGIT)

    def record_info(self) -> dict:
        return {
            "ncm_classes_seen": int((self.class_counts > 0).sum()),
            "ncm_samples_seen": int(self.class_counts.sum()),
        }


class NCMTemplate(CustomPrediction, SupervisedTemplate):
    """Accumulates class means of frozen features instead of training; predicts the nearest mean."""

    def __init__(self, *, class_means: ClassMeans, similarity: str, **kwargs):
        super().__init__(**kwargs)
        self.class_means = class_means
        self.similarity = similarity

    def training_epoch(self, **kwargs) -> None:
        with torch.no_grad(), eval_mode(self.model):
            for self.mbatch in self.dataloader:
                self._unpack_minibatch()
                self._before_training_iteration(**kwargs)
                self.class_means.add(self.model.backbone(self.mb_x), self.mb_y)
                self._after_training_iteration(**kwargs)  # progress bar, Avalanche's clock

    def predict_logits(self, inputs: torch.Tensor, task_labels: torch.Tensor) -> torch.Tensor:
        """Similarity to every class mean (no no_grad here: attacks may differentiate through it)."""
        return self.class_means.logits(self.model.backbone(inputs), self.similarity)

    def forward(self) -> torch.Tensor:
        return self.predict_logits(self.mb_x, self.mb_task_id)


# the prediction reads the class means (a plugin's state), not only the model's tensors
@STRATEGIES.register(
    "ncm",
    config=NCMConfig,
    traits=StrategyTraits(predicts_from_model=False, smoke=SMOKE_DIGITS_MLP),
    train_defaults={"epochs": 1},
)
def build_ncm(config: NCMConfig, context: StrategyContext):
    """Nearest class mean on frozen features (SimpleCIL): exact class means, cosine prediction, no training."""
    require_single_head(context.model, "ncm")
    class_means = ClassMeans(context.scenario.num_classes)
    kwargs = context.template_kwargs([class_means])
    kwargs["train_epochs"] = 1  # one pass gives the exact means (see module docstring)
    return fast(NCMTemplate)(class_means=class_means, similarity=config.similarity, **kwargs)


# ----------------------------------------------------------------------------- online ER


@dataclass
class OnlineERConfig(ComponentConfig):
    mem_size: int = param(500, "memory size in samples, filled by reservoir sampling (suite choice)", low=1)
    replay_batch_size: int = param(
        0,
        "memory samples replayed with every incoming mini-batch; 0 = the incoming "
        "batch size (suite choice; Chaudhry et al.: 10 with batches of 10)",
        low=0,
    )
    updates_per_batch: int = param(
        1, "optimizer steps per incoming mini-batch, each with a fresh memory draw (paper: 1)", low=1
    )


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed for a named random stream, derived from the run seed (decorrelated from it)."""
    return int.from_bytes(hashlib.sha256(f"{name}:{seed}".encode()).digest()[:8], "little") >> 1


class ReservoirMemory(ReportingPlugin):
    """A uniform sample of the stream (reservoir sampling), kept as tensors, with its own RNG state."""

    def __init__(self, capacity: int, seed: int):
        super().__init__()
        self.capacity = capacity
        self.seen = 0  # stream samples offered so far
        self.inputs: Optional[torch.Tensor] = None  # (capacity, ...) allocated on the first add
        self.targets: Optional[torch.Tensor] = None
        self.task_labels: Optional[torch.Tensor] = None
        # a tensor, so that the checkpoint saves it; a Generator is rebuilt from it at every use
        self.rng_state = torch.Generator().manual_seed(seed).get_state()

    @property
    def size(self) -> int:
        return min(self.seen, self.capacity)

    def _draw(self, draw):
        generator = torch.Generator()
        generator.set_state(self.rng_state)
        result = draw(generator)
        self.rng_state = generator.get_state()
        return result

    def add(self, inputs: torch.Tensor, targets: torch.Tensor, task_labels: torch.Tensor) -> None:
        """Offer a mini-batch to the reservoir, sample by sample in stream order (algorithm R)."""
        if self.inputs is None:
            self.inputs = inputs.new_zeros((self.capacity, *inputs.shape[1:]))
            self.targets = targets.new_zeros(self.capacity)
            self.task_labels = task_labels.new_zeros(self.capacity)
        assert self.targets is not None and self.task_labels is not None  # allocated together with self.inputs
        device = inputs.device
        self.inputs, self.targets, self.task_labels = (
            t.to(device) for t in (self.inputs, self.targets, self.task_labels)
        )
        positions = self.seen + torch.arange(len(targets), dtype=torch.long)
        slots = positions.clone()
        full = positions >= self.capacity
        if full.any():
            uniform = self._draw(lambda g: torch.rand(int(full.sum()), generator=g, dtype=torch.float64))
            draws = (uniform * (positions[full] + 1).double()).floor().long()  # j ~ U{0..n}
            slots[full] = torch.where(draws < self.capacity, draws, torch.full_like(draws, -1))
        # a later sample of the batch overwrites an earlier one that drew the same slot
        winner = {slot: row for row, slot in enumerate(slots.tolist()) if slot >= 0}
        if winner:
            where = torch.tensor(list(winner), dtype=torch.long, device=device)
            rows = torch.tensor(list(winner.values()), dtype=torch.long, device=device)
            self.inputs[where] = inputs[rows].detach()
            self.targets[where] = targets[rows]
            self.task_labels[where] = task_labels[rows]
        self.seen += len(targets)

    def sample(self, count: int, device: torch.device) -> Optional[list[torch.Tensor]]:
        """``count`` distinct memory samples drawn uniformly (fewer if the memory holds fewer), or None."""
        if self.size == 0 or count == 0:
            return None
        assert self.inputs is not None and self.targets is not None and self.task_labels is not None  # size > 0
        rows = self._draw(lambda g: torch.randperm(self.size, generator=g)[:count])
        return [t[rows.to(t.device)].to(device) for t in (self.inputs, self.targets, self.task_labels)]

    def record_info(self) -> dict:
        held = self.targets[: self.size].tolist() if self.targets is not None else []
        classes = {str(c): held.count(c) for c in sorted(set(held))}
        return {
            "er_memory": {
                "capacity": self.capacity,
                "size": self.size,
                "stream_seen": self.seen,
                "class_counts": classes,
            }
        }


class OnlineERTemplate(SupervisedTemplate):
    """Every incoming mini-batch: ``updates_per_batch`` steps on it plus a memory draw, then the reservoir."""

    dataloader: Any  # Avalanche's loader of the experience; swapped for each incoming mini-batch's updates

    def __init__(self, *, memory: ReservoirMemory, replay_batch_size: int, updates_per_batch: int, **kwargs):
        super().__init__(**kwargs)
        self.memory = memory
        self.replay_batch_size = replay_batch_size
        self.updates_per_batch = updates_per_batch

    def training_epoch(self, **kwargs) -> None:
        incoming_batches = self.dataloader
        try:
            for incoming in incoming_batches:
                if self._stop_training:
                    break
                incoming = [t.to(self.device) for t in incoming]
                count = self.replay_batch_size or len(incoming[1])
                updates = []
                for _ in range(self.updates_per_batch):
                    replay = self.memory.sample(count, self.device)
                    updates.append(incoming if replay is None else [torch.cat(pair) for pair in zip(incoming, replay)])
                self.dataloader = updates
                super().training_epoch(**kwargs)  # Avalanche's update loop, one optimizer step per entry
                self.memory.add(*incoming[:3])
        finally:
            self.dataloader = incoming_batches


@STRATEGIES.register(
    "online_er", config=OnlineERConfig, traits=StrategyTraits(smoke=SMOKE_DIGITS_MLP), train_defaults={"epochs": 1}
)
def build_online_er(config: OnlineERConfig, context: StrategyContext):
    """Online experience replay: reservoir-sampled memory, incoming batch + memory batch in every update."""
    memory = ReservoirMemory(config.mem_size, stream_seed(torch.initial_seed(), "online_er"))
    return fast(OnlineERTemplate)(
        memory=memory,
        replay_batch_size=config.replay_batch_size,
        updates_per_batch=config.updates_per_batch,
        **context.template_kwargs([memory]),
    )
