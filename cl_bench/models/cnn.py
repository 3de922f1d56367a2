"""A small convolutional network for 28x28 and 32x32 images.

``model.batch_norm=true`` adds a ``BatchNorm2d`` after every conv (conv, BN, ReLU, pool) and a
``BatchNorm1d`` after the hidden layer (Linear, BN, ReLU), with affine parameters: the parameter subset
that Fast-NTK unlearning fine-tunes. Without it the network is exactly the original one (same layer
indices, so the same state-dict keys and run ids).

``model.weights``: a ``.safetensors`` path, or the name of a backbone written by ``cl-bench pretrain
--model cnn`` in the cache. The file holds the backbone's own state-dict keys (the ``nn.Sequential``
before the head: ``0.weight``, ``1.running_mean`` ...), loaded strictly; its card becomes
``model.backbone_card``, and a backbone pre-trained on a pool of the scenario's dataset is refused unless
the stream holds that pool out (as for the ViTs, :func:`cl_bench.models.vit.load_backbone_weights`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from cl_bench.config import ComponentConfig, param
from cl_bench.errors import UserError
from cl_bench.models.heads import attach_head
from cl_bench.registry import MODELS
from cl_bench.traits import ModelTraits

# the fields that decide the backbone's tensors (compared with a card's when the weights do not fit)
ARCHITECTURE_FIELDS = ("channels", "hidden", "batch_norm")


@dataclass
class CNNConfig(ComponentConfig):
    channels: list[int] = param([32, 64], "output channels of each 3x3 conv block (conv, ReLU, 2x2 max-pool)", low=1)
    hidden: int = param(256, "width of the fully connected layer before the head", low=1)
    batch_norm: bool = param(
        False,
        "BatchNorm2d after every conv and BatchNorm1d after the hidden layer (affine; Fast-NTK's parameter subset)",
    )
    weights: str = param(
        "",
        "backbone weights: a .safetensors path or the name of a `cl-bench pretrain --model cnn` backbone "
        "in the cache; empty: random init",
    )

    # added after results were committed: runs at their defaults keep their ids
    omitted_at_default: ClassVar[tuple[str, ...]] = ("batch_norm", "weights")


@MODELS.register(
    "cnn",
    config=CNNConfig,
    traits=ModelTraits(smoke=("scenario=split_digits", "train.epochs=1", "model.channels=[8]", "model.hidden=32")),
)
def build_cnn(config: CNNConfig, scenario) -> nn.Module:
    """Conv blocks (3x3 conv, BatchNorm if set, ReLU, max-pool) + a hidden linear layer (BatchNorm if set) + head(s)."""
    shape = tuple(scenario.input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ValueError(f"cnn needs image inputs (C, H, W), got shape {scenario.input_shape}")
    layers: list[nn.Module] = [nn.Unflatten(1, shape)] if len(scenario.input_shape) != 3 else []
    in_channels = shape[0]
    for channels in config.channels:
        norm: list[nn.Module] = [nn.BatchNorm2d(channels)] if config.batch_norm else []
        layers += [nn.Conv2d(in_channels, channels, 3, padding=1), *norm, nn.ReLU(), nn.MaxPool2d(2)]
        in_channels = channels
    layers.append(nn.Flatten())
    with torch.no_grad():
        # the norms leave the shape as it is; left out so that the probe does not touch their running statistics
        probe = nn.Sequential(*(layer for layer in layers if not isinstance(layer, nn.BatchNorm2d)))
        flat_dim = probe(torch.zeros(1, *scenario.input_shape)).shape[1]
    hidden_norm: list[nn.Module] = [nn.BatchNorm1d(config.hidden)] if config.batch_norm else []
    layers += [nn.Linear(flat_dim, config.hidden), *hidden_norm, nn.ReLU()]
    backbone = nn.Sequential(*layers)
    model = attach_head(backbone, config.hidden, scenario)
    if config.weights:
        model.backbone_card = _load_weights(backbone, config, scenario)
    return model


def _load_weights(backbone: nn.Module, config: CNNConfig, scenario) -> dict:
    """Load ``config.weights`` strictly (pool checked); a mismatch names the --set flags the card differs in."""
    from cl_bench.models.vit import load_backbone_weights

    try:
        return load_backbone_weights(backbone, config.weights, scenario, "cnn", config)
    except UserError as error:
        changes = _architecture_changes(config)
        if not changes:
            raise
        raise UserError(
            f"backbone {config.weights!r} was pre-trained as a different cnn; rebuild the model with {changes}"
        ) from error


def _architecture_changes(config: CNNConfig) -> str:
    """The --set flags that rebuild the cnn a backbone's card records ('' if no card or nothing differs)."""
    from cl_bench.models.vit import read_card, resolve_weights

    try:
        card = read_card(resolve_weights(config.weights))
    except UserError:
        return ""
    saved = (card or {}).get("model")
    if not isinstance(saved, dict) or saved.get("name") != "cnn":
        return ""
    defaults = CNNConfig()
    changes = []
    for key in ARCHITECTURE_FIELDS:
        value = saved.get(key, getattr(defaults, key))  # a field omitted at its default is not in the card
        if getattr(config, key) != value:
            changes.append(f"--set model.{key}={json.dumps(value)}")
    return " ".join(changes)
