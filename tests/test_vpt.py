"""Shallow visual prompt tuning (VPT) on the ViT models: model.prompts, the prompted forward, weight loading."""

import json
import math

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from cl_bench.backbone import pool_scenario
from cl_bench.config import build_config, resolve
from cl_bench.errors import UserError
from cl_bench.models.heads import SingleHeadNet
from cl_bench.models.vit import PromptedVisionTransformer, ResizedInput, add_prompts, find_vit
from cl_bench.registry import MODELS

# one block of width 16 on 28x28 images: 16 patches of 7x7
TINY = {"patch_size": 7, "embed_dim": 16, "depth": 1, "num_heads": 2}
TIMM = {"arch": "test_vit", "input_size": 32}


def build(name, values, scenario):
    entry = MODELS.get(name)
    return entry.builder(build_config(entry.config_class, values, "model"), scenario)


def micro(values=None, seed=0):
    torch.manual_seed(seed)
    return build("vit_micro", {**TINY, **(values or {})}, pool_scenario((1, 28, 28)))


def tokens_seen_by_first_block(model, x):
    seen = []
    handle = find_vit(model).blocks[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    out = model(x)
    handle.remove()
    return out, seen[0]


def save_backbone(model, path, **extra):
    save_file({**{k: v.contiguous() for k, v in find_vit(model).state_dict().items()}, **extra}, str(path))
    return str(path)


def test_prompts_0_is_the_plain_vit_with_identical_outputs_and_run_id():
    x = torch.rand(3, 1, 28, 28)
    default, zero = micro(), micro({"prompts": 0})
    torch.manual_seed(0)
    plain = VisionTransformer(
        img_size=(28, 28), patch_size=7, in_chans=1, embed_dim=16, depth=1, num_heads=2, num_classes=0
    )
    for model in (default, zero):
        assert type(model.backbone) is VisionTransformer and "backbone.prompts" not in dict(model.named_parameters())
        assert torch.equal(model.backbone(x), plain(x)) and torch.equal(model(x), default(x))
    # prompts at 0 are left out of the resolved config, so earlier run ids stay
    scenario = {"scenario": "split_digits", "device": "cpu"}
    for name in ("vit_micro", "timm:test_vit"):
        before = resolve({}, {**scenario, "model": name})
        assert "prompts" not in before.to_dict()["model"]
        assert resolve({}, {**scenario, "model": name}, ["model.prompts=0"]).run_id() == before.run_id()
        prompted = resolve({}, {**scenario, "model": name}, ["model.prompts=2"])
        assert prompted.to_dict()["model"]["prompts"] == 2 and prompted.run_id() != before.run_id()
    with pytest.raises(UserError, match="model.prompts"):
        resolve({}, {**scenario, "model": "vit_micro"}, ["model.prompts=-1"])


def test_prompts_join_the_tokens_after_cls_without_position_embedding():
    model = micro({"prompts": 3})
    vit = find_vit(model)
    assert isinstance(model, SingleHeadNet) and model.backbone is vit and isinstance(vit, PromptedVisionTransformer)
    assert vit.prompts.shape == (1, 3, 16) and vit.n_prompts == 3
    bound = math.sqrt(6 / (3 * 7 * 7 + 16))
    assert vit.prompts.abs().max() <= bound and vit.prompts.std() > bound / 4
    x = torch.rand(4, 1, 28, 28)
    out, tokens = tokens_seen_by_first_block(model, x)
    assert out.shape == (4, 10) and tokens.shape == (4, 1 + 3 + 16, 16)
    # [cls + e_0, p_1..p_3, patches + e_i]: the prompts enter as they are
    assert torch.equal(tokens[:, 1:4], vit.prompts.expand(4, -1, -1))
    assert torch.equal(tokens[:, 0], (vit.cls_token + vit.pos_embed[:, :1]).expand(4, -1, -1)[:, 0])
    patches = vit.patch_embed(x) + vit.pos_embed[:, 1:]
    torch.testing.assert_close(tokens[:, 4:], patches)
    # the feature is still the [CLS] token after the final LayerNorm
    torch.testing.assert_close(model.backbone(x), vit.forward_features(x)[:, 0])
    # every other tensor is that of the prompt-free model of the same seed
    plain = micro()
    assert {k: v for k, v in vit.state_dict().items() if k != "prompts"}.keys() == plain.backbone.state_dict().keys()
    assert all(torch.equal(v, plain.backbone.state_dict()[k]) for k, v in vit.state_dict().items() if k != "prompts")


def test_gradient_reaches_the_prompts_and_they_change_the_output():
    model = micro({"prompts": 2})
    names = dict(model.named_parameters())
    assert names["backbone.prompts"].shape == (1, 2, 16)
    x = torch.rand(2, 1, 28, 28)
    model(x).square().sum().backward()
    prompts = model.backbone.prompts
    assert prompts.grad is not None and prompts.grad.abs().sum() > 0
    before = model(x).detach()
    with torch.no_grad():
        prompts.add_(torch.randn_like(prompts))  # (a constant shift would vanish in the LayerNorm)
    assert not torch.allclose(model(x), before)


def test_prompt_free_weights_load_into_a_prompted_model_and_bad_prompts_are_refused(tmp_path):
    source = micro(seed=1)
    path = save_backbone(source, tmp_path / "plain.safetensors")
    fresh = micro({"prompts": 3}, seed=2)
    kept = fresh.backbone.prompts.detach().clone()
    loaded = micro({"prompts": 3, "weights": path}, seed=2)
    vit = find_vit(loaded)
    assert torch.equal(vit.prompts, kept)
    assert all(torch.equal(v, source.backbone.state_dict()[k]) for k, v in vit.state_dict().items() if k != "prompts")
    # a file that holds prompts of the right shape loads them
    prompts = torch.randn(1, 3, 16)
    with_prompts = save_backbone(source, tmp_path / "prompted.safetensors", prompts=prompts)
    assert torch.equal(find_vit(micro({"prompts": 3, "weights": with_prompts})).prompts, prompts)
    # ... of a wrong shape, or into a model without prompts: refused, with the fix from the card
    (tmp_path / "five").mkdir()
    five = save_backbone(source, tmp_path / "five" / "weights.safetensors", prompts=torch.randn(1, 5, 16))
    with pytest.raises(UserError, match=r"'prompts' has shape \(1, 5, 16\) but the model needs \(1, 3, 16\)"):
        micro({"prompts": 3, "weights": five})
    (tmp_path / "five" / "card.json").write_text(json.dumps({"model": {"name": "vit_micro", **TINY, "prompts": 5}}))
    with pytest.raises(UserError, match=r"rebuild the model with --set model.prompts=5"):
        micro({"prompts": 3, "weights": five})
    with pytest.raises(UserError, match="hold 'prompts', which the model does not have.*model.prompts=5"):
        micro({"weights": five})
    # everything else is still strict
    missing = {k: v.contiguous() for k, v in source.backbone.state_dict().items() if k != "norm.weight"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(UserError, match="lack the backbone tensor 'norm.weight'"):
        micro({"prompts": 3, "weights": str(tmp_path / "missing.safetensors")})


def test_timm_test_vit_with_prompts_runs_on_digits_like_inputs(tmp_path):
    digits = pool_scenario((1, 8, 8))
    torch.manual_seed(0)
    plain = build("timm", TIMM, digits)
    torch.manual_seed(0)
    model = build("timm", {**TIMM, "prompts": 2}, digits)
    assert isinstance(model.backbone, ResizedInput)
    vit = find_vit(model)
    assert isinstance(vit, PromptedVisionTransformer) and "backbone.vit.prompts" in dict(model.named_parameters())
    x = torch.rand(3, 1, 8, 8)
    out, tokens = tokens_seen_by_first_block(model, x)
    assert out.shape == (3, 10) and tokens.shape[1] == vit.num_prefix_tokens + 2 + 4
    assert not torch.allclose(out, plain(x))
    # prompt-free weights (a timm checkpoint, say) keep the prompts fresh
    path = save_backbone(plain, tmp_path / "plain.safetensors")
    loaded = find_vit(build("timm", {**TIMM, "prompts": 2, "weights": path}, digits))
    assert torch.equal(loaded.blocks[0].attn.qkv.weight, find_vit(plain).blocks[0].attn.qkv.weight)


def test_add_prompts_turns_a_built_vit_into_a_prompted_one_and_refuses_subclasses():
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=32)
    x = torch.rand(2, 3, 32, 32)
    assert add_prompts(vit, 0) is vit and type(vit) is VisionTransformer
    weight = vit.blocks[0].attn.qkv.weight.detach().clone()
    prompted = add_prompts(vit, 4)
    assert prompted is vit and isinstance(vit, PromptedVisionTransformer)
    assert torch.equal(vit.blocks[0].attn.qkv.weight, weight)
    assert vit.forward_features(x).shape[1] == vit.num_prefix_tokens + 4 + 4 and vit(x).shape == (2, vit.num_features)
    # avg pooling leaves the prompts out
    tokens = vit.forward_features(x)
    torch.testing.assert_close(vit.pool(tokens, "avg"), tokens[:, vit.num_prefix_tokens + 4 :].mean(dim=1))
    distilled = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=0, depth=1)
    with pytest.raises(
        UserError, match="plain timm VisionTransformer, but the backbone is a VisionTransformerDistilled"
    ):
        add_prompts(distilled, 1)
