"""The configuration of ``cl-bench pretrain``: a leaf module (no torch), so the command line can be built from
it without importing the training code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cl_bench.config import ComponentConfig, param
from cl_bench.errors import UserError

METHODS = ("supervised", "mae", "avit")
DATASETS = ("fmnist",)


@dataclass
class PretrainConfig(ComponentConfig):
    method: str = param(
        "supervised",
        "supervised (linear head, cross-entropy), mae (masked autoencoder) or avit (cross-entropy + A-ViT's "
        "ponder and depth-prior losses; --model avit_micro or avit_timm)",
        choices=METHODS,
    )
    data: str = param("fmnist", "the dataset whose pre-training pool is used", choices=DATASETS)
    classes: list[int] = param(
        [],
        "pre-train on the pool images of these classes only (and report quality on the test images of these "
        "classes), e.g. [5,6,7,8,9] for the retrain-from-scratch reference of generator unlearning; "
        "empty (default): every class",
        low=0,
        high=9,
    )
    epochs: int = param(15, "passes over the pool (default per method)", low=1)
    batch_size: int = param(128, "mini-batch size", low=1)
    lr: float = param(1e-3, "peak AdamW learning rate (default per method)", low=0.0, low_open=True)
    weight_decay: float = param(0.05, "AdamW weight decay (not on biases, norms, positions, tokens)", low=0.0)
    warmup_epochs: int = param(1, "epochs of linear learning-rate warm-up before the cosine decay", low=0)
    augment: bool = param(False, "random shifts of up to 2 px and horizontal flips")
    mask_ratio: float = param(0.75, "mae: fraction of patches masked per image", low=0.0, high=1.0, high_open=True)
    decoder_embed_dim: int = param(64, "mae: decoder width", low=1)
    decoder_depth: int = param(2, "mae: decoder Transformer blocks", low=1)
    decoder_num_heads: int = param(4, "mae: decoder attention heads", low=1)
    norm_pix_loss: bool = param(False, "mae: regress per-patch normalised pixels")
    seed: int = param(0, "seed of the initialisation, the batch order, the masks and the augmentation", low=0)
    device: str = param("auto", "auto (CUDA when present), cpu or cuda", choices=("auto", "cpu", "cuda"))

    omitted_at_default: ClassVar[tuple[str, ...]] = ("classes",)

    def validate(self) -> None:
        if self.warmup_epochs > self.epochs:
            raise UserError(
                f"pretrain warm-up ({self.warmup_epochs} epochs) exceeds the {self.epochs} epochs; "
                f"lower --warmup-epochs"
            )
        if self.decoder_embed_dim % self.decoder_num_heads:
            raise UserError(
                f"--decoder-heads {self.decoder_num_heads} must divide --decoder-dim {self.decoder_embed_dim}"
            )
        if len(set(self.classes)) != len(self.classes):
            raise UserError(f"pretrain.classes {self.classes} names a class twice; give each class once")

    def method_settings(self) -> dict:
        """The method and its hyperparameters, as recorded in the card."""
        settings = {
            "name": self.method,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "warmup_epochs": self.warmup_epochs,
            "schedule": "linear warm-up, cosine decay per step",
            "augment": self.augment,
        }
        if self.classes:  # a class-restricted pool (a retrain reference) must never be reused as a full one
            settings["classes"] = sorted(self.classes)
        if self.method == "mae":
            settings.update(
                optimizer="AdamW(betas=(0.9, 0.95))",
                mask_ratio=self.mask_ratio,
                decoder_embed_dim=self.decoder_embed_dim,
                decoder_depth=self.decoder_depth,
                decoder_num_heads=self.decoder_num_heads,
                norm_pix_loss=self.norm_pix_loss,
            )
        elif self.method == "avit":
            settings.update(
                optimizer="AdamW(betas=(0.9, 0.999))",
                loss="cross-entropy + ponder_weight * ponder + distr_weight * KL(depth prior) (model config)",
            )
        else:
            settings.update(optimizer="AdamW(betas=(0.9, 0.999))", loss="cross-entropy")
        return settings


__all__ = ["DATASETS", "METHODS", "PretrainConfig"]
