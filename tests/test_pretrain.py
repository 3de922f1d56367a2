"""`cl-bench pretrain`: determinism, the pool never in a held-out stream, the MAE, the cache, the CLI end to end."""

import json

import numpy as np
import pytest
import torch

from conftest import run_cli

from cl_bench import pretrain
from cl_bench.backbone import pool_scenario
from cl_bench.config import resolve
from cl_bench.errors import UserError
from cl_bench.models.mae import MaskedAutoencoder, load_mae
from cl_bench.models.vit import file_sha256, find_vit, read_card
from cl_bench.pretrain_pool import POOL_NAME, pool_indices
from cl_bench.registry import MODELS, SCENARIOS

TINY_MODEL = ["model.embed_dim=16", "model.depth=1", "model.num_heads=2"]
TINY_RUN = {
    "epochs": 1,
    "batch_size": 16,
    "decoder_embed_dim": 8,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "device": "cpu",
}
TINY_FLAGS = [
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--decoder-dim",
    "8",
    "--decoder-depth",
    "1",
    "--decoder-heads",
    "2",
    "--device",
    "cpu",
    "--no-progress",
] + [part for s in TINY_MODEL for part in ("--set", s)]


@pytest.fixture
def fake_data(tmp_path, monkeypatch, fake_fmnist):
    """A tiny Fashion-MNIST in $CL_BENCH_DATA and an empty $CL_BENCH_CACHE, both under tmp_path."""
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CL_BENCH_CACHE", str(tmp_path / "cache"))
    return fake_fmnist(tmp_path / "data" / "fashion-mnist", train_per_class=30, test_per_class=5)


def run_pretrain(method, name, seed=0, force=False):
    return pretrain.pretrain(
        "vit_micro",
        TINY_MODEL,
        {**TINY_RUN, "method": method, "seed": seed},
        name=name,
        force=force,
        progress=False,
        log=lambda line: None,
    )


@pytest.mark.parametrize("method", ["supervised", "mae"])
def test_pretraining_is_deterministic_for_a_seed(method, fake_data):
    first = run_pretrain(method, "a")
    again = run_pretrain(method, "b")
    other_seed = run_pretrain(method, "c", seed=1)
    assert file_sha256(first) == file_sha256(again) != file_sha256(other_seed)
    card = read_card(first)
    assert card["sha256"] == file_sha256(first) and card["seed"] == 0 and card["epochs"] == 1
    assert card["data"]["pool"]["name"] == POOL_NAME and card["data"]["num_images"] == 10 * 5
    assert card["method"]["name"] == method and card["model"]["name"] == "vit_micro"
    assert card["model"]["embed_dim"] == 16 and np.isfinite(card["final_train_loss"])
    assert {"knn_accuracy", "linear_probe_accuracy"} <= set(card["quality"])
    assert ("test_accuracy" if method == "supervised" else "test_reconstruction_mse") in card["quality"]


def test_the_pool_never_appears_in_a_held_out_stream(fake_data):
    config = resolve({}, {"scenario": "split_fmnist", "device": "cpu"}, ["scenario.holdout_pretrain_pool=true"])
    scenario = SCENARIOS.get("split_fmnist").builder(config.components["scenario"], 0)
    assert scenario.excluded_pools == [POOL_NAME]
    stream = torch.cat(
        [torch.stack([sample[0] for sample in experience.dataset]) for experience in scenario.benchmark.train_stream]
    )
    stream_bytes = {(image * 255).round().to(torch.uint8).numpy().tobytes() for image in stream}
    rows = pool_indices(fake_data["train_labels"])
    pool_bytes = {image.tobytes() for image in fake_data["train_images"][rows]}
    everything = {image.tobytes() for image in fake_data["train_images"]}
    assert len(pool_bytes) == len(rows) == 50 and len(stream_bytes) == len(stream) == 250
    assert not stream_bytes & pool_bytes
    assert stream_bytes | pool_bytes == everything


def test_mae_encoder_is_the_vit_and_the_loss_sees_only_masked_patches():
    torch.manual_seed(0)
    scenario = pool_scenario((1, 28, 28))
    vit = find_vit(
        MODELS.get("vit_micro").builder(
            resolve({}, {"scenario": "split_digits", "model": "vit_micro"}, TINY_MODEL).components["model"], scenario
        )
    )
    mae = MaskedAutoencoder(vit, 8, 1, 2).eval()
    images = torch.rand(3, 1, 28, 28)
    assert torch.equal(mae.unpatchify(mae.patchify(images)), images)
    assert torch.equal(mae.patchify(images)[:, 1, :7], images[:, 0, 0, 7:14])  # patch 1 = row 0, columns 7..13
    # nothing masked: the encoder's [CLS] is the ViT's own feature
    latent, _ = mae.encode(images, torch.zeros(3, 16, dtype=torch.bool))
    torch.testing.assert_close(latent[:, 0], vit(images))
    mask = mae.random_mask(3, 0.75, torch.Generator().manual_seed(0))
    assert mask.sum(1).tolist() == [12, 12, 12]
    prediction = mae.decode(*mae.encode(images, mask))
    assert prediction.shape == (3, 16, 49) and mae.loss(images, prediction, mask) > 0
    exact_where_masked = torch.where(mask.unsqueeze(-1), mae.patchify(images), prediction)
    assert mae.loss(images, exact_where_masked, mask) == 0
    exact_where_visible = torch.where(mask.unsqueeze(-1), prediction, mae.patchify(images))
    assert mae.loss(images, exact_where_visible, mask) == mae.loss(images, prediction, mask)


def test_load_mae_rebuilds_encoder_and_decoder_and_reconstructs(fake_data):
    weights = run_pretrain("mae", "mae_tiny")
    mae = load_mae("mae_tiny")
    assert isinstance(mae, MaskedAutoencoder) and not mae.training and mae.card["name"] == "mae_tiny"
    images = torch.rand(4, 1, 28, 28)
    reconstruction, mask = mae.reconstruct(images, 0.75, generator=torch.Generator().manual_seed(0))
    assert reconstruction.shape == images.shape and mask.sum(1).tolist() == [12] * 4
    visible = ~mask.view(4, 4, 4).repeat_interleave(7, 1).repeat_interleave(7, 2).unsqueeze(1)
    assert torch.equal(reconstruction[visible], images[visible])  # visible patches pasted back
    assert not torch.equal(reconstruction[~visible], images[~visible])
    # the same tensors as a vit_micro built with model.weights=PATH
    config = resolve({}, {"scenario": "split_digits", "model": "vit_micro"}, TINY_MODEL + [f"model.weights={weights}"])
    model = MODELS.get("vit_micro").builder(config.components["model"], pool_scenario((1, 28, 28))).eval()
    assert torch.equal(model.backbone(images), mae.encoder(images))
    assert set(mae.decoder.state_dict()) and all(
        torch.equal(v, mae.state_dict()[f"decoder.{k}"]) for k, v in mae.decoder.state_dict().items()
    )
    with pytest.raises(UserError, match="not an MAE backbone"):
        load_mae(str(run_pretrain("supervised", "sup_tiny")))


def test_an_existing_entry_is_reused_and_other_settings_need_force(fake_data):
    weights = run_pretrain("supervised", "entry")
    stamp = weights.stat().st_mtime_ns
    assert run_pretrain("supervised", "entry") == weights and weights.stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="already exists with other settings"):
        run_pretrain("supervised", "entry", seed=1)
    run_pretrain("supervised", "entry", seed=1, force=True)
    assert read_card(weights)["seed"] == 1
    assert [p.name for p in weights.parents[1].iterdir()] == ["entry"]  # no staging directories left


def test_cli_pretrain_then_run_records_the_card(fake_data, tmp_path, capsys):
    code, out, err = run_cli(["pretrain", "--method", "mae", "--name", "tiny", *TINY_FLAGS], capsys)
    assert code == 0, err
    weights = tmp_path / "cache" / "backbones" / "tiny" / "weights.safetensors"
    assert out.strip().splitlines()[-1] == str(weights) and "test reconstruction mse" in out
    card = json.loads((weights.parent / "card.json").read_text())
    assert card["command"].startswith("cl-bench pretrain --method mae --name tiny")
    assert card["environment"]["timm"] and card["created"] and card["wall_time_s"] > 0

    run = [
        "run",
        "--scenario",
        "split_fmnist",
        "--model",
        "vit_micro",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(tmp_path / "runs"),
        "--set",
        "model.weights=tiny",
        *TINY_FLAGS[-6:],
    ]
    code, _, err = run_cli(run, capsys)
    assert code == 2 and err.count("\n") == 1 and "--set scenario.holdout_pretrain_pool=true" in err
    assert not (tmp_path / "runs").exists()
    code, out, err = run_cli(run + ["--set", "scenario.holdout_pretrain_pool=true"], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "runs" / out.strip().splitlines()[-1].split("/")[-1] / "record.json").read_text())
    assert record["backbone_card"]["sha256"] == card["sha256"] == file_sha256(weights)
    assert record["backbone_card"]["name"] == "tiny" and record["config"]["model"]["weights"] == "tiny"


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--method", "simclr"], "pretrain.method must be one of supervised, mae"),
        (["--epochs", "0"], "pretrain.epochs must be >= 1"),
        (["--data", "cifar10"], "pretrain.data must be one of fmnist"),
        (["--model", "mlp"], "needs a ViT model"),
        (["--model", "cnn", "--method", "mae"], "--method mae needs a ViT model"),
        (["--set", "train.lr=0.1"], "--set takes model.FIELD=VALUE"),
        (["--set", "model.patch_size=5"], "patch size 5 does not divide"),
        (["--name", "../x"], "--name '../x' must be"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(extra, fragment, fake_data, tmp_path, capsys):
    code, out, err = run_cli(["pretrain", *TINY_FLAGS[:-6], *extra], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
    assert not (tmp_path / "cache").exists()
