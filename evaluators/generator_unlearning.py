"""Machine unlearning for image-to-image generators (Li, Hsu, Chen, Marculescu, "Machine Unlearning for
Image-to-Image Generative Models", ICLR 2024, arXiv 2402.00351) on the suite's masked autoencoder.

The generator is h = D_phi . E_theta: the MAE's encoder sees the visible patches of a degraded image T(x) (a
centre hole, a removed border, or MAE random masking) and its decoder fills in the rest
(:mod:`cl_bench.models.mae`). Unlearning must make h fail on the forget classes (noise-like fill-ins) and leave
it as it was on the retain classes. The paper's method updates **only the encoder**; the decoder and a frozen
copy of the original encoder (the teacher E_theta0) stay fixed. With n a noise image,

    L(theta) =         E_{x_r}    || E_theta(T(x_r)) - E_theta0(T(x_r)) ||^2
               + alpha E_{x_f, n} || E_theta(T(x_f)) - E_theta0(T(n))   ||^2

(squared distances averaged over tokens and channels): retain embeddings are anchored to the teacher's, forget
embeddings pulled to the teacher's embedding of noise. With a fixed decoder and Gaussian embeddings both KL
terms of the paper's objective are bounded by such L2 distances between encoder outputs, which is why a bounded
"look like noise" target replaces unbounded "maximise the divergence". ``alpha`` weighs the forget term.

What happens per mini-batch (:func:`unlearn`):

* a balanced batch: ``batch_size / 2`` forget images and as many retain (or proxy) images; the smaller set is
  oversampled (each pass cycles fresh permutations of it), and an epoch is one pass over the larger set;
* one degradation mask for the whole step, given explicitly to the student's pass and the teacher's (the official
  code draws the mask on the student pass and hands it over). The teacher runs once per step, on the batch with
  each forget image swapped for its noise image: each row's target is computed where the student computes that
  row, so the retain targets equal the student's output bit for bit at theta0 (the official code runs the
  teacher on the clean batch and on the noise batch: one pass more, the same targets);
* the noise image (``noise_type``): ``normal`` draws N(mean, std) with the pixel mean and std of the whole mixed
  batch, clamped to [0, 1]; ``uniform`` U[0, 1]; ``constant`` the batch mean everywhere;
* AdamW (betas 0.9, 0.95; no weight decay on biases, norms, positions and tokens), linear warm-up then cosine
  decay per step, gradient-norm clipping (3.0 in the official code).

Deviations from the official code (``jpmorganchase/i2i_mage`` and the Palette fork, branch ``i2i``), which has
no MAE:

* the embedding is the ViT encoder's output after its final LayerNorm over [CLS] + the visible tokens, shape
  (N, 1 + K, D) (the MAGE fork's choice for its ViT encoder, here on our MAE);
* ``group_weighting=group_mean`` (default) averages each term over its own group's samples; the code averages
  (1 +- y)-weighted per-sample losses over the whole batch, which is 2 x (the group's share of the batch) x the
  group mean (``batch_share`` reproduces it). On balanced batches both are equal; on an unbalanced one the code's
  effective alpha moves with the mix, ours does not;
* the student runs in eval mode: vit_micro has no dropout or BatchNorm, and it keeps student and teacher equal
  bit for bit at theta = theta0 (so the retain term and, with alpha = 0, the gradient start at exactly 0);
* no AMP, one device, the schedule's warm-up in epochs (``warmup_epochs``; the MAGE run warms up 5 of 6 epochs).

Baselines (:mod:`evaluators.generator_unlearning_baselines`), in the same loop and batches: ``random_encoder``
(encoder only; the forget target is a Gaussian embedding with the teacher embeddings' mean and std),
``max_loss``, ``noisy_label`` and ``retain_label`` (whole model, on the MAE's masked-patch reconstruction loss).
The command that runs all this, scores it and writes the artefact is :mod:`cl_bench.unlearn_generator`.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from cl_bench.errors import UserError
from cl_bench.generator_unlearning_config import ENCODER_METHODS, GeneratorUnlearningConfig
from cl_bench.models.mae import MaskedAutoencoder

# the names whose parameters AdamW never decays (besides every bias and norm weight, ndim <= 1)
NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token")

MaskOfBatch = Callable[[int, torch.Generator], Tensor]


class LossParts(NamedTuple):
    """A step's objective and its two terms: ``total = retain + alpha * forget`` (``max_loss``: ``- alpha``)."""

    total: Tensor
    retain: Tensor
    forget: Tensor


LossFunction = Callable[
    [MaskedAutoencoder, MaskedAutoencoder, Tensor, Tensor, Tensor, GeneratorUnlearningConfig, torch.Generator],
    LossParts,
]


@dataclass
class UnlearningResult:
    model: MaskedAutoencoder  # the unlearned copy (the input model is not touched)
    teacher: MaskedAutoencoder  # the frozen copy of the input the targets came from
    steps: int
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)  # per epoch: mean total, retain and forget terms


# ---------------------------------------------------------------------------------------------
# pieces of the objective
# ---------------------------------------------------------------------------------------------


def noise_images(images: Tensor, noise_type: str, generator: torch.Generator) -> Tensor:
    """The noise images n for a mixed batch (same shape); their statistics are the whole batch's, as in the code."""
    if noise_type == "uniform":
        return torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    mean = images.mean()
    if noise_type == "constant":
        return mean.expand_as(images).clone()
    if noise_type == "normal":
        draw = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        return (draw * images.std() + mean).clamp(0.0, 1.0)
    raise ValueError(f"unknown noise type {noise_type!r}")


def embedding_mse(latent: Tensor, target: Tensor) -> Tensor:
    """Per sample: the squared distance of two embeddings (N, T, D), averaged over tokens and channels."""
    return (latent - target).pow(2).mean(dim=tuple(range(1, latent.ndim)))


def group_terms(per_sample: Tensor, is_forget: Tensor, weighting: str) -> tuple[Tensor, Tensor]:
    """(retain term, forget term) of per-sample losses: each group's mean (an empty group gives 0), or with
    ``batch_share`` the official code's whole-batch mean of 2 x the group's samples."""
    retain_weight, forget_weight = (~is_forget).to(per_sample.dtype), is_forget.to(per_sample.dtype)
    if weighting == "batch_share":
        return (2.0 * retain_weight * per_sample).mean(), (2.0 * forget_weight * per_sample).mean()
    if weighting != "group_mean":
        raise ValueError(f"unknown group weighting {weighting!r}")
    retain = (retain_weight * per_sample).sum() / retain_weight.sum().clamp(min=1.0)
    forget = (forget_weight * per_sample).sum() / forget_weight.sum().clamp(min=1.0)
    return retain, forget


def encoder_noise_loss(
    student: MaskedAutoencoder,
    teacher: MaskedAutoencoder,
    images: Tensor,
    is_forget: Tensor,
    mask: Tensor,
    config: GeneratorUnlearningConfig,
    generator: torch.Generator,
) -> LossParts:
    """The paper's objective on one mixed batch; ``mask`` is the one degradation mask of both passes."""
    latent, _ = student.encode(images, mask)
    with torch.no_grad():
        # one teacher pass: each forget row swapped for its noise image, each retain row as the student sees it.
        # Same shape, same row, same kernels as the student's pass: equal bits at theta0 on the retain rows.
        if bool(is_forget.any()):
            noise = noise_images(images, config.noise_type, generator)
            images = torch.where(is_forget.view(-1, 1, 1, 1), noise, images)
        target, _ = teacher.encode(images, mask)
    retain, forget = group_terms(embedding_mse(latent, target), is_forget, config.group_weighting)
    return LossParts(retain + config.alpha * forget, retain, forget)


def loss_function(method: str) -> LossFunction:
    from evaluators import generator_unlearning_baselines as baselines

    functions: dict[str, LossFunction] = {
        "encoder_noise": encoder_noise_loss,
        "random_encoder": baselines.random_encoder_loss,
        "max_loss": baselines.max_loss,
        "noisy_label": baselines.noisy_label_loss,
        "retain_label": baselines.retain_label_loss,
    }
    if method not in functions:
        raise ValueError(f"{method!r} is not an unlearning method with a loss")
    return functions[method]


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------


def frozen_copy(model: MaskedAutoencoder) -> MaskedAutoencoder:
    teacher = copy.deepcopy(model).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def adamw(module: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``module``; no decay on biases, norms, positions and tokens."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            exempt = parameter.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES
            (no_decay if exempt else decay).append(parameter)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=betas,
    )


def cycled_rows(count: int, length: int, generator: torch.Generator) -> Tensor:
    """``length`` row indices of a set of ``count``: fresh permutations one after another (oversampling)."""
    if count == 0:
        return torch.zeros(0, dtype=torch.long)
    rounds = math.ceil(length / count)
    return torch.cat([torch.randperm(count, generator=generator, device=generator.device) for _ in range(rounds)])[
        :length
    ].cpu()


def trained_module(model: MaskedAutoencoder, method: str) -> nn.Module:
    """What ``method`` updates: the encoder (the paper's method and random_encoder) or the whole MAE."""
    return model.encoder if method in ENCODER_METHODS else model


def unlearn(
    model: MaskedAutoencoder,
    forget_images: Tensor,
    retain_images: Tensor,
    config: GeneratorUnlearningConfig,
    mask_of_batch: MaskOfBatch,
    generator: torch.Generator,
    progress: bool = False,
) -> UnlearningResult:
    """Unlearn ``forget_images`` from a copy of ``model``, keeping ``retain_images`` (real or proxy).

    ``mask_of_batch(n, generator)`` gives the bool (n, L) degradation mask of a step (True = masked). Either set
    may be empty (a batch then holds only the other group); ``model`` is left as it is.
    """
    from cl_bench.pretrain import warmup_cosine

    if len(forget_images) + len(retain_images) == 0:
        raise UserError("nothing to unlearn from: the forget and retain sets are both empty")
    loss_of_batch = loss_function(config.method)
    teacher = frozen_copy(model)
    student = frozen_copy(model)
    for parameter in trained_module(student, config.method).parameters():
        parameter.requires_grad_(True)
    optimizer = adamw(
        trained_module(student, config.method), config.lr, config.weight_decay, (config.betas[0], config.betas[1])
    )
    half = config.batch_size // 2
    steps_per_epoch = math.ceil(max(len(forget_images), len(retain_images)) / half)
    total_steps, warmup_steps = config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps)
    )
    trainable = [p for p in student.parameters() if p.requires_grad]
    history: dict[str, list[float]] = {"total": [], "retain": [], "forget": []}
    device = forget_images.device if len(forget_images) else retain_images.device
    started = time.perf_counter()
    for epoch in range(config.epochs):
        forget_rows = cycled_rows(len(forget_images), steps_per_epoch * half, generator)
        retain_rows = cycled_rows(len(retain_images), steps_per_epoch * half, generator)
        sums = torch.zeros(3, dtype=torch.float64)
        for step in range(steps_per_epoch):
            chosen = slice(step * half, (step + 1) * half)
            images = torch.cat([forget_images[forget_rows[chosen]], retain_images[retain_rows[chosen]]])
            is_forget = torch.zeros(len(images), dtype=torch.bool, device=device)
            is_forget[: len(forget_rows[chosen])] = True
            mask = mask_of_batch(len(images), generator)
            parts = loss_of_batch(student, teacher, images, is_forget, mask, config, generator)
            if not bool(torch.isfinite(parts.total)):
                raise UserError(
                    f"{config.method} diverged: non-finite loss at epoch {epoch + 1}, step {step + 1}; "
                    f"lower lr or alpha"
                )
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            scheduler.step()
            sums += torch.stack([parts.total.detach(), parts.retain.detach(), parts.forget.detach()]).double().cpu()
        means = (sums / steps_per_epoch).tolist()
        for key, value in zip(("total", "retain", "forget"), means):
            history[key].append(value)
        if progress:
            print(
                f"{config.method} epoch {epoch + 1}/{config.epochs}: loss {means[0]:.5f} "
                f"(retain {means[1]:.5f}, forget {means[2]:.5f})",
                file=sys.stderr,
            )
    for parameter in student.parameters():
        parameter.requires_grad_(False)
    return UnlearningResult(student.eval(), teacher, total_steps, time.perf_counter() - started, history)


__all__ = [
    "LossParts",
    "UnlearningResult",
    "adamw",
    "cycled_rows",
    "embedding_mse",
    "encoder_noise_loss",
    "frozen_copy",
    "group_terms",
    "loss_function",
    "noise_images",
    "unlearn",
]
