"""Tensor-only checkpoints of a strategy between experiences, for ``--resume``.

A checkpoint is two files: ``checkpoint.<digest>.safetensors`` (every tensor) and ``checkpoint.json`` (the
structure that says where each tensor goes, plus plain numbers). Nothing is pickled.

What is saved: the model's state dict, the optimizer's state (Avalanche 0.6 keeps it across
experiences: momentum buffers, Adam moments), the state of every plugin of the strategy (EWC
importances, SI path integrals, replay buffers, LwF's previous model, A-GEM/GEM memories,
Avalanche's clock ...) walked generically through their attributes (a
:class:`~cl_bench.templates.StatelessPlugin` and the evaluation plugin hold none and are skipped), the
template attributes the strategy declares (``StrategyTraits.checkpoint_attributes``, passed in by the caller:
state a template keeps on itself rather than in a plugin, e.g. Cumulative's union dataset), the RNG states,
and the runner's own progress (accuracy rows, timings). Supported attribute values: tensors, Avalanche
``ParamData``, ``nn.Module`` (restored into a copy of the strategy's model), containers,
scalars, tensor-bank Avalanche datasets (saved as bank name + row indices) and plain objects of the
classes in an explicit allow-list (restored attribute by attribute): the few Avalanche classes the
suite's strategies hold (:data:`AVALANCHE_STATE_TYPES`), the config class of every registered component,
and classes a strategy module registers with :func:`state_type`. Attributes that are only caches of other
state (data loaders, iterators) are listed in ``TRANSIENT`` and rebuilt.

What ``--resume`` trusts: nothing in the files names code. A class is looked up in the allow-list by its
name, never imported; a name outside it, an attribute name that is a dunder, or a template attribute the
strategy does not declare is refused. The pair is atomic as a unit: the tensors file is named by its
digest and written first, then ``checkpoint.json`` (which names that file and its SHA-256) replaces the
previous one in one rename, then the previous tensors file is removed. A kill at any point leaves a
complete previous or complete new pair; a tensors file that does not match its digest (torn, garbled,
swapped) is refused. Any problem reading a checkpoint is a one-line :class:`UserError` naming the file.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence, cast

import numpy as np
import torch
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.regularization import LearningWithoutForgetting
from avalanche.training.storage_policy import ExperienceBalancedBuffer, ReservoirSamplingBuffer
from avalanche.training.utils import ParamData
from safetensors.torch import load_file, save_file
from torch import nn

from cl_bench import records
from cl_bench.data import file_digest
from cl_bench.errors import UserError
from cl_bench.templates import StatelessPlugin
from cl_bench.tensor_data import bank_named, bank_rows

CHECKPOINT_STRUCTURE = "checkpoint.json"
FORMAT = 2  # 1: a fixed-name tensors file renamed separately from the structure (not atomic); refused
TENSORS_NAME = re.compile(r"checkpoint\.[0-9a-f]{16}\.safetensors")
LEGACY_TENSORS = "checkpoint.safetensors"
# caches rebuilt from other state: A-GEM's memory loader and its iterator
TRANSIENT = {"buffer_dataloader", "buffer_dliter"}
NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class UnsupportedState(TypeError):
    pass


class CorruptCheckpoint(ValueError):
    pass


_STATE_TYPES: dict[str, type] = {}


def _type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def state_type(cls: type) -> type:
    """Class decorator: objects of ``cls`` may be checkpointed (restored attribute by attribute, no __init__)."""
    _STATE_TYPES[_type_name(cls)] = cls
    return cls


# the Avalanche objects the suite's strategies keep in their plugins
AVALANCHE_STATE_TYPES = (LearningWithoutForgetting, ExperienceBalancedBuffer, ReservoirSamplingBuffer)
for _cls in AVALANCHE_STATE_TYPES:
    state_type(_cls)


def allowed_state_types() -> dict[str, type]:
    """Name -> class of every object type a checkpoint may hold: the list above, registered configs."""
    from cl_bench.registry import REGISTRIES

    allowed = dict(_STATE_TYPES)
    for registry in REGISTRIES.values():
        for entry in registry.entries():
            allowed[_type_name(entry.config_class)] = entry.config_class
    return allowed


class _Encoder:
    def tensor(self, value: torch.Tensor) -> str:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = value.detach().cpu().contiguous().clone()
        return key

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}
        self.allowed = allowed_state_types()

    def encode(self, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return {"__float__": repr(value)}  # JSON has no literal for it
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, torch.Tensor):
            return {"__tensor__": self.tensor(value)}
        if isinstance(value, ParamData):
            return {"__param__": self.tensor(value.data), "name": value.name}
        if isinstance(value, torch.device):
            return {"__device__": str(value)}
        if isinstance(value, nn.Module):
            return {"__module__": {k: self.tensor(v) for k, v in value.state_dict().items()}}
        if isinstance(value, defaultdict):
            if value.default_factory not in (dict, list, set):
                raise UnsupportedState(f"defaultdict({value.default_factory})")
            return {
                "__defaultdict__": value.default_factory.__name__,
                "items": [[self.encode(k), self.encode(v)] for k, v in value.items()],
            }
        if isinstance(value, dict):
            return {"__dict__": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        if isinstance(value, (list, tuple, set)):
            kind = type(value).__name__
            items = sorted(value, key=repr) if isinstance(value, set) else value
            return {f"__{kind}__": [self.encode(v) for v in items]}
        if isinstance(value, AvalancheDataset) and len(value) == 0:
            return {"__emptydata__": True}
        rows = bank_rows(value) if hasattr(value, "_data_attributes") else None
        if rows is not None:
            return {"__bankdata__": [[bank.name, self.tensor(indices)] for bank, indices in rows]}
        cls = type(value)
        if self.allowed.get(_type_name(cls)) is cls and hasattr(value, "__dict__"):
            return {"__object__": _type_name(cls), "state": self.encode_attributes(value)}
        raise UnsupportedState(
            f"cannot checkpoint a {cls.__module__}.{cls.__qualname__} (not in the allow-list; "
            f"register it with cl_bench.checkpoint.state_type)"
        )

    def encode_attributes(self, obj: Any) -> dict:
        encoded = {}
        for name, value in vars(obj).items():
            if name in TRANSIENT:
                continue
            try:
                encoded[name] = self.encode(value)
            except UnsupportedState as error:
                raise UnsupportedState(f"{type(obj).__name__}.{name}: {error}") from None
        return encoded


class _Decoder:
    def __init__(self, tensors: dict[str, torch.Tensor], module_template: nn.Module, device: torch.device):
        self.tensors = tensors
        self.module_template = module_template
        self.device = device
        self.allowed = allowed_state_types()

    def tensor(self, key: Any) -> torch.Tensor:
        if not isinstance(key, str) or key not in self.tensors:
            raise CorruptCheckpoint(f"it names a tensor {key!r} the tensors file does not hold")
        return self.tensors[key]

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            raise CorruptCheckpoint("a bare list where an encoded value belongs")
        if not isinstance(value, dict):
            return value
        if "__tensor__" in value:
            return self.tensor(value["__tensor__"])
        if "__float__" in value:
            if value["__float__"] not in NON_FINITE:
                raise CorruptCheckpoint(f"{value['__float__']!r} is not a non-finite float")
            return NON_FINITE[value["__float__"]]
        if "__param__" in value:
            data = self.tensor(value["__param__"]).to(self.device)
            return ParamData(str(value["name"]), data.shape, init_tensor=data, device=self.device)
        if "__device__" in value:
            return torch.device(str(value["__device__"]))
        if "__module__" in value:
            module = copy.deepcopy(self.module_template)
            module.load_state_dict({str(k): self.tensor(v) for k, v in value["__module__"].items()})
            return module.to(self.device)
        if "__defaultdict__" in value:
            factory = {"dict": dict, "list": list, "set": set}[value["__defaultdict__"]]
            return defaultdict(factory, ((self.decode(k), self.decode(v)) for k, v in value["items"]))
        if "__dict__" in value:
            return {self.decode(k): self.decode(v) for k, v in value["__dict__"]}
        for kind, builder in (("list", list), ("tuple", tuple), ("set", set)):
            if f"__{kind}__" in value:
                return builder(self.decode(v) for v in value[f"__{kind}__"])
        if "__emptydata__" in value:
            return AvalancheDataset([])
        if "__bankdata__" in value:
            parts = [bank_named(str(name)).dataset(self.tensor(key).tolist()) for name, key in value["__bankdata__"]]
            dataset = parts[0]
            for part in parts[1:]:
                dataset = dataset.concat(part)
            return dataset
        if "__object__" in value:
            cls: Optional[type[object]] = (
                self.allowed.get(value["__object__"]) if isinstance(value["__object__"], str) else None
            )
            if cls is None:
                # looked up, never imported: a name outside the allow-list is refused, whatever it names
                raise CorruptCheckpoint(
                    f"it names the class {str(value['__object__'])[:80]!r}, which is not one the suite writes"
                )
            obj = cls.__new__(cls)
            self.restore_attributes(obj, value["state"])
            return obj
        raise CorruptCheckpoint(f"unrecognised entry {sorted(map(str, value))[:3]}")

    def restore_attributes(self, obj: Any, encoded: Any, allowed_names: Optional[Sequence[str]] = None) -> None:
        if not isinstance(encoded, dict):
            raise CorruptCheckpoint(f"the state of a {type(obj).__name__} is not a mapping")
        for name, value in encoded.items():
            if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
                raise CorruptCheckpoint(f"attribute name {str(name)[:40]!r} is not one the suite writes")
            if allowed_names is not None and name not in allowed_names:
                raise CorruptCheckpoint(f"{type(obj).__name__} does not declare a checkpointed attribute {name!r}")
            setattr(obj, name, self.decode(value))


def rng_state() -> dict:
    # legacy=True (the default) returns the tuple form; numpy's stubs match the dict overload first
    numpy_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))


def _plugin_state(encoder: _Encoder, plugin) -> dict:
    # the evaluation plugin only logs; a stateless plugin (the progress bar, the divergence guard) declares none
    if isinstance(plugin, (EvaluationPlugin, StatelessPlugin)):
        return {}
    return encoder.encode_attributes(plugin)


def save(directory: Path, strategy, progress: dict, template_attributes: tuple[str, ...] = ()) -> None:
    """Write the strategy's state and the runner's ``progress`` (JSON-able + tensors) atomically as a pair.

    ``template_attributes``: the attributes of the template itself that hold learning state (the strategy's
    declared ``StrategyTraits.checkpoint_attributes``); :func:`load` must be given the same names."""
    encoder = _Encoder()
    structure = {
        "format": FORMAT,
        "model": encoder.encode(strategy.model),
        "optimizer": encoder.encode(strategy.optimizer.state_dict()),
        "plugins": [_plugin_state(encoder, plugin) for plugin in strategy.plugins],
        # state a template keeps on itself rather than in a plugin (e.g. Cumulative's union dataset)
        "template": {name: encoder.encode(getattr(strategy, name)) for name in template_attributes},
        "rng": encoder.encode(rng_state()),
        "progress": encoder.encode(progress),
    }
    directory = Path(directory)
    staging = records.temporary_path(directory / LEGACY_TENSORS)
    try:
        save_file(encoder.tensors, str(staging))
        digest = file_digest(staging, "sha256")
        tensors_name = f"checkpoint.{digest[:16]}.safetensors"
        os.replace(staging, directory / tensors_name)
    finally:
        staging.unlink(missing_ok=True)
    structure["tensors"] = {"file": tensors_name, "sha256": digest}
    # one rename switches from the previous pair to this one
    records.atomic_write_text(directory / CHECKPOINT_STRUCTURE, records.strict_json(structure))
    for stale in _tensor_files(directory):
        if stale.name != tensors_name:
            stale.unlink(missing_ok=True)


def _tensor_files(directory: Path) -> list[Path]:
    return [
        path
        for path in Path(directory).glob("checkpoint.*safetensors")
        if TENSORS_NAME.fullmatch(path.name) or path.name == LEGACY_TENSORS
    ]


def exists(directory: Path) -> bool:
    """True when ``directory`` holds a checkpoint structure file (load checks that its tensors match)."""
    return (Path(directory) / CHECKPOINT_STRUCTURE).is_file()


def remove(directory: Path) -> None:
    """Delete the checkpoint of ``directory`` (the run is complete)."""
    (Path(directory) / CHECKPOINT_STRUCTURE).unlink(missing_ok=True)
    for path in _tensor_files(directory):
        path.unlink(missing_ok=True)


def load(directory: Path, strategy, template_attributes: tuple[str, ...] = ()) -> dict:
    """Restore the strategy (model, plugins, the ``template_attributes`` it declares) and the RNG; return the
    runner's saved progress.

    A UserError (one line, naming the file and the fix) for a checkpoint that is missing a part, torn,
    garbled, of another strategy or shape, or that names anything the suite does not write.
    """
    directory = Path(directory)
    structure_path = directory / CHECKPOINT_STRUCTURE
    try:
        structure, tensors = _read_pair(directory)
        return _restore(structure, tensors, strategy, tuple(template_attributes))
    except UserError:
        raise
    except Exception as error:  # whatever a damaged file makes the decoder trip on, it is the file's fault
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"cannot resume from the checkpoint {structure_path}: {reason[:300]}; start the run over with --force"
        ) from None


def _read_pair(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        structure = records.read_json(directory / CHECKPOINT_STRUCTURE)
    except UnicodeDecodeError:
        raise CorruptCheckpoint("it is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise CorruptCheckpoint(f"it is not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(structure, dict) or structure.get("format") != FORMAT:
        raise CorruptCheckpoint(f"it is not a format-{FORMAT} checkpoint (written by another cl-bench version?)")
    reference = structure.get("tensors")
    if (
        not isinstance(reference, dict)
        or not isinstance(reference.get("file"), str)
        or not TENSORS_NAME.fullmatch(reference["file"])
        or not isinstance(reference.get("sha256"), str)
    ):
        raise CorruptCheckpoint("its reference to the tensors file is malformed")
    tensors_path = directory / reference["file"]
    if not tensors_path.is_file():
        raise CorruptCheckpoint(f"its tensors file {reference['file']} is missing")
    if file_digest(tensors_path, "sha256") != reference["sha256"]:
        raise CorruptCheckpoint(
            f"the tensors file {reference['file']} does not match its SHA-256 (torn, garbled or replaced)"
        )
    return structure, load_file(str(tensors_path))


def _restore(structure: dict, tensors: dict[str, torch.Tensor], strategy, template_attributes: tuple[str, ...]) -> dict:
    decoder = _Decoder(tensors, strategy.model, strategy.device)
    strategy.model.load_state_dict({str(k): decoder.tensor(v) for k, v in structure["model"]["__module__"].items()})
    if len(structure["plugins"]) != len(strategy.plugins):
        raise CorruptCheckpoint("it was written by a strategy with a different set of plugins")
    for plugin, encoded in zip(strategy.plugins, structure["plugins"]):
        decoder.restore_attributes(plugin, encoded)
        if hasattr(plugin, "buffer_dliter") and getattr(plugin, "buffers", None):
            _rebuild_agem_loader(plugin)
    decoder.restore_attributes(strategy, structure["template"], allowed_names=template_attributes)
    if structure.get("optimizer") is not None:
        restore_optimizer(strategy, decoder.decode(structure["optimizer"]))
    progress = decoder.decode(structure["progress"])
    if not isinstance(progress, dict):
        raise CorruptCheckpoint("its progress block is not a mapping")
    set_rng_state(decoder.decode(structure["rng"]))
    return progress


def restore_optimizer(strategy, state: dict) -> None:
    """Load a saved optimizer state and tell Avalanche the optimizer is already set up.

    Avalanche resets the optimizer state on the first ``train`` call of a strategy
    (``optimized_param_id is None``) and keeps it on later calls; a resumed run continues mid-stream,
    so it must keep the restored state. A strategy that builds a differently shaped optimizer of its
    own at every experience (a state that does not fit) starts that experience fresh anyway.
    """
    try:
        strategy.optimizer.load_state_dict(state)
    except (ValueError, KeyError):
        return
    strategy.optimized_param_id = dict(strategy.model.named_parameters())


def _rebuild_agem_loader(plugin) -> None:
    """A-GEM keeps an infinite loader over its memory; rebuild it from the restored buffers."""
    from avalanche.benchmarks.utils.data_loader import GroupBalancedInfiniteDataLoader

    plugin.buffer_dataloader = GroupBalancedInfiniteDataLoader(
        plugin.buffers,
        batch_size=plugin.sample_size // len(plugin.buffers),
        num_workers=0,
        pin_memory=False,
        persistent_workers=False,
    )
    plugin.buffer_dliter = iter(plugin.buffer_dataloader)
