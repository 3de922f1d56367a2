"""The baselines of generator unlearning (Li et al., ICLR 2024), on the suite's MAE, in the loop of
:func:`evaluators.generator_unlearning.unlearn` (same balanced batches, masks, optimiser and schedule).

Each is a loss over one mixed batch with the signature of the paper's method; ``alpha`` weighs the forget term.

* ``random_encoder`` (encoder only, like the paper's method): the forget target is a Gaussian *embedding* whose
  mean and std are those of the teacher's embeddings of the batch's forget images, instead of the teacher's
  embedding of a noise image; retain embeddings are anchored to the teacher's as in the method.
* ``max_loss`` (whole model): the MAE's masked-patch reconstruction loss on retain images minus ``alpha`` times
  the same loss on forget images (gradient ascent on the forget set; unbounded, so it runs as long as asked).
* ``noisy_label`` (whole model): the reconstruction loss on retain images plus ``alpha`` times the loss of forget
  images against a noise image (``noise_type``, drawn as in the method) as their target.
* ``retain_label`` (whole model): as ``noisy_label`` but the forget target is the teacher's output (its
  predicted patches) for a retain image of the same batch (forget row i pairs with retain row i mod r).

The official code runs the reconstruction baselines on MAGE's token cross-entropy; here the loss is the MAE's
mean squared error over the masked patches (against normalised patches with ``norm_pix_loss``), i.e. the loss
the generator was trained with. The reported terms are the two losses before weighting (for ``max_loss`` the
forget term is the forget reconstruction error, which rises as the model forgets).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cl_bench.generator_unlearning_config import GeneratorUnlearningConfig
from cl_bench.models.mae import MaskedAutoencoder
from evaluators.generator_unlearning import LossParts, embedding_mse, group_terms, noise_images


def random_encoder_loss(
    student: MaskedAutoencoder,
    teacher: MaskedAutoencoder,
    images: Tensor,
    is_forget: Tensor,
    mask: Tensor,
    config: GeneratorUnlearningConfig,
    generator: torch.Generator,
) -> LossParts:
    latent, _ = student.encode(images, mask)
    with torch.no_grad():
        target, _ = teacher.encode(images, mask)
        if bool(is_forget.any()):
            reference = target[is_forget]
            draw = torch.randn(target.shape, generator=generator, device=target.device, dtype=target.dtype)
            random_target = draw * reference.std() + reference.mean()
            target = torch.where(is_forget.view(-1, 1, 1), random_target, target)
    retain, forget = group_terms(embedding_mse(latent, target), is_forget, config.group_weighting)
    return LossParts(retain + config.alpha * forget, retain, forget)


def reconstruction_errors(model: MaskedAutoencoder, images: Tensor, target_patches: Tensor, mask: Tensor) -> Tensor:
    """Per sample: the MAE's squared error per pixel over the masked patches, against ``target_patches`` (N, L, P)."""
    prediction = model.decode(*model.encode(images, mask))
    per_patch = (prediction - target_patches).pow(2).mean(dim=-1)
    weights = mask.to(per_patch.dtype)
    return (per_patch * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def max_loss(
    student: MaskedAutoencoder,
    teacher: MaskedAutoencoder,
    images: Tensor,
    is_forget: Tensor,
    mask: Tensor,
    config: GeneratorUnlearningConfig,
    generator: torch.Generator,
) -> LossParts:
    errors = reconstruction_errors(student, images, student.target(images), mask)
    retain, forget = group_terms(errors, is_forget, config.group_weighting)
    return LossParts(retain - config.alpha * forget, retain, forget)


def noisy_label_loss(
    student: MaskedAutoencoder,
    teacher: MaskedAutoencoder,
    images: Tensor,
    is_forget: Tensor,
    mask: Tensor,
    config: GeneratorUnlearningConfig,
    generator: torch.Generator,
) -> LossParts:
    with torch.no_grad():
        noise = noise_images(images, config.noise_type, generator)
        targets = torch.where(is_forget.view(-1, 1, 1, 1), noise, images)
    errors = reconstruction_errors(student, images, student.target(targets), mask)
    retain, forget = group_terms(errors, is_forget, config.group_weighting)
    return LossParts(retain + config.alpha * forget, retain, forget)


def retain_label_loss(
    student: MaskedAutoencoder,
    teacher: MaskedAutoencoder,
    images: Tensor,
    is_forget: Tensor,
    mask: Tensor,
    config: GeneratorUnlearningConfig,
    generator: torch.Generator,
) -> LossParts:
    target_patches = student.target(images)
    forget_rows, retain_rows = is_forget.nonzero().flatten(), (~is_forget).nonzero().flatten()
    if len(forget_rows):
        if not len(retain_rows):
            raise ValueError("retain_label needs retain images in every batch that holds forget images")
        paired = retain_rows[torch.arange(len(forget_rows), device=images.device) % len(retain_rows)]
        with torch.no_grad():
            teacher_output = teacher.decode(*teacher.encode(images[paired], mask[forget_rows]))
        target_patches = target_patches.clone()
        target_patches[forget_rows] = teacher_output
    errors = reconstruction_errors(student, images, target_patches, mask)
    retain, forget = group_terms(errors, is_forget, config.group_weighting)
    return LossParts(retain + config.alpha * forget, retain, forget)


__all__ = ["max_loss", "noisy_label_loss", "random_encoder_loss", "reconstruction_errors", "retain_label_loss"]
