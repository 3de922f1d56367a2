"""A small convolutional network for 28x28 and 32x32 images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cl_bench.config import ComponentConfig, param
from cl_bench.models.heads import attach_head
from cl_bench.registry import MODELS
from cl_bench.traits import ModelTraits


@dataclass
class CNNConfig(ComponentConfig):
    channels: list[int] = param([32, 64], "output channels of each 3x3 conv block (conv, ReLU, 2x2 max-pool)", low=1)
    hidden: int = param(256, "width of the fully connected layer before the head", low=1)


@MODELS.register(
    "cnn",
    config=CNNConfig,
    traits=ModelTraits(smoke=("scenario=split_digits", "train.epochs=1", "model.channels=[8]", "model.hidden=32")),
)
def build_cnn(config: CNNConfig, scenario) -> nn.Module:
    """Conv blocks (3x3 conv, ReLU, max-pool) + one hidden linear layer + single or per-task head."""
    shape = tuple(scenario.input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ValueError(f"cnn needs image inputs (C, H, W), got shape {scenario.input_shape}")
    layers: list[nn.Module] = [nn.Unflatten(1, shape)] if len(scenario.input_shape) != 3 else []
    in_channels = shape[0]
    for channels in config.channels:
        layers += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        in_channels = channels
    layers.append(nn.Flatten())
    with torch.no_grad():
        flat_dim = nn.Sequential(*layers)(torch.zeros(1, *scenario.input_shape)).shape[1]
    layers += [nn.Linear(flat_dim, config.hidden), nn.ReLU()]
    return attach_head(nn.Sequential(*layers), config.hidden, scenario)
