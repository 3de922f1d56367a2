"""Tensor-resident datasets that still look like Avalanche datasets.

Avalanche's per-item path (``__getitem__`` + collate for every sample) costs about ten times the
compute of a small model on a 2-core CPU. Small scenarios therefore keep their samples in one
:class:`TensorBank` (inputs, targets, task labels as whole tensors) and expose each experience
as a real ``AvalancheDataset`` whose samples carry two extra data attributes, ``bank_id`` and
``bank_index``. Avalanche propagates data attributes through ``subset`` and ``concat``, so any
dataset derived from bank rows (a replay buffer, the union of experiences used by joint
training, a poisoned copy registered as a new bank) can be turned back into index tensors and
batched by slicing. Datasets that do not carry those attributes (large image datasets read
through torchvision) go through the ordinary ``DataLoader``.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from avalanche.benchmarks.utils import DataAttribute
from avalanche.benchmarks.utils.classification_dataset import (
    TaskAwareSupervisedClassificationDataset,
)

# weak: a bank lives as long as some dataset still refers to it, not for the whole process
_BANKS: "weakref.WeakValueDictionary[int, TensorBank]" = weakref.WeakValueDictionary()
_BANKS_BY_NAME: "weakref.WeakValueDictionary[str, TensorBank]" = weakref.WeakValueDictionary()
_bank_ids = itertools.count()


class _BankRows(Dataset):
    """Per-item view of a bank, used only where Avalanche insists on indexing one sample."""

    def __init__(self, bank: "TensorBank"):
        self.bank = bank

    def __len__(self) -> int:
        return len(self.bank.targets)

    def __getitem__(self, index: int):
        return self.bank.inputs[index], int(self.bank.targets[index])


@dataclass
class TensorBank:
    """All samples of one data source held as tensors (inputs, int64 targets, int64 task labels).

    ``name`` identifies the bank across processes (checkpoints store bank names, not ids): a
    scenario names its banks (e.g. "train", "test"), and the most recent bank of a name wins.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    task_labels: torch.Tensor
    name: str = ""
    bank_id: int = -1
    _full_dataset: Optional[TaskAwareSupervisedClassificationDataset] = None

    def __post_init__(self) -> None:
        if not (len(self.inputs) == len(self.targets) == len(self.task_labels)):
            raise ValueError("inputs, targets and task_labels must have the same length")
        self.targets = self.targets.long()
        self.task_labels = self.task_labels.long()
        self.bank_id = next(_bank_ids)
        self.name = self.name or f"bank{self.bank_id}"
        _BANKS[self.bank_id] = self
        _BANKS_BY_NAME[self.name] = self

    def dataset(self, indices: Optional[Sequence[int]] = None) -> TaskAwareSupervisedClassificationDataset:
        """An Avalanche dataset over the given rows of this bank (all rows by default)."""
        if self._full_dataset is None:
            n = len(self.targets)
            attributes = [
                DataAttribute(self.targets.tolist(), "targets"),
                DataAttribute(self.task_labels.tolist(), "targets_task_labels", use_in_getitem=True),
                DataAttribute([self.bank_id] * n, "bank_id"),
                DataAttribute(list(range(n)), "bank_index"),
            ]
            self._full_dataset = TaskAwareSupervisedClassificationDataset([_BankRows(self)], data_attributes=attributes)
        if indices is None:
            return self._full_dataset
        return self._full_dataset.subset(torch.as_tensor(indices, dtype=torch.long).tolist())


def bank_named(name: str) -> "TensorBank":
    """The most recently created bank called ``name``."""
    return _BANKS_BY_NAME[name]


def bank_rows(dataset) -> Optional[list[tuple["TensorBank", torch.Tensor]]]:
    """The (bank, row indices) groups behind an Avalanche dataset, or None if it is not bank-backed.

    Groups keep the dataset's sample order within each bank.
    """
    attributes = getattr(dataset, "_data_attributes", {})
    if "bank_id" not in attributes or "bank_index" not in attributes:
        return None
    # cache on the attribute objects: Avalanche shares them between a dataset and its
    # .train()/.eval() copies, which are new objects on every experience
    index_attribute, id_attribute = attributes["bank_index"], attributes["bank_id"]
    cached = getattr(index_attribute, "_cl_bench_rows", None)
    if cached is not None and cached[0] is id_attribute:
        return cached[1]
    bank_ids, bank_indices = _attribute_values(id_attribute), _attribute_values(index_attribute)
    groups = [(_BANKS[bank_id], bank_indices[bank_ids == bank_id]) for bank_id in torch.unique(bank_ids).tolist()]
    index_attribute._cl_bench_rows = (id_attribute, groups)
    return groups


def _attribute_values(attribute) -> torch.Tensor:
    """All values of an integer data attribute as one tensor.

    Fast path through Avalanche 0.6's FlatData layout (a list of leaf sequences plus an index
    list): one concatenation and one gather instead of a Python call per sample. Falls back to
    element-wise iteration for any other layout.
    """
    flat = attribute.data
    try:
        if flat._indices is not None and len(flat._datasets) == 1 and len(flat._indices) * 8 < len(flat._datasets[0]):
            # a small subset of one big leaf (an online mini-batch): read its rows, not the whole leaf
            leaf = flat._datasets[0]
            return torch.as_tensor([leaf[i] for i in flat._indices], dtype=torch.long)
        leaves = [torch.as_tensor(leaf, dtype=torch.long) for leaf in flat._datasets]
        values = torch.cat(leaves) if leaves else torch.empty(0, dtype=torch.long)
        if flat._indices is not None:
            values = values[torch.as_tensor(list(flat._indices), dtype=torch.long)]
        if len(values) == len(attribute):
            return values
    except (AttributeError, TypeError, ValueError, RuntimeError):
        pass
    return torch.as_tensor(list(flat), dtype=torch.long)


def gather(dataset) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """All of a bank-backed dataset as (inputs, targets, task_labels) tensors, or None."""
    groups = bank_rows(dataset)
    if groups is None:
        return None
    if len(groups) == 1:
        bank, rows = groups[0]
        return bank.inputs[rows], bank.targets[rows], bank.task_labels[rows]
    parts = [(bank.inputs[rows], bank.targets[rows], bank.task_labels[rows]) for bank, rows in groups]
    return tuple(torch.cat(column) for column in zip(*parts))  # type: ignore[return-value]


class SliceLoader:
    """Mini-batches [x, y, t] of a tensor triple, shuffled per epoch with a seeded generator.

    Iterating it once is one epoch; each iteration draws a fresh permutation from the global torch
    RNG (seeded by the runner) so that runs are reproducible and resumable.
    """

    def __init__(
        self,
        tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
    ):
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.tensors[1])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        inputs, targets, task_labels = self.tensors
        n = len(targets)
        if self.shuffle:
            order = torch.randperm(n)
            inputs, targets, task_labels = inputs[order], targets[order], task_labels[order]
        for start in range(0, n, self.batch_size):
            stop = start + self.batch_size
            if stop > n and self.drop_last:
                return
            yield [inputs[start:stop], targets[start:stop], task_labels[start:stop]]


def make_loader(dataset, batch_size: int, shuffle: bool, drop_last: bool = False, num_workers: int = 0):
    """A slicing loader for bank-backed datasets, Avalanche's ordinary DataLoader otherwise (with
    ``num_workers`` worker processes: only per-item datasets use them)."""
    tensors = gather(dataset)
    if tensors is not None:
        return SliceLoader(tensors, batch_size, shuffle, drop_last)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        collate_fn=getattr(dataset, "collate_fn", None),
        num_workers=num_workers,
    )
