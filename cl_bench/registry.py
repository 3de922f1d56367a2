"""One registry per component kind, keyed by the CLI name.

A component module registers itself with a decorator::

    @STRATEGIES.register("ewc", config=EWCConfig)
    def build_ewc(config, context): ...

The one-line summary shown by ``cl-bench list`` is the first line of the builder's docstring.
The engine never imports a concrete method. Two ways in:

* :meth:`Registry.card` (and ``names``, ``cards``, ``in``): what the component declares, read from the
  committed cards (:mod:`cl_bench.cards`) without importing it: listing, validation, boards.
* :meth:`Registry.get` (and ``entries``): the imported entry with its builder and real config class;
  it imports the one catalog package that holds the component (``scenarios``, ``strategies``,
  ``attacks``, ``evaluators``, ``cl_bench.models``, whose ``__init__`` import their modules).
"""

from __future__ import annotations

import difflib
import importlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Generic, Optional, TypeVar, Union, cast

from cl_bench.cards import StaleCardsError, card_config_class, entry_card, load_cards, parse_type
from cl_bench.errors import UserError
from cl_bench.params import ComponentConfig, describe_fields, type_name
from cl_bench.traits import (
    TRAITS_BY_KIND,
    AttackTraits,
    EvaluatorTraits,
    ModelTraits,
    ScenarioTraits,
    StrategyTraits,
    Traits,
)

TraitsT = TypeVar("TraitsT", bound=Traits)

CATALOG_PACKAGES = ("cl_bench.models", "scenarios", "strategies", "attacks", "evaluators")


@dataclass
class Entry:
    """A registered component: its builder, its config class and free-form metadata."""

    name: str
    kind: str
    builder: Callable[..., Any]
    config_class: type
    summary: str
    meta: dict = field(default_factory=dict)
    traits: Traits = field(default_factory=Traits)

    def __post_init__(self) -> None:
        if type(self.traits) is Traits:  # built without declarations: the kind's defaults
            self.traits = TRAITS_BY_KIND[self.kind]()

    def describe_fields(self) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, doc) of every config field."""
        return describe_fields(self.config_class)


@dataclass
class Card:
    """What a component declares, read from its card (:mod:`cl_bench.cards`) without importing it: the
    attributes of an :class:`Entry` but the builder; the config class is a stand-in, built when first asked."""

    name: str
    kind: str
    summary: str
    meta: dict
    data: dict = field(repr=False)

    @cached_property
    def config_class(self) -> type:
        return card_config_class(self.data)

    @cached_property
    def traits(self) -> Traits:
        return TRAITS_BY_KIND[self.kind].from_card(self.data["traits"])

    def describe_fields(self) -> list[tuple[str, str, Any, str]]:
        """What :meth:`Entry.describe_fields` gives, read from the card without building the stand-in class."""
        return [
            (spec["name"], type_name(parse_type(spec["type"])), spec["default"], spec.get("doc", ""))
            for spec in self.data["config"]["fields"]
        ]


class Registry(Generic[TraitsT]):
    """Name -> Entry for one kind of component, whose traits are a ``TraitsT``."""

    def __init__(self, kind: str, traits_class: type[TraitsT]):
        if TRAITS_BY_KIND[kind] is not traits_class:
            raise ValueError(f"a {kind} registry holds {TRAITS_BY_KIND[kind].__name__}")
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._cards: dict[str, Card] = {}
        self._checked: set[str] = set()

    def register(
        self, name: str, config: Optional[type] = None, traits: Optional[Traits] = None, **meta: Any
    ) -> Callable:
        """Decorator registering a builder under ``name`` with its config dataclass and declared traits
        (an instance of this kind's class in :mod:`cl_bench.traits`; the defaults when omitted)."""
        traits_class = TRAITS_BY_KIND[self.kind]
        if traits is None:
            traits = traits_class()
        if type(traits) is not traits_class:
            raise TypeError(
                f"{self.kind} {name!r} declares {type(traits).__name__}; a {self.kind} declares {traits_class.__name__}"
            )

        def decorate(builder: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"duplicate {self.kind} name {name!r}")
            doc = (builder.__doc__ or "").strip()
            summary = doc.splitlines()[0] if doc else ""
            self._entries[name] = Entry(name, self.kind, builder, config or ComponentConfig, summary, meta, traits)
            return builder

        return decorate

    def _unknown(self, name: str) -> UserError:
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"valid: {', '.join(self.names())}"
        return UserError(f"unknown {self.kind} {name!r}; {hint} (see `cl-bench list {self.kind}`)")

    def get(self, name: str) -> Entry:
        """The imported entry called ``name``; a UserError naming the closest valid choices otherwise."""
        card = load_cards().get(self.kind, {}).get(name)
        if name not in self._entries:
            if card is not None:
                importlib.import_module(card["module"])
            if name not in self._entries:
                load_catalogs()
        if name not in self._entries:
            raise self._unknown(name)
        entry = self._entries[name]
        if card is not None and name not in self._checked:
            if json.loads(json.dumps(entry_card(entry))) != card:
                raise StaleCardsError(
                    f"the card of {self.kind} {name!r} in cl_bench/cards.json no longer matches "
                    f"its code; run `cl-bench docs` and commit the result"
                )
            self._checked.add(name)
        return entry

    def card(self, name: str) -> Union[Card, Entry]:
        """What ``name`` declares, without importing it: an entry built from its card (the same whether or not
        the module is imported), else the imported entry of a component without a card (one a test registers);
        UserError for an unknown name."""
        if name not in self._cards:
            card = load_cards().get(self.kind, {}).get(name)
            if card is None:
                if name in self._entries or not load_cards():  # no cards file at all: fall back to importing
                    return self.get(name)
                raise self._unknown(name)
            self._cards[name] = Card(name, self.kind, card["summary"], card["meta"], card)
        return self._cards[name]

    def traits(self, name: str) -> TraitsT:
        """What ``name`` declares (from its card, without importing it); UserError for an unknown name."""
        return cast(TraitsT, self.card(name).traits)

    def names(self) -> list[str]:
        if not load_cards():
            load_catalogs()
        return sorted(set(load_cards().get(self.kind, {})) | set(self._entries))

    def cards(self) -> list[Union[Card, Entry]]:
        return [self.card(name) for name in self.names()]

    def entries(self) -> list[Entry]:
        load_catalogs()
        return [self._entries[name] for name in sorted(self._entries)]

    def __contains__(self, name: str) -> bool:
        return name in self.names()


SCENARIOS = Registry("scenario", ScenarioTraits)
MODELS = Registry("model", ModelTraits)
STRATEGIES = Registry("strategy", StrategyTraits)
ATTACKS = Registry("attack", AttackTraits)
EVALUATORS = Registry("evaluator", EvaluatorTraits)
REGISTRIES: dict[str, Registry[Any]] = {r.kind: r for r in (SCENARIOS, MODELS, STRATEGIES, ATTACKS, EVALUATORS)}

_loaded = False


def load_catalogs() -> None:
    """Import every catalog package once so that their components register."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in CATALOG_PACKAGES:
        importlib.import_module(package)
