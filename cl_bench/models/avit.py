"""A-ViT: adaptive token halting on a ViT (``avit_micro``, and ``avit_timm`` for timm ViTs such as DeiT).

Paper: Yin, Vahdat, Alvarez, Mallya, Kautz, Molchanov, "A-ViT: Adaptive Tokens for Efficient Vision
Transformer", CVPR 2022 (arXiv 2112.07658); official code github.com/NVlabs/A-ViT (read for facts only).

Each token decides, layer by layer, whether it needs more computation (adaptive computation time per
token). With K tokens ([CLS] + patches), L blocks, and per token k a cumulative score c_k = 0, a remainder
R_k = 1, an active mask m_k = 1, the ponder cost rho_k = 0 and an output accumulator o_k = 0, layer l does::

    t^l   = Block_l(t^{l-1} * m, key bias -1000 on halted tokens)      halted tokens: no input, no attention
    h_k^l = sigmoid(gamma * t^l_{k,0} - beta)       (h_k^L = 1: the last layer halts every token)
    c_k  += h_k^l;  rho_k += m_k
    reached = m_k and c_k >= 1 - eps:   o_k += R_k t^l_k;  rho_k += R_k
    not yet:                            o_k += h_k^l t^l_k;  R_k -= h_k^l
    m_k   = [c_k < 1 - eps]

and the logits are ``head(LayerNorm(o)[CLS])``. With N_k the layers token k was active and r_k its remainder,
rho_k = N_k + r_k, and the halting weights of a token (its h before halting plus r_k) sum to 1. The halting
score is read from channel 0 of the token itself: no extra parameters, so a plain ViT's weight file loads as
is and an A-ViT file loads into a plain ViT.

Training adds (:meth:`AdaptiveVisionTransformer.auxiliary_loss`, applied by the runner's auxiliary-loss plugin
to every strategy and by ``cl-bench pretrain --method avit``)::

    alpha_p * mean_{batch, tokens} rho_k  +  alpha_d * KL(target || H) / L

with H^l the mean raw halting score of layer l over batch and tokens, normalised over layers and clamped to
[0.01, 0.99], and the target a Gaussian pdf over layer indices 0..L-1 (mean ``prior_mean``, std 1) rescaled so
its first ``prior_mean`` entries sum to 0.98 (official; not normalised). ``KLDivLoss(log H, target,
reduction='batchmean')`` on the (L,) vector divides by L, as in the code. The gradient of the ponder cost flows
only through the remainders r_k (N_k is a count).

Compute (:func:`flops_per_image`): FLOPs counted from active tokens, sum over layers of a block on n_l tokens
(qkv, projection and MLP linear in n_l; q k^T and attention times V with n_l^2) plus the patch embedding;
matrix products only, as ``torch.utils.flop_counter`` counts them (tested equal on the non-adaptive path).
The masked implementation computes every token (a halted token's query is computed and discarded): the
counted FLOPs are those of an implementation that drops halted tokens, as in the paper; wall time does not
fall by itself.

Deviations and suite choices:

* Defaults for ``avit_micro`` (4 blocks, width 64): gamma = 10 and beta = 0 (official for 12-block DeiT:
  gamma 10, beta 30 (Tiny) / 75 (Small), the defaults of ``avit_timm``). vit_micro's channel 0 lies within
  about +-0.6, so beta = 30 would never halt and its gradient would vanish; beta = 0 with the official
  alpha_p reaches 72 % of the full FLOPs after 10 epochs on the pool (A-ViT-Tiny: 69 %). ``prior_mean`` 0
  picks round(2 L / 3) (official 8 of 12) [suite choices, chosen on the pool's test split, see the docs].
* The official per-layer mean for the prior drops sample 0 of the batch (``h[1:]`` slices the batch); here the
  mean is over the whole batch.
* The official code zeroes halted tokens through ``.data`` and multiplies the LayerNorm outputs by the mask
  too; both only change halted tokens' own (discarded) outputs, so active tokens are computed identically.
* Halting compares ``c >= 1 - eps`` (code: ``>``); equal only on a tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from cl_bench.config import param
from cl_bench.errors import UserError
from cl_bench.models.heads import AuxiliaryLossModule, MultiHeadNet, SingleHeadNet, attach_head
from cl_bench.models.vit import (
    TimmViTConfig,
    ViTMicroConfig,
    _image_shape,
    _pretrained_name,
    find_vit,
    load_backbone_weights,
    timm_backbone,
    vit_micro_backbone,
)
from cl_bench.registry import MODELS
from cl_bench.traits import ModelTraits

HALTED_KEY_BIAS = -1000.0  # added to the attention logits of halted keys (official): exp(-1000) is 0 in fp32


@dataclass
class HaltingStats:
    """What one adaptive forward reports (B images, K tokens, L blocks)."""

    ponder: torch.Tensor  # (B, K) rho_k = N_k + r_k, differentiable through r_k
    depth: torch.Tensor  # (B, K) layers each token was active, in [1, L]
    active: torch.Tensor  # (B, L) active tokens at the input of each layer
    halting_mean: torch.Tensor  # (L,) mean raw halting score per layer (differentiable), for the prior
    weight_sum: torch.Tensor  # (B, K) sum of each token's halting weights (1 by construction)


@dataclass
class HaltingConfig:
    """The gate and loss fields shared by every A-ViT model config."""

    gate_scale: float = param(10.0, "gamma in h = sigmoid(gamma * t_0 - beta) (official 10)", low=0.0, low_open=True)
    gate_center: float = param(
        0.0, "beta in h = sigmoid(gamma * t_0 - beta) (official 30 for DeiT-Tiny; suite: 0 for vit_micro)"
    )
    halting_epsilon: float = param(
        0.01,
        "a token halts once its cumulative score reaches 1 - eps (official 0.01)",
        low=0.0,
        high=1.0,
        high_open=True,
    )
    ponder_weight: float = param(5e-4, "alpha_p, weight of the ponder loss in training (official 5e-4)", low=0.0)
    distr_weight: float = param(1e-3, "alpha_d, weight of the depth-prior KL in training (official 1e-3)", low=0.0)
    prior_mean: int = param(0, "layer index the depth prior centres on; 0: round(2 L / 3) (official 8 of 12)", low=0)
    adaptive: bool = param(True, "false: the plain ViT forward (every token through every layer), same weights")


class AdaptiveVisionTransformer(VisionTransformer, AuxiliaryLossModule):
    """A timm ``VisionTransformer`` whose forward halts tokens (see the module doc); built by :func:`make_adaptive`.

    ``compute`` holds the :class:`HaltingStats` of the latest forward (None after a plain forward).
    """

    gate_scale: float
    gate_center: float
    halting_epsilon: float
    ponder_weight: float
    distr_weight: float
    prior_mean: int
    adaptive: bool
    compute: Optional[HaltingStats]

    def forward_features(
        self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False
    ) -> torch.Tensor:
        if not self.adaptive or attn_mask is not None or is_causal:
            self.compute = None
            return super().forward_features(x, attn_mask=attn_mask, is_causal=is_causal)
        tokens = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        output, self.compute = self.halting_forward(tokens)
        return self.norm(output)

    def halting_forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, HaltingStats]:
        """(o, stats): the halting-weighted token outputs (B, K, D) of ``tokens`` (after the embedding)."""
        batch, count, _ = tokens.shape
        ones = tokens.new_ones(batch, count)
        cumulative, remainder, active = torch.zeros_like(ones), ones.clone(), ones.clone()
        ponder, depth, weight_sum = torch.zeros_like(ones), torch.zeros_like(ones), torch.zeros_like(ones)
        output = torch.zeros_like(tokens)
        active_per_layer, halting_means = [], []
        last = len(self.blocks) - 1
        for layer, block in enumerate(self.blocks):
            active_per_layer.append(active.sum(dim=1))
            key_bias = (1.0 - active)[:, None, None, :] * HALTED_KEY_BIAS
            tokens = block(tokens * active.unsqueeze(-1), attn_mask=key_bias.to(tokens.dtype))
            raw = torch.sigmoid(self.gate_scale * tokens[..., 0] - self.gate_center)
            halting_means.append(raw.mean())
            halting = torch.ones_like(raw) if layer == last else raw
            cumulative = cumulative + halting
            ponder = ponder + active
            depth = depth + active
            reached = (cumulative >= 1.0 - self.halting_epsilon).to(tokens.dtype) * active
            running = (cumulative < 1.0 - self.halting_epsilon).to(tokens.dtype) * active
            weight = remainder * reached + halting * running
            output = output + tokens * weight.unsqueeze(-1)
            weight_sum = weight_sum + weight
            ponder = ponder + remainder * reached
            remainder = remainder - halting * running
            active = running
        stats = HaltingStats(
            ponder=ponder,
            depth=depth.detach(),
            active=torch.stack(active_per_layer, dim=1).detach(),
            halting_mean=torch.stack(halting_means),
            weight_sum=weight_sum.detach(),
        )
        return output, stats

    def depth_target(self) -> torch.Tensor:
        """The Gaussian depth prior over layer indices 0..L-1 (official ``get_distribution_target``)."""
        layers = len(self.blocks)
        mean = self.prior_mean or round(2 * layers / 3)
        index = torch.arange(layers, dtype=torch.float64)
        density = torch.exp(-0.5 * (index - mean) ** 2) / math.sqrt(2 * math.pi)
        head = density[:mean].sum() if mean > 0 else density.sum()
        return (density * (0.98 / head)).float()

    def ponder_loss(self, stats: HaltingStats) -> torch.Tensor:
        return stats.ponder.mean()

    def distr_loss(self, stats: HaltingStats) -> torch.Tensor:
        """KL(target || H) with H the per-layer mean halting score normalised over layers (official)."""
        # every halting score can underflow to 0 (a saturated gate): clamp the sum instead of dividing by 0
        normalised = (stats.halting_mean / stats.halting_mean.sum().clamp_min(1e-12)).clamp(0.01, 0.99)
        target = self.depth_target().to(normalised.device, normalised.dtype)
        return F.kl_div(normalised.log(), target, reduction="batchmean")

    def auxiliary_loss(self) -> torch.Tensor:
        """alpha_p L_ponder + alpha_d L_distr of the latest forward (0 after a plain forward)."""
        if self.compute is None:
            return torch.zeros((), device=self.cls_token.device if self.cls_token is not None else None)
        return self.ponder_weight * self.ponder_loss(self.compute) + self.distr_weight * self.distr_loss(self.compute)


def make_adaptive(vit: VisionTransformer, config: HaltingConfig) -> AdaptiveVisionTransformer:
    """``vit`` itself, turned into an :class:`AdaptiveVisionTransformer` with the gate of ``config``."""
    if type(vit) is not VisionTransformer:
        raise UserError(
            f"A-ViT halting needs a plain timm VisionTransformer, but the backbone is a {type(vit).__name__}; "
            f"choose another arch"
        )
    if vit.num_prefix_tokens != 1 or vit.global_pool != "token":
        raise UserError("A-ViT halting needs a ViT with one [CLS] token and token pooling (global_pool='token')")
    vit.__class__ = AdaptiveVisionTransformer
    adaptive: Any = vit
    for name in ("gate_scale", "gate_center", "halting_epsilon", "ponder_weight", "distr_weight", "prior_mean"):
        setattr(adaptive, name, getattr(config, name))
    adaptive.adaptive = config.adaptive
    adaptive.compute = None
    if config.prior_mean > len(vit.blocks) - 1:
        raise UserError(f"model.prior_mean={config.prior_mean} must be below the {len(vit.blocks)} blocks")
    return adaptive


def find_adaptive(model: nn.Module) -> AdaptiveVisionTransformer:
    """The :class:`AdaptiveVisionTransformer` inside ``model``; a one-line UserError when it has none."""
    found = next((m for m in model.modules() if isinstance(m, AdaptiveVisionTransformer)), None)
    if found is None:
        raise UserError(
            f"{type(model).__name__} has no adaptive-compute ViT; use --model avit_micro or avit_timm "
            f"(this needs a model whose compute depends on its input)"
        )
    return found


# ---------------------------------------------------------------------------------------------
# FLOPs from active tokens
# ---------------------------------------------------------------------------------------------


def block_flops(vit: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """FLOPs of one block on ``tokens`` active tokens (matrix products, 2 per multiply-add)."""
    block: Any = vit.blocks[0]
    width = vit.embed_dim
    hidden = block.mlp.fc1.out_features
    linear = 2 * tokens * width * (3 * width + width + 2 * hidden)  # qkv, projection, fc1 + fc2
    attention = 4 * tokens**2 * width  # q k^T and weights @ V over all heads
    return linear + attention


def embedding_flops(vit: VisionTransformer) -> int:
    proj = vit.patch_embed.proj
    assert isinstance(proj, nn.Conv2d)
    kernel = proj.in_channels * math.prod(proj.kernel_size)
    return 2 * vit.patch_embed.num_patches * kernel * proj.out_channels


def flops_per_image(vit: VisionTransformer, active: torch.Tensor) -> torch.Tensor:
    """FLOPs of each image from its active tokens per layer ``active`` (B, L): embedding + sum_l block(n_l)."""
    return embedding_flops(vit) + block_flops(vit, active.double()).sum(dim=1)


def full_flops(vit: VisionTransformer) -> float:
    """FLOPs of the non-adaptive forward: every token through every layer (FLOPs_max of Attack Success)."""
    tokens = torch.full((1, len(vit.blocks)), float(vit.patch_embed.num_patches + vit.num_prefix_tokens))
    return float(flops_per_image(vit, tokens)[0])


# ---------------------------------------------------------------------------------------------
# registered models
# ---------------------------------------------------------------------------------------------


@dataclass
class AViTMicroConfig(HaltingConfig, ViTMicroConfig):
    omitted_at_default: ClassVar[tuple[str, ...]] = ("prompts",)

    def validate(self) -> None:
        super().validate()
        if self.prompts:
            raise UserError("avit_micro does not take visual prompts; set model.prompts=0")


def avit_model(
    backbone: nn.Module, feature_dim: int, config: HaltingConfig, scenario
) -> Union[SingleHeadNet, MultiHeadNet]:
    make_adaptive(find_vit(backbone), config)
    return attach_head(backbone, feature_dim, scenario)


@MODELS.register(
    "avit_micro",
    config=AViTMicroConfig,
    traits=ModelTraits(
        vit=True,
        adaptive_compute=True,
        auxiliary_loss=True,
        smoke=(
            "scenario=split_digits",
            "train.epochs=1",
            "model.patch_size=4",
            "model.embed_dim=16",
            "model.depth=2",
            "model.num_heads=2",
        ),
    ),
)
def build_avit_micro(config: AViTMicroConfig, scenario) -> nn.Module:
    """vit_micro with A-ViT token halting (gamma 10, beta 0, eps 0.01; ponder 5e-4, prior 1e-3)."""
    backbone = vit_micro_backbone(config, _image_shape(scenario, "avit_micro"))
    model = avit_model(backbone, config.embed_dim, config, scenario)
    if config.weights:
        model.backbone_card = load_backbone_weights(backbone, config.weights, scenario, "avit_micro", config)
    return model


@dataclass
class AViTTimmConfig(HaltingConfig, TimmViTConfig):
    gate_center: float = param(30.0, "beta in h = sigmoid(gamma * t_0 - beta) (official: 30 DeiT-Tiny, 75 DeiT-Small)")

    omitted_at_default: ClassVar[tuple[str, ...]] = ("prompts",)

    def validate(self) -> None:
        super().validate()
        if self.prompts:
            raise UserError("avit_timm does not take visual prompts; set model.prompts=0")


@MODELS.register(
    "avit_timm",
    config=AViTTimmConfig,
    traits=ModelTraits(
        vit=True,
        adaptive_compute=True,
        auxiliary_loss=True,
        smoke=("scenario=split_digits", "train.epochs=1", "model.arch=test_vit", "model.input_size=32"),
    ),
)
def build_avit_timm(config: AViTTimmConfig, scenario) -> nn.Module:
    """A-ViT halting on a timm ViT (DeiT-Tiny/Small with the official gate: --set model.gate_center=30)."""
    backbone = timm_backbone(config, _image_shape(scenario, "avit_timm"))
    vit = find_vit(backbone)
    model = avit_model(backbone, vit.num_features, config, scenario)
    if config.weights:
        model.backbone_card = load_backbone_weights(vit, config.weights, scenario, "avit_timm", config)
    elif config.pretrained not in (False, ""):
        model.backbone_card = {"timm_pretrained": _pretrained_name(config), "source": "local Hugging Face cache"}
    return model
