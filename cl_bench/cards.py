"""Component cards: what every registered component declares, readable without importing it.

Importing a component module imports torch and Avalanche (about 9 s on the CI machine), so the
commands that only list, validate or aggregate read ``cl_bench/cards.json`` instead: for each
component its module, one-line summary, registration metadata and config fields (type, default,
doc, bounds, choices). :func:`card_config_class` rebuilds a config dataclass from a card with the same
fields, so :func:`cl_bench.config.build_config` checks types, bounds, choices and unknown fields exactly
as it does on the real class. What a card cannot carry is a config's cross-field ``validate`` (code);
it runs when the component's module is imported to build the run (:func:`cl_bench.config.materialize`),
still before anything is written.

``cl-bench docs`` writes the file from the registries; a test fails when the committed file differs,
and :meth:`cl_bench.registry.Registry.get` refuses to build a component whose card is stale.
Types are written in a small fixed grammar (``int``, ``float``, ``str``, ``bool``, ``Any``,
``list[T]``, ``tuple[T, ...]``, ``Optional[T]``, ``Union[T, U]``) and parsed back by hand: nothing in
the file is evaluated.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Union

from cl_bench.params import ComponentConfig, param

CARDS_FILE = Path(__file__).with_name("cards.json")
CARDS_VERSION = 1
_SIMPLE_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str, "bool": bool, "Any": Any}
_METADATA_KEYS = ("doc", "low", "high", "low_open", "high_open", "choices")


class StaleCardsError(RuntimeError):
    """The committed cards no longer describe the code: a developer error, fixed by `cl-bench docs`."""


# ----------------------------------------------------------------------------- types as text


def type_text(hint: Any) -> str:
    """A config field's annotation in the cards' grammar; ValueError for anything outside it."""
    for name, simple in _SIMPLE_TYPES.items():
        if hint is simple:
            return name
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1 and len(args) == 2:
            return f"Optional[{type_text(options[0])}]"
        inner = ", ".join(type_text(a) for a in args)
        return f"Union[{inner}]"
    if origin is list and len(args) == 1:
        return f"list[{type_text(args[0])}]"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"tuple[{type_text(args[0])}, ...]"
    raise ValueError(
        f"config field type {hint!r} is not one the cards can describe; use int, float, str, bool, "
        f"list[T], tuple[T, ...], Optional[T] or Union[...]"
    )


_TOKEN = re.compile(r"\s*(\w+|\[|\]|,|\.\.\.)")


@lru_cache(maxsize=None)
def parse_type(text: str) -> Any:
    """The annotation written by :func:`type_text` (ValueError for any other text)."""
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != text.replace(" ", ""):
        raise ValueError(f"unreadable type {text!r} in the component cards")
    position = 0

    def expect(token: str) -> None:
        nonlocal position
        if position >= len(tokens) or tokens[position] != token:
            raise ValueError(f"unreadable type {text!r} in the component cards")
        position += 1

    def parse() -> Any:
        nonlocal position
        if position >= len(tokens):
            raise ValueError(f"unreadable type {text!r} in the component cards")
        name = tokens[position]
        position += 1
        if name in _SIMPLE_TYPES:
            return _SIMPLE_TYPES[name]
        expect("[")
        first = parse()
        if name == "list":
            expect("]")
            return list[first]  # type: ignore[valid-type]
        if name == "Optional":
            expect("]")
            return Optional[first]
        if name == "tuple":
            expect(",")
            expect("...")
            expect("]")
            return tuple[first, ...]  # type: ignore[valid-type]
        if name == "Union":
            options = [first]
            while position < len(tokens) and tokens[position] == ",":
                position += 1
                options.append(parse())
            expect("]")
            return Union[tuple(options)]
        raise ValueError(f"unreadable type {text!r} in the component cards")

    hint = parse()
    if position != len(tokens):
        raise ValueError(f"unreadable type {text!r} in the component cards")
    return hint


# ----------------------------------------------------------------------------- writing


def _default(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    raise ValueError(f"config field {spec.name!r} has no default; every component field needs one")


def config_card(config_class: type) -> dict:
    """The card of a config dataclass: its class name, omitted-at-default fields and every field."""
    hints = typing.get_type_hints(config_class)
    omitted = [name for cls in reversed(config_class.__mro__) for name in vars(cls).get("omitted_at_default", ())]
    fields = []
    for spec in dataclasses.fields(config_class):
        entry = {"name": spec.name, "type": type_text(hints[spec.name]), "default": _default(spec)}
        for key in _METADATA_KEYS:
            value = spec.metadata.get(key)
            if value is None or value is False or value == "":  # `is`: a bound of 0 is kept
                continue
            entry[key] = list(value) if key == "choices" else value
        fields.append(entry)
    return {"class": config_class.__name__, "omitted_at_default": list(dict.fromkeys(omitted)), "fields": fields}


def entry_card(entry: Any) -> dict:
    """The card of a registry entry (see :class:`cl_bench.registry.Entry`)."""
    return {
        "module": entry.builder.__module__,
        "summary": entry.summary,
        "meta": entry.meta,
        "traits": entry.traits.to_card(),
        "config": config_card(entry.config_class),
    }


def cards_text(registries: dict) -> str:
    """The whole cards file for ``registries`` (kind -> Registry, every catalog imported)."""
    components = {
        kind: {entry.name: entry_card(entry) for entry in registry.entries()} for kind, registry in registries.items()
    }
    return json.dumps({"version": CARDS_VERSION, "components": components}, indent=1) + "\n"  # meta in its order


# ----------------------------------------------------------------------------- reading


@lru_cache(maxsize=1)
def load_cards() -> dict[str, dict[str, dict]]:
    """kind -> name -> card, from the committed file (empty when it is missing: the registry then imports)."""
    if not CARDS_FILE.is_file():
        return {}
    content = json.loads(CARDS_FILE.read_text(encoding="utf-8"))
    if not isinstance(content, dict) or content.get("version") != CARDS_VERSION:
        raise StaleCardsError(f"{CARDS_FILE} is not a version-{CARDS_VERSION} cards file; run `cl-bench docs`")
    return content["components"]


def card_config_class(card: dict) -> type:
    """A config dataclass with the card's fields, defaults, checks and omitted-at-default names (no
    cross-field ``validate``): what validation needs without importing the component."""
    config = card["config"]
    fields = []
    for entry in config["fields"]:
        # the same param() the component's own config is written with, so the metadata is the same
        spec = param(
            entry["default"],
            entry.get("doc", ""),
            low=entry.get("low"),
            high=entry.get("high"),
            low_open=bool(entry.get("low_open")),
            high_open=bool(entry.get("high_open")),
            choices=entry.get("choices"),
        )
        fields.append((entry["name"], parse_type(entry["type"]), spec))
    namespace = {"omitted_at_default": tuple(config["omitted_at_default"]), "from_card": True}
    return dataclasses.make_dataclass(config["class"], fields, bases=(ComponentConfig,), namespace=namespace)


__all__ = [
    "CARDS_FILE",
    "StaleCardsError",
    "card_config_class",
    "cards_text",
    "config_card",
    "entry_card",
    "load_cards",
    "parse_type",
    "type_text",
]
