"""Masked autoencoder (He et al., 2022, "Masked Autoencoders Are Scalable Vision Learners") on a timm ViT.

An image x (C x H x W) is cut into L = (H/p)(W/p) patches of p*p*C pixels. Per sample, a uniformly
random subset of ``round_down(L * (1 - mask_ratio))`` patches (at least one) stays visible; the
rest (75 % by default) are masked. With e_i the patch embedding of patch i and P_i its position:

    encoder:  z = ViT_blocks([cls + P_0 ; e_i + P_i for visible i]) -> final LayerNorm    (no mask tokens)
    decoder:  u = W_d z ; the masked positions get a shared learned mask token m ;
              u_i <- u_i + Q_i (decoder positions, [CLS] included) ; Transformer blocks ; LayerNorm ;
              x_hat_i = W_p u_i   (p*p*C pixels per patch; [CLS] dropped)
    loss:     mean over masked i of  || x_hat_i - t_i ||^2 / (p*p*C)

with t_i the patch's pixels, or, with ``norm_pix_loss``, the pixels normalised by the patch's own
mean and variance (t_i - mean_i) / sqrt(var_i + 1e-6). The encoder is exactly the timm
``VisionTransformer`` of a ``vit_micro`` (or ``timm``) backbone: its ``patch_embed``, ``cls_token``,
``pos_embed``, ``blocks`` and ``norm`` are used as they are, so the pre-trained encoder is that
backbone's state dict unchanged. The decoder blocks are timm ``Block`` s.

Deviations from the official code (facebookresearch/mae):

* positional embeddings are learned (timm's ViT default; the decoder's too), not fixed 2-D sin-cos;
* the visible patches are kept in raster order rather than in the random shuffle order (the
  blocks are permutation-equivariant, so only float rounding differs); this lets
  :meth:`MaskedAutoencoder.encode` take any explicit mask, e.g. a centre hole for an
  image-to-image evaluator;
* decoder width, depth and heads are small by default (64, 2, 4; the paper's 512, 8, 16 are for
  224-px images) and are settings of ``cl-bench pretrain``.

Weight files store the encoder under the backbone's own keys and the decoder under ``decoder.``;
:func:`load_mae` rebuilds the whole model from a ``cl-bench pretrain --method mae`` backbone.
"""

from __future__ import annotations

from typing import Optional

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from cl_bench.errors import UserError

DECODER_PREFIX = "decoder."


class MAEDecoder(nn.Module):
    """Mask tokens + decoder positions + Transformer blocks + a linear map to the pixels of each patch."""

    def __init__(
        self,
        encoder_dim: int,
        num_patches: int,
        patch_pixels: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.embed = nn.Linear(encoder_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, embed_dim))
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim)
        self.pred = nn.Linear(embed_dim, patch_pixels)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent (N, 1 + K, D) of [CLS] + K visible patches -> predicted pixels (N, L, patch_pixels)."""
        tokens = self.embed(latent)
        batch, num_patches = ids_restore.shape
        masked = self.mask_token.expand(batch, num_patches - (tokens.shape[1] - 1), -1)
        patches = torch.cat([tokens[:, 1:], masked], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        tokens = torch.cat([tokens[:, :1], patches], dim=1) + self.pos_embed
        return self.pred(self.norm(self.blocks(tokens)))[:, 1:]


class MaskedAutoencoder(nn.Module):
    """A timm VisionTransformer encoder on the visible patches + :class:`MAEDecoder`."""

    card: dict  # set by load_mae: the card.json of the weights it loaded

    def __init__(
        self,
        encoder: VisionTransformer,
        decoder_embed_dim: int = 64,
        decoder_depth: int = 2,
        decoder_num_heads: int = 4,
        decoder_mlp_ratio: float = 4.0,
        norm_pix_loss: bool = False,
    ):
        super().__init__()
        if (
            encoder.cls_token is None
            or encoder.reg_token is not None
            or encoder.no_embed_class
            or encoder.pos_embed is None
            or encoder.dynamic_img_size
        ):
            raise UserError(
                "MAE needs a ViT with a class token, learned positions that include it, no register "
                "tokens and a fixed image size (vit_micro has all of these)"
            )
        if decoder_embed_dim % decoder_num_heads:
            raise UserError(f"decoder heads ({decoder_num_heads}) must divide the decoder width ({decoder_embed_dim})")
        self.encoder = encoder
        self.patch_size = tuple(encoder.patch_embed.patch_size)
        self.grid_size = tuple(encoder.patch_embed.grid_size)
        self.in_chans = encoder.patch_embed.proj.in_channels
        self.norm_pix_loss = norm_pix_loss
        patch_pixels = self.patch_size[0] * self.patch_size[1] * self.in_chans
        self.decoder = MAEDecoder(
            encoder.embed_dim,
            self.num_patches,
            patch_pixels,
            decoder_embed_dim,
            decoder_depth,
            decoder_num_heads,
            decoder_mlp_ratio,
        )

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, p*p*C), patches in raster order, pixels (row, column, channel)."""
        (gh, gw), (ph, pw) = self.grid_size, self.patch_size
        x = images.reshape(images.shape[0], self.in_chans, gh, ph, gw, pw)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(images.shape[0], gh * gw, ph * pw * self.in_chans)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify`."""
        (gh, gw), (ph, pw) = self.grid_size, self.patch_size
        x = patches.reshape(patches.shape[0], gh, gw, ph, pw, self.in_chans)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(patches.shape[0], self.in_chans, gh * ph, gw * pw)

    def random_mask(
        self,
        batch: int,
        mask_ratio: float,
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
    ) -> torch.Tensor:
        """Bool (N, L), True = masked; each row hides the same number of uniformly random patches."""
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if not device:
            cls_token = self.encoder.cls_token
            assert cls_token is not None  # __init__ refuses a ViT without a class token
            device = cls_token.device
        num_keep = max(1, int(self.num_patches * (1.0 - mask_ratio)))
        noise = torch.rand(batch, self.num_patches, generator=generator, device=device)
        mask = torch.ones(batch, self.num_patches, dtype=torch.bool, device=device)
        mask.scatter_(1, noise.argsort(dim=1)[:, :num_keep], False)
        return mask

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder on the visible patches: (latent (N, 1 + K, D), ids_restore (N, L))."""
        hidden = mask.sum(dim=1)
        if bool((hidden != hidden[0]).any()):
            raise ValueError("every row of the mask must hide the same number of patches")
        num_keep = self.num_patches - int(hidden[0])
        # visible patches first (raster order), then the masked ones; ids_restore undoes it
        ids_shuffle = torch.argsort(mask.to(torch.int8), dim=1, stable=True)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        vit = self.encoder
        assert vit.pos_embed is not None and vit.cls_token is not None  # __init__ refuses a ViT without them
        x = vit.patch_embed(images) + vit.pos_embed[:, 1:]
        x = torch.gather(x, 1, ids_shuffle[:, :num_keep].unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = vit.norm_pre(vit.pos_drop(torch.cat([cls, x], dim=1)))
        return vit.norm(vit.blocks(x)), ids_restore

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predicted pixels of every patch (N, L, p*p*C) (normalised per patch with norm_pix_loss)."""
        return self.decoder(latent, ids_restore)

    def target(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.patchify(images)
        if self.norm_pix_loss:
            mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
            patches = (patches - mean) / (var + 1e-6).sqrt()
        return patches

    def loss(self, images: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per pixel, averaged over the masked patches only."""
        per_patch = (prediction - self.target(images)).pow(2).mean(dim=-1)
        weights = mask.to(per_patch.dtype)
        return (per_patch * weights).sum() / weights.sum().clamp(min=1.0)

    def forward(
        self, images: torch.Tensor, mask_ratio: float = 0.75, generator: Optional[torch.Generator] = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, prediction (N, L, p*p*C), mask (N, L)) for a fresh random mask."""
        mask = self.random_mask(images.shape[0], mask_ratio, generator, images.device)
        prediction = self.decode(*self.encode(images, mask))
        return self.loss(images, prediction, mask), prediction, mask

    @torch.no_grad()
    def reconstruct(
        self,
        images: torch.Tensor,
        mask_ratio: float = 0.75,
        mask: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        keep_visible: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, H, W) with the masked patches predicted, and the mask used (N, L), True = masked.

        ``mask`` (bool, same count per row) overrides the random one. ``keep_visible`` pastes the
        visible input patches back. With ``norm_pix_loss`` the predictions are per-patch normalised;
        they are mapped back with the mean and std of the image's visible pixels (an estimate: the
        true statistics of a masked patch are unknown).
        """
        if mask is None:
            mask = self.random_mask(images.shape[0], mask_ratio, generator, images.device)
        prediction = self.decode(*self.encode(images, mask))
        patches = self.patchify(images)
        if self.norm_pix_loss:
            visible = (~mask).unsqueeze(-1).to(patches.dtype)
            count = visible.sum(dim=(1, 2), keepdim=True) * patches.shape[-1]
            mean = (patches * visible).sum(dim=(1, 2), keepdim=True) / count
            var = ((patches - mean).pow(2) * visible).sum(dim=(1, 2), keepdim=True) / count
            prediction = prediction * (var + 1e-6).sqrt() + mean
        if keep_visible:
            prediction = torch.where(mask.unsqueeze(-1), prediction, patches)
        return self.unpatchify(prediction), mask


def mae_tensors(mae: MaskedAutoencoder) -> dict[str, torch.Tensor]:
    """What a weight file stores: the encoder under the backbone's keys, the decoder under ``decoder.``."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in mae.encoder.state_dict().items()}
    tensors.update(
        {DECODER_PREFIX + key: value.detach().cpu().contiguous() for key, value in mae.decoder.state_dict().items()}
    )
    return tensors


def load_mae(name_or_path: str, device: str = "cpu") -> MaskedAutoencoder:
    """Rebuild the whole MAE (encoder + decoder) of a ``cl-bench pretrain --method mae`` backbone, in eval mode.

    ``name_or_path``: a backbone name in the cache or the path of its weights.safetensors (the
    card.json next to it says how to rebuild the model). ``mae.card`` holds the card.
    """
    from cl_bench.models.vit import file_sha256, load_state_strictly, read_card, read_weights, resolve_weights
    from cl_bench.backbone import backbone_from_card

    path = resolve_weights(name_or_path)
    card = read_card(path)
    if card is None or (card.get("method") or {}).get("name") != "mae":
        raise UserError(
            f"{path} is not an MAE backbone with a card.json; create one with `cl-bench pretrain --method mae`"
        )
    if card.get("sha256") not in (None, file_sha256(path)):
        raise UserError(f"weights {path} do not match the sha256 in their card; re-create them with --force")
    method = card["method"]
    if any(
        method.get(key) is None for key in ("decoder_embed_dim", "decoder_depth", "decoder_num_heads", "norm_pix_loss")
    ):
        raise UserError(
            f"the card of {path} does not describe its MAE decoder; re-create it with "
            f"`cl-bench pretrain --method mae --force`"
        )
    mae = MaskedAutoencoder(
        backbone_from_card(card),
        method["decoder_embed_dim"],
        method["decoder_depth"],
        method["decoder_num_heads"],
        norm_pix_loss=method["norm_pix_loss"],
    )
    tensors = read_weights(path)
    load_state_strictly(mae.encoder, tensors, str(path), "the file does not match its card")
    decoder = {key[len(DECODER_PREFIX) :]: value for key, value in tensors.items() if key.startswith(DECODER_PREFIX)}
    try:
        missing, unexpected = mae.decoder.load_state_dict(decoder, strict=False)
    except RuntimeError:  # a shape mismatch
        missing, unexpected = ["(shape mismatch)"], []
    if missing or unexpected:
        raise UserError(f"weights {path}: decoder tensor {(missing or unexpected)[0]!r} does not match the card")
    mae.card = card
    return mae.to(device).eval()
