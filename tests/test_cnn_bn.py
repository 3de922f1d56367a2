"""The cnn's BatchNorm variant (Fast-NTK's parameter subset) and a cnn backbone pre-trained on the held-out pool."""

import pytest
import torch
from torch import nn

from conftest import run_cli

from cl_bench import pretrain
from cl_bench.backbone import pool_scenario
from cl_bench.config import build_config, config_to_dict, resolve
from cl_bench.errors import UserError
from cl_bench.models.cnn import CNNConfig, build_cnn
from cl_bench.models.vit import file_sha256, read_card, read_weights
from cl_bench.pretrain_pool import POOL_NAME
from cl_bench.registry import SCENARIOS

TINY_CNN = ["model.channels=[4]", "model.hidden=8", "model.batch_norm=true"]
TINY_RUN = {"epochs": 1, "batch_size": 16, "device": "cpu", "method": "supervised"}


@pytest.fixture
def fake_data(tmp_path, monkeypatch, fake_fmnist):
    """A tiny Fashion-MNIST in $CL_BENCH_DATA and an empty $CL_BENCH_CACHE, both under tmp_path."""
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CL_BENCH_CACHE", str(tmp_path / "cache"))
    return fake_fmnist(tmp_path / "data" / "fashion-mnist", train_per_class=30, test_per_class=5)


def cnn_config(**values) -> CNNConfig:
    return build_config(CNNConfig, {"channels": [4], "hidden": 8, **values}, "model")


def split_fmnist(holdout: bool):
    sets = [f"scenario.holdout_pretrain_pool={str(holdout).lower()}"]
    config = resolve({}, {"scenario": "split_fmnist", "device": "cpu"}, sets)
    return SCENARIOS.get("split_fmnist").builder(config.components["scenario"], 0)


def test_without_batch_norm_the_cnn_is_the_original_one():
    """Same keys, same tensors and outputs for a seed as the builder before batch_norm, and the same run id."""
    scenario = pool_scenario((1, 28, 28))
    torch.manual_seed(0)
    model = build_cnn(CNNConfig(), scenario)
    keys = [f"backbone.{index}.{name}" for index in (0, 3, 7) for name in ("weight", "bias")]
    assert list(model.state_dict()) == keys + ["head.weight", "head.bias"]
    torch.manual_seed(0)
    old = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.ReLU(),
    )  # fmt: skip
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in old.state_dict().items())
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(model.backbone(x), old(x))
    assert config_to_dict(CNNConfig()) == {"channels": [32, 64], "hidden": 256}
    assert config_to_dict(cnn_config(batch_norm=True)) == {"channels": [4], "hidden": 8, "batch_norm": True}


def test_batch_norm_follows_every_conv_and_the_hidden_layer():
    model = build_cnn(cnn_config(channels=[4, 6], batch_norm=True), pool_scenario((1, 28, 28)))
    kinds = [type(layer).__name__ for layer in model.backbone]
    assert kinds == [
        "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d",
        "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d",
        "Flatten", "Linear", "BatchNorm1d", "ReLU",
    ]  # fmt: skip
    parameters = dict(model.named_parameters())
    for index, width in ((1, 4), (5, 6), (10, 8)):  # the affine scale and shift Fast-NTK fine-tunes
        assert model.backbone[index].affine
        assert parameters[f"backbone.{index}.weight"].shape == parameters[f"backbone.{index}.bias"].shape == (width,)
    # the shape probe left the running statistics at their initial values
    assert (
        torch.equal(model.backbone[1].running_mean, torch.zeros(4)) and int(model.backbone[1].num_batches_tracked) == 0
    )
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_pretrained_cnn_loads_only_into_a_stream_that_holds_out_the_pool(fake_data):
    run = dict(model_sets=TINY_CNN, values=TINY_RUN, progress=False, log=lambda line: None)
    weights = pretrain.pretrain("cnn", name="cnn_bn", **run)
    assert file_sha256(pretrain.pretrain("cnn", name="again", **run)) == file_sha256(weights)  # deterministic
    card = read_card(weights)
    assert card["model"] == {"name": "cnn", "channels": [4], "hidden": 8, "batch_norm": True}
    assert card["data"]["pool"]["name"] == POOL_NAME and card["method"]["name"] == "supervised"
    assert {"test_accuracy", "knn_accuracy", "linear_probe_accuracy"} <= set(card["quality"])
    stored = read_weights(weights)
    assert {"1.running_mean", "1.weight", "5.weight", "6.running_var", "pretrain_head.weight"} <= set(stored)

    held_out = split_fmnist(holdout=True)
    model = build_cnn(cnn_config(batch_norm=True, weights="cnn_bn"), held_out)
    backbone = model.backbone.state_dict()
    assert set(backbone) == {k for k in stored if not k.startswith("pretrain_head.")}
    assert all(torch.equal(value, stored[key]) for key, value in backbone.items())
    assert model.backbone_card["sha256"] == file_sha256(weights) and model.backbone_card["name"] == "cnn_bn"

    with pytest.raises(UserError, match="holdout_pretrain_pool=true"):
        build_cnn(cnn_config(batch_norm=True, weights="cnn_bn"), split_fmnist(holdout=False))
    with pytest.raises(UserError, match="--set model.batch_norm=true"):
        build_cnn(cnn_config(weights="cnn_bn"), held_out)
    with pytest.raises(UserError, match="--set model.hidden=8"):
        build_cnn(cnn_config(batch_norm=True, hidden=9, weights=str(weights)), held_out)


def test_cli_pretrains_a_cnn_and_refuses_mae_for_it(fake_data, tmp_path, capsys):
    flags = ["--model", "cnn", "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--no-progress"]
    flags += [part for s in TINY_CNN for part in ("--set", s)]
    code, out, err = run_cli(["pretrain", *flags, "--method", "mae"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--method mae needs a ViT model" in err, err
    assert not (tmp_path / "cache").exists()
    code, out, err = run_cli(["pretrain", *flags], capsys)
    assert code == 0, err
    weights = tmp_path / "cache" / "backbones" / "cnn-fmnist-supervised-s0" / "weights.safetensors"
    assert out.strip().splitlines()[-1] == str(weights) and "knn accuracy" in out
    assert "model      cnn (channels [4], hidden 8, batch_norm True)" in out
