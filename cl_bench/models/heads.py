"""Classifier heads: one shared head, or one head per task for task-incremental scenarios.

The multi-head variant gives each task its own linear layer and masks the logits of classes
that do not belong to that task, so a prediction is always one of the task's own classes (the
usual task-incremental protocol, as in GPM's multi-head evaluation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from avalanche.models import MultiTaskModule
from torch import nn

MASKED_LOGIT = -1e9


class AuxiliaryLossModule(ABC):
    """A module that adds its own term to the training loss (e.g. A-ViT's ponder cost), computed from its latest
    forward. A model with one declares ``ModelTraits(auxiliary_loss=True)``; the runner then gives the strategy
    :class:`cl_bench.templates.AuxiliaryLossPlugin`, which adds every such module's term before the backward."""

    @abstractmethod
    def auxiliary_loss(self) -> torch.Tensor:
        """The term of the latest forward (a 0-d tensor; weights included)."""


class SingleHeadNet(nn.Module):
    """backbone -> one linear classifier over all classes."""

    backbone_card: dict[str, Any]  # set by the ViT builders when the backbone's weights have a card

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, bias: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class MultiHeadNet(MultiTaskModule):
    """backbone -> one linear head per task, logits outside the task's classes masked."""

    backbone_card: dict[str, Any]  # set by the ViT builders when the backbone's weights have a card

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        classes_per_task: list[list[int]],
        bias: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.heads = nn.ModuleList(nn.Linear(feature_dim, num_classes, bias=bias) for _ in classes_per_task)
        masks = torch.ones(len(classes_per_task), num_classes, dtype=torch.bool)
        for task, classes in enumerate(classes_per_task):
            masks[task, classes] = False
        self.register_buffer("masked_classes", masks, persistent=False)

    def adaptation(self, experience=None):
        """Heads are fixed at construction (one per experience), so nothing grows during training."""

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        logits = self.heads[task_label](self.backbone(x))
        return logits.masked_fill(self.masked_classes[task_label], MASKED_LOGIT)

    def forward(self, x: torch.Tensor, task_labels):
        if task_labels is None:
            # Avalanche's multi-task contract (used e.g. by LwF): every head's output, keyed by task
            return {task: self.forward_single_task(x, task) for task in range(len(self.heads))}
        if isinstance(task_labels, int):
            return self.forward_single_task(x, task_labels)
        task_labels = task_labels.to(x.device)
        unique_tasks = torch.unique(task_labels)
        if len(unique_tasks) == 1:
            return self.forward_single_task(x, int(unique_tasks.item()))
        features = self.backbone(x)
        logits = torch.empty(x.shape[0], self.num_classes, device=x.device, dtype=features.dtype)
        for task in unique_tasks.tolist():
            rows = task_labels == task
            logits[rows] = self.heads[task](features[rows]).masked_fill(self.masked_classes[task], MASKED_LOGIT)
        return logits


def attach_head(backbone: nn.Module, feature_dim: int, scenario, bias: bool = True) -> SingleHeadNet | MultiHeadNet:
    """Single head, or one head per experience when the scenario gives task labels."""
    if scenario.task_labels:
        return MultiHeadNet(backbone, feature_dim, scenario.num_classes, scenario.classes_per_experience, bias)
    return SingleHeadNet(backbone, feature_dim, scenario.num_classes, bias)
