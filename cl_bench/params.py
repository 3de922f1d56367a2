"""The parameter machinery every component config is built from: a leaf module (no imports from the rest of
the package), so that the registry, the configs and the component modules can all use it without a cycle."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Sequence, cast


def param(
    default: Any,
    doc: str,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: Optional[Sequence[Any]] = None,
) -> Any:
    """A config field with its one-line doc and the checks its values must pass."""
    metadata = {
        "doc": doc,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "choices": tuple(choices) if choices is not None else None,
    }
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
    # True on the stand-in rebuilt from a component card (cl_bench.cards): same fields, no cross-field validate
    from_card: ClassVar[bool] = False

    def validate(self) -> None:
        """Cross-field checks; raise UserError with a one-line message."""


def type_name(hint: Any) -> str:
    """How ``cl-bench list -v`` and the catalog write a field's type."""
    return getattr(hint, "__name__", str(hint))


def describe_fields(config_class: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, doc) for every field, for `cl-bench list --verbose` and the catalog."""
    hints = typing.get_type_hints(config_class)
    rows = []
    for f in dataclasses.fields(config_class):
        default = f.default if f.default is not dataclasses.MISSING else cast(Callable[[], Any], f.default_factory)()
        rows.append((f.name, type_name(hints[f.name]), default, f.metadata.get("doc", "")))
    return rows


__all__ = ["ComponentConfig", "describe_fields", "param", "type_name"]
