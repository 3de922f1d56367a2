"""L2P: Learning to Prompt (Wang et al., "Learning to Prompt for Continual Learning", CVPR 2022), run by
Avalanche 0.6's ``LearningToPrompt`` on the suite's own pre-trained ViT backbones.

The method. A frozen pre-trained ViT ``f`` and a pool of M prompts ``P_i`` (each L_p tokens of width D)
with learnable keys ``k_i``. The query of an image is the frozen model's own [CLS] feature,
``q(x) = f(x)[CLS]`` (after the final LayerNorm). The N keys closest to ``q(x)`` in cosine similarity
select their prompts, which are prepended to the patch tokens (after [CLS]) of the same frozen ViT;
the classifier reads the mean of the prompt tokens' outputs (``head_type=prompt``). Loss:
``CE(masked logits, y) - lambda * sum_{i in top-N} cos(q(x), k_i) / |batch|`` (the pull constraint);
during training the logits of classes outside the current experience are set to -inf
(``classes_in_this_experience``, the official ``train_mask``). Only prompts, keys and the head train.

How it runs on our backbones. Avalanche's ``LearningToPrompt.__init__`` builds its own ViT from a
fixed list of timm names with ``pretrained=True`` (a download) and hard-codes a 768-wide head, so it
cannot take our model as it is. :class:`PromptedViT` is a thin subclass that keeps Avalanche's
``criterion`` (pull constraint), ``_before_training_exp`` (optimizer reset) and prompt machinery
(``ViTWithPrompt``, ``Prompt``) unchanged and replaces the constructor and ``forward``. The
constructor builds Avalanche's prompt-capable ``ViTWithPrompt`` with the dimensions of the timm
``VisionTransformer`` found in our model (image and patch size, channels, width, depth, heads, MLP
ratio, qkv bias), copies its pre-trained weights in, and builds the frozen query model
(``original_vit``) the same way, without prompts. No download. ``forward`` does what Avalanche's
does (query under no_grad, prompted forward, training-time mask) with one fix: Avalanche passes
``classes_in_this_experience`` to ``np.setdiff1d``, which reads a Python set (what Avalanche 0.6's
own ``with_classes_timeline`` stores, and so our scenarios) as a single object, masks every class
and makes the loss NaN; here the mask is built from the sorted classes. The prompt positions get
the [CLS] position embedding, as the official pre-trained-weight filter does when it lengthens
``pos_embed`` for the prompts. A build-time check compares the query model's feature with our
backbone's on two fixed inputs and refuses (UserError) any backbone it does not reproduce (a
wrapper that preprocesses inputs, e.g. ``timm:NAME`` with ``model.input_size``; average pooling;
register tokens ...). The backbone's dropout and drop-path rates are not carried over (0, the
official default): the backbone is frozen. ``predict_logits`` (the runner's evaluation) runs the same query + prompted
forward, unmasked.

Hyperparameters (Avalanche defaults vs the official PyTorch port ``JH-LEE-KR/l2p-pytorch``, Split
CIFAR-100 config): pool M = 10 (official; Avalanche 20), prompt length L_p = 5, top-N = 5, lambda = 0.1
(both), Adam betas (0.9, 0.999) at lr 0.03 (train default and Avalanche's; the official port scales
its 0.03 by batch/256: unscaled here is a suite choice), the optimizer re-created at every experience
(official ``reinit_optimizer``; Avalanche's ``_before_training_exp``), prompts and keys initialised
U(-1, 1). Suite choices: ``batchwise_prompt`` false (Avalanche's default; the official port selects
the batch's N most frequent prompts, which makes a test prediction depend on the rest of the test
batch).

Deviations from the official code: no gradient clipping (official: norm 1.0), no data augmentation,
no learning-rate scaling. Settings: offline class-incremental only (single head). It needs the
experience boundaries (optimizer reset, ``classes_in_this_experience``), so task-free streams are
refused. ``strategy.model`` is the prompted ViT, whose forward returns Avalanche's dict of outputs;
attacks that call ``strategy.model`` directly expect logits and do not apply.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from avalanche.training.supervised import LearningToPrompt
from avalanche.training.templates import SupervisedTemplate
from timm.layers import LayerScale
from torch import nn

from cl_bench.config import ComponentConfig, param
from cl_bench.errors import UserError
from cl_bench.models.vit import find_vit
from cl_bench.registry import STRATEGIES
from cl_bench.templates import SMOKE_DIGITS_VIT, CustomPrediction, StrategyContext, eval_mode, fast
from cl_bench.traits import StrategyTraits

if TYPE_CHECKING:
    from avalanche.models.timm_vit import ViTWithPrompt

# the parameter-name prefixes Avalanche (and the official code) freeze in the prompted ViT
FROZEN_PREFIXES = ("blocks", "patch_embed", "cls_token", "norm", "pos_embed")
L2P_TRAIN_DEFAULTS = {"optimizer": "adam", "lr": 0.03}


@dataclass
class L2PConfig(ComponentConfig):
    pool_size: int = param(10, "prompts in the pool, M (official Split CIFAR-100 config; Avalanche: 20)", low=1)
    prompt_length: int = param(5, "tokens per prompt, L_p (official, Avalanche)", low=1)
    top_k: int = param(5, "prompts selected per image, N (official, Avalanche)", low=1)
    sim_coefficient: float = param(0.1, "weight lambda of the key-query pull constraint (official, Avalanche)", low=0.0)
    batchwise_prompt: bool = param(
        False,
        "select the batch's N most frequent prompts for every image (official: "
        "true; suite choice false: predictions independent of the batch)",
    )
    head_type: str = param(
        "prompt",
        "classifier input: mean of the prompt tokens (official), the [CLS] token, or both",
        choices=("prompt", "token", "token+prompt"),
    )
    use_mask: bool = param(
        True, "mask the logits of classes outside the current experience while training (official train_mask)"
    )

    def validate(self) -> None:
        if self.top_k > self.pool_size:
            raise UserError(f"strategy.top_k ({self.top_k}) must be <= strategy.pool_size ({self.pool_size})")


def vit_dimensions(vit) -> dict:
    """Constructor arguments of Avalanche's ViTWithPrompt that reproduce ``vit``; UserError if unsupported."""
    block = vit.blocks[0]
    unsupported = [
        reason
        for reason, bad in (
            ("no [CLS] token", vit.cls_token is None),
            ("global_pool is not 'token'", vit.global_pool != "token"),
            ("register tokens", vit.num_reg_tokens > 0),
            ("no_embed_class", vit.no_embed_class),
            ("dynamic image size", vit.dynamic_img_size),
            ("attention pooling", vit.attn_pool is not None),
            ("a pre-norm", not isinstance(vit.norm_pre, nn.Identity)),
            ("an fc_norm", not isinstance(vit.fc_norm, nn.Identity)),
        )
        if bad
    ]
    if unsupported:
        raise UserError(
            f"l2p cannot rebuild this ViT with prompts ({', '.join(unsupported)}); "
            f"use a plain [CLS]-token ViT such as vit_micro"
        )
    return dict(
        img_size=tuple(vit.patch_embed.img_size),
        patch_size=tuple(vit.patch_embed.patch_size),
        in_chans=vit.patch_embed.proj.in_channels,
        embed_dim=vit.embed_dim,
        depth=len(vit.blocks),
        num_heads=block.attn.num_heads,
        mlp_ratio=block.mlp.fc1.out_features / vit.embed_dim,
        qkv_bias=block.attn.qkv.bias is not None,
        init_values=1.0 if isinstance(block.ls1, LayerScale) else None,
    )  # the values are copied below


def _vit_with_prompt_class():
    with warnings.catch_warnings():  # Avalanche imports timm.models.layers, deprecated in timm 1.0
        warnings.simplefilter("ignore", FutureWarning)
        from avalanche.models.timm_vit import ViTWithPrompt
    return ViTWithPrompt


def build_prompted_vit(vit, num_classes: int, config: L2PConfig) -> ViTWithPrompt:
    """Avalanche's ViTWithPrompt with ``vit``'s weights, a fresh head, and the backbone frozen."""
    model = _vit_with_prompt_class()(
        **vit_dimensions(vit),
        num_classes=num_classes,
        prompt_length=config.prompt_length,
        embedding_key="cls",
        prompt_init="uniform",
        prompt_pool=True,
        prompt_key=True,
        pool_size=config.pool_size,
        top_k=config.top_k,
        batchwise_prompt=config.batchwise_prompt,
        prompt_key_init="uniform",
        head_type=config.head_type,
        use_prompt_mask=False,
    )
    state = {name: value.detach().clone() for name, value in vit.state_dict().items()}
    position = state["pos_embed"]  # (1, 1 + patches, D): [CLS] first
    prompt_positions = position[:, :1].expand(-1, config.top_k * config.prompt_length, -1)
    state["pos_embed"] = torch.cat([position[:, :1], prompt_positions, position[:, 1:]], dim=1)
    _load_exactly(model, state, expected_missing={"prompt.prompt", "prompt.prompt_key", "head.weight", "head.bias"})
    model.head = nn.Linear(model.embed_dim, num_classes)  # as Avalanche: a fresh, default-initialised head
    for name, parameter in model.named_parameters():
        if name.startswith(FROZEN_PREFIXES):
            parameter.requires_grad_(False)
    return model


def build_query_vit(vit) -> nn.Module:
    """The frozen query model (Avalanche's ``original_vit``): the same ViT without prompts or head."""
    query = _vit_with_prompt_class()(**vit_dimensions(vit), num_classes=0)
    _load_exactly(query, vit.state_dict(), expected_missing=set())
    query.requires_grad_(False)
    return query.eval()


def _load_exactly(model: nn.Module, state: dict, expected_missing: set) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) != expected_missing or unexpected:
        raise UserError(
            f"l2p cannot copy this ViT's weights (missing {sorted(set(missing) - expected_missing)}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )


def check_query_matches_backbone(query: nn.Module, backbone: nn.Module, input_shape: tuple) -> None:
    """Refuse a backbone whose feature the rebuilt query model does not reproduce."""
    inputs = torch.rand((2, *input_shape), generator=torch.Generator().manual_seed(0))
    device = next(backbone.parameters()).device
    with torch.no_grad(), eval_mode(backbone):
        ours = backbone(inputs.to(device)).float().cpu()
        rebuilt = query.to(device)(inputs.to(device))["pre_logits"].float().cpu()
    if ours.shape != rebuilt.shape or not torch.allclose(ours, rebuilt, atol=1e-4, rtol=1e-4):
        raise UserError(
            "l2p: the backbone is not a plain timm ViT whose [CLS] feature the prompted copy "
            "reproduces (input preprocessing or a different pooling?); use vit_micro or timm:NAME"
        )


class PromptedViT(CustomPrediction, LearningToPrompt):
    """Avalanche's LearningToPrompt on a given prompted ViT and query model (see module docstring)."""

    def __init__(
        self,
        *,
        model: nn.Module,
        original_vit: nn.Module,
        num_classes: int,
        lr: float,
        sim_coefficient: float,
        use_mask: bool,
        criterion: nn.Module,
        **template_kwargs,
    ):
        # LearningToPrompt.__init__ would build and download its own ViT: set up what it sets, ourselves
        optimizer = torch.optim.Adam(model.parameters(), betas=(0.9, 0.999), lr=lr)
        SupervisedTemplate.__init__(self, model=model, optimizer=optimizer, criterion=criterion, **template_kwargs)
        self.num_classes = num_classes
        self.lr = lr
        self.sim_coefficient = sim_coefficient
        self._criterion = criterion
        self.use_cls_features = True
        self.train_prompt_mask = False
        self.use_mask = use_mask
        self.use_vit = True
        self.original_vit = original_vit.to(self.device)

    def prompted_forward(self, inputs: torch.Tensor) -> dict:
        """Query the frozen ViT, select prompts, run the prompted ViT: Avalanche's dict of outputs."""
        with torch.no_grad():
            query = self.original_vit(inputs)["pre_logits"]
        return self.model(x=inputs, task_id=-1, cls_features=query, train=self.train_prompt_mask)

    def forward(self) -> torch.Tensor:
        # Avalanche's forward feeds classes_in_this_experience to np.setdiff1d, which reads a Python set
        # (what Avalanche's own classes timeline stores) as one object and masks every class: -inf
        # logits, NaN loss. Same computation here with the classes as a sorted list.
        self.res = self.prompted_forward(self.mb_x)
        logits = self.res["logits"]
        if self.use_mask and self.is_training:
            outside = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
            outside[sorted(self.experience.classes_in_this_experience)] = False
            logits = logits.masked_fill(outside, float("-inf"))
        return logits

    def predict_logits(self, inputs: torch.Tensor, task_labels: torch.Tensor) -> torch.Tensor:
        """The evaluation rule: the prompted ViT's logits over all classes, unmasked."""
        return self.prompted_forward(inputs)["logits"]


# its model returns a dict of outputs and attacks call the model directly: not attackable; it needs
# experience boundaries (the builder refuses a task-free stream); a 4-prompt pool for the smoke run
@STRATEGIES.register(
    "l2p",
    config=L2PConfig,
    traits=StrategyTraits(
        needs_vit=True,
        attackable=False,
        task_free=False,
        smoke=SMOKE_DIGITS_VIT + ("strategy.pool_size=4", "strategy.prompt_length=2", "strategy.top_k=2"),
    ),
    train_defaults=L2P_TRAIN_DEFAULTS,
)
def build_l2p(config: L2PConfig, context: StrategyContext):
    """Learning to Prompt (Avalanche's LearningToPrompt) on our pre-trained ViT: prompt pool, frozen backbone."""
    if getattr(context.scenario, "online", None) is not None or context.scenario.setting == "task-free":
        raise UserError(
            "l2p needs experience boundaries (optimizer reset, classes_in_this_experience masking); "
            "use an offline class-incremental scenario"
        )
    if getattr(context.scenario, "task_labels", False):
        raise UserError("l2p is class-incremental (one head); drop scenario.task_labels")
    if context.train.optimizer != "adam":
        raise UserError(
            "l2p trains with Adam (Avalanche re-creates it at every experience); remove train.optimizer=sgd"
        )
    vit = find_vit(context.model)
    backbone = getattr(context.model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise UserError("l2p needs a single-head model whose model.backbone returns the ViT's [CLS] feature")
    query = build_query_vit(vit)
    check_query_matches_backbone(query, backbone, tuple(context.scenario.input_shape))
    model = build_prompted_vit(vit, context.scenario.num_classes, config).to(context.device)
    model.backbone_card = getattr(context.model, "backbone_card", None)  # the runner records it from strategy.model
    kwargs = context.template_kwargs()
    del kwargs["model"], kwargs["optimizer"]
    return fast(PromptedViT)(
        model=model,
        original_vit=query,
        num_classes=context.scenario.num_classes,
        lr=context.train.lr,
        sim_coefficient=config.sim_coefficient,
        use_mask=config.use_mask,
        **kwargs,
    )
