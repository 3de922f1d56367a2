"""A-ViT token halting (cl_bench.models.avit): the spec's oracles, FLOPs against torch's counter, weights, pretrain."""

import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer
from torch.utils.flop_counter import FlopCounterMode

from conftest import run_cli

from cl_bench import pretrain
from cl_bench.backbone import build_model
from cl_bench.models.avit import (
    HALTED_KEY_BIAS,
    AdaptiveVisionTransformer,
    HaltingConfig,
    find_adaptive,
    flops_per_image,
    full_flops,
    make_adaptive,
)
from cl_bench.models.heads import SingleHeadNet
from cl_bench.templates import AuxiliaryLossPlugin

LAYERS = 6


def toy(gate_center: float = 0.0, seed: int = 0, **halting) -> AdaptiveVisionTransformer:
    """The spec's toy: 32x32 RGB, 8x8 patches (16 + 1 tokens), width 64, 6 blocks, 4 heads, random init."""
    torch.manual_seed(seed)
    vit = VisionTransformer(
        img_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=LAYERS, num_heads=4, num_classes=0
    ).eval()
    return make_adaptive(vit, HaltingConfig(gate_center=gate_center, **halting))


def images(count: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_gate_never_fires_every_token_runs_every_layer_and_logits_equal_the_plain_vit():
    vit = toy(gate_center=1e4)
    x = images()
    adaptive = vit(x)
    stats = vit.compute
    assert torch.all(stats.depth == LAYERS) and torch.all(stats.active == 17)
    assert torch.allclose(stats.ponder, torch.full_like(stats.ponder, LAYERS + 1.0))
    vit.adaptive = False
    plain = vit(x)
    assert vit.compute is None
    assert torch.allclose(adaptive, plain, atol=1e-5)


def test_gate_firing_at_layer_one_halts_every_token_with_zero_ponder_gradient():
    vit = toy(gate_center=-1e4)
    x = images().requires_grad_(True)
    vit(x)
    stats = vit.compute
    assert torch.all(stats.depth == 1) and torch.all(stats.ponder == 2.0)
    assert stats.active[:, 1:].sum() == 0
    (gradient,) = torch.autograd.grad(vit.ponder_loss(stats), x, allow_unused=True)
    assert gradient is None or float(gradient.abs().max()) == 0.0


def test_halting_weights_sum_to_one_depth_in_range_and_active_tokens_never_grow():
    vit = toy(gate_center=-2.0, gate_scale=10.0)
    vit(images(16))
    stats = vit.compute
    assert torch.allclose(stats.weight_sum, torch.ones_like(stats.weight_sum), atol=1e-6)
    assert stats.depth.min() >= 1 and stats.depth.max() <= LAYERS
    assert torch.all(stats.active[:, 1:] <= stats.active[:, :-1])
    assert 1.0 < float(stats.depth.mean()) < LAYERS  # a mixed halting pattern, not a degenerate one
    # rho = N + r: the remainder is what the halting weights before the halting layer leave
    assert torch.all(stats.ponder >= stats.depth) and torch.all(stats.ponder <= stats.depth + 1)


def _halting_pattern(count: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(count, 17, 64, generator=torch.Generator().manual_seed(3))
    active = (torch.rand(count, 17, generator=torch.Generator().manual_seed(4)) > 0.4).float()
    active[:, 0] = 1.0
    return x, active


def test_halted_tokens_receive_no_attention():
    block = toy().blocks[0]
    x, active = _halting_pattern()
    bias = (1.0 - active)[:, None, None, :] * HALTED_KEY_BIAS
    perturbed = x + 5.0 * torch.randn_like(x) * (1.0 - active).unsqueeze(-1)
    with torch.no_grad():
        before, after = block(x, attn_mask=bias), block(perturbed, attn_mask=bias)
    keep = active.bool()
    assert torch.equal(before[keep], after[keep])


def test_key_masking_equals_removing_the_halted_tokens():
    block = toy().blocks[0]
    x, active = _halting_pattern()
    bias = (1.0 - active)[:, None, None, :] * HALTED_KEY_BIAS
    with torch.no_grad():
        masked = block(x * active.unsqueeze(-1), attn_mask=bias)
        for image in range(len(x)):
            keep = active[image].bool()
            removed = block(x[image : image + 1, keep])
            assert torch.allclose(masked[image, keep], removed[0], atol=1e-6)


def test_counted_flops_equal_torch_flop_counter_on_the_plain_path():
    vit = toy()
    vit.adaptive = False
    for block in vit.blocks:  # torch counts the explicit q k^T and attention @ V products (not CPU fused SDPA)
        block.attn.fused_attn = False
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        vit.forward_head(vit.forward_features(images(2)), pre_logits=True)
    assert counter.get_total_flops() == 2 * full_flops(vit)
    every_token = torch.full((2, LAYERS), 17.0)
    assert torch.equal(flops_per_image(vit, every_token), torch.full((2,), full_flops(vit), dtype=torch.float64))
    fewer = every_token.clone()
    fewer[:, 3:] = 5.0
    assert torch.all(flops_per_image(vit, fewer) < full_flops(vit))


def test_depth_prior_puts_0_98_on_the_layers_before_its_mean_and_the_losses_have_gradients():
    vit = toy(gate_center=-2.0)
    target = vit.depth_target()
    mean = round(2 * LAYERS / 3)
    assert float(target[:mean].sum()) == pytest.approx(0.98)
    assert int(target.argmax()) == mean
    x = images()
    vit(x)
    loss = vit.auxiliary_loss()
    gradients = torch.autograd.grad(loss, [p for p in vit.parameters() if p.requires_grad], allow_unused=True)
    assert any(g is not None and float(g.abs().max()) > 0 for g in gradients)


def test_auxiliary_loss_plugin_adds_the_model_term_to_the_strategy_loss():
    vit = toy(gate_center=-2.0)
    model = SingleHeadNet(vit, 64, 10)
    model(images(4))

    class Strategy:
        pass

    strategy = Strategy()
    strategy.model, strategy.loss = model, torch.tensor(1.0)
    AuxiliaryLossPlugin().before_backward(strategy)
    assert float(strategy.loss.detach()) == pytest.approx(1.0 + float(vit.auxiliary_loss().detach()))


def test_a_plain_vit_weight_file_loads_into_avit_micro_and_back(tmp_path):
    _, _, plain = build_model("vit_micro", {}, (1, 28, 28))
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in plain.backbone.state_dict().items()}, str(path))
    _, _, adaptive = build_model("avit_micro", {"weights": str(path)}, (1, 28, 28))
    assert isinstance(adaptive.backbone, AdaptiveVisionTransformer)
    for name, tensor in plain.backbone.state_dict().items():
        assert torch.equal(adaptive.backbone.state_dict()[name], tensor)


@pytest.mark.parametrize("arch", ["deit_tiny_patch16_224"])
def test_avit_timm_loads_a_deit_checkpoint_written_here_with_the_official_gate(tmp_path, arch):
    import timm

    torch.manual_seed(0)
    deit = timm.create_model(arch, pretrained=False, num_classes=0)
    path = tmp_path / "deit.safetensors"
    save_file({k: v.contiguous() for k, v in deit.state_dict().items()}, str(path))
    _, config, model = build_model("avit_timm", {"arch": arch, "weights": str(path)}, (3, 224, 224))
    vit = find_adaptive(model)
    assert config.gate_center == 30.0 and vit.gate_scale == 10.0
    assert torch.equal(vit.blocks[5].mlp.fc1.weight, deit.blocks[5].mlp.fc1.weight)
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, 224, 224))
    assert vit.compute is not None and vit.compute.active.shape == (1, 12)


def test_avit_refuses_what_it_cannot_halt():
    with pytest.raises(Exception, match="prompts"):
        build_model("avit_micro", {"prompts": 2}, (1, 28, 28))
    with pytest.raises(Exception, match="must be below"):
        build_model("avit_micro", {"prior_mean": 9}, (1, 28, 28))


@pytest.fixture
def fake_pool(tmp_path, monkeypatch, fake_fmnist):
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CL_BENCH_CACHE", str(tmp_path / "cache"))
    return fake_fmnist(tmp_path / "data" / "fashion-mnist", train_per_class=30, test_per_class=5)


TINY = ["model.embed_dim=16", "model.depth=2", "model.num_heads=2"]


def test_pretrain_method_avit_records_compute_in_the_card(fake_pool):
    from cl_bench.models.vit import read_card

    path = pretrain.pretrain(
        "avit_micro",
        TINY,
        {"method": "avit", "epochs": 1, "batch_size": 16, "device": "cpu"},
        progress=False,
        log=lambda line: None,
    )
    quality = read_card(path)["quality"]
    assert 1.0 <= quality["test_mean_token_depth"] <= 2.0
    assert 0 < quality["test_mflops_per_image"] <= quality["full_mflops_per_image"]
    assert path.parent.name == "avit_micro-fmnist-avit-s0"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--model", "avit_micro", "--method", "supervised"], "pre-train with --method avit only"),
        (["--model", "vit_micro", "--method", "avit"], "--method avit trains an adaptive-compute model"),
    ],
)
def test_pretrain_avit_bad_input_is_one_line_exit_2(fake_pool, tmp_path, capsys, argv, fragment):
    sets = [part for setting in TINY for part in ("--set", setting)]
    code, _, err = run_cli(["pretrain", *argv, "--epochs", "1", "--device", "cpu", "--no-progress", *sets], capsys)
    assert code == 2 and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "cache").exists()


def test_a_saturated_gate_keeps_the_prior_term_finite():
    vit = toy(gate_center=1e4)  # every raw halting score underflows to 0
    vit(images(2))
    assert float(vit.compute.halting_mean.detach().sum()) == 0.0
    assert torch.isfinite(vit.distr_loss(vit.compute)) and torch.isfinite(vit.auxiliary_loss())
