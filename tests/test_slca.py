"""SLCA: the spec oracles (slca.md section 7) on split_digits with a tiny MLP, a tiny timm ViT, and the CLI."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cl_bench import runner
from cl_bench.config import build_config, resolve
from cl_bench.models.heads import MASKED_LOGIT, SingleHeadNet
from cl_bench.registry import SCENARIOS, STRATEGIES
from cl_bench.tensor_data import gather
from cl_bench.templates import StatelessPlugin, StrategyContext, predict_logits
from conftest import run_cli
from strategies.slca import (
    SLCAClassifier,
    SLCAConfig,
    SLCAPlugin,
    class_statistics,
    mean_scale,
    normalized_logits,
    sample_features,
)

TINY = ["train.epochs=1", "model.widths=[32]"]


def _prepared(strategy="slca", sets=()):
    config = resolve({}, {"scenario": "split_digits", "strategy": strategy, "device": "cpu"}, [*TINY, *sets])
    return runner.prepare(config, "unused", progress=False)


def _train(prepared, experiences):
    for index in experiences:
        prepared.strategy.train(prepared.scenario.benchmark.train_stream[index], eval_streams=[])


def _slca(strategy) -> SLCAPlugin:
    return next(p for p in strategy.plugins if isinstance(p, SLCAPlugin))


def _same(first, second) -> bool:
    return len(first) == len(second) and all(torch.equal(a, b) for a, b in zip(first, second))


class Snapshots(StatelessPlugin):
    """Heads and backbone at the start of each experience and at the end of its (single-epoch) stage 1."""

    def __init__(self):
        super().__init__()
        self.taken = {}

    def _take(self, strategy, moment):
        self.taken[(strategy.experience.current_experience, moment)] = {
            "heads": strategy.model.head.head_state(),
            "backbone": [p.detach().clone() for p in strategy.model.backbone.parameters()],
        }

    def before_training_exp(self, strategy, **kwargs):
        self._take(strategy, "start")

    def after_training_epoch(self, strategy, **kwargs):
        self._take(strategy, "stage1_end")


def _with_snapshots(prepared) -> Snapshots:
    snapshots = Snapshots()
    prepared.strategy.plugins.append(snapshots)  # after SLCA's plugin: "start" sees the restored heads
    return snapshots


# ----------------------------------------------------------------------------- stage 1


def test_oracle1_two_lr_groups_with_ratio_one_hundredth_and_a_fresh_optimizer_per_task():
    prepared = _prepared()
    strategy, model = prepared.strategy, prepared.strategy.model
    _train(prepared, [0])
    first = strategy.optimizer
    backbone_group, head_group = first.param_groups
    assert math.isclose(backbone_group["lr"] / head_group["lr"], 0.01) and math.isclose(head_group["lr"], 0.01)
    assert backbone_group["params"] == list(model.backbone.parameters())
    assert head_group["params"] == list(model.head.heads[0].parameters())
    assert (head_group["momentum"], head_group["weight_decay"]) == (0.9, 5e-4)  # the registered official values
    _train(prepared, [1])
    assert strategy.optimizer is not first
    assert strategy.optimizer.param_groups[1]["params"] == list(model.head.heads[1].parameters())


def test_milestones_decay_the_stage1_lr():
    prepared = _prepared(sets=["train.epochs=2", "strategy.milestones=[1]"])
    _train(prepared, [0])
    assert [group["lr"] for group in prepared.strategy.optimizer.param_groups] == pytest.approx([1e-5, 1e-3])


def test_oracle2_ratio_zero_freezes_the_backbone_without_gradients():
    prepared = _prepared(sets=["strategy.lr_ratio=0"])
    model = prepared.strategy.model
    initial = [p.detach().clone() for p in model.backbone.parameters()]
    heads_before = model.head.head_state()
    _train(prepared, [0, 1])  # stage 1 twice and one alignment
    assert _same(initial, [p.detach() for p in model.backbone.parameters()])
    assert all(p.grad is None for p in model.backbone.parameters())
    assert len(prepared.strategy.optimizer.param_groups) == 1
    assert not _same(heads_before, model.head.head_state())


def test_oracle3_and_5_old_heads_frozen_in_stage1_backbone_untouched_by_alignment():
    prepared = _prepared()
    snapshots = _with_snapshots(prepared)
    model = prepared.strategy.model
    _train(prepared, [0, 1, 2])
    for task in (1, 2):
        start, stage1_end = snapshots.taken[(task, "start")], snapshots.taken[(task, "stage1_end")]
        old = 2 * task  # weight and bias of every earlier head
        assert _same(start["heads"][:old], stage1_end["heads"][:old])
        assert not torch.equal(start["heads"][old], stage1_end["heads"][old])  # the current head learns
        assert not _same(start["backbone"], stage1_end["backbone"])  # the slow learner still moves
    # stage 2 of task 2: backbone bitwise as stage 1 left it, every head aligned
    assert _same(snapshots.taken[(2, "stage1_end")]["backbone"], [p.detach() for p in model.backbone.parameters()])
    aligned = model.head.head_state()
    assert all(not torch.equal(a, b) for a, b in zip(snapshots.taken[(2, "stage1_end")]["heads"][:6], aligned[:6]))


def test_oracle4_stage1_gradient_on_other_heads_logits_is_exactly_zero():
    classifier = SLCAClassifier(8, [[0, 1], [2, 3], [4, 5]], 6)
    classifier.started_tasks.fill_(2)
    logits = classifier(torch.randn(5, 8)).detach().requires_grad_(True)
    targets = torch.tensor([2, 3, 3, 0, 2])  # one sample of an old class: ignored, as officially
    loss = classifier.current_task_loss(logits, targets, task=1)
    loss.backward()
    assert torch.count_nonzero(logits.grad[:, [0, 1, 4, 5]]) == 0
    assert torch.count_nonzero(logits.grad[:, [2, 3]]) > 0
    assert torch.count_nonzero(logits.grad[3]) == 0
    expected = F.cross_entropy(logits[[0, 1, 2, 4]][:, [2, 3]], torch.tensor([0, 1, 1, 0]))
    assert torch.allclose(loss, expected)
    assert (logits[:, [4, 5]] == MASKED_LOGIT).all()  # task 2 not started


class LogitGradients(StatelessPlugin):
    def __init__(self):
        super().__init__()
        self.gradients = []

    def after_forward(self, strategy, **kwargs):
        strategy.mb_output.retain_grad()

    def after_backward(self, strategy, **kwargs):
        self.gradients.append(strategy.mb_output.grad.clone())


def test_oracle4_through_the_template():
    prepared = _prepared()
    _train(prepared, [0])
    recorder = LogitGradients()
    prepared.strategy.plugins.append(recorder)
    _train(prepared, [1])
    current = prepared.scenario.classes_per_experience[1]
    others = [c for c in range(10) if c not in current]
    assert recorder.gradients and all(torch.count_nonzero(g[:, others]) == 0 for g in recorder.gradients)
    assert all(torch.count_nonzero(g[:, current]) > 0 for g in recorder.gradients)


# ----------------------------------------------------------------------------- statistics and stage 2


def test_oracle6_evaluation_sees_aligned_heads_then_the_pre_alignment_heads_come_back():
    prepared = _prepared()
    snapshots = _with_snapshots(prepared)
    strategy, model = prepared.strategy, prepared.strategy.model
    _train(prepared, [0, 1])
    aligned, backup = model.head.head_state(), _slca(strategy).pre_alignment_heads
    assert _same(backup, snapshots.taken[(1, "stage1_end")]["heads"])
    assert not _same(aligned, backup)
    # what the runner evaluates right after train(): the aligned heads
    inputs, _, task_labels = gather(prepared.scenario.benchmark.test_stream[1].dataset.eval())
    logits = predict_logits(strategy, inputs, task_labels)
    with torch.no_grad():
        features = model.backbone(inputs)
        for task, classes in enumerate(prepared.scenario.classes_per_experience[:2]):
            assert torch.allclose(logits[:, classes], F.linear(features, aligned[2 * task], aligned[2 * task + 1]))
    _train(prepared, [2])
    assert _same(snapshots.taken[(2, "start")]["heads"], backup)


def test_oracle6_without_restore_the_next_task_starts_from_the_aligned_heads():
    prepared = _prepared(sets=["strategy.restore_after_ca=false"])
    snapshots = _with_snapshots(prepared)
    _train(prepared, [0, 1])
    aligned = prepared.strategy.model.head.head_state()
    _train(prepared, [2])
    assert _same(snapshots.taken[(2, "start")]["heads"], aligned)


def test_oracle7_statistics_positive_definite_with_fewer_samples_than_dims_and_old_ones_kept():
    prepared = _prepared(sets=["model.widths=[256]"])  # about 145 training images per class < 256 dims
    strategy, model = prepared.strategy, prepared.strategy.model
    plugin = _slca(strategy)
    _train(prepared, [0, 1])
    inputs, targets, _ = gather(prepared.scenario.benchmark.train_stream[1].dataset.eval())
    with torch.no_grad():
        features = model.backbone(inputs).double()  # MLP: eval mode = train mode
    for label in prepared.scenario.classes_per_experience[1]:
        rows = features[targets == label]
        assert len(rows) < 256
        assert torch.allclose(plugin.class_means[label], rows.mean(0))
        raw = torch.cov(rows.T)
        assert torch.linalg.matrix_rank(raw) < 256  # singular without the ridge
        assert torch.allclose(plugin.class_covariances[label].double(), raw + 1e-4 * torch.eye(256), atol=1e-6)
    for covariance in plugin.class_covariances.values():
        assert torch.equal(covariance, covariance.T)
        assert torch.linalg.cholesky_ex(covariance.double()).info == 0
    old = {
        label: (plugin.class_means[label].clone(), plugin.class_covariances[label].clone())
        for label in plugin.class_means
    }
    _train(prepared, [2])
    assert sorted(plugin.class_means) == sorted(c for cs in prepared.scenario.classes_per_experience[:3] for c in cs)
    assert all(
        torch.equal(plugin.class_means[c], m) and torch.equal(plugin.class_covariances[c], s)
        for c, (m, s) in old.items()
    )


def test_class_statistics_of_a_tiny_class_are_positive_definite():
    for rows in (torch.randn(5, 16, generator=torch.Generator().manual_seed(0)), torch.ones(1, 16)):
        mean, covariance = class_statistics(rows, 1e-4)
        assert mean.dtype == torch.float64 and covariance.dtype == torch.float32
        assert torch.equal(covariance, covariance.T) and torch.linalg.cholesky_ex(covariance.double()).info == 0


def test_oracle8_mean_scaling_factors():
    for task in range(5):
        assert mean_scale(task, task) == 1.0
        assert mean_scale(0, task) == pytest.approx(0.9 + 0.1 / (task + 1))
    plugin = SLCAPlugin(SLCAConfig(), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], False)
    plugin.current_task = 2
    explicit = plugin.scale_factors(list(range(10)))
    assert explicit[8:] == [1.0, 1.0] and explicit[:4] == pytest.approx([0.9 + 0.1 / 3] * 4) and max(explicit) == 1.0
    plugin.config = SLCAConfig(class_task_rule="official")  # class // current task size (pitfall 6)
    official = plugin.scale_factors(list(range(10)))
    assert official[0] == pytest.approx(0.9 + 0.1 / 3) and official[9] == pytest.approx(0.9 + 0.1 * 5 / 3)
    assert max(official) > 1.0


def test_oracle9_logit_normalisation_is_scale_invariant():
    generator = torch.Generator().manual_seed(0)
    per_head = [torch.randn(7, 3, generator=generator), torch.randn(7, 2, generator=generator)]
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    reference = normalized_logits(per_head, 0.1)
    norms = torch.stack([h.norm(dim=1) for h in per_head], 1).mean(1, keepdim=True)
    assert torch.allclose(reference, torch.cat(per_head, 1) / norms / 0.1, rtol=1e-5)
    for scale in (1e-2, 3.0, 1e3):
        scaled = normalized_logits([scale * h for h in per_head], 0.1)
        assert torch.allclose(scaled, reference, rtol=1e-4)
        assert torch.allclose(F.cross_entropy(scaled, targets), F.cross_entropy(reference, targets), rtol=1e-4)
    assert torch.equal(normalized_logits(per_head, 0.0), torch.cat(per_head, 1))


def test_oracle10_sampled_features_have_the_class_mean_and_covariance():
    generator = torch.Generator().manual_seed(0)
    dim, n = 6, 10_000
    factor = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    covariance = factor @ factor.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)
    mean = torch.randn(dim, generator=generator, dtype=torch.float64) * 3
    scaled_mean = mean * mean_scale(0, 2)
    torch.manual_seed(0)
    samples = sample_features(scaled_mean.float()[None], torch.linalg.cholesky(covariance).float()[None], n)[0]
    standard_error = (covariance.diagonal() / n).sqrt()
    assert ((samples.double().mean(0) - scaled_mean).abs() < 3 * standard_error).all()
    empirical = torch.cov(samples.double().T)
    assert (empirical - covariance).norm() / covariance.norm() < 0.05


class _Unreachable(torch.nn.Module):
    def forward(self, inputs):
        raise AssertionError("classifier alignment ran the backbone")


def test_alignment_reads_only_the_class_statistics_and_no_image_is_stored():
    prepared = _prepared()
    _train(prepared, [0, 1])
    plugin, head = _slca(prepared.strategy), prepared.strategy.model.head
    dim = head.heads[0].in_features
    assert sorted(plugin.class_means) == [0, 1, 2, 3]
    assert all(m.shape == (dim,) for m in plugin.class_means.values())
    assert all(c.shape == (dim, dim) for c in plugin.class_covariances.values())
    # no backbone, no experience: the alignment still runs, on sampled features only
    prepared.strategy.model.backbone, prepared.strategy.experience = _Unreachable(), None
    head.load_head_state(plugin.pre_alignment_heads)
    torch.manual_seed(0)
    plugin.align(head, torch.device("cpu"))
    aligned = head.head_state()
    assert not _same(aligned, plugin.pre_alignment_heads)


def test_oracle11_first_task_has_no_alignment():
    prepared = _prepared()
    snapshots = _with_snapshots(prepared)
    plugin = _slca(prepared.strategy)
    _train(prepared, [0])
    assert plugin.pre_alignment_heads is None and plugin.alignment_log == []
    assert _same(snapshots.taken[(0, "stage1_end")]["heads"], prepared.strategy.model.head.head_state())
    assert sorted(plugin.class_means) == prepared.scenario.classes_per_experience[0]


def test_slow_learner_ablation_keeps_no_statistics_and_never_aligns():
    prepared = _prepared("slca_slow_learner")
    snapshots = _with_snapshots(prepared)
    _train(prepared, [0, 1])
    plugin = _slca(prepared.strategy)
    assert plugin.class_means == {} and plugin.pre_alignment_heads is None
    assert _same(snapshots.taken[(1, "stage1_end")]["heads"], prepared.strategy.model.head.head_state())
    ratio = resolve({}, {"scenario": "split_digits", "strategy": "slca_alignment"}).components["strategy"].lr_ratio
    assert ratio == 1.0


# ----------------------------------------------------------------------------- ViT final LayerNorm


def _vit_context(model):
    from cl_bench.config import TrainConfig

    entry = SCENARIOS.get("split_digits")
    scenario = entry.builder(build_config(entry.config_class, {}, "scenario"), 0)
    train = build_config(TrainConfig, {"epochs": 1, "batch_size": 128, "momentum": 0.9}, "train")
    return StrategyContext(model=model, train=train, scenario=scenario, device=torch.device("cpu"))


@pytest.mark.parametrize("reinit", [True, False])
def test_final_layernorm_of_a_timm_vit_is_reset_once_at_build_time(reinit):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2, num_classes=0)
    with torch.no_grad():
        vit.norm.weight.uniform_(0.5, 2.0)
        vit.norm.bias.uniform_(-1.0, 1.0)
    pretrained = (vit.norm.weight.clone(), vit.norm.bias.clone())
    context = _vit_context(SingleHeadNet(vit, 16, 10))
    strategy = STRATEGIES.get("slca").builder(SLCAConfig(reinit_final_norm=reinit), context)
    if reinit:
        assert torch.equal(vit.norm.weight, torch.ones(16)) and torch.equal(vit.norm.bias, torch.zeros(16))
    else:
        assert torch.equal(vit.norm.weight, pretrained[0]) and torch.equal(vit.norm.bias, pretrained[1])
    assert _slca(strategy).record_info()["slca"]["final_norm_reset"] is reinit
    if reinit:  # the ViT trains through both stages (the LayerNorm at the slow lr)
        for experience in context.scenario.benchmark.train_stream[:2]:
            strategy.train(experience, eval_streams=[])
        assert not torch.equal(vit.norm.weight, torch.ones(16))
        assert len(_slca(strategy).alignment_log) == 1


def test_final_norm_flag_has_no_effect_on_an_mlp():
    prepared = _prepared()
    assert _slca(prepared.strategy).record_info()["slca"]["final_norm_reset"] is False


# ----------------------------------------------------------------------------- runner and CLI


def test_resume_after_an_alignment_gives_the_same_matrix(tmp_path):
    config = resolve({}, {"scenario": "split_digits", "strategy": "slca", "device": "cpu"}, TINY)
    full = runner.execute(config, tmp_path / "full", progress=False, log=lambda line: None)
    runner.execute(config, tmp_path / "split", progress=False, stop_after=2, log=lambda line: None)
    resumed = runner.execute(config, tmp_path / "split", resume=True, progress=False, log=lambda line: None)
    first, second = (json.loads((d / "record.json").read_text()) for d in (full, resumed))
    assert first["accuracy_matrix"] == second["accuracy_matrix"]
    assert first["strategy_info"] == second["strategy_info"]


def test_cli_run_writes_a_complete_record_with_the_alignment_info(tmp_path, capsys):
    code, out, err = run_cli(
        [
            "run",
            "--scenario",
            "split_digits",
            "--strategy",
            "slca",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path),
            "--set",
            "train.epochs=1",
            "--set",
            "model.widths=[32]",
        ],
        capsys,
    )
    assert code == 0, err
    record = json.loads((Path(out.strip().splitlines()[-1]) / "record.json").read_text())
    assert record["status"] == "complete" and len(record["accuracy_matrix"]) == 5
    assert record["config"]["train"]["lr"] == 0.01 and record["config"]["train"]["batch_size"] == 128
    info = record["strategy_info"]["slca"]
    assert info["classes_with_statistics"] == 10
    assert [entry["task"] for entry in info["alignment"]] == [1, 2, 3, 4]
    assert all(math.isfinite(entry["ca_loss_last_epoch"]) for entry in info["alignment"])
    # evaluation masks the classes of experiences not started yet: nothing of them is predicted
    assert all(record["accuracy_matrix"][i][j] == 0.0 for i in range(5) for j in range(i + 1, 5))


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--set", "strategy.lr_ratio=-0.5"], "strategy.lr_ratio must be >= 0.0"),
        (["--set", "strategy.milestones=[5, 2]"], "strategy.milestones must be strictly increasing"),
        (["--set", "scenario.task_labels=true"], "slca is class-incremental"),
        (["--set", "train.optimizer=adam"], "slca trains with SGD"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_run_dir(extra, fragment, tmp_path, capsys):
    code, _, err = run_cli(
        [
            "run",
            "--scenario",
            "split_digits",
            "--strategy",
            "slca",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "runs"),
            *extra,
        ],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and fragment in err
    assert not (tmp_path / "runs").exists()


def test_list_verbose_shows_every_variant_and_field(capsys):
    code, out, _ = run_cli(["list", "strategy", "--verbose"], capsys)
    assert code == 0
    for text in (
        "slca ",
        "slca_slow_learner",
        "slca_alignment",
        "lr_ratio",
        "logit_norm_tau",
        "reinit_final_norm",
        "restore_after_ca",
        "class_task_rule",
    ):
        assert text in out
