"""Vision Transformer backbones: ``vit_micro`` for 28x28 images, any timm ViT (``timm:NAME``), and their weights.

* ``vit_micro``: a timm ``VisionTransformer(img_size=H, patch_size, in_chans=C, embed_dim, depth,
  num_heads, mlp_ratio, num_classes=0, global_pool="token")`` built from the scenario's input shape
  (suite choice: patch 7, width 64, depth 4, 4 heads, MLP ratio 4, so a 28x28 Fashion-MNIST image
  is 16 patches + [CLS]). The backbone returns the [CLS] token after the final LayerNorm.
* ``timm`` (``--model timm:NAME`` resolves to ``model: {name: timm, arch: NAME}``):
  ``timm.create_model(arch, pretrained=False, num_classes=0, img_size=..., in_chans=...)``; only
  the VisionTransformer family is accepted (the strategies and attacks reach into ``vit.blocks``).
  ``input_size=N`` resizes inputs to N x N (bilinear) and repeats a single channel to the arch's 3,
  inside the model, so a 224-px ImageNet ViT runs on 28-px images. The pooling is the arch's own
  (``token`` for the classic ViTs).
* ``model.prompts=n`` (either model; 0, the default, builds the plain ``VisionTransformer``): shallow
  visual prompt tuning (VPT, Jia et al., ECCV 2022), see below.
* Either model is a :class:`~cl_bench.models.heads.SingleHeadNet` (or the multi-head net of
  task-labelled scenarios) whose backbone is, or wraps, the ``VisionTransformer``; find it with
  :func:`find_vit`.

Weights (``model.weights``): a ``.safetensors`` path, or the name of a backbone in the pre-training
cache (``$CL_BENCH_CACHE`` else ``~/.cache/cl_bench``, ``backbones/<name>/weights.safetensors``,
written by ``cl-bench pretrain``). The file holds the ``VisionTransformer``'s own state-dict keys
(``patch_embed.proj.weight``, ``blocks.0.attn.qkv.weight`` ...), loaded strictly; keys under
``decoder.`` (an MAE decoder), ``pretrain_head.`` (the pre-training classifier) and ``head.`` (a
timm classifier; our models have their own head) are ignored. The ``card.json`` next to the
weights becomes ``model.backbone_card`` and is stored in the run record. A backbone whose card
says it was trained on a pool of the scenario's dataset that the scenario does not hold out is
refused (the stream would contain its pre-training images).

``model.pretrained`` (timm only): a timm pretrained tag or ``true``; the weight file is looked up
in the local Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``) or torch hub's cache and given to ``timm.create_model(...,
pretrained=True)`` as a local file, with ``HF_HUB_OFFLINE=1``: nothing is ever downloaded.

Visual prompts (``model.prompts=n``, :class:`PromptedVisionTransformer`): shallow VPT, Jia et al., "Visual
Prompt Tuning", ECCV 2022. ``n`` learnable tokens ``P = [p_1 .. p_n]`` (one parameter ``prompts`` of shape
``(1, n, embed_dim)``) join the sequence the first block sees, right after the prefix tokens
([CLS] and any register tokens) and before the patch tokens::

    z_0 = [x_cls + e_0, p_1, .., p_n, E(x)_1 + e_1, .., E(x)_N + e_N]      z_L = Blocks(z_0)

``E`` is the patch embedding and ``e_i`` the position embeddings: the prompts get *no* position embedding
(nor patch dropout; they do pass ``norm_pre`` where an arch has one, like every token). They are
initialised uniformly in ``±sqrt(6 / (3 * patch_h * patch_w + embed_dim))`` (VPT's Xavier-style value),
drawn after the rest of the ViT, so with the same seed every other tensor equals that of the prompt-free
model. The feature is still the [CLS] token after the final LayerNorm (``global_pool="token"``); the
other pools of timm archs leave the prompt tokens out. Prompts are meant for parameter-efficient
fine-tuning and unlearning: freeze the backbone and train only ``prompts`` and the head (Fast-NTK
linearises exactly those). A backbone weight file without ``prompts`` (every ``cl-bench pretrain``
backbone built with ``prompts=0``) loads into a prompted model, which keeps its fresh prompts; a file that
holds ``prompts`` must give them the model's shape. Suite choice: shallow VPT only (prompts at the input of
the first block); deep VPT (fresh prompts at every block) is not implemented. ``prompts`` is left out of the
resolved config while 0, so earlier run ids stay as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from timm.models import checkpoint_seq
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from cl_bench.config import ComponentConfig, config_to_dict, param
from cl_bench.data import file_digest
from cl_bench.errors import UserError
from cl_bench.models.heads import attach_head
from cl_bench.registry import MODELS
from cl_bench.traits import ModelTraits

WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.json"
# auxiliary tensors a weight file may carry besides the backbone; the loader skips them
IGNORED_PREFIXES = ("decoder.", "pretrain_head.", "head.")
# fields that do not change the backbone's tensors (left out of the "rebuild it like this" hint)
NON_ARCHITECTURE_FIELDS = ("weights", "pretrained", "drop_path_rate")
# backbone tensors a weight file may lack (the model keeps its own): the visual prompts
OPTIONAL_KEYS = ("prompts",)
PROMPTS_DOC = (
    "number of learnable visual-prompt tokens (shallow VPT, Jia et al. 2022) inserted after the [CLS] token; 0: none"
)


def cache_root() -> Path:
    """Where cl-bench keeps what it builds for the user: $CL_BENCH_CACHE, else ~/.cache/cl_bench."""
    return Path(os.environ.get("CL_BENCH_CACHE") or Path.home() / ".cache" / "cl_bench")


def backbones_dir() -> Path:
    return cache_root() / "backbones"


def find_vit(model: nn.Module) -> VisionTransformer:
    """The timm VisionTransformer inside ``model`` (the first one, in module order)."""
    found = next((m for m in model.modules() if isinstance(m, VisionTransformer)), None)
    if found is None:
        raise UserError(f"{type(model).__name__} holds no timm VisionTransformer; use --model vit_micro or timm:NAME")
    return found


# ---------------------------------------------------------------------------------------------
# visual prompts (shallow VPT)
# ---------------------------------------------------------------------------------------------


class PromptedVisionTransformer(VisionTransformer):
    """A timm ``VisionTransformer`` with ``n_prompts`` shallow VPT tokens after its prefix tokens (see the module doc).

    Build one directly (``PromptedVisionTransformer(n_prompts=3, **vit_kwargs)``) or turn a built ViT (with
    pretrained weights, say) into one with :func:`add_prompts`.
    """

    prompts: nn.Parameter

    def __init__(self, *args: Any, n_prompts: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        _init_prompts(self, n_prompts)

    @property
    def n_prompts(self) -> int:
        return self.prompts.shape[1]

    def insert_prompts(self, x: torch.Tensor) -> torch.Tensor:
        """[prefix, patches] -> [prefix, prompts, patches] (tokens of shape (B, L, D))."""
        prefix = self.num_prefix_tokens
        prompts = self.prompts.expand(x.shape[0], -1, -1).to(x.dtype)
        return torch.cat([x[:, :prefix], prompts, x[:, prefix:]], dim=1)

    def forward_features(
        self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False
    ) -> torch.Tensor:
        """timm's ``forward_features`` with the prompts inserted after the position embeddings and patch dropout."""
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.insert_prompts(x)
        x = self.norm_pre(x)
        if attn_mask is not None or is_causal:
            for blk in self.blocks:
                x = blk(x, attn_mask=attn_mask, is_causal=is_causal)
        elif self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def pool(self, x: torch.Tensor, pool_type: Optional[str] = None) -> torch.Tensor:
        """timm's pooling of the tokens without the prompts ([CLS] for ``token``; prompts never averaged)."""
        prefix = self.num_prefix_tokens
        return super().pool(torch.cat([x[:, :prefix], x[:, prefix + self.n_prompts :]], dim=1), pool_type)

    def forward_intermediates(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("PromptedVisionTransformer has no forward_intermediates (it would skip the prompts)")


def _init_prompts(vit: VisionTransformer, n_prompts: int) -> None:
    """Add the ``prompts`` parameter, uniform in ±sqrt(6 / (3 * patch_h * patch_w + embed_dim)) as in VPT."""
    if n_prompts < 1:
        raise ValueError(f"n_prompts must be at least 1, got {n_prompts}")
    reference = vit.patch_embed.proj.weight
    prompts = torch.empty(1, n_prompts, vit.embed_dim, device=reference.device, dtype=reference.dtype)
    bound = math.sqrt(6.0 / float(3 * math.prod(vit.patch_embed.patch_size) + vit.embed_dim))
    nn.init.uniform_(prompts, -bound, bound)
    vit.prompts = nn.Parameter(prompts)


def add_prompts(vit: VisionTransformer, n_prompts: int) -> VisionTransformer:
    """``vit`` itself, turned into a :class:`PromptedVisionTransformer` with ``n_prompts`` fresh prompts (0: as is).

    Only a plain ``VisionTransformer`` qualifies: a timm subclass (DeiT's distilled ViT ...) has its own
    ``forward_features``, which the prompted one would replace.
    """
    if n_prompts == 0:
        return vit
    if type(vit) is not VisionTransformer:
        raise UserError(
            f"model.prompts needs a plain timm VisionTransformer, but the backbone is a {type(vit).__name__}; "
            f"set model.prompts=0 or choose another arch"
        )
    vit.__class__ = PromptedVisionTransformer
    _init_prompts(vit, n_prompts)
    return vit


def _image_shape(scenario, model_name: str) -> tuple[int, int, int]:
    shape = tuple(scenario.input_shape)
    if len(shape) != 3:
        raise UserError(
            f"model {model_name} needs image inputs (C, H, W), but the scenario's inputs have shape "
            f"{shape}; choose an image scenario or --model mlp"
        )
    return shape  # type: ignore[return-value]


def _check_patch(patch: int, height: int, width: int, fix: str) -> None:
    if height % patch or width % patch:
        raise UserError(f"patch size {patch} does not divide the {height}x{width} image; {fix}")


# ---------------------------------------------------------------------------------------------
# vit_micro
# ---------------------------------------------------------------------------------------------


@dataclass
class ViTMicroConfig(ComponentConfig):
    patch_size: int = param(
        7, "patch side in pixels; must divide the image size (7: 16 patches of a 28x28 image)", low=1
    )
    embed_dim: int = param(64, "token width (suite choice)", low=1)
    depth: int = param(4, "number of transformer blocks (suite choice)", low=1)
    num_heads: int = param(4, "attention heads per block; must divide embed_dim", low=1)
    mlp_ratio: float = param(4.0, "MLP hidden width / embed_dim", low=0.0, low_open=True)
    drop_path_rate: float = param(
        0.0, "stochastic depth rate (timm, linear over blocks)", low=0.0, high=1.0, high_open=True
    )
    weights: str = param(
        "",
        "backbone weights: a .safetensors path or the name of a `cl-bench pretrain` backbone "
        "in the cache; empty: random init",
    )
    prompts: int = param(0, PROMPTS_DOC, low=0)

    omitted_at_default: ClassVar[tuple[str, ...]] = ("prompts",)

    def validate(self) -> None:
        if self.embed_dim % self.num_heads:
            raise UserError(f"model.num_heads ({self.num_heads}) must divide model.embed_dim ({self.embed_dim})")


def vit_micro_backbone(config: ViTMicroConfig, input_shape: tuple[int, ...]) -> VisionTransformer:
    channels, height, width = input_shape
    _check_patch(config.patch_size, height, width, "use --set model.patch_size=P with P dividing both sides")
    vit = VisionTransformer(
        img_size=(height, width),
        patch_size=config.patch_size,
        in_chans=channels,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        drop_path_rate=config.drop_path_rate,
        num_classes=0,
        global_pool="token",
    )
    return add_prompts(vit, config.prompts)


# one block of width 16 on 8x8 digits (4 patches of 4x4) for the smoke run
@MODELS.register(
    "vit_micro",
    config=ViTMicroConfig,
    traits=ModelTraits(
        vit=True,
        smoke=(
            "scenario=split_digits",
            "train.epochs=1",
            "model.patch_size=4",
            "model.embed_dim=16",
            "model.depth=1",
            "model.num_heads=2",
        ),
    ),
)
def build_vit_micro(config: ViTMicroConfig, scenario) -> nn.Module:
    """timm ViT sized for 28x28 images (patch 7, width 64, depth 4, 4 heads) + single or per-task head."""
    backbone = vit_micro_backbone(config, _image_shape(scenario, "vit_micro"))
    model = attach_head(backbone, config.embed_dim, scenario)
    if config.weights:
        model.backbone_card = load_backbone_weights(backbone, config.weights, scenario, "vit_micro", config)
    return model


# ---------------------------------------------------------------------------------------------
# any timm ViT
# ---------------------------------------------------------------------------------------------


@dataclass
class TimmViTConfig(ComponentConfig):
    arch: str = param(
        "vit_tiny_patch16_224", "timm model name of the VisionTransformer family (`--model timm:NAME` sets it)"
    )
    img_size: int = param(0, "image size the ViT is built for; 0: input_size if set, else the scenario's", low=0)
    input_size: int = param(
        0,
        "0: feed inputs as they are; N: resize inputs to NxN (bilinear) inside the model and "
        "repeat a single channel to the arch's 3",
        low=0,
    )
    drop_path_rate: float = param(0.0, "stochastic depth rate", low=0.0, high=1.0, high_open=True)
    weights: str = param("", "backbone weights: a .safetensors path or the name of a `cl-bench pretrain` backbone")
    pretrained: Union[bool, str] = param(
        False,
        "timm pretrained weights from the local HF cache only: true (the "
        "arch's default tag) or a tag such as augreg2_in21k_ft_in1k",
    )
    prompts: int = param(0, PROMPTS_DOC, low=0)

    omitted_at_default: ClassVar[tuple[str, ...]] = ("prompts",)

    def validate(self) -> None:
        import timm

        if "." in self.arch:
            name, tag = self.arch.split(".", 1)
            raise UserError(
                f"model.arch {self.arch!r} includes a pretrained tag; use --model timm:{name} "
                f"--set model.pretrained={tag}"
            )
        if not timm.is_model(self.arch):
            close = difflib.get_close_matches(self.arch, timm.list_models(), n=5, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models('vit_*')"
            raise UserError(f"unknown timm model {self.arch!r}; {hint}")
        if self.weights and self.pretrained not in (False, ""):
            raise UserError("give model.weights or model.pretrained, not both")


class ResizedInput(nn.Module):
    """Resize images to ``size`` x ``size`` (bilinear) and repeat a single channel, then run ``vit``."""

    def __init__(self, vit: nn.Module, size: int, in_chans: int):
        super().__init__()
        self.vit = vit
        self.size = size
        self.in_chans = in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.in_chans != 1:
            x = x.expand(-1, self.in_chans, -1, -1)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.vit(x)


def timm_backbone(config: TimmViTConfig, input_shape: tuple[int, ...]) -> nn.Module:
    """The timm ViT (wrapped in :class:`ResizedInput` when ``input_size`` is set)."""
    import timm

    channels, height, width = input_shape
    if config.input_size:
        in_chans, seen = 3, (config.input_size, config.input_size)
        if channels not in (1, in_chans):
            raise UserError(
                f"model.input_size repeats a single channel to {in_chans}, but the images have "
                f"{channels} channels; set model.input_size=0"
            )
    else:
        in_chans, seen = channels, (height, width)
    kwargs: dict[str, Any] = dict(
        num_classes=0, img_size=config.img_size or seen, in_chans=in_chans, drop_path_rate=config.drop_path_rate
    )
    not_a_vit = "choose a VisionTransformer-family arch (e.g. vit_tiny_patch16_224, deit_tiny_patch16_224)"
    try:
        if config.pretrained not in (False, ""):
            vit = _create_pretrained(config, kwargs)
        else:
            vit = timm.create_model(config.arch, pretrained=False, **kwargs)
    except TypeError:  # a CNN or another family that takes no img_size
        raise UserError(f"timm model {config.arch!r} is not a VisionTransformer; {not_a_vit}") from None
    if not isinstance(vit, VisionTransformer):
        raise UserError(f"timm model {config.arch!r} is a {type(vit).__name__}, not a VisionTransformer; {not_a_vit}")
    patch, size = vit.patch_embed.patch_size, vit.patch_embed.img_size
    if size[0] % patch[0] or size[1] % patch[1]:
        raise UserError(
            f"patch size {patch[0]} does not divide the {size[0]}x{size[1]} image; set "
            f"model.input_size to a multiple of it (e.g. 224) to resize the inputs"
        )
    if seen != tuple(size):
        raise UserError(
            f"model.img_size {config.img_size} differs from the {seen[0]}x{seen[1]} images the model "
            f"sees; set model.img_size=0 or model.input_size={config.img_size}"
        )
    vit = add_prompts(vit, config.prompts)
    return ResizedInput(vit, config.input_size, in_chans) if config.input_size else vit


# timm's own test_vit (width 64, patch 16) on digits resized to 32x32 (4 patches) for the smoke run
@MODELS.register(
    "timm",
    config=TimmViTConfig,
    traits=ModelTraits(
        vit=True, smoke=("scenario=split_digits", "train.epochs=1", "model.arch=test_vit", "model.input_size=32")
    ),
)
def build_timm(config: TimmViTConfig, scenario) -> nn.Module:
    """Any timm VisionTransformer (`--model timm:NAME`), optional resize, local weights + single or per-task head."""
    backbone = timm_backbone(config, _image_shape(scenario, "timm"))
    vit = find_vit(backbone)
    model = attach_head(backbone, vit.num_features, scenario)
    if config.weights:
        model.backbone_card = load_backbone_weights(vit, config.weights, scenario, "timm", config)
    elif config.pretrained not in (False, ""):
        model.backbone_card = {"timm_pretrained": _pretrained_name(config), "source": "local Hugging Face cache"}
    return model


def _pretrained_name(config: TimmViTConfig) -> str:
    return config.arch if config.pretrained is True else f"{config.arch}.{config.pretrained}"


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for the block (also in huggingface_hub's constants, read once at its import)."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants: Any = None  # huggingface_hub.constants when installed
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants
    old_flag = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_flag
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def _local_pretrained_file(pretrained_cfg: dict) -> Optional[Path]:
    """The weight file of a timm pretrained config in the local HF or torch hub cache, or None."""
    hub_id = pretrained_cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in (pretrained_cfg.get("hf_hub_filename"), "model.safetensors", "pytorch_model.bin"):
            if not filename:
                continue
            found = try_to_load_from_cache(hub_id, filename, cache_dir=str(_hub_cache()))
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = pretrained_cfg.get("url")
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        if candidate.is_file():
            return candidate
    return None


def _create_pretrained(config: TimmViTConfig, kwargs: dict) -> nn.Module:
    import timm
    from timm.models import get_pretrained_cfg

    name = _pretrained_name(config)
    pretrained_cfg = get_pretrained_cfg(name)
    missing = (
        f"pretrained weights {name!r} are not in the local cache ({_hub_cache()}); nothing is downloaded: "
        f"put a .safetensors file there or use --set model.weights=PATH"
    )
    if pretrained_cfg is None:
        raise UserError(f"timm has no pretrained weights {name!r}; see timm.list_pretrained('{config.arch}*')")
    path = _local_pretrained_file(pretrained_cfg.to_dict())
    if path is None:
        raise UserError(missing)
    overlay: dict[str, Union[str, bool]] = {"file": str(path)}
    if path.suffix != ".npz":
        overlay["custom_load"] = False  # the cached file is a plain state dict, not the original npz
    with _hub_offline():
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)


# ---------------------------------------------------------------------------------------------
# weights from a file or the pre-training cache
# ---------------------------------------------------------------------------------------------


def resolve_weights(weights: str) -> Path:
    """``model.weights`` -> the .safetensors file: a path, else ``backbones/<name>/weights.safetensors``."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    named = backbones_dir() / weights / WEIGHTS_FILE
    if "/" not in weights and named.is_file():
        return named
    raise UserError(
        f"model.weights {weights!r} is neither a .safetensors file nor a backbone in "
        f"{backbones_dir()}; run `cl-bench pretrain --name {Path(weights).name}` or give a file path"
    )


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


class _CardPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _CardModel(_CardPart):
    name: str


class _CardData(_CardPart):
    dataset: Optional[str] = None
    input_shape: Optional[list[Annotated[int, Field(ge=1)]]] = None
    pool: Optional[dict] = None


class _CardMethod(_CardPart):
    name: str
    decoder_embed_dim: Optional[Annotated[int, Field(ge=1)]] = None
    decoder_depth: Optional[Annotated[int, Field(ge=1)]] = None
    decoder_num_heads: Optional[Annotated[int, Field(ge=1)]] = None
    norm_pix_loss: Optional[bool] = None


class BackboneCard(_CardPart):
    """The types of what the readers of a ``card.json`` use (the rest is kept as plain JSON). A card written by
    hand for one's own weights may give only some parts; ``cl-bench pretrain`` writes them all."""

    name: Optional[str] = None
    model: Optional[_CardModel] = None
    method: Optional[_CardMethod] = None
    data: Optional[_CardData] = None
    epochs: Optional[Annotated[int, Field(ge=0)]] = None
    seed: Optional[Annotated[int, Field(ge=0)]] = None
    sha256: Optional[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = None


def read_card(weights_path: Path) -> Optional[dict]:
    """The card.json next to a weight file (strict JSON checked against :class:`BackboneCard`), or None."""
    from cl_bench.records import read_json, schema_problem

    card_path = weights_path.parent / CARD_FILE
    if not card_path.is_file():
        return None
    fix = "re-create it with cl-bench pretrain --force"
    try:
        card = read_json(card_path)
    except UnicodeDecodeError:
        raise UserError(f"backbone card {card_path} is not UTF-8 text; {fix}") from None
    except (OSError, ValueError) as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        raise UserError(f"backbone card {card_path} is not valid JSON ({reason}); {fix}") from None
    if not isinstance(card, dict):
        raise UserError(f"backbone card {card_path} is not a JSON object; {fix}")
    try:
        BackboneCard.model_validate(card)
    except ValidationError as error:
        raise UserError(f"backbone card {card_path} is damaged ({schema_problem(error)}); {fix}") from None
    return card


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"cannot read weights {path}: {str(error).splitlines()[0]}; give a .safetensors file") from None


def _rebuild_hint(card: Optional[dict], model_name: str, config: Optional[ComponentConfig]) -> str:
    """How to build a model these weights fit: the --set flags where the card's model config differs."""
    if not card or config is None or not isinstance(card.get("model"), dict):
        return "build the model with the settings the weights were saved from"
    saved = card["model"]
    # every field, those omitted from the resolved config at their default included
    defaults = {
        spec.name: spec.default for spec in dataclasses.fields(config) if spec.default is not dataclasses.MISSING
    }
    current = {**defaults, **config_to_dict(config)}
    if saved.get("name") != model_name:
        return f"the weights are for --model {saved.get('name')}"
    changes = [
        f"--set model.{key}={json.dumps(value)}"
        for key, value in saved.items()
        if key in current and key not in NON_ARCHITECTURE_FIELDS and current[key] != value
    ]
    return (
        ("rebuild the model with " + " ".join(changes))
        if changes
        else "the card's model settings match; the file may be damaged"
    )


def load_state_strictly(vit: nn.Module, tensors: dict[str, torch.Tensor], source: str, hint: str) -> None:
    """Load ``tensors`` (auxiliary prefixes dropped) into ``vit``; a one-line UserError on the first mismatch.

    A tensor in :data:`OPTIONAL_KEYS` (the visual prompts) may be missing: ``vit`` keeps its own.
    """
    tensors = {k: v for k, v in tensors.items() if not k.startswith(IGNORED_PREFIXES)}
    expected = vit.state_dict()
    for key, value in expected.items():
        if key not in tensors and key in OPTIONAL_KEYS:
            tensors[key] = value
        if key not in tensors:
            raise UserError(f"weights {source} lack the backbone tensor {key!r}; {hint}")
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise UserError(
                f"weights {source}: {key!r} has shape {tuple(tensors[key].shape)} but the model needs "
                f"{tuple(value.shape)}; {hint}"
            )
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise UserError(f"weights {source} hold {unexpected[0]!r}, which the model does not have; {hint}")
    vit.load_state_dict(tensors, strict=True)


def scenario_dataset(scenario) -> Optional[str]:
    """The dataset a scenario's stream is drawn from, when known ("fmnist" ...)."""
    return getattr(scenario, "dataset", None) or None


def check_pool_held_out(card: dict, scenario) -> None:
    """Refuse a backbone pre-trained on a pool of the scenario's dataset that its stream does not leave out."""
    data = card.get("data") or {}
    pool = (data.get("pool") or {}).get("name")
    if not pool or data.get("dataset") != scenario_dataset(scenario):
        return
    if pool not in getattr(scenario, "excluded_pools", []):
        raise UserError(
            f"the backbone {card.get('name', '')!r} was pre-trained on {pool}, which this scenario's "
            f"stream contains; add --set scenario.holdout_pretrain_pool=true"
        )


def load_backbone_weights(
    vit: nn.Module, weights: str, scenario, model_name: str, config: Optional[ComponentConfig] = None
) -> dict:
    """Load ``model.weights`` into ``vit`` strictly and return the card to record (checked against the scenario)."""
    path = resolve_weights(weights)
    card = read_card(path)
    if card is not None:
        check_pool_held_out(card, scenario)
    load_state_strictly(vit, read_weights(path), str(path), _rebuild_hint(card, model_name, config))
    sha256 = file_sha256(path)
    if card is None:
        return {"weights": str(path), "sha256": sha256}
    if card.get("sha256") not in (None, sha256):
        raise UserError(
            f"weights {path} do not match the sha256 in their card; re-create them with cl-bench pretrain --force"
        )
    return {**card, "weights": str(path)}
