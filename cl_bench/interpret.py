"""Where a model looks, and the test-time blocking defence built on it.

Paper: Subramanya, Saha, Koohpayegani, Tejankar, Pirsiavash, "Backdoor Attacks on Vision Transformers" (arXiv
2206.08477; WACV 2024): the interpretation map of the predicted class peaks on a backdoor trigger in a ViT, so
blocking the square around its peak and predicting again defeats the trigger.

* :func:`attention_rollout` (ViTs): attention-gradient rollout. Hooks on every block's attention dropout record
  the post-softmax attention A_l (B, H, N, N) and its gradient G_l = d logit_c / d A_l (c: the predicted class;
  timm's fused attention is switched off for the call and restored, the hooks removed). Per layer
  M_l = mean_heads(A_l * G_l) with negative entries set to 0, then the smallest ``discard_ratio`` of its N x N
  entries set to 0, M~_l = (M_l + I) / 2 normalised, and R <- M~_l R from R = I. The map is R[CLS, patches]
  on the patch grid, divided by its maximum. Normalisation: each row by its sum (default); the official code's
  ``a / a.sum(dim=-1)`` divides column j by the sum of row j (``official_normalisation=True`` reproduces it).
* :func:`grad_cam` (CNNs): Grad-CAM on the last convolution: ReLU(sum_k mean(dlogit_c/dA_k) A_k), over its
  maximum, as the paper compares.
* :func:`block_peak`: the map upsampled to the image (bilinear), an all-ones box filter ((e+1) x (e+1) for an
  even e, as the official 31 for e = 30; e x e for an odd e, so that the box stays centred), its argmax
  (y*, x*), and an e x e square centred there (shifted to stay inside) set to ``fill`` (black).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from cl_bench.errors import UserError


def _vit(model: nn.Module):
    from cl_bench.models.vit import PromptedVisionTransformer, find_vit

    found = find_vit(model)
    if isinstance(found, PromptedVisionTransformer):
        raise UserError("attention rollout on a prompted ViT is not supported; set model.prompts=0")
    return found


@contextlib.contextmanager
def recorded_attention(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The post-softmax attention (B, H, N, N) of every block in the forwards of the block (unfused attention
    for the duration; the hooks and the fused flag restored after)."""
    vit = _vit(model)
    records: list[torch.Tensor] = []
    handles, fused = [], []
    try:
        for block in vit.blocks:
            attention = block.attn
            fused.append(attention.fused_attn)
            attention.fused_attn = False
            handles.append(attention.attn_drop.register_forward_hook(lambda _m, _i, output: records.append(output)))
        yield records
    finally:
        for handle in handles:
            handle.remove()
        for block, flag in zip(vit.blocks, fused):
            block.attn.fused_attn = flag


def attention_rollout(
    model: nn.Module,
    images: torch.Tensor,
    classes: Optional[torch.Tensor] = None,
    discard_ratio: float = 0.9,
    official_normalisation: bool = False,
) -> torch.Tensor:
    """(B, gh, gw) attention-gradient rollout maps of ``classes`` (default: the predicted ones), max 1. The
    gradients are taken with ``torch.autograd.grad``: nothing accumulates in the parameters' ``.grad``."""
    vit = _vit(model)
    with recorded_attention(model) as attentions, torch.enable_grad():
        logits = model(images.detach().requires_grad_(True))  # a graph even through a frozen model
        chosen = logits.argmax(1) if classes is None else classes
        gradients = torch.autograd.grad(logits.gather(1, chosen.unsqueeze(1)).sum(), attentions)
    batch, tokens = images.shape[0], attentions[0].shape[-1]
    identity = torch.eye(tokens, device=images.device).expand(batch, tokens, tokens)
    rollout = identity.clone()
    for attention, gradient in zip(attentions, gradients):
        weights = (attention.detach() * gradient).mean(dim=1).clamp(min=0)
        flat = weights.reshape(batch, -1)
        drop = int(flat.shape[1] * discard_ratio)
        if drop:
            flat = flat.scatter(1, flat.topk(drop, dim=1, largest=False).indices, 0.0)
        rollout = normalise((flat.reshape(batch, tokens, tokens) + identity) / 2, official_normalisation) @ rollout
    prefix = vit.num_prefix_tokens
    maps = rollout[:, 0, prefix:].reshape(batch, *vit.patch_embed.grid_size)
    return maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def normalise(matrices: torch.Tensor, official: bool = False) -> torch.Tensor:
    """(..., N, N) matrices with every row divided by its sum; ``official``: the official code's
    ``a / a.sum(dim=-1)``, which broadcasts the row sums along the last axis (entry [i, j] over row j's sum)."""
    sums = matrices.sum(dim=-1)
    return matrices / (sums.unsqueeze(-2) if official else sums.unsqueeze(-1))


def grad_cam(model: nn.Module, images: torch.Tensor, classes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, h, w) Grad-CAM maps on the last convolution of ``model`` for ``classes`` (default predicted), max 1."""
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convolutions:
        raise UserError(f"{type(model).__name__} has no convolution for Grad-CAM; use interpretation=rollout")
    kept: list[torch.Tensor] = []
    handle = convolutions[-1].register_forward_hook(lambda _m, _i, output: kept.append(output))
    try:
        with torch.enable_grad():
            logits = model(images.detach().requires_grad_(True))
            chosen = logits.argmax(1) if classes is None else classes
            (gradient,) = torch.autograd.grad(logits.gather(1, chosen.unsqueeze(1)).sum(), kept[-1])
    finally:
        handle.remove()
    activations = kept[-1].detach()
    cam = (gradient.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1).clamp(min=0)
    return cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def peak_squares(maps: torch.Tensor, height: int, width: int, size: int) -> torch.Tensor:
    """(B, 2) top-left corners of the ``size`` x ``size`` squares around the box-filtered peak of each map
    (upsampled to ``height`` x ``width``), shifted to stay inside the image."""
    if size > min(height, width):
        raise UserError(f"a blocking square of {size} px does not fit the {height}x{width} image")
    upsampled = F.interpolate(maps.unsqueeze(1).float(), size=(height, width), mode="bilinear", align_corners=False)
    side = size + 1 if size % 2 == 0 else size  # an odd, centred box: the official 31 for e = 30
    box = torch.ones(1, 1, side, side, device=maps.device)
    scores = F.conv2d(upsampled, box, padding=side // 2)[:, 0]  # (B, H, W): the mass around every pixel
    peak = scores.reshape(len(maps), -1).argmax(dim=1)
    rows = (peak // width - size // 2).clamp(0, height - size)
    cols = (peak % width - size // 2).clamp(0, width - size)
    return torch.stack([rows, cols], dim=1)


def block_squares(
    images: torch.Tensor, corners: torch.Tensor, size: int, fill: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """``images`` with the ``size`` x ``size`` square at each image's corner set to ``fill`` (a value, or one per
    channel as a (C, 1, 1) tensor: black in a normalised input); a new tensor."""
    blocked = images.clone()
    for index, (row, col) in enumerate(corners.tolist()):
        blocked[index, :, row : row + size, col : col + size] = fill
    return blocked


def block_peak(images: torch.Tensor, maps: torch.Tensor, size: int, fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """``images`` with a ``size`` x ``size`` square set to ``fill`` around the box-filtered peak of each map."""
    corners = peak_squares(maps, images.shape[2], images.shape[3], size)
    return block_squares(images, corners, size, fill)
