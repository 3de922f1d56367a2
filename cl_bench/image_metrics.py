"""Quality metrics of generated images against their own ground truth, as pure functions over numpy arrays.

Images are float arrays (N, C, H, W) with pixels in [0, 1]; a pixel mask is bool (N, H, W) or (N, C, H, W),
True where the generator had to fill in. Features and class probabilities come from whatever network the
caller picks; ``cl-bench unlearn-generator`` uses the suite's supervised ``vit_micro`` backbone, which is
why its boards say "vit_micro" and never FID, IS or CLIP.

* ``masked_mse``: per image, the mean squared error over the masked pixels only.
* ``psnr``: per image, 10 log10(range^2 / MSE), capped at ``max_db`` (identical images would be infinite).
* ``ssim``: per image, SSIM (Wang et al. 2004; torchmetrics' implementation: Gaussian window 11, sigma 1.5,
  K1 0.01, K2 0.03, data range 1) over the whole image, and the mean of torchmetrics' SSIM map over the masked
  pixels (the map is computed on the reflect-padded image, so it covers the border too).
* ``frechet_distance``: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets, as in
  FID (Heusel et al. 2017), in float64 with scipy's matrix square root (a tiny ridge when it is singular).
* ``inception_style_score``: exp(mean_x KL(p(y|x) || p(y))) per split, mean and std over splits (Salimans et
  al. 2016); 1 for identical predictions, at most the number of classes. Split i holds rows i, i + splits, ...
  (not contiguous blocks), so a set stored class by class does not give one-class splits.
* ``mean_cosine``: the mean over pairs of the cosine similarity of two feature vectors (the paper's CLIP score
  with another embedding).
* ``accuracy``: the fraction of images the classifier gives their true class.
"""

from __future__ import annotations

import numpy as np

SSIM_KERNEL, SSIM_SIGMA = 11, 1.5
MAX_PSNR_DB = 100.0


def _pixel_mask(mask: np.ndarray, images: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == images.ndim - 1:
        mask = mask[:, None]
    return np.broadcast_to(mask, images.shape)


def masked_mse(generated: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per image: the mean squared error over the pixels where ``mask`` is True (NaN for an image with none)."""
    generated, truth = np.asarray(generated, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    weights = _pixel_mask(mask, generated).astype(np.float64)
    axes = tuple(range(1, generated.ndim))
    count = weights.sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((generated - truth) ** 2 * weights).sum(axis=axes) / count


def psnr(mse: np.ndarray, data_range: float = 1.0, max_db: float = MAX_PSNR_DB) -> np.ndarray:
    """Per image: the peak signal-to-noise ratio in dB of a mean squared error, capped at ``max_db``."""
    mse = np.asarray(mse, dtype=np.float64)
    floor = data_range**2 / 10 ** (max_db / 10)  # the MSE at which the cap binds
    return 10.0 * np.log10(data_range**2 / np.maximum(mse, floor))


def ssim(generated: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(SSIM of each whole image, the mean of its SSIM map over the masked pixels; NaN without a mask)."""
    import torch
    from torchmetrics.functional.image.ssim import structural_similarity_index_measure

    preds = torch.as_tensor(np.asarray(generated, dtype=np.float64))
    target = torch.as_tensor(np.asarray(truth, dtype=np.float64))
    whole, full_map = structural_similarity_index_measure(
        preds,
        target,
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        kernel_size=SSIM_KERNEL,
        data_range=1.0,
        reduction="none",
        return_full_image=True,
    )
    whole_values = whole.numpy().astype(np.float64)
    if mask is None:
        return whole_values, np.full(len(whole_values), np.nan)
    weights = _pixel_mask(mask, np.asarray(generated)).astype(np.float64)
    axes = tuple(range(1, weights.ndim))
    masked = (full_map.numpy() * weights).sum(axis=axes) / weights.sum(axis=axes)
    return whole_values, masked


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (N, D) (FID's formula, any features)."""
    from scipy import linalg

    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least two feature vectors per set")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cov_a, cov_b = np.atleast_2d(cov_a), np.atleast_2d(cov_b)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        # a singular product: the pytorch-fid remedy, a small ridge on both covariances
        ridge = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    root = np.real(root)  # rounding leaves a tiny imaginary part
    distance = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))
    return max(distance, 0.0)  # rounding can go a hair below zero for identical sets


def inception_style_score(probabilities: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std over ``splits`` strided splits) of exp(mean_x KL(p(y|x) || mean_x p(y|x)))."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError("probabilities must be a non-empty (N, classes) array")
    splits = max(1, min(splits, len(p)))
    scores = []
    # strided splits (rows i, i + splits, ...): images stored class by class still give every split every class
    for part in (p[start::splits] for start in range(splits)):
        marginal = part.mean(axis=0, keepdims=True)
        # 0 log 0 = 0: a class with probability 0 adds nothing
        terms = np.where(
            part > 0, part * (np.log(np.where(part > 0, part, 1.0)) - np.log(np.maximum(marginal, 1e-300))), 0.0
        )
        scores.append(float(np.exp(terms.sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


def mean_cosine(features_a: np.ndarray, features_b: np.ndarray, eps: float = 1e-12) -> float:
    """The mean over rows of the cosine similarity of ``features_a[i]`` and ``features_b[i]``."""
    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), eps)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), eps)
    return float((a * b).sum(axis=1).mean())


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of rows whose most probable class is the label."""
    return float((np.asarray(probabilities).argmax(axis=1) == np.asarray(labels)).mean())


__all__ = [
    "accuracy",
    "frechet_distance",
    "inception_style_score",
    "masked_mse",
    "mean_cosine",
    "psnr",
    "ssim",
]
