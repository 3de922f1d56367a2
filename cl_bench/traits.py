"""What a component declares it needs and offers, typed and checked when it registers.

Each registry holds one traits class; a component passes an instance at registration::

    @STRATEGIES.register("joint", traits=StrategyTraits(train_whole_stream=True, checkpoint_attributes=("dataset",)))

The engine reads these declarations (from the entry, or from the card without importing the component)
instead of probing the built object with ``getattr``. A wrong type, an unknown choice or a malformed smoke
setting fails at import, so a typo never silently turns a trait off.

``smoke`` is every kind's settings for the registry-wide smoke test (``tests/test_registry_smoke.py``): a tuple
of ``key=value`` strings, each either a top-level choice (``scenario=split_digits``, ``model=mlp``,
``strategy=naive``) or a ``--set`` assignment (``train.epochs=1``); the test runs the component with them on
tiny data. ``smoke_skip`` says why a component cannot be smoke-tested on a CPU-only machine without data
("" when it can).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Optional

SMOKE_KEYS = ("scenario", "model", "strategy", "attack")


def _check_strings(value: Any, where: str) -> None:
    if not isinstance(value, tuple) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"{where} must be a tuple of strings, got {value!r}")


@dataclass(frozen=True)
class Traits:
    """Fields every kind shares. Subclasses add theirs; every field is a bool, a str or a tuple of str."""

    smoke: tuple[str, ...] = ()
    smoke_skip: str = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for spec in dataclasses.fields(self):
            value, hint = getattr(self, spec.name), hints[spec.name]
            where = f"{type(self).__name__}.{spec.name}"
            if hint is bool and not isinstance(value, bool):
                raise TypeError(f"{where} must be True or False, got {value!r}")
            if hint is str and not isinstance(value, str):
                raise TypeError(f"{where} must be a string, got {value!r}")
            if hint == Optional[str] and value is not None and not isinstance(value, str):
                raise TypeError(f"{where} must be a string or None, got {value!r}")
            if typing.get_origin(hint) is tuple:
                _check_strings(value, where)
        for setting in self.smoke:
            key = setting.split("=", 1)[0]
            if "=" not in setting or not ("." in key or key in SMOKE_KEYS):
                raise ValueError(
                    f"smoke setting {setting!r} must be KIND.FIELD=VALUE or one of {', '.join(SMOKE_KEYS)}=NAME"
                )

    def to_card(self) -> dict:
        return {spec.name: _plain(getattr(self, spec.name)) for spec in dataclasses.fields(self)}

    @classmethod
    def from_card(cls, data: dict) -> "Traits":
        hints = typing.get_type_hints(cls)
        values = {
            name: tuple(value) if typing.get_origin(hints[name]) is tuple else value for name, value in data.items()
        }
        build: Any = cls  # the card's keys are this class's fields (the card was written from it)
        return build(**values)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class ScenarioTraits(Traits):
    task_free: bool = False  # a one-pass stream of mini-batches without boundaries (scenario.online)


@dataclass(frozen=True)
class ModelTraits(Traits):
    vit: bool = False  # a Vision Transformer (what ViT-only strategies and attacks need)
    adaptive_compute: bool = False  # its compute depends on the input and it reports it (what compute attacks need)
    # it adds its own term to the training loss (an AuxiliaryLossModule inside it, e.g. A-ViT's ponder cost):
    # the runner gives every strategy the plugin that adds it
    auxiliary_loss: bool = False


@dataclass(frozen=True)
class StrategyTraits(Traits):
    train_whole_stream: bool = False  # trains once on the whole stream (joint): no per-experience rows, no attack
    attackable: bool = True  # its model returns plain logits an attack can differentiate
    task_free: bool = True  # can learn from a task-free stream (one pass, no boundaries)
    needs_vit: bool = False
    # template attributes (not in a plugin) that hold learning state and go into checkpoints
    checkpoint_attributes: tuple[str, ...] = ()
    # False: the prediction rule reads state beyond the model's tensors (e.g. NCM's class means), so the run
    # keeps its final checkpoint for `cl-bench evaluate`
    predicts_from_model: bool = True
    # extra pictures of a finished run, by name in cl_bench.plots.RUN_PLOTS (written as <name>.png)
    run_plots: tuple[str, ...] = ()


ATTACK_PHASES = ("training", "test")


@dataclass(frozen=True)
class AttackTraits(Traits):
    phase: str = "training"  # training: poisons a training experience; test: measures the trained model
    needs_vit: bool = False
    needs_attention_maps: bool = False
    needs_compute_statistics: bool = False
    # config fields every label of this attack shows (board setting column, plot bars), e.g. objective, epsilon
    label_fields: tuple[str, ...] = ()
    budget_field: str = ""  # the config field that measures its strength: plots order bars by it
    # training-time attacks that measure rows (Attack.measures_rows): the keys of row_metrics(), paired on the board
    row_metrics: tuple[str, ...] = ()
    # test-time attacks: what their result holds (the columns of their attack_<name>.csv board), as evaluators
    columns: tuple[str, ...] = ()
    row_keys: tuple[str, ...] = ()
    row_columns: tuple[str, ...] = ()
    # pictures of a finished run, by name in cl_bench.plots.RUN_PLOTS (written as <name>.png)
    run_plots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.columns or self.row_keys or self.row_columns) and self.phase != "test":
            raise ValueError("AttackTraits.columns/row_keys/row_columns describe a test-time attack's result")
        shared = sorted(set(self.columns) & set(self.row_columns)) + sorted(set(self.row_keys) & set(self.row_columns))
        if shared:
            raise ValueError(f"AttackTraits: {shared[0]!r} is declared twice (columns, row_keys, row_columns)")
        if self.budget_field and self.budget_field not in self.label_fields:
            raise ValueError("AttackTraits.budget_field must be one of its label_fields")
        if self.phase not in ATTACK_PHASES:
            raise ValueError(f"AttackTraits.phase must be one of {', '.join(ATTACK_PHASES)}, got {self.phase!r}")


@dataclass(frozen=True)
class EvaluatorTraits(Traits):
    """What an evaluator's results hold (the columns of its ``eval_<name>.csv`` board) and what it needs."""

    columns: tuple[str, ...] = ()  # scalar metrics, aggregated as mean/std over seeds
    row_keys: tuple[str, ...] = ()  # multi-row results: the columns that key each row (epsilon, rate, experience)
    row_columns: tuple[str, ...] = ()  # the metrics of each row, aggregated per key
    headline: tuple[str, ...] = ()  # the metrics the Markdown tables show (default: every column)
    needs_tensor_data: bool = True  # reads whole splits as tensors (not per-item 224-px datasets)
    offline_only: bool = False  # needs an offline stream (experiences), not a task-free one
    needs_vit: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        shared = sorted(set(self.columns) & set(self.row_columns)) + sorted(set(self.row_keys) & set(self.row_columns))
        if shared:
            raise ValueError(f"EvaluatorTraits: {shared[0]!r} is declared twice (columns, row_keys, row_columns)")
        unknown = sorted(set(self.headline) - set(self.columns) - set(self.row_columns))
        if unknown:
            raise ValueError(f"EvaluatorTraits.headline names {unknown[0]!r}, which is not one of its columns")
        if self.row_columns and not self.row_keys:
            raise ValueError("EvaluatorTraits.row_columns needs row_keys (the columns that key each row)")


TRAITS_BY_KIND: dict[str, type[Traits]] = {
    "scenario": ScenarioTraits,
    "model": ModelTraits,
    "strategy": StrategyTraits,
    "attack": AttackTraits,
    "evaluator": EvaluatorTraits,
}
