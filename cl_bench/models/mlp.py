"""Multi-layer perceptron over flattened inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from cl_bench.config import ComponentConfig, param
from cl_bench.models.heads import attach_head
from cl_bench.registry import MODELS
from cl_bench.traits import ModelTraits


@dataclass
class MLPConfig(ComponentConfig):
    widths: list[int] = param([256, 256], "hidden layer widths", low=1)
    bias: bool = param(True, "use biases in every linear layer (GPM's MLPs have none)")


def mlp_backbone(input_dim: int, widths: list[int], bias: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    previous = input_dim
    for width in widths:
        layers += [nn.Linear(previous, width, bias=bias), nn.ReLU()]
        previous = width
    return nn.Sequential(*layers)


@MODELS.register(
    "mlp",
    config=MLPConfig,
    traits=ModelTraits(smoke=("scenario=split_digits", "train.epochs=1", "model.widths=[32]")),
)
def build_mlp(config: MLPConfig, scenario) -> nn.Module:
    """MLP with ReLU hidden layers (default 2x256) and a single or per-task linear head."""
    input_dim = math.prod(scenario.input_shape)
    backbone = mlp_backbone(input_dim, config.widths, config.bias)
    feature_dim = config.widths[-1] if config.widths else input_dim
    return attach_head(backbone, feature_dim, scenario, bias=config.bias)
