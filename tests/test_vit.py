"""ViT backbones: vit_micro, timm:NAME, strict weight loading, the pool check, timm pretrained tags offline only."""

import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from conftest import run_cli

from cl_bench.config import build_config, resolve
from cl_bench.errors import UserError
from cl_bench.models.heads import MultiHeadNet, SingleHeadNet
from cl_bench.models.vit import ResizedInput, file_sha256, find_vit
from cl_bench.backbone import pool_scenario
from cl_bench.pretrain_pool import POOL_NAME
from cl_bench.registry import MODELS, SCENARIOS

DIGITS = {"scenario": "split_digits", "device": "cpu"}
MICRO = {"patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2}


def build(name, values, scenario):
    name = "timm" if name.startswith("timm:") else name
    entry = MODELS.get(name)
    return entry.builder(build_config(entry.config_class, values, "model"), scenario)


@pytest.fixture(scope="module")
def digits():
    config = resolve({}, DIGITS)
    return SCENARIOS.get("split_digits").builder(config.components["scenario"], 0)


def fmnist_like(excluded_pools=()):
    """A stand-in for split_fmnist: the model builders read its shape, dataset and excluded pools."""
    scenario = pool_scenario((1, 28, 28))
    scenario.dataset = "fmnist"
    scenario.excluded_pools = list(excluded_pools)
    return scenario


def test_vit_micro_defaults_give_16_patches_and_cls_features_of_width_64():
    torch.manual_seed(0)
    model = build("vit_micro", {}, fmnist_like())
    vit = find_vit(model)
    assert isinstance(model, SingleHeadNet) and model.backbone is vit
    assert vit.patch_embed.num_patches == 16 and vit.embed_dim == 64 and len(vit.blocks) == 4
    assert vit.blocks[0].attn.num_heads == 4 and vit.global_pool == "token"
    x = torch.rand(3, 1, 28, 28)
    assert model.backbone(x).shape == (3, 64) and model(x).shape == (3, 10)
    # the feature is the [CLS] token after the final LayerNorm
    torch.testing.assert_close(model.backbone(x), vit.forward_features(x)[:, 0])


def test_vit_micro_multi_head_for_task_labels(digits):
    digits_task = resolve({}, DIGITS, ["scenario.task_labels=true"])
    scenario = SCENARIOS.get("split_digits").builder(digits_task.components["scenario"], 0)
    model = build("vit_micro", MICRO, scenario)
    assert isinstance(model, MultiHeadNet) and isinstance(model.backbone, VisionTransformer)
    assert model(torch.rand(2, 1, 8, 8), 0).shape == (2, 10)


def test_patch_size_must_divide_the_image(digits, tmp_path, capsys):
    with pytest.raises(UserError, match="patch size 7 does not divide the 8x8 image; use --set model.patch_size"):
        build("vit_micro", {}, digits)
    code, _, err = run_cli(
        ["run", "--scenario", "split_digits", "--model", "vit_micro", "--no-progress", "--out", str(tmp_path / "runs")],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and "model.patch_size" in err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(UserError, match="num_heads .3. must divide model.embed_dim .16."):
        resolve({}, {**DIGITS, "model": "vit_micro"}, ["model.embed_dim=16", "model.num_heads=3"])


def test_timm_name_resolves_to_model_timm_with_arch_like_the_yaml_form():
    by_flag = resolve({}, {**DIGITS, "model": "timm:test_vit"})
    by_yaml = resolve({"model": {"name": "timm", "arch": "test_vit"}}, DIGITS)
    in_yaml_name = resolve({"model": "timm:test_vit"}, DIGITS)
    assert by_flag.model == "timm" and by_flag.to_dict()["model"]["arch"] == "test_vit"
    assert by_flag.to_dict() == by_yaml.to_dict() == in_yaml_name.to_dict()
    assert by_flag.run_id() == by_yaml.run_id()
    # the flag beats the config file; --set beats both
    flag_over_yaml = resolve({"model": {"name": "timm", "arch": "test_vit2"}}, {**DIGITS, "model": "timm:test_vit"})
    assert flag_over_yaml.components["model"].arch == "test_vit"
    set_over_flag = resolve({}, {**DIGITS, "model": "timm:test_vit"}, ["model.arch=test_vit2"])
    assert set_over_flag.components["model"].arch == "test_vit2"


@pytest.mark.parametrize(
    "model, fragment",
    [
        ("timm:vit_tiny_patch16_22", "unknown timm model 'vit_tiny_patch16_22'; did you mean vit_tiny_patch16_224"),
        ("timm:vit_tiny_patch16_224.augreg_in21k", "--set model.pretrained=augreg_in21k"),
        ("timm:", "needs a timm model name"),
    ],
)
def test_bad_timm_names_are_one_line_errors(model, fragment, tmp_path, capsys):
    code, _, err = run_cli(
        ["run", "--scenario", "split_digits", "--model", model, "--out", str(tmp_path / "r")], capsys
    )
    assert code == 2 and err.count("\n") == 1 and fragment in err
    assert not (tmp_path / "r").exists()


def test_timm_vit_with_input_resize_and_a_non_vit_refused(digits):
    model = build("timm:test_vit", {"arch": "test_vit", "input_size": 32}, digits)
    assert isinstance(model.backbone, ResizedInput)
    vit = find_vit(model)
    assert tuple(vit.patch_embed.img_size) == (32, 32) and vit.patch_embed.proj.in_channels == 3
    seen = []
    vit.patch_embed.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert seen == [(2, 3, 32, 32)]
    with pytest.raises(UserError, match="patch size 16 does not divide the 8x8 image; set model.input_size"):
        build("timm:test_vit", {"arch": "test_vit"}, digits)
    with pytest.raises(UserError, match="'test_resnet' is not a VisionTransformer"):
        build("timm:test_resnet", {"arch": "test_resnet", "input_size": 32}, digits)


def test_weights_round_trip_gives_identical_outputs(digits, tmp_path):
    torch.manual_seed(0)
    source = build("vit_micro", MICRO, digits)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in find_vit(source).state_dict().items()}, str(path))
    torch.manual_seed(1)
    fresh = build("vit_micro", MICRO, digits)
    torch.manual_seed(1)
    loaded = build("vit_micro", {**MICRO, "weights": str(path)}, digits)
    x = torch.rand(4, 1, 8, 8)
    source.eval(), loaded.eval(), fresh.eval()
    assert torch.equal(loaded.backbone(x), source.backbone(x))
    assert not torch.allclose(fresh.backbone(x), source.backbone(x))
    assert loaded.backbone_card == {"weights": str(path), "sha256": file_sha256(path)}
    # auxiliary tensors (an MAE decoder, a pre-training head) are skipped
    extra = tmp_path / "with_decoder.safetensors"
    save_file(
        {
            **{k: v.contiguous() for k, v in find_vit(source).state_dict().items()},
            "decoder.pred.weight": torch.zeros(2, 2),
            "pretrain_head.bias": torch.zeros(10),
        },
        str(extra),
    )
    assert torch.equal(
        build("vit_micro", {**MICRO, "weights": str(extra)}, digits).eval().backbone(x), source.backbone(x)
    )


def test_strict_loading_names_the_first_mismatch_and_the_fix(digits, tmp_path):
    small = build("vit_micro", {**MICRO, "embed_dim": 8}, digits)
    tensors = {k: v.contiguous() for k, v in find_vit(small).state_dict().items()}
    (tmp_path / "small").mkdir()
    save_file(tensors, str(tmp_path / "small" / "weights.safetensors"))
    with pytest.raises(UserError, match=r"'cls_token' has shape \(1, 1, 8\) but the model needs \(1, 1, 16\)"):
        build("vit_micro", {**MICRO, "weights": str(tmp_path / "small" / "weights.safetensors")}, digits)
    # with a card, the message says which settings rebuild the right model
    (tmp_path / "small" / "card.json").write_text(json.dumps({"model": {"name": "vit_micro", **MICRO, "embed_dim": 8}}))
    with pytest.raises(UserError, match=r"rebuild the model with --set model.embed_dim=8"):
        build("vit_micro", {**MICRO, "weights": str(tmp_path / "small" / "weights.safetensors")}, digits)

    right = {k: v.contiguous() for k, v in find_vit(build("vit_micro", MICRO, digits)).state_dict().items()}
    missing = dict(right)
    missing.pop("norm.weight")
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(UserError, match="lack the backbone tensor 'norm.weight'"):
        build("vit_micro", {**MICRO, "weights": str(tmp_path / "missing.safetensors")}, digits)
    save_file({**right, "blocks.9.bias": torch.zeros(1)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(UserError, match="hold 'blocks.9.bias', which the model does not have"):
        build("vit_micro", {**MICRO, "weights": str(tmp_path / "extra.safetensors")}, digits)
    with pytest.raises(UserError, match="neither a .safetensors file nor a backbone in"):
        build("vit_micro", {**MICRO, "weights": str(tmp_path / "nope.safetensors")}, digits)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="cannot read weights"):
        build("vit_micro", {**MICRO, "weights": str(tmp_path / "junk.safetensors")}, digits)


def test_a_backbone_trained_on_the_pool_needs_a_stream_without_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CL_BENCH_CACHE", str(tmp_path))
    torch.manual_seed(0)
    tiny = {"embed_dim": 16, "depth": 1, "num_heads": 2}
    entry = tmp_path / "backbones" / "pooled"
    entry.mkdir(parents=True)
    weights = entry / "weights.safetensors"
    save_file(
        {k: v.contiguous() for k, v in find_vit(build("vit_micro", tiny, fmnist_like())).state_dict().items()},
        str(weights),
    )
    card = {
        "name": "pooled",
        "model": {"name": "vit_micro", **tiny},
        "data": {"dataset": "fmnist", "pool": {"name": POOL_NAME}},
        "sha256": file_sha256(weights),
    }
    (entry / "card.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match="pre-trained on fmnist-train-pool.*--set scenario.holdout_pretrain_pool=true"):
        build("vit_micro", {**tiny, "weights": "pooled"}, fmnist_like())
    model = build("vit_micro", {**tiny, "weights": "pooled"}, fmnist_like(excluded_pools=[POOL_NAME]))
    assert model.backbone_card == {**card, "weights": str(weights)}
    # another dataset's stream cannot contain Fashion-MNIST's pool
    elsewhere = pool_scenario((1, 28, 28))
    assert build("vit_micro", {**tiny, "weights": "pooled"}, elsewhere).backbone_card["name"] == "pooled"


def test_pretrained_tag_reads_only_the_local_hf_cache(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    values = {"arch": "test_vit", "input_size": 32, "pretrained": "r160_in1k"}
    with pytest.raises(UserError, match="not in the local cache .* use --set model.weights=PATH"):
        build("timm:test_vit", values, digits)
    # a cache entry laid out like huggingface_hub's is found and loaded, with nothing downloaded
    torch.manual_seed(0)
    original = timm.create_model("test_vit", pretrained=False, img_size=160)
    snapshot = tmp_path / "hf" / "hub" / "models--timm--test_vit.r160_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(snapshot / "model.safetensors"))
    model = build("timm:test_vit", values, digits)
    vit = find_vit(model)
    assert torch.equal(vit.patch_embed.proj.weight, original.patch_embed.proj.weight)
    assert torch.equal(vit.blocks[0].attn.qkv.weight, original.blocks[0].attn.qkv.weight)
    assert model.backbone_card["timm_pretrained"] == "test_vit.r160_in1k"
    with pytest.raises(UserError, match="model.weights or model.pretrained, not both"):
        resolve({}, {**DIGITS, "model": "timm:test_vit"}, ["model.pretrained=true", "model.weights=x"])
