"""Baselines on pre-trained backbones: linear probe, nearest class mean (SimpleCIL), online ER, L2P."""

import json
import math

import pytest
import torch
from avalanche.benchmarks.scenarios.online import split_online_stream
from avalanche.core import SupervisedPlugin
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import strategies.l2p  # noqa: F401  (registers l2p until strategies/__init__ imports it)
from cl_bench import checkpoint, runner
from cl_bench.config import ComponentConfig, resolve
from cl_bench.errors import UserError
from cl_bench.models.heads import MASKED_LOGIT, SingleHeadNet
from cl_bench.registry import MODELS, SCENARIOS, STRATEGIES, Entry
from cl_bench.tensor_data import gather
from cl_bench.templates import StrategyContext
from strategies.pretrained_baselines import ClassMeans, ReservoirMemory

TINY = ["train.epochs=1", "model.widths=[32]"]
SMALL_PROMPTS = ["strategy.pool_size=4", "strategy.prompt_length=2", "strategy.top_k=2"]  # 4 prompt tokens, not 25


def _prepare(tmp_path, strategy, sets=(), model=None):
    flags = {"scenario": "split_digits", "strategy": strategy, "device": "cpu"}
    if model is not None:
        flags["model"] = model
    sets = list(sets) + (TINY if model is None else ["train.epochs=1"])
    return runner.prepare(resolve({}, flags, sets), tmp_path, progress=False)


def _build(strategy, model, sets=(), seed=0):
    """The strategy on split_digits around a given model (a backbone the registry does not have)."""
    config = resolve({}, {"scenario": "split_digits", "strategy": strategy, "device": "cpu"}, ["train.epochs=1", *sets])
    scenario = SCENARIOS.get("split_digits").builder(config.components["scenario"], config.seed)
    torch.manual_seed(seed)
    context = StrategyContext(model=model, train=config.train, scenario=scenario, device=torch.device("cpu"))
    return STRATEGIES.get(strategy).builder(config.components["strategy"], context), scenario


def _tiny_vit(seed=0, num_classes=10):
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2, num_classes=0)
    return SingleHeadNet(vit, 16, num_classes)


@pytest.fixture
def tiny_vit_model(monkeypatch):
    """A registered tiny ViT model name and its --set overrides (vit_micro once it exists)."""
    if "vit_micro" in MODELS:
        return "vit_micro", ["model.patch_size=4", "model.embed_dim=16", "model.depth=1", "model.num_heads=2"]
    entry = Entry("test_tiny_vit", "model", lambda config, scenario: _tiny_vit(), ComponentConfig, "tiny ViT")
    monkeypatch.setitem(MODELS._entries, "test_tiny_vit", entry)
    return "test_tiny_vit", []


class Recorder(SupervisedPlugin):
    """Records, per training iteration, the mini-batch size and whatever ``check(strategy)`` returns."""

    def __init__(self, check=None):
        super().__init__()
        self.check = check
        self.sizes, self.checks, self.steps = [], [], 0

    def after_forward(self, strategy, **kwargs):
        self.sizes.append(len(strategy.mb_y))
        if self.check is not None:
            self.checks.append(self.check(strategy))

    def after_update(self, strategy, **kwargs):
        self.steps += 1


def _state(module):
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _unchanged(before, module):
    return all(torch.equal(before[name], value) for name, value in module.state_dict().items())


def _one_line_user_error(flags_sets):
    flags, sets = flags_sets
    with pytest.raises(UserError) as error:
        resolve({}, {"scenario": "split_digits", "device": "cpu", **flags}, sets)
    assert "\n" not in str(error.value)
    return str(error.value)


# ----------------------------------------------------------------------------- linear probe


def test_linear_probe_keeps_the_backbone_bitwise_and_trains_only_the_head():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5))
    model = SingleHeadNet(backbone, 32, 10)
    strategy, scenario = _build("linear_probe", model)
    backbone_before, head_before = _state(model.backbone), _state(model.head)

    def matches_eval_features(s):  # dropout off, BatchNorm on its running statistics
        with torch.no_grad():
            s.model.backbone.eval()
            expected = s.model.head(s.model.backbone(s.mb_x))
            s.model.backbone.train()
        return torch.equal(s.mb_output, expected)

    recorder = Recorder(matches_eval_features)
    strategy.plugins.append(recorder)
    for experience in scenario.benchmark.train_stream[:2]:
        strategy.train(experience, eval_streams=[])
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert _unchanged(backbone_before, model.backbone)  # weights and BatchNorm buffers
    assert not _unchanged(head_before, model.head)
    assert all(recorder.checks) and recorder.steps == len(recorder.sizes) > 0
    optimised = {id(p) for group in strategy.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.head.parameters()}


def test_linear_probe_learns_on_a_task_free_stream():
    model = _tiny_vit()
    strategy, scenario = _build("linear_probe", model, ["train.batch_size=64"])
    backbone_before, head_before = _state(model.backbone), _state(model.head)
    recorder = Recorder()
    strategy.plugins.append(recorder)
    torch.manual_seed(0)
    batches = list(
        split_online_stream(
            scenario.benchmark.train_stream[:2], experience_size=16, shuffle=True, seed=0, access_task_boundaries=False
        )
    )
    for batch in batches:
        strategy.train(batch, eval_streams=[])
    assert recorder.steps == len(batches)  # one update per incoming mini-batch
    assert _unchanged(backbone_before, model.backbone) and not _unchanged(head_before, model.head)


def test_linear_probe_bad_input_is_one_line():
    assert "multi-head" in str(
        pytest.raises(UserError, _prepare, "x", "linear_probe", ["scenario.task_labels=true"]).value
    )
    assert "unknown strategy field" in _one_line_user_error(({"strategy": "linear_probe"}, ["strategy.lr=0.1"]))


# ----------------------------------------------------------------------------- nearest class mean


def _class_means(strategy):
    return next(p for p in strategy.plugins if isinstance(p, ClassMeans))


def test_ncm_prototypes_are_the_exact_class_means_whatever_the_batching(tmp_path):
    big = _prepare(tmp_path, "ncm", ["train.batch_size=100000"])
    small = _prepare(tmp_path, "ncm", ["train.batch_size=7"])
    online = _prepare(tmp_path, "ncm", ["train.batch_size=100000"])
    stream = big.scenario.benchmark.train_stream[:2]
    for experience in stream:
        big.strategy.train(experience, eval_streams=[])
        small.strategy.train(experience, eval_streams=[])
    for batch in split_online_stream(stream, experience_size=16, shuffle=True, seed=0):
        online.strategy.train(batch, eval_streams=[])
    inputs, targets, _ = (torch.cat(parts) for parts in zip(*(gather(e.dataset) for e in stream)))
    with torch.no_grad():
        features = big.strategy.model.backbone(inputs).double()
    oracle = torch.stack([features[targets == c].mean(0) for c in range(4)])
    for prepared in (big, small, online):
        means = _class_means(prepared.strategy)
        assert torch.equal(means.class_counts, torch.bincount(targets, minlength=10))
        # float32 features differ in the last bits with the batch size (BLAS blocking), not the means
        assert torch.allclose(means.prototypes()[:4], oracle, rtol=1e-5, atol=1e-6)
        assert means.prototypes()[4:].abs().sum() == 0


def test_class_means_are_exact_running_means():
    generator = torch.Generator().manual_seed(0)
    features, targets = torch.randn(500, 8, generator=generator), torch.randint(0, 5, (500,), generator=generator)
    whole, chunked = ClassMeans(num_classes=6), ClassMeans(num_classes=6)
    whole.add(features, targets)
    for start in range(0, 500, 7):
        chunked.add(features[start : start + 7], targets[start : start + 7])
    oracle = torch.stack([features[targets == c].double().mean(0) for c in range(5)])
    assert torch.equal(whole.class_counts, chunked.class_counts)
    assert torch.allclose(chunked.prototypes()[:5], oracle, rtol=1e-12, atol=1e-14)
    assert torch.allclose(whole.prototypes()[:5], oracle, rtol=1e-12, atol=1e-14)
    assert whole.class_counts[5] == 0 and whole.logits(features[:3], "cosine")[:, 5].eq(MASKED_LOGIT).all()


def test_ncm_takes_no_gradient_step_keeps_old_prototypes_and_masks_unseen_classes(tmp_path):
    prepared = _prepare(tmp_path, "ncm")
    strategy, stream = prepared.strategy, prepared.scenario.benchmark.train_stream
    model_before = _state(strategy.model)
    strategy.train(stream[0], eval_streams=[])
    first = _class_means(strategy).prototypes().clone()
    strategy.train(stream[1], eval_streams=[])
    assert _unchanged(model_before, strategy.model)
    assert all(p.grad is None for p in strategy.model.parameters())
    assert torch.equal(_class_means(strategy).prototypes()[:2], first[:2])  # old classes untouched
    inputs, targets, task_labels = gather(prepared.scenario.benchmark.test_stream[2].dataset)
    logits = strategy.predict_logits(inputs, task_labels)
    assert torch.all(logits[:, 4:] == MASKED_LOGIT) and torch.all(logits[:, :4] > MASKED_LOGIT)
    assert set(logits.argmax(1).tolist()) <= {0, 1, 2, 3}


def test_ncm_similarity_flag_cosine_vs_euclidean():
    means = ClassMeans(num_classes=3)
    means.add(torch.tensor([[1.0, 0.0], [10.0, 1.0]]), torch.tensor([0, 1]))
    query = torch.tensor([[2.0, 0.3]])
    # direction is closest to class 1's mean, position is closest to class 0's
    assert means.logits(query, "cosine").argmax().item() == 1
    assert means.logits(query, "euclidean").argmax().item() == 0
    expected = -torch.tensor([1.0 + 0.09, 64.0 + 0.49])
    assert torch.allclose(means.logits(query, "euclidean")[0, :2], expected)
    assert means.logits(query, "cosine")[0, 2] == MASKED_LOGIT


def test_ncm_bad_input_is_one_line():
    assert "cosine, euclidean" in _one_line_user_error(({"strategy": "ncm"}, ["strategy.similarity=dot"]))


# ----------------------------------------------------------------------------- online ER


def test_reservoir_holds_a_uniform_sample_of_a_long_stream():
    memory = ReservoirMemory(capacity=1000, seed=0)
    stream_length, batch = 100_000, 100
    for start in range(0, stream_length, batch):
        positions = torch.arange(start, start + batch)
        memory.add(positions.float().unsqueeze(1), positions % 10, torch.zeros(batch, dtype=torch.long))
        assert memory.size == min(start + batch, 1000) and len(memory.inputs) == 1000
        if start + batch == 1000:  # filling phase: the first 1000 samples, in order
            assert torch.equal(memory.inputs[:, 0], torch.arange(1000).float())
    held = memory.inputs[:, 0].long()
    assert len(torch.unique(held)) == 1000  # every sample offered once: no duplicates
    assert torch.equal(memory.targets, held % 10)  # inputs and targets stay paired
    per_tenth = torch.bincount(held // 10_000, minlength=10)  # expected 100 each, sd ~9.5
    assert torch.all((per_tenth - 100).abs() <= 40), per_tenth.tolist()


def test_reservoir_sampling_and_replay_draws_are_seeded():
    def run(seed):
        memory = ReservoirMemory(capacity=10, seed=seed)
        for start in range(0, 200, 20):
            values = torch.arange(start, start + 20)
            memory.add(values.float().unsqueeze(1), values, torch.zeros(20, dtype=torch.long))
        return memory.inputs[:, 0], memory.sample(5, torch.device("cpu"))[1]

    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def _memory(strategy):
    return next(p for p in strategy.plugins if isinstance(p, ReservoirMemory))


def test_online_er_concatenates_a_memory_draw_to_every_update(tmp_path):
    prepared = _prepare(
        tmp_path,
        "online_er",
        ["train.batch_size=16", "strategy.mem_size=20", "strategy.replay_batch_size=8", "strategy.updates_per_batch=2"],
    )
    strategy, experience = prepared.strategy, prepared.scenario.benchmark.train_stream[0]

    def replay_rows_are_in_memory(s):
        memory, rows = _memory(s), s.mb_x[16:].flatten(1)
        if memory.size == 0:
            return len(rows) == 0
        held = memory.inputs[: memory.size].flatten(1)
        return all(bool((held == row).all(1).any()) for row in rows)

    recorder = Recorder(replay_rows_are_in_memory)
    strategy.plugins.append(recorder)
    strategy.train(experience, eval_streams=[])
    n = len(experience.dataset)
    batches = math.ceil(n / 16)
    last = n - 16 * (batches - 1)
    assert recorder.steps == 2 * batches
    assert recorder.sizes == [16, 16] + [24] * (2 * batches - 4) + [last + 8] * 2
    assert all(recorder.checks)
    assert _memory(strategy).seen == n and _memory(strategy).size == 20


def test_online_er_memory_survives_a_checkpoint(tmp_path):
    sets = ["strategy.mem_size=50"]
    first = _prepare(tmp_path, "online_er", sets)
    stream = first.scenario.benchmark.train_stream
    first.strategy.train(stream[0], eval_streams=[])
    checkpoint.save(tmp_path, first.strategy, {"rows": []})
    first.strategy.train(stream[1], eval_streams=[])

    resumed = _prepare(tmp_path, "online_er", sets)
    checkpoint.load(tmp_path, resumed.strategy)
    resumed.strategy.train(stream[1], eval_streams=[])
    a, b = _memory(first.strategy), _memory(resumed.strategy)
    assert a.seen == b.seen and torch.equal(a.rng_state, b.rng_state)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert _unchanged(_state(first.strategy.model), resumed.strategy.model)


def test_online_er_bad_input_is_one_line():
    assert ">= 1" in _one_line_user_error(({"strategy": "online_er"}, ["strategy.mem_size=0"]))


@pytest.mark.parametrize("strategy", ["linear_probe", "ncm", "online_er"])
def test_end_to_end_on_split_digits(strategy, tmp_path):
    config = resolve({}, {"scenario": "split_digits", "strategy": strategy, "device": "cpu"}, TINY)
    run_dir = runner.execute(config, tmp_path, progress=False, log=lambda line: None)
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "complete" and len(record["accuracy_matrix"]) == 5
    if strategy == "ncm":
        assert record["strategy_info"]["ncm_classes_seen"] == 10
        assert record["metrics"]["acc"] > 0.5  # nearest class mean on random features still separates digits
    if strategy == "online_er":
        assert record["strategy_info"]["er_memory"]["size"] == 500


# ----------------------------------------------------------------------------- L2P


def test_l2p_copies_and_freezes_the_backbone_and_trains_prompts_keys_and_head():
    model = _tiny_vit()
    vit = model.backbone
    strategy, scenario = _build("l2p", model)
    prompted = strategy.model
    # the copy: same blocks; the prompt positions carry the [CLS] position embedding
    assert torch.equal(prompted.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    prompt_tokens = 5 * 5
    assert prompted.pos_embed.shape[1] == vit.pos_embed.shape[1] + prompt_tokens
    assert torch.equal(prompted.pos_embed[:, 1 : 1 + prompt_tokens], vit.pos_embed[:, :1].expand(-1, prompt_tokens, -1))
    inputs, targets, task_labels = gather(scenario.benchmark.test_stream[0].dataset)
    with torch.no_grad():
        assert torch.allclose(strategy.original_vit(inputs)["pre_logits"], vit.eval()(inputs), atol=1e-6)
    trainable = {name for name, p in prompted.named_parameters() if p.requires_grad}
    assert trainable == {"prompt.prompt", "prompt.prompt_key", "head.weight", "head.bias"}

    before, query_before = _state(prompted), _state(strategy.original_vit)

    def outside_classes_masked(s):
        outside = [c for c in range(10) if c not in s.experience.classes_in_this_experience]
        return bool(torch.all(s.mb_output[:, outside] == float("-inf"))) and bool(torch.isfinite(s.loss).all())

    recorder = Recorder(outside_classes_masked)
    strategy.plugins.append(recorder)
    strategy.train(scenario.benchmark.train_stream[0], eval_streams=[])
    changed = {name for name, value in prompted.state_dict().items() if not torch.equal(value, before[name])}
    assert changed == trainable
    assert _unchanged(query_before, strategy.original_vit)
    assert recorder.steps > 0 and all(recorder.checks)


def test_l2p_predictions_are_deterministic():
    outputs = []
    for _ in range(2):
        strategy, scenario = _build("l2p", _tiny_vit(), SMALL_PROMPTS, seed=3)
        strategy.train(scenario.benchmark.train_stream[0], eval_streams=[])
        inputs, _, task_labels = gather(scenario.benchmark.test_stream[0].dataset)
        strategy.model.eval()
        with torch.no_grad():
            first, second = strategy.predict_logits(inputs, task_labels), strategy.predict_logits(inputs, task_labels)
        assert torch.equal(first, second) and torch.isfinite(first).all()
        outputs.append(first)
    assert torch.equal(*outputs)


def test_l2p_bad_input_is_one_line():
    assert "pool_size" in _one_line_user_error(({"strategy": "l2p"}, ["strategy.top_k=11"]))
    message = str(pytest.raises(UserError, _build, "l2p", SingleHeadNet(nn.Flatten(), 64, 10)).value)
    assert "VisionTransformer" in message and "\n" not in message
    assert "Adam" in str(pytest.raises(UserError, _build, "l2p", _tiny_vit(), ["train.optimizer=sgd"]).value)
    entry = STRATEGIES.get("l2p")
    assert entry.traits.needs_vit and not entry.traits.attackable and not entry.traits.task_free
    assert "requires_vit" not in entry.meta


def test_l2p_end_to_end_through_the_runner(tiny_vit_model, tmp_path):
    model, sets = tiny_vit_model
    config = resolve(
        {},
        {"scenario": "split_digits", "strategy": "l2p", "model": model, "device": "cpu"},
        ["train.epochs=1", *sets, *SMALL_PROMPTS],
    )
    record = json.loads(
        (runner.execute(config, tmp_path, progress=False, log=lambda line: None) / "record.json").read_text()
    )
    assert record["status"] == "complete"
    assert len(record["accuracy_matrix"]) == 5 and all(len(row) == 5 for row in record["accuracy_matrix"])
