"""Avalanche's standard baselines, registered under their CLI names.

Each builder wraps the Avalanche 0.6 class or plugin unchanged except for the data path
(:func:`cl_bench.templates.fast`: tensor-bank datasets are batched by slicing). Hyperparameter
defaults follow the papers where they state one value; the others are **suite choices** and
are marked so in their field docs:

* EWC, Kirkpatrick et al. 2017 (PNAS); online EWC, Schwarz et al. 2018 — lambda is a suite
  choice (the paper tunes it per benchmark), decay 1.0 for online EWC (suite choice).
* SI, Zenke et al. 2017 (ICML) — c = 0.1 and xi = 0.1 as used for split MNIST in the paper.
* MAS, Aljundi et al. 2018 (ECCV) — lambda = 1 (paper), alpha = 0.5 (Avalanche's default).
* LwF, Li & Hoiem 2017 (TPAMI) — lambda_o = 1, temperature T = 2 (paper).
* Replay — experience-balanced random memory of 500 samples (suite choice), replayed in every
  mini-batch with as many memory samples as new ones, as Avalanche's ``ReplayPlugin`` does.
* A-GEM, Chaudhry et al. 2019 (ICLR) — 256 samples per experience (paper: 250) and reference
  gradients from 256 memory samples (paper).
* GEM, Lopez-Paz & Ranzato 2017 (NeurIPS) — 256 patterns per experience, margin 0.5 (paper).
* RWalk, Chaudhry et al. 2018 (ECCV) — alpha = 0.9, delta_t = 10 (paper), lambda = 0.1 (suite).
  Avalanche's ``RWalkPlugin`` normalises the path scores by their maximum at the end of each experience;
  an experience with fewer than delta_t iterations updates no score, so that maximum is 0 and every
  penalty 0/0 = NaN (the loss is NaN from the next experience on). The builder refuses such a config.

Deviation from stock Avalanche: ``replay`` uses :class:`SlicingReplayPlugin`, which keeps
Avalanche's storage policy and batch composition (a full batch of new data plus a memory batch,
memory cycled, one epoch = one pass over the new data) but slices tensors instead of going
through ``ReplayDataLoader``. ``joint`` is trained once on the union of the whole stream (it declares
``train_whole_stream``); the runner records its single evaluation in every row of the accuracy matrix.

Task-free streams: every one of these methods consolidates at experience boundaries (a penalty's importances,
a memory's per-experience quota, the union of experiences), and a task-free stream makes every incoming
mini-batch an experience, so only ``naive`` (online fine-tuning) declares ``task_free``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from avalanche.training.plugins import ReplayPlugin, RWalkPlugin
from avalanche.training.supervised import (
    AGEM,
    EWC,
    GEM,
    MAS,
    Cumulative,
    JointTraining,
    LwF,
    Naive,
    SynapticIntelligence,
)

from cl_bench.config import ComponentConfig, param
from cl_bench.errors import UserError
from cl_bench.registry import STRATEGIES
from cl_bench.tensor_data import gather
from cl_bench.templates import SMOKE_DIGITS_MLP, StrategyContext, fast
from cl_bench.traits import StrategyTraits

# consolidates at experience boundaries: not for task-free streams (see the module docstring)
OFFLINE = StrategyTraits(task_free=False, smoke=SMOKE_DIGITS_MLP)
# on the smoke run (lr 0.05, ~10 mini-batches per experience) the default EWC penalty diverges and the runner
# (rightly) stops the run: a smaller lambda
EWC_TRAITS = StrategyTraits(task_free=False, smoke=SMOKE_DIGITS_MLP + ("strategy.ewc_lambda=10",))


@STRATEGIES.register("naive", traits=StrategyTraits(smoke=SMOKE_DIGITS_MLP))
def build_naive(config: ComponentConfig, context: StrategyContext):
    """Fine-tuning on each experience in turn (the lower bound: no protection against forgetting)."""
    return fast(Naive)(**context.template_kwargs())


# the runner calls train() once with the whole stream
@STRATEGIES.register("joint", traits=StrategyTraits(train_whole_stream=True, task_free=False, smoke=SMOKE_DIGITS_MLP))
def build_joint(config: ComponentConfig, context: StrategyContext):
    """Offline training on the union of all experiences (the upper bound, not continual)."""
    return fast(JointTraining)(**context.template_kwargs())


# the template's own `dataset`, the union of the experiences seen so far, is learning state
@STRATEGIES.register(
    "cumulative",
    traits=StrategyTraits(task_free=False, checkpoint_attributes=("dataset",), smoke=SMOKE_DIGITS_MLP),
)
def build_cumulative(config: ComponentConfig, context: StrategyContext):
    """Retrains on the union of all experiences seen so far at each step (incremental upper bound)."""
    return fast(Cumulative)(**context.template_kwargs())


@dataclass
class EWCConfig(ComponentConfig):
    ewc_lambda: float = param(1000.0, "weight of the quadratic penalty (suite choice)", low=0.0)


@STRATEGIES.register("ewc", config=EWCConfig, traits=EWC_TRAITS)
def build_ewc(config: EWCConfig, context: StrategyContext):
    """Elastic Weight Consolidation: Fisher-weighted quadratic penalty, one term per past experience."""
    return fast(EWC)(ewc_lambda=config.ewc_lambda, mode="separate", **context.template_kwargs())


@dataclass
class OnlineEWCConfig(ComponentConfig):
    ewc_lambda: float = param(1000.0, "weight of the quadratic penalty (suite choice)", low=0.0)
    decay_factor: float = param(1.0, "decay of the running Fisher estimate, gamma (suite choice)", low=0.0, high=1.0)


@STRATEGIES.register("online_ewc", config=OnlineEWCConfig, traits=EWC_TRAITS)
def build_online_ewc(config: OnlineEWCConfig, context: StrategyContext):
    """Online EWC: a single running Fisher estimate decayed by gamma at each experience."""
    return fast(EWC)(
        ewc_lambda=config.ewc_lambda,
        mode="online",
        decay_factor=config.decay_factor,
        keep_importance_data=False,
        **context.template_kwargs(),
    )


@dataclass
class SIConfig(ComponentConfig):
    si_lambda: float = param(0.1, "surrogate-loss strength c (paper, split MNIST)", low=0.0)
    eps: float = param(0.1, "damping xi (paper)", low=0.0, low_open=True)


@STRATEGIES.register("si", config=SIConfig, traits=OFFLINE)
def build_si(config: SIConfig, context: StrategyContext):
    """Synaptic Intelligence: path-integral importance of every weight, quadratic penalty."""
    return fast(SynapticIntelligence)(si_lambda=config.si_lambda, eps=config.eps, **context.template_kwargs())


@dataclass
class MASConfig(ComponentConfig):
    lambda_reg: float = param(1.0, "penalty strength lambda (paper)", low=0.0)
    alpha: float = param(
        0.5, "moving-average weight of importances across experiences (Avalanche default)", low=0.0, high=1.0
    )


@STRATEGIES.register("mas", config=MASConfig, traits=OFFLINE)
def build_mas(config: MASConfig, context: StrategyContext):
    """Memory Aware Synapses: importance from the sensitivity of the output norm, quadratic penalty."""
    return fast(MAS)(lambda_reg=config.lambda_reg, alpha=config.alpha, **context.template_kwargs())


@dataclass
class LwFConfig(ComponentConfig):
    alpha: float = param(1.0, "distillation weight lambda_o (paper)", low=0.0)
    temperature: float = param(2.0, "softmax temperature T (paper)", low=0.0, low_open=True)


@STRATEGIES.register("lwf", config=LwFConfig, traits=OFFLINE)
def build_lwf(config: LwFConfig, context: StrategyContext):
    """Learning without Forgetting: distils the previous model's outputs on the new data."""
    return fast(LwF)(alpha=config.alpha, temperature=config.temperature, **context.template_kwargs())


class SlicingReplayPlugin(ReplayPlugin):
    """Avalanche's replay with batches built by slicing tensors (see module docstring)."""

    def before_training_exp(
        self, strategy, num_workers: int = 0, shuffle: bool = True, drop_last: bool = False, **kwargs
    ):
        memory = self.storage_policy.buffer
        if len(memory) == 0:
            return
        new_tensors, memory_tensors = gather(strategy.adapted_dataset), gather(memory)
        if new_tensors is None or memory_tensors is None:
            return super().before_training_exp(strategy, num_workers, shuffle, drop_last, **kwargs)
        strategy.dataloader = ReplaySliceLoader(
            new_tensors,
            memory_tensors,
            self.batch_size or strategy.train_mb_size,
            self.batch_size_mem or strategy.train_mb_size,
            strategy.device,
        )


class ReplaySliceLoader:
    """One epoch = one shuffled pass over the new data; each batch gets a memory batch appended."""

    def __init__(self, new_tensors, memory_tensors, batch_size: int, batch_size_mem: int, device: torch.device):
        self.new_tensors = tuple(t.to(device) for t in new_tensors)
        self.memory_tensors = tuple(t.to(device) for t in memory_tensors)
        self.batch_size = batch_size
        self.batch_size_mem = batch_size_mem

    def __len__(self) -> int:
        return -(-len(self.new_tensors[1]) // self.batch_size)

    def __iter__(self):
        n_new, n_memory = len(self.new_tensors[1]), len(self.memory_tensors[1])
        new_order = torch.randperm(n_new)
        memory_order = torch.cat(
            [torch.randperm(n_memory) for _ in range(-(-len(self) * self.batch_size_mem // n_memory))]
        )
        for step, start in enumerate(range(0, n_new, self.batch_size)):
            new_rows = new_order[start : start + self.batch_size]
            memory_rows = memory_order[step * self.batch_size_mem : (step + 1) * self.batch_size_mem]
            yield [
                torch.cat([new[new_rows], old[memory_rows]]) for new, old in zip(self.new_tensors, self.memory_tensors)
            ]


@dataclass
class ReplayConfig(ComponentConfig):
    mem_size: int = param(500, "total memory size in samples, balanced over experiences (suite choice)", low=1)
    batch_size_mem: int = param(0, "memory samples per mini-batch; 0 = the training batch size", low=0)


@STRATEGIES.register("replay", config=ReplayConfig, traits=OFFLINE)
def build_replay(config: ReplayConfig, context: StrategyContext):
    """Experience replay: a random, experience-balanced memory mixed into every mini-batch."""
    plugin = SlicingReplayPlugin(mem_size=config.mem_size, batch_size_mem=config.batch_size_mem or None)
    return fast(Naive)(**context.template_kwargs([plugin]))


@dataclass
class AGEMConfig(ComponentConfig):
    patterns_per_exp: int = param(256, "memory samples stored per experience (paper: 250)", low=1)
    sample_size: int = param(256, "memory samples used to compute the reference gradient (paper)", low=1)


@STRATEGIES.register("agem", config=AGEMConfig, traits=OFFLINE)
def build_agem(config: AGEMConfig, context: StrategyContext):
    """Averaged GEM: projects the gradient when it conflicts with the average memory gradient."""
    return fast(AGEM)(
        patterns_per_exp=config.patterns_per_exp, sample_size=config.sample_size, **context.template_kwargs()
    )


@dataclass
class GEMConfig(ComponentConfig):
    patterns_per_exp: int = param(256, "memory samples stored per experience", low=1)
    memory_strength: float = param(0.5, "margin gamma added to the QP solution (paper)", low=0.0)


@STRATEGIES.register("gem", config=GEMConfig, traits=OFFLINE)
def build_gem(config: GEMConfig, context: StrategyContext):
    """Gradient Episodic Memory: QP projection so that no past experience's memory loss increases."""
    return fast(GEM)(
        patterns_per_exp=config.patterns_per_exp, memory_strength=config.memory_strength, **context.template_kwargs()
    )


@dataclass
class RWalkConfig(ComponentConfig):
    ewc_lambda: float = param(0.1, "penalty strength lambda (suite choice)", low=0.0)
    ewc_alpha: float = param(0.9, "moving-average factor of the Fisher estimate (paper)", low=0.0, high=1.0)
    delta_t: int = param(10, "iterations between importance-score updates (paper)", low=1)


# the smoke run's ~10 iterations per experience update no path score at delta_t=10 (the builder refuses it)
@STRATEGIES.register(
    "rwalk",
    config=RWalkConfig,
    traits=StrategyTraits(task_free=False, smoke=SMOKE_DIGITS_MLP + ("strategy.delta_t=2",)),
)
def build_rwalk(config: RWalkConfig, context: StrategyContext):
    """Riemannian Walk: online Fisher plus path-integral scores (EWC++ and SI combined)."""
    train = context.train
    iterations = min(
        train.epochs * -(-len(experience.dataset) // train.batch_size)
        for experience in context.scenario.benchmark.train_stream
    )
    if iterations < config.delta_t:
        raise UserError(
            f"rwalk needs at least strategy.delta_t={config.delta_t} iterations per experience, the "
            f"shortest has {iterations} (its path scores would be 0/0 = NaN); lower strategy.delta_t "
            f"or raise train.epochs"
        )
    plugin = RWalkPlugin(ewc_lambda=config.ewc_lambda, ewc_alpha=config.ewc_alpha, delta_t=config.delta_t)
    return fast(Naive)(**context.template_kwargs([plugin]))
