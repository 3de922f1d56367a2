"""Typed, validated run configuration.

Every component declares a dataclass (subclass of :class:`ComponentConfig`) with one field per
hyperparameter, built with :func:`param` (default, one-line doc, optional bounds or choices).
A run's configuration is resolved in this order, later layers winning:

1. the component defaults (and, for ``train``, the scenario's and strategy's recommended
   ``train_defaults`` registered with them; for the scenario's default model, its
   ``model_defaults``; for the strategy, the values its registration chose for this scenario,
   ``scenario_defaults``, e.g. gpm_sparse's k and rho selected on validation data per scenario family);
2. a named preset (``--preset NAME`` or ``preset:`` in a config or sweep file), then a YAML
   file (``--config FILE``, read with ``yaml.safe_load``);
3. the CLI flags (``--epochs``, ``--batch-size``, ``--lr``, ``--device``, ``--seed`` ...);
4. ``--set kind.field=value`` overrides (kind: scenario, model, strategy, attack, train; ``evaluator.field``
   settings are the measurement phase's, :mod:`cl_bench.evaluation`, and leave the run's identity alone).

All validation happens before any work starts; a bad value is a :class:`UserError`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence, cast

import yaml

from cl_bench.errors import UserError
from cl_bench.params import ComponentConfig, describe_fields, param  # noqa: F401 (describe_fields: re-exported)
from cl_bench.presets import load_preset
from cl_bench.registry import REGISTRIES

COMPONENT_KINDS = ("scenario", "model", "strategy", "attack")
SETTABLE_KINDS = COMPONENT_KINDS + ("train",)
DEFAULT_SCENARIO = "continual_swiss_roll"
DEFAULT_STRATEGY = "naive"
# numpy's seed range; larger seeds fail deep inside seeding
MAX_SEED = 2**32 - 1
# every integer field is a count, a size or an index: anything past int64 overflows torch and numpy
MAX_INT = 2**63 - 1
# models compute in float32: a larger hyperparameter (an lr of 1e308) overflows in the optimizer's first step
MAX_FLOAT = 3.4028234663852886e38
EXPONENT_ONLY = re.compile(r"[+-]?[0-9]+[eE][+-]?[0-9]+")  # 5e-4: a number YAML 1.1 reads as a string


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a type annotation, converting int->float and list->tuple."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for option in non_none:
            try:
                return _coerce(value, option, where)
            except UserError as error:
                errors.append(error)
        raise errors[0]
    if origin in (list, tuple):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and args:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(item, item_type, where) for item in value]
        return list(items) if origin is list else tuple(items)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise UserError(f"{where} is out of range, got {value!r}")
            return value
        raise UserError(f"{where} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, str) and EXPONENT_ONLY.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 5e-4 (no dot) as a string; it is the number a user means
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                raise UserError(f"{where} is out of range, got {value!r}") from None
            if not math.isfinite(number):
                raise UserError(f"{where} must be a finite number, got {value!r}")
            if abs(number) > MAX_FLOAT:
                raise UserError(f"{where} is out of range (float32 holds up to 3.4e38), got {value!r}")
            return number
        raise UserError(f"{where} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{where} must be a string, got {value!r}")
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise UserError(f"{where} has unsupported value {value!r}")


def _check_bounds(value: Any, metadata: Mapping[str, Any], where: str) -> None:
    if value is None:
        return
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise UserError(f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}")
    values = value if isinstance(value, (list, tuple)) else [value]
    for item in values:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        low, high = metadata.get("low"), metadata.get("high")
        if low is not None and (item < low or (metadata.get("low_open") and item == low)):
            relation = ">" if metadata.get("low_open") else ">="
            raise UserError(f"{where} must be {relation} {low}, got {item!r}")
        if high is not None and (item > high or (metadata.get("high_open") and item == high)):
            relation = "<" if metadata.get("high_open") else "<="
            raise UserError(f"{where} must be {relation} {high}, got {item!r}")


def config_fields(config_class: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_class)}


@functools.lru_cache(maxsize=None)
def _type_hints(config_class: type) -> dict[str, Any]:
    return typing.get_type_hints(config_class)  # resolving string annotations is most of a build's cost


def build_config(config_class: type, values: dict, where: str) -> ComponentConfig:
    """Instantiate ``config_class`` from defaults overlaid with ``values``, fully validated."""
    known = config_fields(config_class)
    hints = _type_hints(config_class)
    unknown = sorted(set(values) - set(known), key=str)
    if unknown:
        valid = ", ".join(sorted(known)) or "none"
        raise UserError(f"unknown {where} field {unknown[0]!r}; valid fields: {valid}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}")
    config = config_class(**kwargs)
    for name, spec in known.items():
        _check_bounds(getattr(config, name), spec.metadata, f"{where}.{name}")
    config.validate()
    return config


def config_to_dict(config: ComponentConfig) -> dict:
    """The config's fields as plain values; those in ``omitted_at_default`` only when not at their default."""
    resolved = {}
    omitted = {name for cls in type(config).__mro__ for name in vars(cls).get("omitted_at_default", ())}
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if spec.name in omitted and value == _field_default(spec):
            continue
        resolved[spec.name] = _plain(value)
    return resolved


def _field_default(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    return spec.default_factory() if spec.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# parameter subsets by name (selected by cl_bench.peft, which needs torch; this module must not import it)
TRAINABLE_SUBSETS = ("all", "head", "bn", "bn+head", "prompts", "prompts+head")


@dataclass
class TrainConfig(ComponentConfig):
    """Optimisation settings shared by every strategy."""

    epochs: int = param(1, "training epochs per experience", low=1)
    batch_size: int = param(32, "training mini-batch size", low=1)
    eval_batch_size: int = param(1000, "mini-batch size for evaluation", low=1)
    lr: float = param(0.01, "learning rate", low=0.0, low_open=True)
    momentum: float = param(0.0, "SGD momentum", low=0.0, high=1.0, high_open=True)
    weight_decay: float = param(0.0, "L2 weight decay", low=0.0)
    optimizer: str = param("sgd", "optimizer, reset at the start of every experience", choices=("sgd", "adam"))
    device: str = param("auto", "auto (CUDA when present, else CPU), cpu or cuda", choices=("auto", "cpu", "cuda"))
    num_workers: int = param(
        0,
        "DataLoader worker processes for datasets read image by image (224-px CIFAR, "
        "ImageNet-R) in offline training and in evaluation; tensor data is sliced in-process "
        "and ignores it",
        low=0,
    )
    threads: int = param(
        1,
        "torch intra-op threads of this run (recorded as environment.torch_threads); 0 leaves "
        "torch's default, one per core. 1 by default: on the suite's models 2 threads are no "
        "faster, and two 2-thread runs on 2 cores slow each other 6x (benchmarks/threads.py)",
        low=0,
    )

    trainable: str = param(
        "all",
        "parameters training may change (cl_bench/peft.py): all, head, bn (BatchNorm affine), bn+head, prompts "
        "(ViT prompt tokens), prompts+head; the rest stays frozen at its initial (pre-trained) values",
        choices=TRAINABLE_SUBSETS,
    )

    omitted_at_default: ClassVar[tuple[str, ...]] = ("num_workers", "threads", "trainable")


@dataclass
class RunConfig:
    """The fully resolved configuration of one run."""

    scenario: str
    model: str
    strategy: str
    attack: Optional[str]
    seed: int
    train: TrainConfig
    components: dict[str, ComponentConfig]

    def to_dict(self) -> dict:
        resolved: dict[str, Any] = {}
        for kind in COMPONENT_KINDS:
            name = getattr(self, kind)
            resolved[kind] = None if name is None else {"name": name, **config_to_dict(self.components[kind])}
        resolved["train"] = config_to_dict(self.train)
        resolved["seed"] = self.seed
        return resolved

    def run_id(self) -> str:
        """Short hash of the whole resolved config: the same config maps to the same run directory."""
        return short_hash(self.to_dict())

    def config_id(self) -> str:
        """Hash of the config without seed and runtime settings: runs that differ only by seed share it."""
        return config_id_of(self.to_dict())


# Training settings that say where and how fast a run executes, not what it computes: left out of the
# config id and of the board's train_config column, so runs on cpu and cuda, with or without loader workers,
# group as seeds of one row.
RUNTIME_TRAIN_FIELDS = ("device", "num_workers", "threads")


def config_id_of(resolved: dict) -> str:
    """The config id of a resolved config (``RunConfig.to_dict()``, or a record's ``config``)."""
    resolved = json.loads(json.dumps(resolved))
    resolved.pop("seed", None)
    if isinstance(resolved.get("train"), dict):
        for name in RUNTIME_TRAIN_FIELDS:
            resolved["train"].pop(name, None)
    return short_hash(resolved)


def short_hash(payload: Any) -> str:
    """The 12-hex-digit SHA-256 of a JSON-able value (sorted keys): run ids, config ids, eval ids."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def parse_set(assignment: str) -> tuple[str, str, Any]:
    """Split ``kind.field=value`` into its parts, the value parsed as YAML (so 0.1, true, [1,2])."""
    if "=" not in assignment or "." not in assignment.split("=", 1)[0]:
        raise UserError(f"--set expects kind.field=value (e.g. strategy.ewc_lambda=0.4), got {assignment!r}")
    key, raw = assignment.split("=", 1)
    kind, name = key.split(".", 1)
    if kind not in SETTABLE_KINDS + ("evaluator",):
        raise UserError(f"--set kind must be one of {', '.join(SETTABLE_KINDS + ('evaluator',))}, got {kind!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):
        value = raw
    return kind, name, value


def load_yaml(path: Path) -> dict:
    """Read a YAML mapping with the safe loader; a UserError if missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise UserError(f"config file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8 YAML") from None
    except OSError as error:
        raise UserError(f"config file {path} cannot be read: {error.strerror}") from None
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0]
        raise UserError(f"config file {path} is not valid YAML: {first}") from None
    except RecursionError:
        raise UserError(f"config file {path} is nested too deeply to be a config") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise UserError(f"config file {path} must hold a mapping (scenario:, strategy:, train: ...)")
    return content


def _check_name(name: Any, kind: str) -> str:
    """A component or preset name: a non-empty string (an empty one would silently mean the default)."""
    if not isinstance(name, str):
        raise UserError(f"{kind} name must be a string, got {name!r}")
    if not name.strip():
        hint = "; use none for no attack" if kind == "attack" else f"; see `cl-bench list {kind}`"
        raise UserError(f"{kind} name is empty{hint}")
    return name


def split_component(value: Any, kind: str) -> tuple[Optional[str], dict]:
    """A YAML/sweep component entry is either a bare name or {name: ..., field: value ...}."""
    if value is None:
        return None, {}
    if isinstance(value, str):
        return _check_name(value, kind), {}
    if isinstance(value, dict):
        values = dict(value)
        name = values.pop("name", None)
        if name is not None:
            _check_name(name, kind)
        if not all(isinstance(key, str) for key in values):
            raise UserError(f"{kind} field names must be strings, got {sorted(map(repr, values))[0]}")
        return name, values
    raise UserError(f"{kind} must be a name or a mapping with a 'name' key, got {value!r}")


TIMM_PREFIX = "timm:"


@typing.overload
def split_model_name(name: str, values: dict) -> tuple[str, dict]: ...
@typing.overload
def split_model_name(name: Optional[str], values: dict) -> tuple[Optional[str], dict]: ...
def split_model_name(name: Optional[str], values: dict) -> tuple[Optional[str], dict]:
    """``timm:NAME`` -> model ``timm`` with ``arch=NAME`` (so the record shows "timm" and the arch)."""
    if not isinstance(name, str) or not name.startswith(TIMM_PREFIX):
        return name, values
    arch = name[len(TIMM_PREFIX) :]
    if not arch:
        raise UserError("model timm:NAME needs a timm model name, e.g. --model timm:vit_tiny_patch16_224")
    if values.get("arch", arch) != arch:
        raise UserError(f"model {name!r} and model.arch {values['arch']!r} disagree; give the architecture once")
    return "timm", {**values, "arch": arch}


# the train fields with their own command-line flag (`--epochs` ...; the rest is `--set train.FIELD=VALUE`)
TRAIN_SHORTCUTS = ("epochs", "batch_size", "lr", "device")


def resolve(
    spec: Optional[dict] = None, flags: Optional[dict] = None, sets: Sequence[str] = (), import_components: bool = True
) -> RunConfig:
    """Resolve a run config from a YAML-like ``spec``, CLI ``flags`` and ``--set`` assignments.

    ``flags`` keys: scenario, model, strategy, attack, seed, epochs, batch_size, lr, device,
    preset (None means "not given"). A preset (flag or ``preset:`` key of ``spec``) is the layer
    just above the registered defaults; see :mod:`cl_bench.presets`. The steps, lowest layer last:
    the user's layers (config file, flags, ``--set``), the names they leave open, the registered
    layers under them (preset, scenario_defaults, model_defaults, train_defaults), then validation.

    Validation reads the components' cards first (no torch, no Avalanche: a bad name or value fails at
    once); with ``import_components`` the components are then imported and their real configs built
    (:func:`materialize`, which adds the cross-field checks). Without it the configs are card stand-ins,
    enough for ids, labels and dry runs.
    """
    spec = dict(spec or {})
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    preset = _preset_and_top_level_checks(spec, flags)
    names, values, preset_components = _user_layers(spec, flags, sets, preset)
    scenario_entry, strategy_entry = _fill_default_names(names, values)
    _add_registered_layers(names, values, preset_components, scenario_entry, strategy_entry)

    components = {}
    for kind in COMPONENT_KINDS:
        name_of_kind = names[kind]
        if name_of_kind is not None:
            entry = REGISTRIES[kind].card(name_of_kind)
            components[kind] = build_config(entry.config_class, values[kind], kind)
    train_layers = {
        **scenario_entry.meta.get("train_defaults", {}),
        **strategy_entry.meta.get("train_defaults", {}),
        **values["train"],
    }
    train = cast(TrainConfig, build_config(TrainConfig, train_layers, "train"))
    seed = _coerce(flags.get("seed", spec.get("seed", preset.get("seed", 0))), int, "seed")
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    config = RunConfig(
        str(names["scenario"]), str(names["model"]), str(names["strategy"]), names["attack"], seed, train, components
    )
    return materialize(config) if import_components else config


def materialize(config: RunConfig) -> RunConfig:
    """``config`` with every card stand-in replaced by the component's real config (importing the
    component's module and running its cross-field checks); a config that holds none is returned as is."""
    if not any(type(component).from_card for component in config.components.values()):
        return config
    components = {}
    for kind, component in config.components.items():
        if type(component).from_card:
            entry = REGISTRIES[kind].get(str(getattr(config, kind)))
            values = {spec.name: getattr(component, spec.name) for spec in dataclasses.fields(component)}
            component = build_config(entry.config_class, values, kind)
        components[kind] = component
    return dataclasses.replace(config, components=components)


def _preset_and_top_level_checks(spec: dict, flags: dict) -> dict:
    """The preset's spec ({} without one), after checking the names given as flags and the spec's top keys."""
    for kind in COMPONENT_KINDS + ("preset",):
        if kind in flags:
            _check_name(flags[kind], kind)
    preset_name = flags.pop("preset", None)
    if preset_name is None and spec.get("preset") is not None:
        preset_name = _check_name(spec["preset"], "preset")
    spec.pop("preset", None)
    spec.pop("evaluator", None)  # the measurement phase's (cl_bench.evaluation), not part of the run's identity
    preset = load_preset(preset_name)[1] if preset_name is not None else {}
    valid_top = COMPONENT_KINDS + ("train", "seed")
    unknown_top = sorted(set(spec) - set(valid_top), key=str)
    if unknown_top:
        raise UserError(
            f"unknown config key {unknown_top[0]!r}; valid keys: {', '.join(valid_top + ('preset', 'evaluator'))}"
        )
    return preset


def _user_layers(
    spec: dict, flags: dict, sets: Sequence[str], preset: dict
) -> tuple[dict[str, Optional[str]], dict[str, dict], dict[str, tuple[Optional[str], dict]]]:
    """(component names, field values per kind incl. train, the preset's components): config file, flags, --set."""
    names: dict[str, Optional[str]] = {}
    values: dict[str, dict] = {}
    preset_components: dict[str, tuple[Optional[str], dict]] = {}
    for kind in COMPONENT_KINDS:
        name, fields_ = split_component(spec.get(kind), kind)
        preset_components[kind] = split_component(preset.get(kind), kind)
        if kind == "model":
            name, fields_ = split_model_name(name, fields_)
            preset_components[kind] = split_model_name(*preset_components[kind])
        names[kind] = flags.get(kind, name or preset_components[kind][0])
        values[kind] = fields_
    if str(flags.get("model", "")).startswith(TIMM_PREFIX):
        # the flag's arch beats the config file's (--set still beats both)
        names["model"], values["model"] = split_model_name(
            names["model"], {k: v for k, v in values["model"].items() if k != "arch"}
        )
    train_values = spec.get("train") or {}
    if not isinstance(train_values, dict):
        raise UserError(f"train must be a mapping of training settings, got {train_values!r}")
    values["train"] = {**(preset.get("train") or {}), **train_values}
    for flag in TRAIN_SHORTCUTS:
        if flag in flags:
            values["train"][flag] = flags[flag]
    for assignment in sets:
        kind, name, value = parse_set(assignment)
        if kind != "evaluator":  # evaluator settings belong to the measurement phase, not to the run
            values[kind][name] = value
    return names, values, preset_components


def _fill_default_names(names: dict[str, Optional[str]], values: dict[str, dict]) -> tuple[Any, Any]:
    """The default scenario, strategy and model where none was named; the scenario's and strategy's entries."""
    scenario = names["scenario"] = names["scenario"] or DEFAULT_SCENARIO
    strategy = names["strategy"] = names["strategy"] or DEFAULT_STRATEGY
    scenario_entry = REGISTRIES["scenario"].card(scenario)
    names["model"] = names["model"] or scenario_entry.meta.get("default_model", "mlp")
    if names["attack"] in ("none", "null"):
        names["attack"] = None
    if names["attack"] is None and values["attack"]:
        raise UserError("attack settings were given but no attack; add --attack NAME")
    return scenario_entry, REGISTRIES["strategy"].card(strategy)


def _add_registered_layers(
    names: dict[str, Optional[str]],
    values: dict[str, dict],
    preset_components: dict[str, tuple[Optional[str], dict]],
    scenario_entry: Any,
    strategy_entry: Any,
) -> None:
    """Under the user's values: the preset's component settings, the strategy's scenario_defaults, and the
    scenario's model_defaults for its default model (train_defaults are layered when TrainConfig is built)."""
    for kind, (preset_name_of_kind, preset_values) in preset_components.items():
        name_of_kind = names[kind]
        if name_of_kind is None or not preset_values:
            continue
        if name_of_kind != preset_name_of_kind:
            # another component than the preset's: keep the preset settings it understands
            known = config_fields(REGISTRIES[kind].card(name_of_kind).config_class)
            preset_values = {k: v for k, v in preset_values.items() if k in known}
        values[kind] = {**preset_values, **values[kind]}
    # the strategy's values chosen for this scenario sit just above its own defaults
    values["strategy"] = {
        **strategy_entry.meta.get("scenario_defaults", {}).get(names["scenario"], {}),
        **values["strategy"],
    }
    if names["model"] == scenario_entry.meta.get("default_model", "mlp"):
        # the scenario's recommended model settings (e.g. the Swiss roll's bias-free 100-100 MLP)
        values["model"] = {**scenario_entry.meta.get("model_defaults", {}), **values["model"]}
