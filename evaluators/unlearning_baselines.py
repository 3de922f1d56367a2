"""The standard cheap baselines of classifier unlearning, on a chosen parameter subset.

Recipes of the OPTML code (Jia et al., NeurIPS 2023; Fan et al., SalUn, ICLR 2024), scaled to the suite's data:

* **fine-tune (FT)**: SGD (momentum 0.9) on D_r with the cross-entropy; forgetting happens only through
  catastrophic forgetting of D_f.
* **gradient ascent (GA)**: SGD on D_f *ascending* the cross-entropy, ``theta <- theta + lr grad L_CE``.
* **random labels (RL)**: SGD on D_f relabelled with a uniformly drawn *wrong* class, mixed with D_r under its
  true labels (the OPTML ``RL`` recipe trains on the union; SalUn adds a saliency mask, not done here).

Every baseline updates only the parameters ``names`` (the evaluator's subset, so the PEFT recipe of the run),
runs the model in training mode (BatchNorm statistics follow the data, as in the OPTML code) and returns an
updated copy; the input model is not touched. Mini-batch order and relabelling come from an explicit generator.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BASELINES = ("finetune", "grad_ascent", "random_labels")


def sgd_epochs(
    model: nn.Module,
    names: Sequence[str],
    inputs: Tensor,
    targets: Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    ascent: bool = False,
) -> nn.Module:
    """A copy of ``model`` after ``epochs`` of SGD (momentum 0.9) on (inputs, targets), updating ``names`` only;
    ``ascent`` maximises the loss instead."""
    updated = copy.deepcopy(model)
    chosen = set(names)
    parameters = []
    for name, parameter in updated.named_parameters():
        parameter.requires_grad_(name in chosen)
        if name in chosen:
            parameters.append(parameter)
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=0.9)
    updated.train()
    for _ in range(epochs):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(updated(inputs[batch].to(device)), targets[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            (-loss if ascent else loss).backward()
            optimizer.step()
    updated.eval()
    for parameter in updated.parameters():
        parameter.requires_grad_(False)
    return updated


def wrong_labels(targets: Tensor, n_classes: int, generator: torch.Generator) -> Tensor:
    """A uniformly drawn label different from each true one."""
    offsets = torch.randint(1, n_classes, (len(targets),), generator=generator)
    return (targets + offsets) % n_classes


def random_label_set(
    forget: tuple[Tensor, Tensor], retain: tuple[Tensor, Tensor], n_classes: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """D_f with wrong labels concatenated with D_r under its own labels (the RL training set)."""
    return torch.cat([forget[0], retain[0]]), torch.cat([wrong_labels(forget[1], n_classes, generator), retain[1]])
