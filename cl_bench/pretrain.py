"""``cl-bench pretrain``: pre-train a backbone on the pre-training pool and store it in the cache with a card.

Models: a ViT (``vit_micro``, ``timm:NAME``) with either method, or the ``cnn`` (``--method supervised``
only; e.g. ``--set model.batch_norm=true`` for Fast-NTK's BatchNorm CNN).

The pool is the fixed stratified sixth of the Fashion-MNIST training set of
:mod:`cl_bench.pretrain_pool` (10,000 images); streams built with
``scenario.holdout_pretrain_pool=true`` never contain it, and a run that loads the backbone into a
stream that does is refused (:func:`cl_bench.models.vit.check_pool_held_out`). Pixels are in
[0, 1] with no normalisation, shape (1, 28, 28), exactly as the scenarios feed them.

Methods:

* ``supervised``: the backbone + a linear head over the 10 classes, cross-entropy, AdamW.
  Quality: accuracy of that head on the Fashion-MNIST test set.
* ``mae`` (ViTs only): masked-autoencoder reconstruction (:mod:`cl_bench.models.mae`), AdamW with
  betas (0.9, 0.95) as in He et al. Quality: the masked-patch MSE on test images.

Both use linear warm-up then cosine decay of the learning rate per step, no weight decay on
biases, norms, positions and tokens, and report two probes of the backbone's features (the [CLS]
token of a ViT, the hidden layer's output of the cnn) on the test set, the pool being the training
set of the probe: a 20-NN classifier (cosine similarity, votes weighted by exp(sim / 0.07), as in
DINO) and a logistic-regression linear probe (standardised features, L-BFGS, fixed 100 iterations).
Suite choices (flags): epochs, batch, lr, weight decay, warm-up, augmentation (random shifts of up to
2 px and horizontal flips; off by default), mask ratio, decoder size, normalised-pixel loss.
``--classes 5,6,7,8,9`` pre-trains on the pool images of those classes only (the quality numbers then use the
test images of those classes); the card records them (``data.classes``, ``method.classes``) and the default name
gains ``-c5_6_7_8_9``. This is the retrain-from-scratch reference of ``cl-bench unlearn-generator``.

The entry is written atomically: a temporary directory under ``backbones/`` renamed into place,
holding ``weights.safetensors`` (backbone under its own keys: the ``VisionTransformer``'s, or those of
the cnn's ``nn.Sequential`` before the head; the supervised head under ``pretrain_head.``, the MAE
decoder under ``decoder.``) and ``card.json``. An existing complete entry with the same settings is
reused unless ``force``; one with other settings is an error.
Training is deterministic for a seed on CPU (the same sha256 twice).

Defaults (suite choices): supervised 15 epochs at lr 1e-3, mae 60 epochs at lr 1.5e-3; what they reach, and
what longer training and augmentation gave, is on the pre-trained backbones' docs page.
"""

from __future__ import annotations

import math
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence, cast

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cl_bench import pretrain_pool
from cl_bench.config import build_config, config_to_dict, parse_set
from cl_bench.backbone import build_model, is_vit, stored_backbone
from cl_bench.errors import UserError
from cl_bench.pretrain_config import PretrainConfig
from cl_bench.records import atomic_directory, atomic_write_text, environment, strict_json
from cl_bench.registry import MODELS

if TYPE_CHECKING:
    from cl_bench.models.heads import SingleHeadNet
    from cl_bench.models.mae import MaskedAutoencoder

# the defaults that differ per method (2 idle CPU cores: supervised about 1 min, mae about 3.5 min, see above)
METHOD_DEFAULTS = {
    "supervised": {"epochs": 15, "lr": 1e-3},
    "mae": {"epochs": 60, "lr": 1.5e-3},
    "avit": {"epochs": 10, "lr": 5e-4},
}
PROBE_K, PROBE_TEMPERATURE, PROBE_ITERATIONS = 20, 0.07, 100
CARD_SCHEMA_VERSION = 1


def pool_images(data: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(pool images, pool labels, test images, test labels, data description); images (N, 1, 28, 28) in [0, 1]."""
    from cl_bench.data import fmnist_dir, load_fmnist

    directory = fmnist_dir()
    arrays = load_fmnist(directory)
    rows = pretrain_pool.pool_indices(arrays.train_labels)

    def unit(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0).unsqueeze(1)

    description = {
        "dataset": data,
        "pool": pretrain_pool.pool_description(arrays.train_labels),
        "num_images": int(len(rows)),
        "input_shape": [1, 28, 28],
        "pixels": "[0, 1] (/255), no normalisation",
        "source": str(directory),
    }
    return (
        unit(arrays.train_images[rows]),
        torch.tensor(arrays.train_labels[rows]),
        unit(arrays.test_images),
        torch.tensor(arrays.test_labels),
        description,
    )


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


def augment_batch(images: torch.Tensor, generator: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Per image, a random translation by up to ``shift`` pixels (zero fill) and a horizontal flip with p = 1/2."""
    n, _, height, width = images.shape
    padded = F.pad(images, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator, device=generator.device).to(images.device)
    rows = (offsets[:, :1] + torch.arange(height, device=images.device)).unsqueeze(2)  # (n, H, 1)
    cols = (offsets[:, 1:] + torch.arange(width, device=images.device)).unsqueeze(1)  # (n, 1, W)
    batch = torch.arange(n, device=images.device).view(n, 1, 1)
    shifted = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=generator, device=generator.device).to(images.device) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), shifted.flip(-1), shifted)


def make_optimizer(module: nn.Module, config: PretrainConfig, betas: tuple[float, float]) -> torch.optim.Optimizer:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, parameter in module.named_parameters():
        exempt = parameter.ndim <= 1 or name.split(".")[-1] in ("pos_embed", "cls_token", "mask_token")
        (no_decay if exempt else decay).append(parameter)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=betas,
    )


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear from 1/warmup to 1, then cosine from 1 to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def train_loop(
    module: nn.Module,
    loss_of_batch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    config: PretrainConfig,
    betas: tuple[float, float],
    generator: torch.Generator,
    progress: bool,
) -> list[float]:
    """AdamW + warm-up/cosine over shuffled mini-batches; returns the mean training loss of each epoch."""
    optimizer = make_optimizer(module, config, betas)
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    total, warmup = config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total))
    losses = []
    module.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(images), generator=generator, device=generator.device).to(images.device)
        # disable=None: no bar when stderr is not a terminal (redirected logs)
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"{config.method} epoch {epoch + 1}/{config.epochs}",
            unit="step",
            leave=False,
            dynamic_ncols=True,
            disable=None if progress else True,
        )
        running = torch.zeros((), device=images.device)
        for start in range(0, len(images), config.batch_size):
            rows = order[start : start + config.batch_size]
            batch = images[rows]
            if config.augment:
                batch = augment_batch(batch, generator)
            loss = loss_of_batch(batch, labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.detach() * len(rows)
            bar.update(1)
        bar.close()
        losses.append(float(running) / len(images))
        if progress:
            print(f"{config.method} epoch {epoch + 1}/{config.epochs}: training loss {losses[-1]:.4f}", file=sys.stderr)
    module.eval()
    return losses


# ---------------------------------------------------------------------------------------------
# quality numbers
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def batched(function: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, size: int = 1000) -> torch.Tensor:
    return torch.cat([function(images[start : start + size]) for start in range(0, len(images), size)])


@torch.no_grad()
def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = PROBE_K,
    temperature: float = PROBE_TEMPERATURE,
) -> float:
    """Weighted k-NN on cosine similarity (votes exp(sim / T)), as in DINO's evaluation."""
    train_n, test_n = F.normalize(train_features, dim=1), F.normalize(test_features, dim=1)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for start in range(0, len(test_n), 1000):
        similarity, index = (test_n[start : start + 1000] @ train_n.T).topk(min(k, len(train_n)), dim=1)
        votes = torch.zeros(len(index), num_classes, device=index.device)
        votes.scatter_add_(1, train_labels[index], (similarity / temperature).exp())
        correct += int((votes.argmax(1) == test_labels[start : start + 1000]).sum())
    return correct / len(test_labels)


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    weight_decay: float = 1e-4,
) -> float:
    """Multinomial logistic regression on standardised features (full batch, L-BFGS), test accuracy."""
    mean, std = train_features.mean(0), train_features.std(0).clamp(min=1e-6)
    x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    probe = nn.Linear(x_train.shape[1], num_classes).to(x_train.device)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(
        probe.parameters(),
        lr=1.0,
        max_iter=PROBE_ITERATIONS,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=0.0,
        tolerance_change=0.0,
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(x_train), train_labels) + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((probe(x_test).argmax(1) == test_labels).float().mean())


def feature_probes(
    backbone: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
) -> dict:
    backbone.eval()
    train_features, test_features = batched(backbone, images), batched(backbone, test_images)
    return {
        "knn_accuracy": knn_accuracy(train_features, labels, test_features, test_labels),
        "linear_probe_accuracy": linear_probe_accuracy(train_features, labels, test_features, test_labels),
        "probe": f"on the backbone's features, pool = probe training set, Fashion-MNIST test set; "
        f"{PROBE_K}-NN cosine (T={PROBE_TEMPERATURE}); logistic regression, L-BFGS {PROBE_ITERATIONS} it",
    }


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def restrict_to_classes(
    classes: Sequence[int],
    images: torch.Tensor,
    labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    data: dict,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """The pool and the test set cut down to ``classes`` (``pretrain.classes``), and the data description saying so."""
    chosen = torch.tensor(sorted(classes))
    keep, keep_test = torch.isin(labels, chosen), torch.isin(test_labels, chosen)
    if not bool(keep.any()):
        raise UserError(f"pretrain.classes {sorted(classes)}: the pre-training pool holds no image of these classes")
    data = {**data, "classes": chosen.tolist(), "num_images": int(keep.sum())}
    return images[keep], labels[keep], test_images[keep_test], test_labels[keep_test], data


def default_name(model_name: str, model_config, config: PretrainConfig) -> str:
    label = f"timm-{model_config.arch}" if model_name == "timm" else model_name
    # a class-restricted pool is named after its classes, so it never takes the full pool's cache entry
    classes = f"-c{'_'.join(str(c) for c in sorted(config.classes))}" if config.classes else ""
    return f"{label}-{config.data}-{config.method}{classes}-s{config.seed}"


def settings_of(card: dict) -> dict:
    """What must agree for a cached backbone to be reused instead of re-trained."""
    return {key: card.get(key) for key in ("model", "method", "epochs", "seed")} | {
        "dataset": (card.get("data") or {}).get("dataset")
    }


def parse_model_sets(sets: Sequence[str]) -> dict:
    values = {}
    for assignment in sets:
        kind, name, value = parse_set(assignment)
        if kind != "model":
            raise UserError(f"cl-bench pretrain --set takes model.FIELD=VALUE, got {assignment!r}")
        values[name] = value
    return values


def card_summary(card: dict) -> str:
    quality = card["quality"]
    numbers = [f"{key.replace('_', ' ')} {value:.4f}" for key, value in quality.items() if isinstance(value, float)]
    model = ", ".join(f"{k} {v}" for k, v in card["model"].items() if k != "name" and v not in ("", False))
    data = card["data"]
    return "\n".join(
        [
            f"backbone   {card['name']}",
            f"model      {card['model']['name']} ({model})",
            f"method     {card['method']['name']}, {card['epochs']} epochs, batch {card['method']['batch_size']}, "
            f"lr {card['method']['lr']}, seed {card['seed']}",
            f"data       {data['pool']['name']}: {data['num_images']} {data['dataset']} training images "
            + (f"of classes {data['classes']} " if data.get("classes") else "")
            + "(held out by scenario.holdout_pretrain_pool=true)",
            f"loss       final training loss {card['final_train_loss']:.4f}",
            f"quality    {', '.join(numbers)}",
            f"wall time  {card['wall_time_s']:.1f} s",
            f"sha256     {card['sha256']}",
        ]
    )


def build_mae(model: SingleHeadNet, config: PretrainConfig) -> MaskedAutoencoder:
    from timm.models.vision_transformer import VisionTransformer

    from cl_bench.models.mae import MaskedAutoencoder

    if not isinstance(model.backbone, VisionTransformer):
        raise UserError("MAE pre-training needs a backbone that sees the images as they are; set model.input_size=0")
    return MaskedAutoencoder(
        model.backbone,
        config.decoder_embed_dim,
        config.decoder_depth,
        config.decoder_num_heads,
        norm_pix_loss=config.norm_pix_loss,
    )


def _cpu_tensors(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}


def train_supervised(
    model: SingleHeadNet, _, data: tuple, config: PretrainConfig, generator: torch.Generator, progress: bool
) -> tuple[list[float], dict, dict]:
    """(losses per epoch, quality, tensors to store): backbone keys + ``pretrain_head.``."""
    images, labels, test_images, test_labels = data
    model.to(images.device)
    losses = train_loop(
        model, lambda x, y: F.cross_entropy(model(x), y), images, labels, config, (0.9, 0.999), generator, progress
    )
    quality = {"test_accuracy": float((batched(model, test_images).argmax(1) == test_labels).float().mean())}
    quality.update(feature_probes(model.backbone, images, labels, test_images, test_labels))
    return losses, quality, {**_cpu_tensors(stored_backbone(model)), **_cpu_tensors(model.head, "pretrain_head.")}


def train_avit(
    model: SingleHeadNet, _, data: tuple, config: PretrainConfig, generator: torch.Generator, progress: bool
) -> tuple[list[float], dict, dict]:
    """A-ViT: cross-entropy plus the model's ponder and depth-prior terms; quality adds the compute numbers."""
    from cl_bench.models.avit import find_adaptive, flops_per_image, full_flops

    adaptive = find_adaptive(model)
    images, labels, test_images, test_labels = data
    model.to(images.device)
    losses = train_loop(
        model,
        lambda x, y: F.cross_entropy(model(x), y) + adaptive.auxiliary_loss(),
        images,
        labels,
        config,
        (0.9, 0.999),
        generator,
        progress,
    )
    correct, depth, flops = 0, 0.0, 0.0
    with torch.no_grad():
        for batch, batch_labels in zip(test_images.split(1000), test_labels.split(1000)):
            correct += int((model(batch).argmax(1) == batch_labels).sum())
            assert adaptive.compute is not None
            depth += float(adaptive.compute.depth.mean(dim=1).sum())
            flops += float(flops_per_image(adaptive, adaptive.compute.active).sum())
    count = len(test_images)
    quality = {
        "test_accuracy": correct / count,
        "test_mean_token_depth": depth / count,
        "test_mflops_per_image": flops / count / 1e6,
        "full_mflops_per_image": full_flops(adaptive) / 1e6,
    }
    quality.update(feature_probes(model.backbone, images, labels, test_images, test_labels))
    return losses, quality, {**_cpu_tensors(stored_backbone(model)), **_cpu_tensors(model.head, "pretrain_head.")}


def train_mae(
    model: SingleHeadNet,
    mae: MaskedAutoencoder,
    data: tuple,
    config: PretrainConfig,
    generator: torch.Generator,
    progress: bool,
) -> tuple[list[float], dict, dict]:
    """(losses per epoch, quality, tensors to store): encoder under the backbone's keys + ``decoder.``."""
    from cl_bench.models.mae import mae_tensors

    images, labels, test_images, test_labels = data
    mae.to(images.device)
    losses = train_loop(
        mae,
        lambda x, _: mae(x, config.mask_ratio, generator)[0],
        images,
        labels,
        config,
        (0.9, 0.95),
        generator,
        progress,
    )
    test_generator = torch.Generator(device=images.device).manual_seed(0)  # the same test masks for every backbone
    with torch.no_grad():
        total = sum(
            float(mae(batch, config.mask_ratio, test_generator)[0]) * len(batch) for batch in test_images.split(1000)
        )
    quality = {"test_reconstruction_mse": total / len(test_images)}
    quality.update(feature_probes(model.backbone, images, labels, test_images, test_labels))
    return losses, quality, mae_tensors(mae)


def write_entry(target: Path, tensors: dict[str, torch.Tensor], card: dict) -> None:
    """weights.safetensors + card.json (with the weights' sha256) into ``target``, atomically (staging + rename)."""
    from safetensors.torch import save_file

    from cl_bench.models.vit import CARD_FILE, WEIGHTS_FILE, file_sha256

    with atomic_directory(target) as staging:
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        card["sha256"] = file_sha256(staging / WEIGHTS_FILE)
        atomic_write_text(staging / CARD_FILE, strict_json(card, indent=2) + "\n")  # a NaN loss is refused


def pretrain(
    model_name: str,
    model_sets: Sequence[str],
    values: dict,
    name: Optional[str] = None,
    force: bool = False,
    progress: bool = True,
    command: str = "",
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Path:
    """Pre-train (or find) a backbone; returns its weights path. Every check runs before anything is written."""
    from cl_bench.models.vit import WEIGHTS_FILE, backbones_dir, read_card
    from cl_bench.device import seed_everything, select_device

    method = values.get("method", "supervised")
    config = cast(
        PretrainConfig, build_config(PretrainConfig, {**METHOD_DEFAULTS.get(method, {}), **values}, "pretrain")
    )
    images, labels, test_images, test_labels, data = pool_images(config.data)
    if config.classes:
        images, labels, test_images, test_labels, data = restrict_to_classes(
            config.classes, images, labels, test_images, test_labels, data
        )
    seed_everything(config.seed)
    model_name, model_config, model = build_model(model_name, parse_model_sets(model_sets), data["input_shape"])
    if config.method == "mae" and not is_vit(model):
        raise UserError(
            f"--method mae needs a ViT model (vit_micro or timm:NAME); --model {model_name} pre-trains with "
            f"--method supervised only"
        )
    if len(images) % config.batch_size == 1 and any(
        isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules()
    ):
        raise UserError(
            f"--batch-size {config.batch_size} leaves a last batch of one image, which BatchNorm cannot train on; "
            f"pick another --batch-size"
        )
    name = name or default_name(model_name, model_config, config)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"--name {name!r} must be letters, digits, '.', '_' or '-' (a directory name)")
    device = select_device(config.device)
    target = backbones_dir() / name
    card = {
        "schema_version": CARD_SCHEMA_VERSION,
        "name": name,
        "model": {"name": model_name, **config_to_dict(model_config)},
        "method": config.method_settings(),
        "data": data,
        "epochs": config.epochs,
        "seed": config.seed,
    }
    existing = read_card(target / WEIGHTS_FILE) if (target / WEIGHTS_FILE).is_file() else None
    if existing is not None and not force:
        if settings_of(existing) != settings_of(card):
            raise UserError(
                f"backbone {name} already exists with other settings; pick another --name or add --force to replace it"
            )
        log(f"backbone {name} already exists (use --force to redo it)")
        return target / WEIGHTS_FILE
    if (config.method == "avit") != (MODELS.traits(model_name).adaptive_compute):
        raise UserError(
            "--method avit trains an adaptive-compute model (--model avit_micro or avit_timm), and those models "
            "pre-train with --method avit only"
        )
    mae = build_mae(model, config) if config.method == "mae" else None

    started = time.perf_counter()
    trainers: dict[str, Callable[..., tuple[list[float], dict, dict]]] = {
        "supervised": train_supervised,
        "mae": train_mae,
        "avit": train_avit,
    }
    train = trainers[config.method]
    on_device = tuple(t.to(device) for t in (images, labels, test_images, test_labels))
    losses, quality, tensors = train(
        model, mae, on_device, config, torch.Generator(device=device).manual_seed(config.seed), progress
    )
    card.update(
        {
            "weights_file": WEIGHTS_FILE,
            "command": command,
            "environment": {**environment(device), "timm": timm.__version__},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_time_s": time.perf_counter() - started,
            "final_train_loss": losses[-1],
            "train_loss_per_epoch": losses,
            "quality": quality,
            "initial_weights": getattr(model, "backbone_card", None),
        }
    )
    write_entry(target, tensors, card)
    return target / WEIGHTS_FILE
