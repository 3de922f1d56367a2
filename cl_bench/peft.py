"""Parameter subsets for parameter-efficient fine-tuning and for the unlearning methods that linearise them.

A subset is named by a selector: ``all``; ``head`` (the classifier: parameters under ``head.``/``heads.``);
``bn`` (every BatchNorm layer's affine weight and bias, Fast-NTK's subset for a CNN); ``prompts`` (visual-prompt
tokens, parameters named ``prompts``, Fast-NTK's subset for a ViT); ``bn+head`` and ``prompts+head``. Names are
returned in ``named_parameters()`` order, which fixes the flattening order of every vector over the subset.

``train.trainable`` freezes everything outside the selected subset before training (``requires_grad`` off, so
the optimiser never updates it); BatchNorm running statistics still follow the data in training mode, as in
BN-affine fine-tuning.
"""

from __future__ import annotations

from torch import nn

from cl_bench.config import TRAINABLE_SUBSETS as SELECTORS
from cl_bench.errors import UserError

HEAD_PREFIXES = ("head.", "heads.")


def bn_affine_names(model: nn.Module) -> list[str]:
    """The names of every BatchNorm layer's weight and bias."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            prefix = f"{module_name}." if module_name else ""
            names |= {f"{prefix}weight", f"{prefix}bias"}
    return [name for name, _ in model.named_parameters() if name in names]


def prompt_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters() if name.rsplit(".", 1)[-1] == "prompts"]


def head_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters() if name.startswith(HEAD_PREFIXES)]


def select(model: nn.Module, selector: str) -> list[str]:
    """The parameter names of ``selector``; a one-line UserError when the model has no such parameters."""
    if selector not in SELECTORS:
        raise UserError(f"unknown parameter subset {selector!r}; choose one of {', '.join(SELECTORS)}")
    if selector == "all":
        return [name for name, _ in model.named_parameters()]
    chosen: set[str] = set()
    for part in selector.split("+"):
        found = {"bn": bn_affine_names, "prompts": prompt_names, "head": head_names}[part](model)
        if not found:
            hint = {
                "bn": "build it with BatchNorm (e.g. --model cnn --set model.batch_norm=true)",
                "prompts": "give the ViT prompt tokens (--set model.prompts=10)",
                "head": "this model has no head.* parameters",
            }[part]
            raise UserError(f"parameter subset {selector!r}: the model has no {part} parameters; {hint}")
        chosen |= set(found)
    return [name for name, _ in model.named_parameters() if name in chosen]


def freeze_except(model: nn.Module, names: list[str]) -> None:
    """Turn gradients off for every parameter outside ``names`` (in place)."""
    keep = set(names)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in keep)
