"""The parameter machinery every component config is built from: a leaf module (no imports from the rest of
the package), so that the registry, the configs and the component modules can all use it without a cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Sequence


def param(default: Any, doc: str, *, low: Optional[float] = None, high: Optional[float] = None,
          low_open: bool = False, high_open: bool = False, choices: Optional[Sequence[Any]] = None) -> Any:
    """A config field with its one-line doc and the checks its values must pass."""
    metadata = {"doc": doc, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
                "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ComponentConfig:
    """Base class of every component's config; subclasses add fields and may override validate.

    ``omitted_at_default`` names fields added after results were committed: the resolved config (and so
    the run id, the config id and the board rows) leaves them out while they hold their default, so that
    earlier runs keep their ids and a rerun reproduces the committed boards byte for byte. A subclass's tuple adds
    to those of its bases.
    """

    omitted_at_default: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        """Cross-field checks; raise UserError with a one-line message."""


__all__ = ["ComponentConfig", "param"]
