"""One registry per component kind, keyed by the CLI name.

A component module registers itself with a decorator::

    @STRATEGIES.register("ewc", config=EWCConfig)
    def build_ewc(config, context): ...

The one-line summary shown by ``cl-bench list`` is the first line of the builder's docstring.
The engine never imports a concrete method: :func:`load_catalogs` imports the catalog packages
(``scenarios``, ``strategies``, ``attacks``, ``evaluators``, ``cl_bench.models``), whose
``__init__`` import their modules.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from cl_bench.errors import UserError
from cl_bench.params import ComponentConfig

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


class Registry:
    """Name -> Entry for one kind of component."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, config: Optional[type] = None, **meta: Any) -> Callable:
        """Decorator registering a builder under ``name`` with its config dataclass."""
        def decorate(builder: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"duplicate {self.kind} name {name!r}")
            doc = (builder.__doc__ or "").strip()
            summary = doc.splitlines()[0] if doc else ""
            self._entries[name] = Entry(name, self.kind, builder, config or ComponentConfig, summary, meta)
            return builder

        return decorate

    def get(self, name: str) -> Entry:
        """The entry called ``name``; a UserError naming the closest valid choices otherwise."""
        load_catalogs()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.4)
            hint = f"did you mean {', '.join(close)}?" if close else f"valid: {', '.join(self.names())}"
            raise UserError(f"unknown {self.kind} {name!r}; {hint} (see `cl-bench list {self.kind}`)")
        return self._entries[name]

    def names(self) -> list[str]:
        load_catalogs()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[name] for name in self.names()]

    def __contains__(self, name: str) -> bool:
        load_catalogs()
        return name in self._entries


SCENARIOS = Registry("scenario")
MODELS = Registry("model")
STRATEGIES = Registry("strategy")
ATTACKS = Registry("attack")
EVALUATORS = Registry("evaluator")
REGISTRIES = {r.kind: r for r in (SCENARIOS, MODELS, STRATEGIES, ATTACKS, EVALUATORS)}

_loaded = False


def load_catalogs() -> None:
    """Import every catalog package once so that their components register."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in CATALOG_PACKAGES:
        importlib.import_module(package)
