"""The optional Inception-FID/IS and CLIP score (cl_bench.pretrained_image_metrics): the loading paths on weights
this test writes (torchvision's Inception-v3 layout with 1008 classes, a tiny open_clip config), the metrics'
sanity, and the refusals (hostile pickles, mismatched tensors, a missing extra)."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cl_bench.errors import UserError
from cl_bench.pretrained_image_metrics import (
    PretrainedMetrics,
    load_clip,
    load_inception,
    load_pretrained_metrics,
    read_state_dict,
)

CPU = torch.device("cpu")
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


def images(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 1, 28, 28, generator=generator)


def write_inception_weights(root: Path) -> Path:
    """Random Inception-v3 weights in torch-fidelity's layout (torchvision's network with 1008 classes), three ways:
    ``inception.pth`` (torch.save), ``inception.safetensors`` and ``wrapped.pth`` (a DataParallel checkpoint)."""
    from torchvision.models import Inception3

    torch.manual_seed(0)
    state = Inception3(num_classes=1008, aux_logits=False, init_weights=False).state_dict()
    # torch's default conv init has a third of He's variance; scaled to He's, the features neither vanish nor blow up
    state = {k: v * 6**0.5 if k.endswith("conv.weight") else v for k, v in state.items()}
    root.mkdir(parents=True, exist_ok=True)
    torch.save(state, root / "inception.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "inception.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, root / "wrapped.pth")
    return root / "inception.pth"


def write_tiny_clip(root: Path) -> tuple[Path, Path]:
    """A tiny open_clip model: (its config JSON, its random weights as safetensors)."""
    import open_clip

    root.mkdir(parents=True, exist_ok=True)
    config = root / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip", pretrained=None, pretrained_image=False, pretrained_text=False)
    weights = root / "tiny-clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return config, weights


@pytest.fixture(scope="module")
def inception_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inception")
    write_inception_weights(root)
    return root


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    write_tiny_clip(root)
    return root


def test_inception_weights_load_from_torch_save_safetensors_and_wrapped_checkpoints_alike(inception_files):
    batch = (images(1, seed=1).expand(-1, 3, -1, -1) * 255).round().to(torch.uint8)
    outputs = []
    for name in ("inception.pth", "inception.safetensors", "wrapped.pth"):
        with torch.no_grad():
            pool, logits = load_inception(str(inception_files / name), CPU)(batch)
        assert pool.shape == (1, 2048) and logits.shape == (1, 1008)
        outputs.append((pool, logits))
    for pool, logits in outputs[1:]:
        assert torch.equal(pool, outputs[0][0]) and torch.equal(logits, outputs[0][1])


def test_fid_of_a_set_with_itself_is_zero_and_of_another_set_is_not(inception_files):
    metrics = PretrainedMetrics(inception=load_inception(str(inception_files / "inception.pth"), CPU))
    assert metrics.names == ("fid_inception", "is_inception", "is_inception_std")
    truth = images(4, seed=2)
    reference = metrics.features(truth)
    scale = float(torch.var(reference["inception_pool"], dim=0).sum())  # type: ignore[call-overload]
    # one image per split: p(y|x) = p(y), so the score is exactly 1 with no spread
    same = metrics.score(truth, reference, splits=4)
    assert abs(same["fid_inception"]) < 1e-4 * scale
    assert same["is_inception"] == pytest.approx(1.0) and same["is_inception_std"] == pytest.approx(0.0)
    other = metrics.score(torch.zeros(4, 1, 28, 28), reference, splits=1)
    assert other["fid_inception"] > 0.1 * scale and 1.0 <= other["is_inception"] <= 1008


def test_clip_score_is_one_for_identical_images_and_less_for_others(clip_files):
    encoder = load_clip(str(clip_files / "tiny-clip.json"), str(clip_files / "tiny-clip.safetensors"), CPU)
    assert encoder.image_size == (32, 32)
    metrics = PretrainedMetrics(clip=encoder)
    assert metrics.names == ("cos_clip",)
    truth = images(4, seed=3)
    reference = metrics.features(truth)
    assert metrics.score(truth, reference, splits=1)["cos_clip"] == pytest.approx(1.0)
    assert metrics.score(1.0 - truth, reference, splits=1)["cos_clip"] < 0.999
    again = load_clip(str(clip_files / "tiny-clip.json"), str(clip_files / "tiny-clip.safetensors"), CPU)
    assert np.array_equal(again.embed(truth), encoder.embed(truth))  # the same weights, the same embeddings


class RunsCode:
    """A pickle that would create a file when unpickled with weights_only=False."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pth"
    torch.save({"weight": torch.zeros(1), "payload": RunsCode(str(marker))}, hostile)
    with pytest.raises(UserError, match="weights_only=True"):
        read_state_dict(str(hostile), "inception_weights")
    assert not marker.exists()
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"weight": [1.0]}))
    with pytest.raises(UserError, match="state dict"):
        read_state_dict(str(tmp_path / "plain.pkl"), "clip_weights")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="safetensors"):
        read_state_dict(str(tmp_path / "broken.safetensors"), "clip_weights")
    with pytest.raises(UserError, match="not a file"):
        read_state_dict(str(tmp_path / "absent.pth"), "inception_weights")


def test_weights_of_another_network_are_refused_with_what_differs(tmp_path, clip_files):
    from torchvision.models import Inception3

    torch.save(Inception3(num_classes=1000, aux_logits=True, init_weights=False).state_dict(), tmp_path / "tv.pth")
    with pytest.raises(UserError, match=r"unexpected.*another shape") as error:
        load_inception(str(tmp_path / "tv.pth"), CPU)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="torch-fidelity's FID Inception-v3"):
        load_inception(str(clip_files / "tiny-clip.safetensors"), CPU)
    with pytest.raises(UserError, match="does not hold the open_clip"):
        load_clip(str(clip_files / "tiny-clip.json"), str(tmp_path / "tv.pth"), CPU)


def test_clip_needs_a_known_architecture_and_its_weights(tmp_path, clip_files):
    with pytest.raises(UserError, match="neither an open_clip architecture"):
        load_clip("no-such-model", str(clip_files / "tiny-clip.safetensors"), CPU)
    with pytest.raises(UserError, match="needs clip_weights"):
        load_clip("ViT-B-32", "", CPU)
    (tmp_path / "bad.json").write_text(json.dumps({"embed_dim": 4}))
    with pytest.raises(UserError, match="embed_dim, vision_cfg, text_cfg"):
        load_clip(str(tmp_path / "bad.json"), str(clip_files / "tiny-clip.safetensors"), CPU)
    with pytest.raises(UserError, match="clip_model is not"):
        load_pretrained_metrics("", "", str(clip_files / "tiny-clip.safetensors"), CPU)
    assert load_pretrained_metrics("", "", "", CPU).names == ()


def test_a_missing_extra_says_how_to_install_it(monkeypatch, inception_files):
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(UserError, match=r"\.\[image-metrics\]"):
        load_inception(str(inception_files / "inception.pth"), CPU)
    with pytest.raises(UserError, match=r"\.\[image-metrics\]"):
        load_clip("ViT-B-32", "weights.pt", CPU)
