"""``cl-bench unlearn-generator``: unlearn classes from a pre-trained MAE used as an image-to-image generator,
score it against the original model and a retrain-from-scratch reference, and write the artefact.

Inputs: an MAE backbone of ``cl-bench pretrain --method mae`` (decoder included), the settings of
:class:`cl_bench.generator_unlearning_config.GeneratorUnlearningConfig` and a seed. The method and its baselines
are :mod:`evaluators.generator_unlearning`; the metrics :mod:`cl_bench.image_metrics`.

Data (Fashion-MNIST, pixels in [0, 1]):

* training: the first ``images_per_class`` pre-training-pool images (:mod:`cl_bench.pretrain_pool`, pool order)
  of each forget class, and as the retain set either those of each retain class (``retain_source=real``), of
  each ``proxy_classes`` class (``classes``: the model has seen them, but they are neither forgotten nor scored),
  or ``images_per_class`` x (number of retain classes) scikit-learn digits, 8x8 upsampled bilinearly to 28x28
  (``digits``: another dataset, like the paper's COCO proxy). The pool is what the MAE was trained on, so these
  are training images of the generator, as in the paper;
* scoring: the first ``test_images_per_class`` Fashion-MNIST **test** images of each forget and each retain
  class, degraded with the same masks for every model (a fixed mask for ``centre``/``outpaint``; for ``random``
  masks drawn from a fixed seed, 0, whatever the run seed).

Generated images are the decoder's fill-in with the **visible input patches pasted back**
(``MaskedAutoencoder.reconstruct(keep_visible=True)``), so the masked-region MSE/PSNR and ``ssim_masked`` see
only what the model made up, and the whole-image numbers include the untouched visible pixels.

Metrics per group (forget, retain) and per model (``original``: the backbone as loaded; ``unlearned``: the
method's output, equal to ``original`` for ``method=original``; ``reference``: the retrain-from-scratch MAE when
``reference`` names one), generated vs ground truth:
``mse_masked``, ``psnr_masked`` (dB, capped at 100), ``ssim`` (whole image), ``ssim_masked``; with the supervised
``metric_backbone`` (``vit_micro-fmnist-supervised-s0``; its [CLS] features and its linear head):
``fd_vitmicro`` (the Fréchet distance of generated and true feature sets: FID's formula, *not* FID),
``is_vitmicro`` / ``is_vitmicro_std`` (the Inception-style score of the generated images under that classifier
over ``is_splits`` splits: *not* the Inception Score; at most the number of classes, and a set of 5 classes
scores at most about 5), ``cos_vitmicro`` (mean cosine of the features of each generated image and its truth:
the paper's CLIP score with our backbone in CLIP's place) and ``acc_vitmicro`` (the classifier's accuracy on the
generated images). The artefact's ``ground_truth`` gives the score and the accuracy of the true test images.
With the user's own weights (``inception_weights``, ``clip_model`` + ``clip_weights``; the optional extra of
:mod:`cl_bench.pretrained_image_metrics`) the published metrics join them: ``fid_inception``, ``is_inception`` /
``is_inception_std`` and ``cos_clip``; the board gets their columns only when some run has them.

Output, in ``--out`` (default ``runs_generator_unlearning``): ``<run_id>/generator_unlearning.json`` (plain
JSON, written atomically with the pictures: a staging directory renamed into place), ``<run_id>/grid.png``
(ground truth / degraded input / original / unlearned / reference, forget rows then retain rows),
``<run_id>/tsne.png`` (scikit-learn t-SNE of the metric backbone's features of true and unlearned-generated test
images, as the paper's Figure 4), and ``eval_generator_unlearning.csv``, regenerated from every artefact in
``--out`` (one row per run). The run id hashes the settings (runtime ones aside), the seed and the sha256 of the
three backbones; an existing complete run is reused unless ``force``.
Every check (settings, backbones, degradation, data) runs before anything is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bench import image_metrics
from cl_bench.config import build_config, config_to_dict, short_hash
from cl_bench.errors import UserError
from cl_bench.generator_unlearning_config import (
    BOARD_NAME,
    DEFAULT_OUT_DIR,
    ENCODER_METHODS,
    NUM_CLASSES,
    GeneratorUnlearningConfig,
)
from cl_bench.models.mae import MaskedAutoencoder
from cl_bench.pretrained_image_metrics import CLIP_METRICS, INCEPTION_METRICS, PretrainedMetrics

DEFAULT_OUT = Path(DEFAULT_OUT_DIR)
ARTEFACT_FILE = "generator_unlearning.json"
BOARD_FILE = f"{BOARD_NAME}.csv"
GRID_FILE, TSNE_FILE = "grid.png", "tsne.png"
ARTEFACT_SCHEMA_VERSION = 1
EVAL_MASK_SEED = 0  # the random-masking test masks, the same for every model and every run seed
GROUPS = ("forget", "retain")
MODELS = ("original", "unlearned", "reference")
METRICS = (
    "mse_masked",
    "psnr_masked",
    "ssim",
    "ssim_masked",
    "fd_vitmicro",
    "is_vitmicro",
    "is_vitmicro_std",
    "cos_vitmicro",
    "acc_vitmicro",
)
# with the user's own Inception / CLIP weights (cl_bench.pretrained_image_metrics): columns only where a run has them
OPTIONAL_METRICS = INCEPTION_METRICS + CLIP_METRICS
BOARD_KEYS = (
    "run_id",
    "config_id",
    "backbone",
    "reference",
    "method",
    "degradation",
    "forget_classes",
    "retain_classes",
    "retain_source",
    "proxy_classes",
    "alpha",
    "noise_type",
    "epochs",
    "lr",
    "seed",
)
BOARD_TIMES = ("unlearn_s", "reference_pretrain_s", "retrain_over_unlearn", "pretrain_epoch_s")
FMNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
GENERATION_BATCH = 500


# ---------------------------------------------------------------------------------------------
# backbones
# ---------------------------------------------------------------------------------------------


def weights_path(name: str, flag: str) -> Path:
    """A backbone name in the cache (or a weights file path) -> its weights file; a one-line UserError otherwise."""
    from cl_bench.models.vit import WEIGHTS_FILE, backbones_dir

    if not name:
        raise UserError(f"{flag} is empty; give the name of a backbone in {backbones_dir()}")
    path = Path(name).expanduser()
    if path.is_file():
        return path
    named = backbones_dir() / name / WEIGHTS_FILE
    if "/" not in name and named.is_file():
        return named
    raise UserError(f"{flag} {name!r} is neither a weights file nor a backbone in {backbones_dir()}")


def load_generator(name: str, flag: str) -> MaskedAutoencoder:
    """The MAE (encoder + decoder) of a ``cl-bench pretrain --method mae`` backbone, checked for 28x28 Fashion-MNIST."""
    from cl_bench.models.mae import load_mae
    from cl_bench.models.vit import file_sha256

    path = weights_path(name, flag)
    try:
        mae = load_mae(str(path))
    except UserError as error:
        raise UserError(f"{flag} {name}: {error}") from None
    data = mae.card.get("data") or {}
    if data.get("dataset") != "fmnist" or list(data.get("input_shape") or []) != [1, 28, 28]:
        raise UserError(f"{flag} {name} was not pre-trained on 28x28 Fashion-MNIST images, which this command uses")
    mae.card = {**mae.card, "sha256": mae.card.get("sha256") or file_sha256(path)}
    return mae


@dataclass
class MetricNetwork:
    """The supervised backbone whose features and classifier the feature-based metrics use."""

    vit: nn.Module
    head: nn.Linear
    card: dict

    @torch.no_grad()
    def features_and_probabilities(self, images: Tensor) -> tuple[np.ndarray, np.ndarray]:
        features, probabilities = [], []
        for batch in images.split(GENERATION_BATCH):
            feature = self.vit(batch)
            features.append(feature.double().cpu().numpy())
            probabilities.append(torch.softmax(self.head(feature).double(), dim=1).cpu().numpy())
        return np.concatenate(features), np.concatenate(probabilities)


def load_metric_network(name: str, device: torch.device) -> MetricNetwork:
    from cl_bench.backbone import backbone_from_card
    from cl_bench.models.vit import file_sha256, load_state_strictly, read_card, read_weights

    flag = "metric_backbone"
    path = weights_path(name, flag)
    card = read_card(path)
    if card is None or (card.get("method") or {}).get("name") != "supervised":
        raise UserError(
            f"{flag} {name} is not a supervised backbone with a card; create one with "
            f"`cl-bench pretrain --model vit_micro --method supervised`"
        )
    if (card.get("model") or {}).get("name") != "vit_micro":
        raise UserError(f"{flag} {name} is not a vit_micro backbone, which the metric names (..._vitmicro) promise")
    sha256 = file_sha256(path)
    if card.get("sha256") not in (None, sha256):
        raise UserError(f"{flag} {name}: the weights do not match the sha256 in their card; re-create them")
    tensors = read_weights(path)
    if "pretrain_head.weight" not in tensors:
        raise UserError(
            f"{flag} {name} holds no classifier head (pretrain_head.*); re-create it with cl-bench pretrain"
        )
    vit = backbone_from_card(card)
    load_state_strictly(vit, tensors, str(path), "the file does not match its card")
    weight = tensors["pretrain_head.weight"]
    head = nn.Linear(weight.shape[1], weight.shape[0], bias="pretrain_head.bias" in tensors)
    head.load_state_dict({k[len("pretrain_head.") :]: v for k, v in tensors.items() if k.startswith("pretrain_head.")})
    return MetricNetwork(vit.to(device).eval(), head.to(device).eval(), {**card, "sha256": sha256})


def encoder_sha256(mae: MaskedAutoencoder) -> str:
    """The sha256 of the encoder's tensors (names and bytes, sorted): equal runs give equal encoders."""
    digest = hashlib.sha256()
    for key, value in sorted(mae.encoder.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# the degradation
# ---------------------------------------------------------------------------------------------


@dataclass
class Degradation:
    """The patch mask of a degradation: fixed (centre, outpaint) or drawn per image (random)."""

    kind: str
    grid: tuple[int, int]
    patch: tuple[int, int]
    fixed: Optional[Tensor]  # bool (L,) for centre and outpaint, True = masked
    mask_ratio: float

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def masked_patches(self) -> int:
        if self.fixed is not None:
            return int(self.fixed.sum())
        return self.num_patches - max(1, int(self.num_patches * (1.0 - self.mask_ratio)))

    def masks(self, count: int, generator: torch.Generator, device: torch.device) -> Tensor:
        if self.fixed is not None:
            return self.fixed.to(device).unsqueeze(0).expand(count, -1).clone()
        noise = torch.rand(count, self.num_patches, generator=generator, device=generator.device).to(device)
        mask = torch.ones(count, self.num_patches, dtype=torch.bool, device=device)
        mask.scatter_(1, noise.argsort(dim=1)[:, : self.num_patches - self.masked_patches], False)
        return mask

    def pixels(self, masks: Tensor) -> Tensor:
        """Bool (N, H, W) pixel masks of patch masks (N, L)."""
        (gh, gw), (ph, pw) = self.grid, self.patch
        return masks.view(-1, gh, gw).repeat_interleave(ph, dim=1).repeat_interleave(pw, dim=2)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "patch_grid": list(self.grid),
            "patch_size": list(self.patch),
            "masked_patches": self.masked_patches,
            "masked_fraction": self.masked_patches / self.num_patches,
            "fixed_mask": None if self.fixed is None else self.fixed.view(self.grid).int().tolist(),
            "generated": "decoder output with the visible input patches pasted back",
        }


def degradation_of(config: GeneratorUnlearningConfig, mae: MaskedAutoencoder) -> Degradation:
    """The degradation on the MAE's patch grid; a UserError if it is off the grid or masks nothing or everything."""
    grid, patch = cast(tuple[int, int], tuple(mae.grid_size)), cast(tuple[int, int], tuple(mae.patch_size))
    (gh, gw), (ph, pw) = grid, patch
    fixed: Optional[Tensor] = None
    if config.degradation in ("centre", "outpaint"):
        width, name = (config.hole_px, "hole_px") if config.degradation == "centre" else (config.border_px, "border_px")
        if width % ph or width % pw:
            raise UserError(
                f"{config.degradation} {name}={width} is not a multiple of the model's {ph}x{pw}-pixel patches; "
                f"the MAE masks whole patches"
            )
        cells = torch.zeros(gh, gw, dtype=torch.bool)
        if config.degradation == "centre":
            side_h, side_w = width // ph, width // pw
            # centred; an odd leftover puts the extra row/column after the hole
            top, left = max(0, (gh - side_h) // 2), max(0, (gw - side_w) // 2)
            cells[top : top + side_h, left : left + side_w] = True
        else:
            cells[:] = True
            bh, bw = width // ph, width // pw
            cells[bh : gh - bh, bw : gw - bw] = False
        fixed = cells.flatten()
    degradation = Degradation(config.degradation, grid, patch, fixed, config.mask_ratio)
    if degradation.masked_patches == 0:
        raise UserError(f"degradation {config.degradation} masks no patch of the {gh}x{gw} patch grid; enlarge it")
    if degradation.masked_patches >= degradation.num_patches:
        raise UserError(
            f"degradation {config.degradation} masks every patch of the {gh}x{gw} patch grid; the encoder needs at "
            f"least one visible patch"
        )
    return degradation


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def first_per_class(images: Tensor, labels: Tensor, classes: list[int], count: int, what: str) -> tuple[Tensor, Tensor]:
    """The first ``count`` images (in stored order) of each class; a UserError if a class has none."""
    chosen = []
    for label in classes:
        rows = (labels == label).nonzero().flatten()[:count]
        if len(rows) == 0:
            raise UserError(f"the {what} holds no image of class {label}")
        chosen.append(rows)
    rows = torch.cat(chosen)
    return images[rows], labels[rows]


def digits_images(count: int) -> Tensor:
    """``count`` scikit-learn digits (in stored order, up to 1797) as (count, 1, 28, 28) images in [0, 1]."""
    from scenarios.split_image import _digits

    images, _ = _digits()
    small = torch.from_numpy(np.array(images[:count], dtype=np.float32)).unsqueeze(1)
    return F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


@dataclass
class Data:
    forget: Tensor
    retain: Tensor  # the real or proxy retain set unlearning sees
    test: dict[str, tuple[Tensor, Tensor]]  # group -> (images, labels)
    description: dict


def load_data(config: GeneratorUnlearningConfig) -> Data:
    from cl_bench.pretrain import pool_images

    pool, pool_labels, test, test_labels, pool_description = pool_images("fmnist")
    count = config.images_per_class
    forget, _ = first_per_class(pool, pool_labels, config.forget_classes, count, "pre-training pool")
    if config.retain_source == "real":
        retain, _ = first_per_class(pool, pool_labels, config.retain_classes, count, "pre-training pool")
        retain_info: dict[str, Any] = {"source": "pool images of the retain classes", "classes": config.retain_classes}
    elif config.retain_source == "classes":
        retain, _ = first_per_class(pool, pool_labels, config.proxy_classes, count, "pre-training pool")
        retain_info = {"source": "pool images of the proxy classes", "classes": config.proxy_classes}
    else:
        retain = digits_images(count * len(config.retain_classes))
        retain_info = {"source": "scikit-learn digits, 8x8 upsampled bilinearly to 28x28", "classes": None}
    test_sets = {
        group: first_per_class(test, test_labels, classes, config.test_images_per_class, "Fashion-MNIST test set")
        for group, classes in (("forget", config.forget_classes), ("retain", config.retain_classes))
    }
    description = {
        "dataset": "fmnist",
        "pool": pool_description["pool"]["name"],
        "forget_train": {"source": "pool images of the forget classes", "classes": config.forget_classes},
        "retain_train": retain_info,
        "forget_train_images": len(forget),
        "retain_train_images": len(retain),
        "real_retain_images": len(retain) if config.retain_source == "real" else 0,
        "test_split": "Fashion-MNIST test set, the first images of each class",
        "test_images": {group: len(images) for group, (images, _) in test_sets.items()},
    }
    return Data(forget, retain, test_sets, description)


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(mae: MaskedAutoencoder, images: Tensor, masks: Tensor) -> Tensor:
    """The generator's output for degraded ``images``: decoder fill-in, visible patches pasted back, in [0, 1]."""
    parts = [
        mae.reconstruct(batch, mask=mask, keep_visible=True)[0]
        for batch, mask in zip(images.split(GENERATION_BATCH), masks.split(GENERATION_BATCH))
    ]
    # the decoder is linear: its raw output can leave [0, 1], an image cannot
    return torch.cat(parts).clamp(0.0, 1.0)


def score(
    generated: Tensor,
    truth: Tensor,
    labels: Tensor,
    pixel_masks: Tensor,
    network: MetricNetwork,
    truth_features: np.ndarray,
    splits: int,
    pretrained: Optional[PretrainedMetrics] = None,
    pretrained_truth: Optional[dict] = None,
) -> dict[str, float]:
    """Every metric of one model on one group (generated vs ground truth); ``pretrained`` adds the user's
    Inception / CLIP metrics against the true images' ``pretrained_truth`` features."""
    generated_np, truth_np = generated.double().cpu().numpy(), truth.double().cpu().numpy()
    masks = pixel_masks.cpu().numpy()
    mse = image_metrics.masked_mse(generated_np, truth_np, masks)
    ssim_whole, ssim_masked = image_metrics.ssim(generated_np, truth_np, masks)
    features, probabilities = network.features_and_probabilities(generated)
    is_mean, is_std = image_metrics.inception_style_score(probabilities, splits)
    return {
        "mse_masked": float(mse.mean()),
        "psnr_masked": float(image_metrics.psnr(mse).mean()),
        "ssim": float(ssim_whole.mean()),
        "ssim_masked": float(ssim_masked.mean()),
        "fd_vitmicro": image_metrics.frechet_distance(features, truth_features),
        "is_vitmicro": is_mean,
        "is_vitmicro_std": is_std,
        "cos_vitmicro": image_metrics.mean_cosine(features, truth_features),
        "acc_vitmicro": image_metrics.accuracy(probabilities, labels.cpu().numpy()),
        **(pretrained.score(generated, pretrained_truth or {}, splits) if pretrained is not None else {}),
    }


# ---------------------------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------------------------


def picture_rows(count: int, available: int) -> list[int]:
    """``count`` rows spread evenly over a group's test images (which are stored class by class)."""
    count = min(count, available)
    return [i * available // count for i in range(count)]


def draw_grid(columns: dict[str, dict[str, Tensor]], labels: dict[str, Tensor], rows: dict[str, list[int]]):
    """Figure: one row per chosen test image (forget rows, then retain rows), one column per image kind."""
    from matplotlib.figure import Figure

    titles = list(columns)
    entries = [(group, row) for group in GROUPS for row in rows[group]]
    figure = Figure(figsize=(1.3 * len(titles) + 1.4, 1.3 * len(entries)))
    axes = figure.subplots(len(entries), len(titles), squeeze=False)
    for r, (group, row) in enumerate(entries):
        for c, title in enumerate(titles):
            axis = axes[r][c]
            axis.imshow(columns[title][group][row, 0].cpu().numpy(), cmap="gray", vmin=0.0, vmax=1.0)
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(title, fontsize=9)
            if c == 0:
                label = int(labels[group][row])
                axis.set_ylabel(f"{group}\n{FMNIST_CLASSES[label]}", fontsize=8)
    figure.tight_layout()
    return figure


def draw_tsne(points: dict[str, np.ndarray], seed: int, title: str):
    """Figure: a 2-D t-SNE of feature sets (name -> (n, D)), one colour and marker per set."""
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    names = list(points)
    stacked = np.concatenate([points[name] for name in names])
    perplexity = float(min(30.0, (len(stacked) - 1) / 3.0))
    embedded = TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
    ).fit_transform(stacked)
    figure = Figure(figsize=(6.0, 5.0))
    axis = figure.subplots()
    styles = {"forget": ("tab:red", "tab:orange"), "retain": ("tab:blue", "tab:cyan")}
    start = 0
    for name in names:
        count = len(points[name])
        group, kind = name.split(" ", 1)
        colour = styles[group][0 if kind == "ground truth" else 1]
        marker = "o" if kind == "ground truth" else "x"
        part = embedded[start : start + count]
        axis.scatter(part[:, 0], part[:, 1], s=10, c=colour, marker=marker, label=name, alpha=0.7)
        start += count
    axis.set_title(title, fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=8, markerscale=1.5)
    return figure


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ";".join(str(item) for item in value)
    return str(value)


def board_columns(optional: tuple[str, ...] = ()) -> list[str]:
    """The board's columns; ``optional`` metrics (of :data:`OPTIONAL_METRICS`) follow the standard ones."""
    columns = list(BOARD_KEYS)
    for prefix in ("", "original_", "reference_"):
        columns += [f"{prefix}{group}_{metric}" for group in GROUPS for metric in METRICS + optional]
    return columns + list(BOARD_TIMES)


def optional_metrics(artefacts: list[dict]) -> tuple[str, ...]:
    """The optional metrics some artefact holds, in :data:`OPTIONAL_METRICS` order."""
    found = {
        metric
        for artefact in artefacts
        for numbers in artefact["metrics"].values()
        if isinstance(numbers, dict)
        for group in GROUPS
        if isinstance(numbers.get(group), dict)
        for metric in numbers[group]
    }
    return tuple(metric for metric in OPTIONAL_METRICS if metric in found)


def board_row(artefact: dict) -> dict[str, str]:
    """One run's cells, every optional metric's column included (empty where the run has none)."""
    config = artefact["config"]
    row: dict[str, Any] = {
        "run_id": artefact["run_id"],
        "config_id": artefact["config_id"],
        "backbone": artefact["backbone"]["name"],
        "reference": (artefact.get("reference") or {}).get("name"),
        "method": config["method"],
        "degradation": artefact["degradation_label"],
        "forget_classes": config["forget_classes"],
        "retain_classes": config["retain_classes"],
        "retain_source": config["retain_source"],
        "proxy_classes": config["proxy_classes"],
        "alpha": config["alpha"],
        "noise_type": config["noise_type"],
        "epochs": config["epochs"],
        "lr": config["lr"],
        "seed": artefact["seed"],
    }
    for prefix, model in (("", "unlearned"), ("original_", "original"), ("reference_", "reference")):
        numbers = artefact["metrics"].get(model) or {}
        for group in GROUPS:
            for metric in METRICS + OPTIONAL_METRICS:
                row[f"{prefix}{group}_{metric}"] = (numbers.get(group) or {}).get(metric)
    for name in BOARD_TIMES:
        row[name] = artefact["timing"].get(name)
    return {column: _cell(row.get(column)) for column in board_columns(OPTIONAL_METRICS)}


def write_board(out_dir: Path, log: Callable[[str], None]) -> Path:
    """Regenerate ``eval_generator_unlearning.csv`` from every complete artefact under ``out_dir``."""
    from cl_bench.records import atomic_write_text, read_json

    artefacts, rows = [], []
    for path in sorted(out_dir.glob(f"*/{ARTEFACT_FILE}")):
        try:
            artefact = read_json(path)
            rows.append(board_row(artefact))
            artefacts.append(artefact)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            log(f"skipping {path}: not a readable generator-unlearning artefact ({type(error).__name__})")
    optional = optional_metrics(artefacts)  # the optional columns no run fills are left out of the file
    method_order = {"original": 0}
    rows.sort(
        key=lambda row: (
            row["backbone"],
            row["degradation"],
            method_order.get(row["method"], 1),  # the original model's row heads its block
            row["retain_source"],
            row["method"],
            row["config_id"],
            int(row["seed"]),
        )
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=board_columns(optional), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(out_dir / BOARD_FILE, buffer.getvalue())


def publish(run_dir: Path, artefact_text: str, figures: dict[str, Any]) -> None:
    """The artefact and its pictures into ``run_dir`` at once: a staging directory renamed into place."""
    from cl_bench.plots import DPI
    from cl_bench.records import atomic_directory

    with atomic_directory(run_dir) as staging:
        for file_name, figure in figures.items():
            figure.savefig(staging / file_name, format="png", dpi=DPI, bbox_inches="tight")
        (staging / ARTEFACT_FILE).write_text(artefact_text, encoding="utf-8")


def summary_table(artefact: dict) -> str:
    """The metrics of one run: a row per model and group."""
    shown: tuple[str, ...] = (
        "mse_masked",
        "psnr_masked",
        "ssim_masked",
        "fd_vitmicro",
        "is_vitmicro",
        "cos_vitmicro",
        "acc_vitmicro",
    )
    shown += tuple(metric for metric in optional_metrics([artefact]) if metric != "is_inception_std")
    header = ["model", "group", *shown]
    lines = []
    for model in MODELS:
        numbers = artefact["metrics"].get(model)
        if not numbers or (model == "unlearned" and artefact["config"]["method"] == "original"):
            continue
        label = artefact["config"]["method"] if model == "unlearned" else model
        for group in GROUPS:
            lines.append([label, group, *(f"{numbers[group][metric]:.4f}" for metric in shown)])
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    text = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *lines]
    ]
    timing = artefact["timing"]
    note = f"unlearning {timing['unlearn_s']:.1f} s, evaluation {timing['evaluation_s']:.1f} s"
    if timing.get("retrain_over_unlearn"):
        note += f", retrain reference took {timing['retrain_over_unlearn']:.1f}x the unlearning time"
    return "\n".join(text) + "\n" + note


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def build_settings(values: dict) -> GeneratorUnlearningConfig:
    return cast(GeneratorUnlearningConfig, build_config(GeneratorUnlearningConfig, values, "unlearn"))


def run_ids(config: GeneratorUnlearningConfig, seed: int, shas: dict[str, Optional[str]]) -> tuple[str, str]:
    """(run id, config id): hashes of the settings (runtime ones aside) and backbones, with and without the seed.

    Weights files of the optional metrics enter through ``shas`` (their sha256), not their paths."""
    left_out = GeneratorUnlearningConfig.runtime_fields + GeneratorUnlearningConfig.file_fields
    settings = {k: v for k, v in config_to_dict(config).items() if k not in left_out}
    identity = {"settings": settings, "backbones": shas}
    return short_hash({**identity, "seed": seed}), short_hash(identity)


def degradation_label(config: GeneratorUnlearningConfig) -> str:
    if config.degradation == "centre":
        return f"centre {config.hole_px}px"
    if config.degradation == "outpaint":
        return f"outpaint {config.border_px}px"
    return f"random {config.mask_ratio:g}"


def unlearn_generator(
    backbone: str,
    values: dict,
    seed: int = 0,
    out: Path = DEFAULT_OUT,
    force: bool = False,
    progress: bool = True,
    command: str = "",
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Path:
    """Run (or find) one generator-unlearning evaluation; returns its run directory. Checks come before writes."""
    from cl_bench.config import MAX_SEED
    from cl_bench.device import seed_everything, select_device
    from cl_bench.records import check_output_dir, environment, read_json, strict_json
    from evaluators.generator_unlearning import unlearn

    config = build_settings(values)
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed must be between 0 and {MAX_SEED}, got {seed}")
    check_output_dir(out, "the generator-unlearning runs")
    if config.threads:
        torch.set_num_threads(config.threads)
    device = select_device(config.device)
    original = load_generator(backbone, "--backbone").to(device)
    reference = load_generator(config.reference, "reference").to(device) if config.reference else None
    if reference is not None:
        # retraining from scratch without the forget data: the pool's other classes, retain classes included
        classes = (reference.card.get("data") or {}).get("classes")
        if not classes or set(classes) & set(config.forget_classes) or not set(config.retain_classes) <= set(classes):
            keep = sorted(set(range(NUM_CLASSES)) - set(config.forget_classes))
            raise UserError(
                f"reference {config.reference} was pre-trained on "
                f"{'classes ' + str(classes) if classes else 'every class'}; the retrain reference must leave out "
                f"the forget classes and keep the retain classes: pre-train it with --classes "
                f"{','.join(map(str, keep))}"
            )
        if reference.grid_size != original.grid_size or reference.patch_size != original.patch_size:
            raise UserError(f"reference {config.reference} cuts images into other patches than --backbone {backbone}")
    network = load_metric_network(config.metric_backbone, device)
    pretrained, pretrained_files = load_optional_metrics(config, device)
    degradation = degradation_of(config, original)
    shas = {
        "backbone": original.card["sha256"],
        "reference": reference.card["sha256"] if reference is not None else None,
        "metric_backbone": network.card["sha256"],
        **{name: entry["sha256"] or entry["name"] for name, entry in pretrained_files.items()},
    }
    run_id, config_id = run_ids(config, seed, shas)
    run_dir = Path(out) / run_id
    if (run_dir / ARTEFACT_FILE).is_file() and not force:
        log(f"run {run_id} already exists in {out} (use --force to redo it)")
        write_board(Path(out), log)
        print(summary_table(read_json(run_dir / ARTEFACT_FILE)))
        return run_dir
    data = load_data(config)
    started = time.perf_counter()
    seed_everything(seed)
    generator = torch.Generator(device=device).manual_seed(seed)

    history: dict[str, list[float]] = {}
    steps, unlearn_seconds = 0, 0.0
    unlearned = original
    if config.method != "original":
        result = unlearn(
            original,
            data.forget.to(device),
            data.retain.to(device),
            config,
            lambda count, gen: degradation.masks(count, gen, device),
            generator,
            progress=progress,
        )
        unlearned, history, steps, unlearn_seconds = result.model, result.history, result.steps, result.seconds
        if config.method in ENCODER_METHODS and not all(
            torch.equal(a, b)
            for a, b in zip(unlearned.decoder.state_dict().values(), original.decoder.state_dict().values())
        ):
            raise RuntimeError("the decoder changed during encoder-only unlearning")  # a bug, never the user's input

    evaluation_started = time.perf_counter()
    models = {"original": original, "unlearned": unlearned}
    if reference is not None:
        models["reference"] = reference
    metrics: dict[str, dict[str, dict[str, float]]] = {name: {} for name in models}
    outputs: dict[str, dict[str, Tensor]] = {name: {} for name in models}
    degraded: dict[str, Tensor] = {}
    truth_features: dict[str, np.ndarray] = {}
    ground_truth: dict[str, dict[str, float]] = {}  # the classifier's numbers on the true test images, for scale
    for index, group in enumerate(GROUPS):
        images, labels = (tensor.to(device) for tensor in data.test[group])
        masks = degradation.masks(
            len(images), torch.Generator(device=device).manual_seed(EVAL_MASK_SEED + index), device
        )
        pixel_masks = degradation.pixels(masks)
        degraded[group] = images.masked_fill(pixel_masks.unsqueeze(1), 0.5)  # masked pixels shown grey
        truth_features[group], truth_probabilities = network.features_and_probabilities(images)
        truth_is, truth_is_std = image_metrics.inception_style_score(truth_probabilities, config.is_splits)
        ground_truth[group] = {
            "is_vitmicro": truth_is,
            "is_vitmicro_std": truth_is_std,
            "acc_vitmicro": image_metrics.accuracy(truth_probabilities, labels.cpu().numpy()),
        }
        pretrained_truth = pretrained.features(images) if pretrained is not None else {}
        if pretrained is not None:
            ground_truth[group].update(pretrained.image_scores(pretrained_truth, config.is_splits))
        for name, model in models.items():
            if name == "unlearned" and model is original:
                outputs[name][group], metrics[name][group] = outputs["original"][group], metrics["original"][group]
                continue
            outputs[name][group] = generate(model, images, masks)
            metrics[name][group] = score(
                outputs[name][group],
                images,
                labels,
                pixel_masks,
                network,
                truth_features[group],
                config.is_splits,
                pretrained,
                pretrained_truth,
            )
    evaluation_seconds = time.perf_counter() - evaluation_started

    rows = {group: picture_rows(config.grid_images, len(data.test[group][0])) for group in GROUPS}
    columns = {"ground truth": {g: data.test[g][0] for g in GROUPS}, "degraded input": degraded}
    columns["original"] = outputs["original"]
    if config.method != "original":
        columns[f"unlearned ({config.method})"] = outputs["unlearned"]
    if reference is not None:
        columns["retrain reference"] = outputs["reference"]
    figures = {GRID_FILE: draw_grid(columns, {g: data.test[g][1] for g in GROUPS}, rows)}
    if config.tsne_images:
        points = {}
        for group in GROUPS:
            count = min(config.tsne_images, len(data.test[group][0]))
            chosen = picture_rows(count, len(data.test[group][0]))
            points[f"{group} ground truth"] = truth_features[group][chosen]
            points[f"{group} generated"] = network.features_and_probabilities(outputs["unlearned"][group][chosen])[0]
        figures[TSNE_FILE] = draw_tsne(
            points, seed, f"t-SNE of {config.metric_backbone} features: {config.method}, {degradation_label(config)}"
        )

    reference_seconds = reference.card.get("wall_time_s") if reference is not None else None
    original_epochs = original.card.get("epochs") or 0
    original_seconds = original.card.get("wall_time_s")
    timing = {
        "unlearn_s": unlearn_seconds,
        "evaluation_s": evaluation_seconds,
        "total_s": time.perf_counter() - started,
        "reference_pretrain_s": reference_seconds,
        "retrain_over_unlearn": (
            reference_seconds / unlearn_seconds if reference_seconds and unlearn_seconds > 0 else None
        ),
        "pretrain_epoch_s": original_seconds / original_epochs if original_seconds and original_epochs else None,
        "note": "pre-training times come from the backbone cards (the machine that pre-trained them)",
    }
    artefact = {
        "schema_version": ARTEFACT_SCHEMA_VERSION,
        "kind": "generator_unlearning",
        "run_id": run_id,
        "config_id": config_id,
        "seed": seed,
        "config": config_to_dict(config),
        "degradation_label": degradation_label(config),
        "backbone": _backbone_entry(original, backbone),
        "reference": _backbone_entry(reference, config.reference) if reference is not None else None,
        "metric_backbone": {
            "name": config.metric_backbone,
            "sha256": network.card["sha256"],
            "test_accuracy": (network.card.get("quality") or {}).get("test_accuracy"),
        },
        **({"pretrained_metric_networks": pretrained_files} if pretrained_files else {}),
        "degradation": degradation.describe(),
        "data": data.description,
        "training": {
            "method": config.method,
            "updated": "none"
            if config.method == "original"
            else "encoder"
            if config.method in ENCODER_METHODS
            else "encoder and decoder",
            "steps": steps,
            "loss_per_epoch": history,
            "encoder_sha256": encoder_sha256(unlearned),
        },
        "metrics": metrics,
        "ground_truth": ground_truth,
        "timing": timing,
        "files": {"grid": GRID_FILE, "tsne": TSNE_FILE if TSNE_FILE in figures else None},
        "command": command,
        "environment": environment(device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = strict_json(artefact, indent=2) + "\n"  # a NaN or infinity is refused here, before anything is written
    publish(run_dir, text, figures)
    write_board(Path(out), log)
    print(summary_table(artefact))
    return run_dir


def load_optional_metrics(
    config: GeneratorUnlearningConfig, device: torch.device
) -> tuple[Optional[PretrainedMetrics], dict[str, dict]]:
    """The user's Inception / CLIP networks when the settings name them, and what names them in the run id and
    the artefact: per field, the path given and the file's sha256 (None for an open_clip architecture name)."""
    from cl_bench.models.vit import file_sha256
    from cl_bench.pretrained_image_metrics import load_pretrained_metrics

    if not (config.inception_weights or config.clip_model or config.clip_weights):
        return None, {}
    pretrained = load_pretrained_metrics(config.inception_weights, config.clip_model, config.clip_weights, device)
    files = {}
    for name in GeneratorUnlearningConfig.file_fields:
        value = getattr(config, name)
        if value:
            path = Path(value).expanduser()
            files[name] = {"name": value, "sha256": file_sha256(path) if path.is_file() else None}
    return pretrained, files


def _backbone_entry(mae: MaskedAutoencoder, name: str) -> dict:
    card = mae.card
    return {
        "name": name,
        "card_name": card.get("name"),
        "sha256": card.get("sha256"),
        "classes": (card.get("data") or {}).get("classes"),
        "epochs": card.get("epochs"),
        "pretrain_wall_time_s": card.get("wall_time_s"),
    }


__all__ = ["DEFAULT_OUT", "METRICS", "unlearn_generator"]
