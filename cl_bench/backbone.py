"""Building a backbone outside a stream: the stand-in scenario, a registered ViT model (or the ``cnn``) by
name, the module whose tensors a backbone file holds, and the ViT architecture a backbone card records.
Shared by ``cl-bench pretrain`` and the MAE loader; a leaf module, so that ``models.mae`` and ``pretrain``
do not import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from cl_bench.config import build_config, split_model_name
from cl_bench.errors import UserError
from cl_bench.params import ComponentConfig
from cl_bench.scenario import ScenarioData

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer
    from torch import nn

    from cl_bench.models.heads import SingleHeadNet

# models that are no ViT but whose backbone (the module before the head) ``cl-bench pretrain`` stores whole
PRETRAINABLE_CNNS = ("cnn",)


def pool_scenario(input_shape: Sequence[int], num_classes: int = 10) -> ScenarioData:
    """A stand-in scenario for building a model outside a stream (its pool is its own, so no pool check)."""
    return ScenarioData(
        benchmark=None,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        setting="class-incremental",
        task_labels=False,
        classes_per_experience=[list(range(num_classes))],
        description="pre-training pool",
    )


def build_model(
    model_name: str, model_values: dict, input_shape: Sequence[int]
) -> tuple[str, ComponentConfig, SingleHeadNet]:
    """(model name, validated config, SingleHeadNet) of a registered ViT model or the cnn; UserError otherwise."""
    from cl_bench.registry import MODELS

    model_name, model_values = split_model_name(model_name, model_values)
    entry = MODELS.get(model_name)
    config = build_config(entry.config_class, model_values, "model")
    model = entry.builder(config, pool_scenario(input_shape))
    if not is_vit(model) and model_name not in PRETRAINABLE_CNNS:
        raise UserError(
            f"cl-bench pretrain needs a ViT model (vit_micro or timm:NAME) or the cnn (--method supervised), "
            f"got {model_name}"
        )
    return model_name, config, model


def is_vit(model: nn.Module) -> bool:
    from timm.models.vision_transformer import VisionTransformer

    return any(isinstance(module, VisionTransformer) for module in model.modules())


def stored_backbone(model: SingleHeadNet) -> nn.Module:
    """The module whose state dict a backbone file holds: the VisionTransformer of a ViT model (inside any
    input wrapper), else the whole backbone before the head (the cnn's ``nn.Sequential``)."""
    from cl_bench.models.vit import find_vit

    return find_vit(model) if is_vit(model) else model.backbone


def backbone_from_card(card: dict) -> VisionTransformer:
    """A freshly initialised VisionTransformer with the architecture a card records (weights not loaded)."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(card.get("model"), dict) or not (card.get("data") or {}).get("input_shape"):
        raise UserError(
            f"card {card.get('name')!r} does not say which model and input shape it was trained with; "
            f"re-create it with cl-bench pretrain --force"
        )
    values = {k: v for k, v in card["model"].items() if k != "name"}
    # the architecture only: the initial weights the backbone was trained from are not reloaded
    values.update({"weights": ""} if "weights" in values else {})
    values.update({"pretrained": False} if "pretrained" in values else {})
    _, _, model = build_model(card["model"]["name"], values, card["data"]["input_shape"])
    if not isinstance(model.backbone, VisionTransformer):
        raise UserError(f"the backbone of card {card.get('name')!r} is not a plain VisionTransformer")
    return model.backbone
