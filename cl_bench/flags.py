"""Command-line flags generated from config dataclasses (CleanRL style): one source for a field's name, type,
choices, default and help text. A flag only collects the value; the config's own checks validate it later,
so a flag and a ``--set`` or YAML value are refused by the same code with the same message.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Optional, Sequence

import yaml

from cl_bench.config import config_fields


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def list_value(text: str) -> Any:
    """The value of a list-typed flag: YAML (``[5,6,7]``) or comma-separated (``5,6,7``); the config checks the
    items, as it does for ``--set``."""
    text = text.strip()
    try:
        return yaml.safe_load(text if text.startswith("[") else f"[{text}]")
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"expected a list such as 1,2,3 or [1,2,3], got {text!r}") from None


def add_config_flags(
    parser: argparse.ArgumentParser,
    config_class: type,
    names: Optional[Sequence[str]] = None,
    aliases: Optional[dict[str, Sequence[str]]] = None,
) -> None:
    """Add ``--field-name`` for each field of ``config_class`` (or only ``names``).

    Every flag defaults to None ("not given"), so only the flags a user types override the lower layers.
    """
    hints = typing.get_type_hints(config_class)
    fields = config_fields(config_class)
    for name in names if names is not None else list(fields):
        spec = fields[name]
        annotation = hints[name]
        doc = spec.metadata.get("doc", "")
        default = spec.default if spec.default is not dataclasses.MISSING else None
        help_text = doc if "default" in doc or default is None else f"{doc} (default {default})"
        options = [flag_name(name), *(aliases or {}).get(name, ())]
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if annotation is bool:
            parser.add_argument(*options, action="store_true", **kwargs)
        else:
            if annotation in (int, float):
                kwargs["type"] = annotation
            elif typing.get_origin(annotation) in (list, tuple):
                kwargs["type"] = list_value
            choices = spec.metadata.get("choices")
            if choices:  # shown, not enforced here: the config refuses a bad value with its own message
                kwargs["metavar"] = "{" + ",".join(str(choice) for choice in choices) + "}"
            parser.add_argument(*options, **kwargs)


def given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The flags among ``names`` that were typed on the command line."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
