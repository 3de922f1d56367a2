"""The configuration of ``cl-bench unlearn-generator``: a leaf module (no torch), so the command line can build its
flags without importing the unlearning code. The method itself is :mod:`evaluators.generator_unlearning`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cl_bench.config import ComponentConfig, param
from cl_bench.errors import UserError

# encoder_noise is the paper's method (Li, Hsu, Chen, Marculescu, ICLR 2024); original leaves the model as it is
ENCODER_METHODS = ("encoder_noise", "random_encoder")
FULL_MODEL_METHODS = ("max_loss", "noisy_label", "retain_label")
METHODS = ENCODER_METHODS + FULL_MODEL_METHODS + ("original",)
DEGRADATIONS = ("centre", "outpaint", "random")
RETAIN_SOURCES = ("real", "classes", "digits")
NOISE_TYPES = ("normal", "uniform", "constant")
GROUP_WEIGHTINGS = ("group_mean", "batch_share")
DEFAULT_METRIC_BACKBONE = "vit_micro-fmnist-supervised-s0"
DEFAULT_OUT_DIR = "runs_generator_unlearning"
NUM_CLASSES = 10  # Fashion-MNIST, the only dataset whose pool `cl-bench pretrain` trains on
BOARD_NAME = "eval_generator_unlearning"  # the board's file stem
# the columns its docs page shows (every column is in the CSV): one row per run
BOARD_HEADLINE = (
    "method",
    "alpha",
    "retain_classes",
    "retain_source",
    "seed",
    "forget_mse_masked",
    "forget_fd_vitmicro",
    "forget_cos_vitmicro",
    "retain_mse_masked",
    "retain_fd_vitmicro",
    "retain_cos_vitmicro",
)


@dataclass
class GeneratorUnlearningConfig(ComponentConfig):
    method: str = param(
        "encoder_noise",
        "encoder_noise (the paper's: retain embeddings anchored to the frozen teacher's, forget embeddings pulled "
        "to the teacher's embedding of a noise image; encoder only), random_encoder (forget target a Gaussian "
        "embedding; encoder only), max_loss, noisy_label, retain_label (reconstruction baselines, whole model), "
        "or original (no unlearning: the row to compare with)",
        choices=METHODS,
    )
    degradation: str = param(
        "centre",
        "what the generator must fill in: centre (a square hole of hole_px), outpaint (a border of border_px "
        "around the kept centre) or random (MAE random masking of mask_ratio of the patches)",
        choices=DEGRADATIONS,
    )
    hole_px: int = param(
        14, "centre: side of the hole in pixels, a multiple of the patch side (14 = half the side)", low=0
    )
    border_px: int = param(7, "outpaint: width of the masked border in pixels, a multiple of the patch side", low=0)
    mask_ratio: float = param(
        0.75, "random: fraction of the patches masked per image", low=0.0, high=1.0, high_open=True
    )
    forget_classes: list[int] = param(
        [0, 1, 2, 3, 4], "classes to forget (default 0,1,2,3,4)", low=0, high=NUM_CLASSES - 1
    )
    retain_classes: list[int] = param(
        [5, 6, 7, 8, 9],
        "classes to keep: their pool images are the retain set (retain_source=real) and their test images are "
        "scored in every mode (default 5,6,7,8,9)",
        low=0,
        high=NUM_CLASSES - 1,
    )
    retain_source: str = param(
        "real",
        "the images that play the retain set during unlearning: real (pool images of retain_classes), classes "
        "(pool images of proxy_classes, disjoint from both), or digits (scikit-learn's digits resized to 28x28, "
        "another dataset)",
        choices=RETAIN_SOURCES,
    )
    proxy_classes: list[int] = param(
        [],
        "retain_source=classes: the pool classes used in place of the retain set (default none)",
        low=0,
        high=NUM_CLASSES - 1,
    )
    alpha: float = param(0.25, "weight of the forget term (the retain term has weight 1)", low=0.0)
    noise_type: str = param(
        "normal",
        "the noise image whose teacher embedding forget embeddings are pulled to (and noisy_label's target): normal "
        "(the mixed batch's pixel mean and std, clamped to [0, 1]), uniform (U[0, 1]) or constant (the batch mean)",
        choices=NOISE_TYPES,
    )
    group_weighting: str = param(
        "group_mean",
        "group_mean: each term is the mean over its own group's samples; batch_share: the official code's "
        "whole-batch mean of (1 +- y)-weighted samples, i.e. 2 x (group's share of the batch) x group mean",
        choices=GROUP_WEIGHTINGS,
    )
    epochs: int = param(10, "passes over the larger of the forget and retain sets", low=1)
    warmup_epochs: int = param(1, "epochs of linear learning-rate warm-up before the cosine decay", low=0)
    batch_size: int = param(64, "mini-batch size, half forget and half retain images", low=2)
    lr: float = param(1e-3, "peak AdamW learning rate", low=0.0, low_open=True)
    weight_decay: float = param(0.05, "AdamW weight decay (not on biases, norms, positions, tokens)", low=0.0)
    betas: list[float] = param([0.9, 0.95], "AdamW betas (default 0.9,0.95)", low=0.0, high=1.0, high_open=True)
    grad_clip: float = param(3.0, "clip the gradient norm at this value (the official code's 3.0); 0: no clip", low=0.0)
    images_per_class: int = param(
        200, "training images per forget, retain or proxy class (the first ones of the pool)", low=1
    )
    test_images_per_class: int = param(
        100, "Fashion-MNIST test images scored per forget and retain class (the first ones)", low=1
    )
    reference: str = param(
        "",
        "the retrain-from-scratch reference: an MAE backbone pre-trained on the retain classes only "
        "(`cl-bench pretrain --method mae --classes 5,6,7,8,9`); empty (default): none",
    )
    metric_backbone: str = param(
        DEFAULT_METRIC_BACKBONE,
        "the supervised backbone (`cl-bench pretrain --method supervised`, head included) whose features and "
        "classifier give the Frechet distance, the Inception-style score, the cosine and the accuracy",
    )
    is_splits: int = param(
        10, "splits of the Inception-style score and of the Inception Score (mean and std over them)", low=1
    )
    inception_weights: str = param(
        "",
        "optional: torch-fidelity's FID Inception-v3 weights file (weights-inception-2015-12-05-6726825d.pth or a "
        "safetensors copy) on this machine: adds fid_inception and is_inception (the image-metrics extra; nothing "
        "downloads); empty (default): none",
    )
    clip_model: str = param(
        "",
        "optional: an open_clip architecture (e.g. ViT-B-32) or model-config JSON file whose image embeddings give "
        "cos_clip, the paper's CLIP score (needs clip_weights and the image-metrics extra); empty (default): none",
    )
    clip_weights: str = param("", "the clip_model checkpoint file (a state dict: safetensors or torch.save)")
    grid_images: int = param(4, "images per group (forget, retain) in the picture grid", low=1)
    tsne_images: int = param(200, "test images per group in the t-SNE picture; 0: no t-SNE", low=0)
    device: str = param("auto", "auto (CUDA when present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    threads: int = param(1, "torch intra-op threads; 0: torch's own choice (one per core)", low=0)

    # settings that say where and how fast the command runs, not what it computes: outside the run id
    runtime_fields: ClassVar[tuple[str, ...]] = ("device", "threads")
    # added after the board was committed: absent from the resolved settings (and so the run ids) when unused
    omitted_at_default: ClassVar[tuple[str, ...]] = ("inception_weights", "clip_model", "clip_weights")
    # paths: the run id names these by their files' sha256 (or the architecture name), not by where they lie
    file_fields: ClassVar[tuple[str, ...]] = ("inception_weights", "clip_model", "clip_weights")

    def validate(self) -> None:
        for name in ("forget_classes", "retain_classes", "proxy_classes"):
            classes = getattr(self, name)
            if len(set(classes)) != len(classes):
                raise UserError(f"unlearn.{name} {classes} names a class twice; give each class once")
        if not self.forget_classes:
            raise UserError("unlearn.forget_classes is empty; name at least one class to forget")
        if not self.retain_classes:
            raise UserError("unlearn.retain_classes is empty; name at least one class whose quality is kept")
        overlap = sorted(set(self.forget_classes) & set(self.retain_classes))
        if overlap:
            raise UserError(f"class {overlap[0]} is both forgotten and retained; forget and retain classes must differ")
        if self.retain_source == "classes":
            if not self.proxy_classes:
                raise UserError(
                    "retain_source=classes needs proxy_classes (pool classes neither forgotten nor retained)"
                )
            clash = sorted(set(self.proxy_classes) & (set(self.forget_classes) | set(self.retain_classes)))
            if clash:
                raise UserError(
                    f"proxy class {clash[0]} is also a forget or retain class; proxy classes stand in for unseen "
                    f"retain data and must differ from both"
                )
        elif self.proxy_classes:
            raise UserError(
                f"proxy_classes are used with retain_source=classes only (retain_source={self.retain_source})"
            )
        if len(self.betas) != 2:
            raise UserError(f"unlearn.betas must be two numbers (beta1, beta2), got {self.betas}")
        if self.warmup_epochs > self.epochs:
            raise UserError(f"unlearn.warmup_epochs ({self.warmup_epochs}) exceeds the {self.epochs} epochs")
        if self.degradation == "centre" and self.hole_px == 0:
            raise UserError("degradation centre with hole_px=0 masks nothing; give the hole's side in pixels")
        if self.degradation == "outpaint" and self.border_px == 0:
            raise UserError("degradation outpaint with border_px=0 masks nothing; give the border's width in pixels")
        if self.degradation == "random" and self.mask_ratio == 0.0:
            raise UserError("degradation random with mask_ratio=0 masks nothing; give a ratio in (0, 1)")


__all__ = [
    "DEFAULT_OUT_DIR",
    "DEGRADATIONS",
    "ENCODER_METHODS",
    "FULL_MODEL_METHODS",
    "GROUP_WEIGHTINGS",
    "GeneratorUnlearningConfig",
    "METHODS",
    "NOISE_TYPES",
    "RETAIN_SOURCES",
]
