"""Inception-FID, Inception Score and a CLIP score computed with the user's own pre-trained weights.

The suite's default image metrics (:mod:`cl_bench.image_metrics`) run on a backbone it trains itself, and are
named ``*_vitmicro`` so nobody mistakes them for the published metrics. A user who has the published networks'
weights on disk gets the published metrics as well, through the optional extra ``pip install
'cl-bench[image-metrics]'`` (``torch-fidelity`` and ``open_clip_torch``, pinned in ``constraints.txt``):

* ``fid_inception``: the Fréchet Inception Distance of generated and true images, with torch-fidelity's
  Inception-v3 (the network ``torchmetrics``' FID uses, the TensorFlow FID graph ported to PyTorch: its weights
  file is torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``), on its 2048-d pool features,
  ``||mu_g - mu_t||^2 + Tr(S_g + S_t - 2 (S_g S_t)^(1/2))`` (torch-fidelity's own function);
* ``is_inception`` / ``is_inception_std``: the Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` of the generated
  images over ``is_splits`` splits, on the same network's 1008-way logits (torch-fidelity's ``logits_unbiased``
  and its split function with its fixed shuffle seed);
* ``cos_clip``: the mean cosine similarity of the CLIP image embeddings of each generated image and its truth
  (the paper's CLIP score), with an `open_clip <https://github.com/mlfoundations/open_clip>`_ model: an
  architecture name (``ViT-B-32``) or an open_clip model-config JSON file, and a checkpoint file.

Greyscale 28x28 images are repeated to three channels; torch-fidelity resizes to 299x299 itself (bilinear, as
TensorFlow 1.x did), CLIP inputs are resized bicubically to the model's image size and normalised with its mean
and std. Nothing downloads: weights come only from the files named, read as safetensors or as a ``torch.save``
state dict with ``weights_only=True`` (no pickled code runs); a checkpoint that holds anything but tensors, or
that does not match the architecture, is refused with a one-line error before anything is written. torch-fidelity
itself reads weights with ``weights_only=False``, so it never sees the user's file: it gets a copy of the checked
tensors saved to a private temporary directory.

Small sets make FID biased upwards (the 2048x2048 covariance needs thousands of images): compare FIDs only at
equal set sizes.
"""

from __future__ import annotations

import json
import logging
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bench.errors import UserError

INCEPTION_METRICS = ("fid_inception", "is_inception", "is_inception_std")
CLIP_METRICS = ("cos_clip",)
EXTRA = "pip install -c constraints.txt -e '.[image-metrics]'"
BATCH = 100
# CLIP's own normalisation (open_clip.constants.OPENAI_DATASET_MEAN/STD), for configs that name none
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def read_state_dict(path_text: str, flag: str) -> dict[str, Tensor]:
    """The tensors of a weights file (safetensors, or a state dict saved by ``torch.save``, read with weights_only),
    told apart by their first bytes, not their names.

    A checkpoint that wraps its state dict (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped and a
    ``module.`` prefix (DataParallel) dropped. Anything else is a one-line UserError."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise UserError(f"{flag} {path_text!r} is not a file; give the path of a weights file on this machine")
    with path.open("rb") as handle:
        magic = handle.read(2)
    # torch.save writes a zip archive (or, before torch 1.6, a bare pickle); anything else is read as safetensors
    if not (magic == b"PK" or magic[:1] == b"\x80"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            loaded: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise UserError(f"{flag} {path_text}: not a readable safetensors file ({error})") from None
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(
                f"{flag} {path_text}: not a state dict of tensors that loads with weights_only=True ({first[:160]})"
            ) from None
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise UserError(f"{flag} {path_text}: expected a state dict (names -> tensors), found something else")
    return {str(k).removeprefix("module."): v for k, v in loaded.items()}


def _check_tensors(own: dict[str, Tensor], tensors: dict[str, Tensor], flag: str, path: str, expected: str) -> None:
    """A one-line UserError unless ``tensors`` has exactly the names and shapes of ``own``."""
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    misshapen = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or misshapen:
        first = (missing or unexpected or misshapen)[0]
        raise UserError(
            f"{flag} {path} does not hold {expected}: {len(missing)} tensors missing, {len(unexpected)} unexpected, "
            f"{len(misshapen)} of another shape (first: {first})"
        )


def _three_channel_uint8(images: Tensor) -> Tensor:
    images = images if images.shape[1] == 3 else images.expand(-1, 3, -1, -1)
    return (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def load_inception(path: str, device: torch.device) -> nn.Module:
    """torch-fidelity's FID Inception-v3 with the weights in ``path``, returning (2048-d pool, 1008 logits)."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise UserError(f"inception_weights needs torch-fidelity, which is not installed: {EXTRA}") from None
    from torchvision.models import Inception3

    flag = "inception_weights"
    tensors = read_state_dict(path, flag)
    with torch.device("meta"):  # the same tensor names and shapes as torch-fidelity's network, nothing allocated
        layout = Inception3(num_classes=1008, aux_logits=False, init_weights=False).state_dict()
    _check_tensors(layout, tensors, flag, path, "torch-fidelity's FID Inception-v3 (weights-inception-2015-12-05)")
    with tempfile.TemporaryDirectory(prefix="cl_bench_inception_") as private:
        # torch-fidelity unpickles its weights file with weights_only=False: give it our checked tensors only
        copy = Path(private) / "weights.pth"
        torch.save(tensors, copy)
        network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"], str(copy))
    return network.to(device).eval()


@dataclass
class ClipImageEncoder:
    """The image tower of an open_clip model and its input normalisation."""

    model: nn.Module
    image_size: tuple[int, int]
    mean: Tensor
    std: Tensor

    @torch.no_grad()
    def embed(self, images: Tensor) -> np.ndarray:
        outputs = []
        for batch in images.split(BATCH):
            batch = batch if batch.shape[1] == 3 else batch.expand(-1, 3, -1, -1)
            batch = F.interpolate(batch, size=self.image_size, mode="bicubic", align_corners=False).clamp(0.0, 1.0)
            batch = (batch - self.mean.to(batch.device)) / self.std.to(batch.device)
            outputs.append(self.model.encode_image(batch).double().cpu().numpy())  # type: ignore[operator]
        return np.concatenate(outputs)


def load_clip(model_name: str, weights: str, device: torch.device) -> ClipImageEncoder:
    """An open_clip model built from its architecture name or model-config JSON, weights from ``weights``."""
    try:
        import open_clip
    except ImportError:
        raise UserError(f"clip_model needs open_clip_torch, which is not installed: {EXTRA}") from None
    if not weights:
        raise UserError("clip_model needs clip_weights, the path of that model's checkpoint (nothing downloads)")
    name = model_name
    if model_name.endswith(".json"):
        config_path = Path(model_name).expanduser()
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise UserError(f"clip_model {model_name}: not a readable JSON model config ({error})") from None
        if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(config):
            raise UserError(f"clip_model {model_name}: an open_clip model config needs embed_dim, vision_cfg, text_cfg")
        open_clip.add_model_config(config_path)
        name = config_path.stem
    if name not in open_clip.list_models():
        raise UserError(
            f"clip_model {model_name!r} is neither an open_clip architecture (e.g. ViT-B-32) nor a model-config "
            f"JSON file; see open_clip.list_models()"
        )
    logging.disable(logging.WARNING)  # open_clip warns on the root logger that the weights are random: not yet
    try:
        # no pretrained tag and no tower weights: the architecture only, nothing is fetched
        clip = open_clip.create_model(name, pretrained=None, pretrained_image=False, pretrained_text=False)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        raise UserError(f"clip_model {model_name}: open_clip cannot build it ({error})") from None
    finally:
        logging.disable(logging.NOTSET)
    tensors = read_state_dict(weights, "clip_weights")
    _check_tensors(clip.state_dict(), tensors, "clip_weights", weights, f"the open_clip {name} model")
    clip.load_state_dict(tensors, strict=True)
    settings = open_clip.get_model_preprocess_cfg(clip)
    size = settings.get("size") or clip.visual.image_size  # type: ignore[union-attr]
    image_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mean = torch.tensor(settings.get("mean") or CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(settings.get("std") or CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ClipImageEncoder(clip.to(device).eval(), image_size, mean, std)


@dataclass
class PretrainedMetrics:
    """The metrics whose networks the user supplied; ``names`` lists what :meth:`score` returns."""

    inception: Optional[nn.Module] = None
    clip: Optional[ClipImageEncoder] = None
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.names = (INCEPTION_METRICS if self.inception is not None else ()) + (
            CLIP_METRICS if self.clip is not None else ()
        )

    @torch.no_grad()
    def features(self, images: Tensor) -> dict[str, Tensor | np.ndarray]:
        """What the metrics need of one image set: Inception pool features and logits, CLIP embeddings."""
        found: dict[str, Tensor | np.ndarray] = {}
        if self.inception is not None:
            pools, logits = [], []
            for batch in images.split(BATCH):
                pool, logit = self.inception(_three_channel_uint8(batch))
                pools.append(pool.double().cpu())
                logits.append(logit.double().cpu())
            found["inception_pool"], found["inception_logits"] = torch.cat(pools), torch.cat(logits)
        if self.clip is not None:
            found["clip"] = self.clip.embed(images)
        return found

    def image_scores(self, features: dict[str, Tensor | np.ndarray], splits: int) -> dict[str, float]:
        """The scores of one image set on its own (no ground truth): its Inception Score over ``splits``."""
        if self.inception is None:
            return {}
        from torch_fidelity.metric_isc import isc_features_to_metric

        inception_score = isc_features_to_metric(features["inception_logits"], splits=splits)
        return {
            "is_inception": float(inception_score["inception_score_mean"]),
            "is_inception_std": float(inception_score["inception_score_std"]),
        }

    def score(self, generated: Tensor, truth: dict[str, Tensor | np.ndarray], splits: int) -> dict[str, float]:
        """The metrics of generated images against the true images' :meth:`features`."""
        if not self.names:
            return {}
        made = self.features(generated)
        numbers: dict[str, float] = {}
        if self.inception is not None:
            from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

            fid = fid_statistics_to_metric(
                fid_features_to_statistics(made["inception_pool"]),
                fid_features_to_statistics(truth["inception_pool"]),
                verbose=False,
            )
            numbers["fid_inception"] = float(next(iter(fid.values())))
        numbers.update(self.image_scores(made, splits))
        if self.clip is not None:
            from cl_bench.image_metrics import mean_cosine

            numbers["cos_clip"] = mean_cosine(np.asarray(made["clip"]), np.asarray(truth["clip"]))
        return numbers


def load_pretrained_metrics(
    inception_weights: str, clip_model: str, clip_weights: str, device: torch.device
) -> PretrainedMetrics:
    """The networks named in the settings (either, both or none), each checked before anything is written."""
    if clip_weights and not clip_model:
        raise UserError("clip_weights is set but clip_model is not; name the open_clip architecture or config JSON")
    inception = load_inception(inception_weights, device) if inception_weights else None
    clip = load_clip(clip_model, clip_weights, device) if clip_model else None
    return PretrainedMetrics(inception, clip)


__all__ = [
    "CLIP_METRICS",
    "INCEPTION_METRICS",
    "PretrainedMetrics",
    "load_clip",
    "load_inception",
    "load_pretrained_metrics",
    "read_state_dict",
]
