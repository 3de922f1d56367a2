"""The networks of GPM's experiments, bias-free as in the official code.

Paper: Saha, Garg, Roy, "Gradient Projection Memory for Continual Learning", ICLR 2021
(arXiv 2103.09762); official code: github.com/sahagobinda/GPM (``main_pmnist.py``,
``main_cifar100.py``). Architectures follow docs spec ``gpm.md`` section 4.

* ``mlp_gpm``: the Permuted-MNIST MLP, Flatten -> Linear(d, 100) -> ReLU -> Linear(100, 100)
  -> ReLU -> head, every Linear (head included) without bias.
* ``alexnet_gpm``: the 5-layer AlexNet-like net of 10-split CIFAR-100: three bias-free convs
  (3->64 k4, 64->128 k3, 128->256 k2, stride 1, no padding), each followed by
  BatchNorm2d(track_running_stats=False) -> ReLU -> Dropout(0.2 / 0.2 / 0.5) -> MaxPool2d(2);
  then Flatten and two bias-free Linear layers (flat->2048, 2048->2048), each followed by
  BatchNorm1d(track_running_stats=False) -> ReLU -> Dropout(0.5); bias-free heads 2048->classes.
  On 3x32x32 the flattened size is 256*2*2 = 1024 (as in the official net), and also 1024 on
  1x28x28. BatchNorm keeps its affine parameters (the official default ``affine=True``) and
  normalises with the statistics of the current batch in training AND eval mode, so
  predictions depend on the batch they are computed in (as in the official code).

Both backbones are one flat ``nn.Sequential`` of real ``nn.Linear`` / ``nn.Conv2d`` / ``nn.ReLU``
modules (no functional activations, no in-place ops) so that other components can swap the
ReLU modules and put forward hooks on the weight layers to read their inputs.

Deviations from the official code:

* The head comes from :func:`cl_bench.models.heads.attach_head`: one shared head for a scenario
  without task labels (PMNIST), else one head per experience over ``num_classes`` outputs with the
  logits of classes outside the task masked (official: a ``taskcla`` list of heads with exactly the
  task's number of outputs and labels remapped to 0..k-1; the argmax over the unmasked logits is
  the same decision).
* ``alexnet_gpm`` builds its first linear layer from a dry forward on the scenario's input
  shape instead of the hard-coded CIFAR arithmetic, so it also runs on 1x28x28 images; inputs
  smaller than 19x19 (with the default kernels) are refused with a UserError.
* The channel counts, kernel sizes, hidden width, dropout rates and widths are configurable
  (defaults = official values).
* A training or evaluation mini-batch of a single sample fails in ``alexnet_gpm`` (BatchNorm1d
  with batch statistics needs more than one value per channel), as it would in the official net.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cl_bench.config import ComponentConfig, param
from cl_bench.errors import UserError
from cl_bench.models.heads import attach_head
from cl_bench.models.mlp import mlp_backbone
from cl_bench.registry import MODELS
from cl_bench.traits import ModelTraits

POOL = 2  # every conv block ends in a 2x2 max-pool, stride 2


# ---------------------------------------------------------------------------------------------
# mlp_gpm
# ---------------------------------------------------------------------------------------------


@dataclass
class MLPGPMConfig(ComponentConfig):
    widths: list[int] = param([100, 100], "hidden layer widths (official PMNIST: 100, 100)", low=1)


@MODELS.register(
    "mlp_gpm",
    config=MLPGPMConfig,
    traits=ModelTraits(smoke=("scenario=split_digits", "train.epochs=1", "model.widths=[32]")),
)
def build_mlp_gpm(config: MLPGPMConfig, scenario) -> nn.Module:
    """GPM's bias-free PMNIST MLP: flatten, ReLU layers 100-100, bias-free single or per-task head."""
    input_dim = math.prod(scenario.input_shape)
    backbone = mlp_backbone(input_dim, config.widths, bias=False)
    feature_dim = config.widths[-1] if config.widths else input_dim
    return attach_head(backbone, feature_dim, scenario, bias=False)


# ---------------------------------------------------------------------------------------------
# alexnet_gpm
# ---------------------------------------------------------------------------------------------


@dataclass
class AlexNetGPMConfig(ComponentConfig):
    channels: list[int] = param([64, 128, 256], "output channels of the conv blocks (official: 64, 128, 256)", low=1)
    kernel_sizes: list[int] = param(
        [4, 3, 2], "kernel size of each conv (stride 1, no padding; official: 4, 3, 2)", low=1
    )
    conv_dropout: list[float] = param(
        [0.2, 0.2, 0.5],
        "dropout after each conv block's ReLU (official: 0.2, 0.2, 0.5)",
        low=0.0,
        high=1.0,
        high_open=True,
    )
    hidden: int = param(2048, "width of the two fully connected layers (official: 2048)", low=1)
    fc_dropout: float = param(
        0.5, "dropout after each fully connected layer's ReLU (official: 0.5)", low=0.0, high=1.0, high_open=True
    )

    def validate(self) -> None:
        if not self.channels:
            raise UserError("model.channels must list at least one conv block")
        if not len(self.channels) == len(self.kernel_sizes) == len(self.conv_dropout):
            raise UserError(
                f"model.channels, model.kernel_sizes and model.conv_dropout need one entry per conv "
                f"block; got {len(self.channels)}, {len(self.kernel_sizes)} and "
                f"{len(self.conv_dropout)} entries"
            )


def min_input_size(kernel_sizes: list[int]) -> int:
    """Smallest height/width that leaves at least one pixel after every conv (k, no padding) + 2x2 pool."""
    size = 1
    for kernel in reversed(kernel_sizes):
        size = size * POOL + kernel - 1  # pool needs 2*s pixels in, a conv of kernel k needs s + k - 1
    return size


def _image_shape(scenario) -> tuple[int, int, int]:
    shape = tuple(scenario.input_shape)
    if len(shape) == 2:  # (H, W): one channel
        shape = (1, *shape)
    if len(shape) != 3:
        raise UserError(
            f"alexnet_gpm needs image inputs (C, H, W), but the scenario's input shape is "
            f"{tuple(scenario.input_shape)}; use mlp_gpm for vector inputs"
        )
    return shape  # type: ignore[return-value]


# one conv block of kernel 2 (8x8 digits: 7x7, pooled to 3x3) and 32-wide fc layers for the smoke run
@MODELS.register(
    "alexnet_gpm",
    config=AlexNetGPMConfig,
    traits=ModelTraits(
        smoke=(
            "scenario=split_digits",
            "train.epochs=1",
            "model.channels=[8]",
            "model.kernel_sizes=[2]",
            "model.conv_dropout=[0.0]",
            "model.hidden=32",
        )
    ),
)
def build_alexnet_gpm(config: AlexNetGPMConfig, scenario) -> nn.Module:
    """GPM's 5-layer AlexNet (CIFAR-100): 3 bias-free convs + 2 fc 2048, batch-stat BatchNorm, bias-free heads."""
    channels_in, height, width = _image_shape(scenario)
    needed = min_input_size(config.kernel_sizes)
    if min(height, width) < needed:
        # caught before torch would fail with a shape error deep inside the dry forward
        raise UserError(
            f"alexnet_gpm: input {height}x{width} is too small; its conv blocks (kernels "
            f"{config.kernel_sizes}, each with a 2x2 max-pool) need at least {needed}x{needed} pixels"
        )
    layers: list[nn.Module] = []
    if len(scenario.input_shape) == 2:  # (N, H, W) -> (N, 1, H, W)
        layers += [nn.Flatten(), nn.Unflatten(1, (channels_in, height, width))]
    previous = channels_in
    for out_channels, kernel, dropout in zip(config.channels, config.kernel_sizes, config.conv_dropout):
        layers += [
            nn.Conv2d(previous, out_channels, kernel, bias=False),
            nn.BatchNorm2d(out_channels, track_running_stats=False),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.MaxPool2d(POOL),
        ]
        previous = out_channels
    layers.append(nn.Flatten())
    conv_part = nn.Sequential(*layers).eval()
    with torch.no_grad():  # batch of 2: BatchNorm with batch statistics needs more than one value per channel
        flat_dim = conv_part(torch.zeros(2, *scenario.input_shape)).shape[1]
    previous = flat_dim
    for _ in range(2):
        layers += [
            nn.Linear(previous, config.hidden, bias=False),
            nn.BatchNorm1d(config.hidden, track_running_stats=False),
            nn.ReLU(),
            nn.Dropout(config.fc_dropout),
        ]
        previous = config.hidden
    backbone = nn.Sequential(*layers).train()
    return attach_head(backbone, config.hidden, scenario, bias=False)
