"""The attack contract: what an attack module registers, and how a poisoned experience is built.

An attack module registers ``build(config, scenario) -> Attack`` with
``ATTACKS.register(name, config=...)``. The runner asks the attack which training experience it
poisons (``target_index``), trains the stream up to that experience once, and then trains the
rest twice from the same saved state: once on clean data and once with ``poison`` applied to the
target experience (the paired measurement of the record).

A test-time attack (``AttackTraits(phase="test")``) subclasses :class:`TestTimeAttack` instead: the stream is
trained clean, then the measurement phase hands the attack an :class:`cl_bench.evaluator.EvaluationContext` on
the final model (as it does an evaluator) and the result goes to the record's ``test_time_attack`` block. It
may also follow the stream: :meth:`TestTimeAttack.observe` sees the model after every training experience (a
patch fitted after experience k, measured after every later one). A run with such an attack cannot resume past
the experience it fits at (the attack's state is not checkpointed).

Rules every attack follows:

* ``poison`` sees the current model (``strategy.model``) and only the incoming experience; it
  returns a new experience with the same samples in the same order. Labels stay untouched unless the
  attack declares ``relabels`` (a dirty-label backdoor), and it may change only a fraction of the samples.
* An attack that measures something of its own after every training experience (a backdoor's success rate)
  sets ``measures_rows`` and implements ``row_metrics(strategy)``: the runner calls it after each evaluated row
  of both branches and records the rows (``attack_rows``, ``attack_rows_clean``) and their paired effect.
* It draws its randomness from its own generator (``attack_generator``), so that the victim's
  training RNG stream is the same in the clean and the attacked branch: with a zero budget the
  two branches are bit-identical.
* ``budget()`` returns the validated budget as plain numbers (recorded); ``metrics()`` any
  attack-specific numbers measured while poisoning.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch

from cl_bench.errors import UserError
from cl_bench.tensor_data import TensorBank, gather


class Attack:
    """Base class: poisons nothing. Subclasses set ``poisons_training`` and override ``poison``."""

    poisons_training = False
    relabels = False  # poison may change labels (dirty-label backdoors)
    measures_rows = False  # row_metrics() is recorded after every training experience, in both branches
    progress = False  # the runner sets it: show a progress bar on long work
    # runs the victim's model itself (forward or gradients): a strategy whose model returns no plain logits
    # (StrategyTraits.attackable=False) is refused; an attack that only edits data and predicts through the
    # strategy's own rule (predict_logits) sets it False
    calls_model = True

    def __init__(self, config, scenario, seed: int):
        self.config = config
        self.scenario = scenario
        self.seed = seed

    target_field = "target_experience"  # the config field naming the experience (absent: the last)

    def target_index(self, n_experiences: int) -> int:
        """Which training experience is poisoned (negative values count from the end)."""
        target = getattr(self.config, self.target_field, -1)
        index = target if target >= 0 else n_experiences + target
        if not 0 <= index < n_experiences:
            raise UserError(
                f"attack.{self.target_field}={target} is outside the {n_experiences} experiences "
                f"of this scenario (use 0..{n_experiences - 1}, or -1 for the last)"
            )
        return index

    def poison(self, experience, strategy):
        return experience

    def budget(self) -> dict:
        return {}

    def metrics(self) -> dict:
        return {}

    def check(self, model: Any) -> None:
        """Raise a one-line UserError when this attack cannot run on ``model`` (the run's untrained model); called
        before anything is trained or written."""

    def row_metrics(self, strategy: Any) -> dict[str, float]:
        """What the attack measures on the strategy's current model (with ``measures_rows``)."""
        return {}


class TestTimeAttack(Attack):
    """Base class of test-time attacks (adversarial patches, backdoor triggers): nothing is poisoned; the
    measurement phase calls :meth:`evaluate` on the trained model and records what it returns."""

    observed_s = 0.0  # seconds spent in observe() during the stream (the runner adds them to the attack's time)

    def evaluate(self, context: Any) -> Any:
        """An :class:`cl_bench.evaluator.EvaluationResult` measured on ``context`` (an ``EvaluationContext``)."""
        raise NotImplementedError

    def observe(self, context: Any, experience: int, n_experiences: int) -> None:
        """Called after every training experience of an offline stream with the model of that moment (an attack
        fitted mid-stream and followed through the rest overrides it; the default waits for :meth:`evaluate`)."""

    def target_index(self, n_experiences: int) -> int:
        return n_experiences - 1  # it attacks the model after the last experience


def linf_budget(epsilon: float, scenario) -> dict:
    """The recorded budget of an L-infinity attack on every input of the poisoned experience."""
    return {
        "epsilon": epsilon,
        "norm": "linf",
        "poison_rate": 1.0,
        "input_range": list(scenario.input_range) if scenario.input_range else None,
    }


def attack_generator(seed: int, experience_index: int, device: Optional[torch.device] = None) -> torch.Generator:
    """The attack's own random stream, fixed by the run seed and the poisoned experience."""
    generator = torch.Generator(device=device or "cpu")
    generator.manual_seed(1_000_003 * (seed + 1) + experience_index)
    return generator


def experience_tensors(experience) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, task labels) of a tensor-resident experience, in dataset order."""
    tensors = gather(experience.dataset)
    if tensors is None:
        raise UserError(
            "this attack needs a tensor-resident scenario (continual_swiss_roll, split_fmnist, "
            "permuted_fmnist, split_digits); CIFAR's per-item data path is not supported yet"
        )
    return tensors


def with_inputs(experience, inputs: torch.Tensor, label: str, targets: Optional[torch.Tensor] = None):
    """A copy of ``experience`` whose samples have ``inputs`` (same task labels and order; same targets unless
    ``targets`` are given, for an attack that relabels)."""
    original_inputs, original_targets, task_labels = experience_tensors(experience)
    if inputs.shape != original_inputs.shape:
        raise ValueError(f"poisoned inputs have shape {tuple(inputs.shape)}, expected {tuple(original_inputs.shape)}")
    if targets is not None and targets.shape != original_targets.shape:
        raise ValueError(
            f"poisoned targets have shape {tuple(targets.shape)}, expected {tuple(original_targets.shape)}"
        )
    bank = TensorBank(
        inputs.detach().cpu().contiguous(),
        (original_targets if targets is None else targets).clone(),
        task_labels.clone(),
        name=f"{label}:experience{experience.current_experience}",
    )
    poisoned = copy.copy(experience)
    poisoned._dataset = bank.dataset()
    return poisoned


def clip_to_range(inputs: torch.Tensor, input_range: Optional[tuple[float, float]]) -> torch.Tensor:
    """Inputs clipped to the scenario's valid range (unchanged when the scenario has none)."""
    if input_range is None:
        return inputs
    return inputs.clamp(input_range[0], input_range[1])
