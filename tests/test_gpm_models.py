"""GPM's networks (cl_bench/models/gpm_nets.py): official shapes, bias-free layers, batch-statistic
BatchNorm, hookable flat backbones, the too-small-input error and a CLI run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cl_bench.config import build_config
from cl_bench.errors import UserError
from cl_bench.models.gpm_nets import min_input_size
from cl_bench.models.heads import MultiHeadNet, SingleHeadNet
from conftest import run_cli

from cl_bench.registry import MODELS, SCENARIOS


def fake_scenario(input_shape=(3, 32, 32), task_labels=False, n_tasks=2, num_classes=10) -> SimpleNamespace:
    """The few ScenarioData fields a model builder reads."""
    k = num_classes // n_tasks
    classes = [list(range(i * k, (i + 1) * k)) for i in range(n_tasks)] if task_labels else [list(range(num_classes))]
    return SimpleNamespace(
        input_shape=tuple(input_shape), num_classes=num_classes, task_labels=task_labels, classes_per_experience=classes
    )


def build_model(name: str, scenario, **values) -> nn.Module:
    entry = MODELS.get(name)
    return entry.builder(build_config(entry.config_class, values, "model"), scenario)


def weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def fan_in(layer: nn.Module) -> int:
    return layer.weight[0].numel()  # in_features, or in_channels * kh * kw


def digits(**values):
    entry = SCENARIOS.get("split_digits")
    return entry.builder(build_config(entry.config_class, values, "scenario"), 0)


# ---------------------------------------------------------------------------------------------
# mlp_gpm
# ---------------------------------------------------------------------------------------------


def test_mlp_gpm_is_the_bias_free_100_100_mlp():
    model = build_model("mlp_gpm", fake_scenario((1, 28, 28)))
    assert isinstance(model, SingleHeadNet)
    assert not [name for name, _ in model.named_parameters() if "bias" in name]
    layers = weight_layers(model)
    assert [(layer.in_features, layer.out_features) for layer in layers] == [(784, 100), (100, 100), (100, 10)]
    assert all(layer.bias is None for layer in layers)
    assert sum(p.numel() for p in model.parameters()) == 784 * 100 + 100 * 100 + 100 * 10
    assert [type(m) for m in model.backbone] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert model(torch.rand(4, 1, 28, 28)).shape == (4, 10)


def test_mlp_gpm_widths_and_multi_head():
    scenario = digits(task_labels=True)
    model = build_model("mlp_gpm", scenario, widths=[32])
    assert isinstance(model, MultiHeadNet) and len(model.heads) == 5
    assert all(layer.bias is None for layer in weight_layers(model))
    assert [fan_in(layer) for layer in weight_layers(model)] == [64] + [32] * 5
    x = torch.rand(6, 1, 8, 8)
    logits = model(x, torch.tensor([0, 0, 1, 1, 4, 4]))
    assert logits.shape == (6, 10)
    assert set(logits[:2].argmax(1).tolist()) <= {0, 1}  # task 0 = classes 0, 1
    assert set(logits[4:].argmax(1).tolist()) <= {8, 9}


# ---------------------------------------------------------------------------------------------
# alexnet_gpm
# ---------------------------------------------------------------------------------------------

CIFAR_PARAMS = (
    3 * 64 * 16
    + 64 * 128 * 9
    + 128 * 256 * 4  # bias-free convs
    + 1024 * 2048
    + 2048 * 2048  # bias-free fc layers
    + 2 * (64 + 128 + 256 + 2048 + 2048)
)  # BatchNorm weight and bias


def test_alexnet_gpm_official_shapes_on_cifar():
    model = build_model("alexnet_gpm", fake_scenario((3, 32, 32)))
    convs = [m for m in model.backbone if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [fan_in(c) for c in convs] == [48, 576, 512]  # GPM's representation sizes (spec section 4)
    assert [c.kernel_size for c in convs] == [(4, 4), (3, 3), (2, 2)]
    assert all(c.padding == (0, 0) and c.stride == (1, 1) for c in convs)
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(1024, 2048), (2048, 2048), (2048, 10)]
    assert all(layer.bias is None for layer in weight_layers(model))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 5 and all(not n.track_running_stats and n.running_mean is None for n in norms)
    assert sum(p.numel() for p in model.parameters()) == CIFAR_PARAMS + 2048 * 10
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 10)


def test_alexnet_gpm_backbone_order_is_flat_and_hookable():
    model = build_model("alexnet_gpm", fake_scenario((3, 32, 32)))
    kinds = [type(m).__name__ for m in model.backbone]
    block = ["BatchNorm2d", "ReLU", "Dropout", "MaxPool2d"]
    fc = ["BatchNorm1d", "ReLU", "Dropout"]
    assert kinds == (["Conv2d", *block] * 3 + ["Flatten"] + ["Linear", *fc] * 2)
    assert [m.p for m in model.backbone if isinstance(m, nn.Dropout)] == [0.2, 0.2, 0.5, 0.5, 0.5]
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    # forward hooks on every weight layer see that layer's input (what GPM and k-WTA code rely on)
    seen = []
    for layer in weight_layers(model):
        layer.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape)))
    model(torch.rand(2, 3, 32, 32))
    assert seen == [(2, 3, 32, 32), (2, 64, 14, 14), (2, 128, 6, 6), (2, 1024), (2, 2048), (2, 2048)]


def test_alexnet_gpm_eval_is_deterministic_and_uses_batch_statistics():
    torch.manual_seed(0)
    model = build_model("alexnet_gpm", fake_scenario((3, 32, 32)), hidden=256)  # narrower: faster, same mechanism
    x = torch.rand(8, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    # no running statistics: a sample's output depends on the batch it is in, even in eval mode
    assert not torch.allclose(model(x)[:4], model(x[:4]))
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout active


def test_alexnet_gpm_on_fashion_mnist_shape_and_custom_config():
    model = build_model("alexnet_gpm", fake_scenario((1, 28, 28)))
    assert [fan_in(layer) for layer in weight_layers(model)] == [16, 576, 512, 1024, 2048, 2048]
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    small = build_model(
        "alexnet_gpm",
        fake_scenario((1, 28, 28)),
        channels=[8, 16],
        kernel_sizes=[3, 3],
        conv_dropout=[0.0, 0.1],
        hidden=32,
        fc_dropout=0.0,
    )
    # 28 -conv3-> 26 -pool-> 13 -conv3-> 11 -pool-> 5: 16 * 5 * 5 = 400
    assert [fan_in(layer) for layer in weight_layers(small)] == [9, 72, 400, 32, 32]


def test_alexnet_gpm_two_dimensional_inputs_get_one_channel():
    model = build_model("alexnet_gpm", fake_scenario((28, 28)), hidden=16)
    assert model(torch.rand(2, 28, 28)).shape == (2, 10)


def test_alexnet_gpm_multi_head():
    scenario = fake_scenario((3, 32, 32), task_labels=True, n_tasks=2)
    model = build_model("alexnet_gpm", scenario, hidden=64)
    assert isinstance(model, MultiHeadNet) and len(model.heads) == 2
    assert all(head.bias is None and head.in_features == 64 for head in model.heads)
    logits = model(torch.rand(4, 3, 32, 32), torch.tensor([0, 0, 1, 1]))
    assert set(logits[:2].argmax(1).tolist()) <= set(range(5))
    assert set(logits[2:].argmax(1).tolist()) <= set(range(5, 10))


def test_alexnet_gpm_minimum_input_size():
    assert min_input_size([4, 3, 2]) == 19
    build_model("alexnet_gpm", fake_scenario((3, 19, 19)), hidden=8)(torch.rand(2, 3, 19, 19))
    with pytest.raises(UserError) as error:
        build_model("alexnet_gpm", fake_scenario((3, 18, 32)), hidden=8)
    message = str(error.value)
    assert "too small" in message and "18x32" in message and "19x19" in message and "\n" not in message


@pytest.mark.parametrize(
    "make_scenario, fragment",
    [
        (digits, "input 8x8 is too small"),
        (lambda: fake_scenario((3,)), "needs image inputs"),
    ],
)
def test_alexnet_gpm_refuses_unsuitable_inputs(make_scenario, fragment):
    with pytest.raises(UserError, match=fragment):
        build_model("alexnet_gpm", make_scenario())


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"kernel_sizes": [4, 3]}, "one entry per conv block"),
        ({"conv_dropout": [0.2, 0.2, 1.0]}, "model.conv_dropout must be < 1.0"),
        ({"fc_dropout": -0.1}, "model.fc_dropout must be >= 0.0"),
        ({"channels": [], "kernel_sizes": [], "conv_dropout": []}, "at least one conv block"),
        ({"hidden": 0}, "model.hidden must be >= 1"),
    ],
)
def test_alexnet_gpm_config_validation(values, fragment):
    with pytest.raises(UserError, match=fragment):
        build_config(MODELS.get("alexnet_gpm").config_class, values, "model")


# ---------------------------------------------------------------------------------------------
# through the CLI
# ---------------------------------------------------------------------------------------------


def test_cli_run_with_mlp_gpm(tmp_path, capsys):
    code, out, err = run_cli(
        [
            "run",
            "--scenario",
            "split_digits",
            "--model",
            "mlp_gpm",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    record = json.loads((tmp_path / out.strip().splitlines()[-1].split("/")[-1] / "record.json").read_text())
    assert record["model"] == "mlp_gpm"
    # split_digits' model_defaults belong to its default model (mlp), not to mlp_gpm
    assert record["config"]["model"] == {"name": "mlp_gpm", "widths": [100, 100]}


def test_cli_alexnet_gpm_on_digits_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(
        [
            "run",
            "--scenario",
            "split_digits",
            "--model",
            "alexnet_gpm",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "runs"),
        ],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: alexnet_gpm: input 8x8 is too small")
    assert "19x19" in err
    assert not (tmp_path / "runs").exists()
