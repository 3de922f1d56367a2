"""Tensor-only checkpoints of a strategy between experiences, for ``--resume``.

A checkpoint is two files: ``checkpoint.safetensors`` (every tensor) and ``checkpoint.json``
(the structure that says where each tensor goes, plus plain numbers). Nothing is pickled.

What is saved: the model's state dict, the optimizer's state (Avalanche 0.6 keeps it across
experiences: momentum buffers, Adam moments), the state of every plugin of the strategy (EWC
importances, SI path integrals, replay buffers, LwF's previous model, A-GEM/GEM memories,
Avalanche's clock ...) walked generically through their attributes, the RNG states, and the
runner's own progress (accuracy rows, timings). Supported attribute values: tensors, Avalanche
``ParamData``, ``nn.Module`` (restored into a copy of the strategy's model), containers,
scalars, tensor-bank Avalanche datasets (saved as bank name + row indices) and plain objects
of Avalanche/cl-bench classes (restored attribute by attribute). Attributes that are only
caches of other state (data loaders, iterators) are listed in ``TRANSIENT`` and rebuilt.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.utils import ParamData
from safetensors.torch import load_file, save_file
from torch import nn

from cl_bench.tensor_data import bank_rows, bank_named

CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_STRUCTURE = "checkpoint.json"
ALLOWED_MODULE_PREFIXES = ("avalanche.", "cl_bench.", "strategies.", "attacks.", "evaluators.")
# caches rebuilt from other state: A-GEM's memory loader and its iterator
TRANSIENT = {"buffer_dataloader", "buffer_dliter"}


class UnsupportedState(TypeError):
    pass


class _Encoder:
    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}

    def tensor(self, value: torch.Tensor) -> str:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = value.detach().cpu().contiguous().clone()
        return key

    def encode(self, value: Any) -> Any:
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
            return {"__defaultdict__": value.default_factory.__name__,
                    "items": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
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
        if cls.__module__.startswith(ALLOWED_MODULE_PREFIXES) and hasattr(value, "__dict__"):
            return {"__object__": f"{cls.__module__}:{cls.__qualname__}", "state": self.encode_attributes(value)}
        raise UnsupportedState(f"cannot checkpoint a {cls.__module__}.{cls.__qualname__}")

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

    def decode(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if "__tensor__" in value:
            return self.tensors[value["__tensor__"]]
        if "__param__" in value:
            data = self.tensors[value["__param__"]].to(self.device)
            return ParamData(value["name"], data.shape, init_tensor=data, device=self.device)
        if "__device__" in value:
            return torch.device(value["__device__"])
        if "__module__" in value:
            module = copy.deepcopy(self.module_template)
            module.load_state_dict({k: self.tensors[v] for k, v in value["__module__"].items()})
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
            parts = [bank_named(name).dataset(self.tensors[key].tolist()) for name, key in value["__bankdata__"]]
            dataset = parts[0]
            for part in parts[1:]:
                dataset = dataset.concat(part)
            return dataset
        if "__object__" in value:
            module_name, qualname = value["__object__"].split(":")
            if not module_name.startswith(ALLOWED_MODULE_PREFIXES):
                raise ValueError(f"checkpoint names a class outside the allowed packages: {module_name}")
            cls: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                cls = getattr(cls, part)
            obj = cls.__new__(cls)
            self.restore_attributes(obj, value["state"])
            return obj
        raise ValueError(f"unrecognised checkpoint entry {sorted(value)[:3]}")

    def restore_attributes(self, obj: Any, encoded: dict) -> None:
        for name, value in encoded.items():
            setattr(obj, name, self.decode(value))


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))


def _plugin_state(encoder: _Encoder, plugin) -> dict:
    # the evaluation plugin only logs and the progress bar holds no learning state
    if isinstance(plugin, EvaluationPlugin) or getattr(plugin, "stateless", False):
        return {}
    return encoder.encode_attributes(plugin)


def save(directory: Path, strategy, progress: dict) -> None:
    """Write the strategy's state and the runner's ``progress`` (JSON-able + tensors) atomically."""
    encoder = _Encoder()
    structure = {
        "model": encoder.encode(strategy.model),
        "optimizer": encoder.encode(strategy.optimizer.state_dict()),
        "plugins": [_plugin_state(encoder, plugin) for plugin in strategy.plugins],
        # state a template keeps on itself rather than in a plugin (e.g. Cumulative's union dataset)
        "template": {name: encoder.encode(getattr(strategy, name))
                     for name in getattr(strategy, "checkpoint_attributes", ())},
        "rng": encoder.encode(rng_state()),
        "progress": encoder.encode(progress),
    }
    directory = Path(directory)
    tensors_tmp = directory / (CHECKPOINT_TENSORS + ".tmp")
    structure_tmp = directory / (CHECKPOINT_STRUCTURE + ".tmp")
    save_file(encoder.tensors, str(tensors_tmp))
    structure_tmp.write_text(json.dumps(structure))
    # the structure file is renamed last: its presence means the pair is complete
    os.replace(tensors_tmp, directory / CHECKPOINT_TENSORS)
    os.replace(structure_tmp, directory / CHECKPOINT_STRUCTURE)


def exists(directory: Path) -> bool:
    return (Path(directory) / CHECKPOINT_STRUCTURE).is_file() and (Path(directory) / CHECKPOINT_TENSORS).is_file()


def load(directory: Path, strategy) -> dict:
    """Restore the strategy (model, plugins) and the RNG; return the runner's saved progress."""
    directory = Path(directory)
    structure = json.loads((directory / CHECKPOINT_STRUCTURE).read_text())
    tensors = load_file(str(directory / CHECKPOINT_TENSORS))
    decoder = _Decoder(tensors, strategy.model, strategy.device)
    strategy.model.load_state_dict({k: tensors[v] for k, v in structure["model"]["__module__"].items()})
    if len(structure["plugins"]) != len(strategy.plugins):
        raise ValueError("checkpoint was written by a strategy with a different set of plugins")
    for plugin, encoded in zip(strategy.plugins, structure["plugins"]):
        decoder.restore_attributes(plugin, encoded)
        if hasattr(plugin, "buffer_dliter") and getattr(plugin, "buffers", None):
            _rebuild_agem_loader(plugin)
    decoder.restore_attributes(strategy, structure["template"])
    if structure.get("optimizer") is not None:
        restore_optimizer(strategy, decoder.decode(structure["optimizer"]))
    progress = decoder.decode(structure["progress"])
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
        plugin.buffers, batch_size=plugin.sample_size // len(plugin.buffers), num_workers=0,
        pin_memory=False, persistent_workers=False)
    plugin.buffer_dliter = iter(plugin.buffer_dataloader)
