"""Images of a scenario's datasets as model inputs, for attacks that edit or measure individual samples.

Two kinds of data reach an attack. Tensor-resident scenarios (Fashion-MNIST, the digits) keep every sample in a
:class:`cl_bench.tensor_data.TensorBank`: loading rows is slicing. Per-item scenarios (CIFAR, ImageNet-R at
224 px) decode and transform one sample at a time and would not fit in memory as one tensor: :class:`ImageSet`
loads only the rows asked for, through the dataset's own transform (the "eval" group for measurement), so an
attack can stream a test set in batches. :func:`with_edited_items` builds a poisoned per-item experience: the
chosen samples are edited after the training transform (a trigger pasted on the resized, augmented and
normalised image the model sees) or replaced by a fixed tensor, and may get a new label; every other sample
is the original dataset's own.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch.utils.data import Dataset

from cl_bench.tensor_data import gather


class ImageSet:
    """The samples of one or more Avalanche datasets (concatenated in order): labels up front, images on demand."""

    def __init__(self, datasets: Sequence):
        self.parts = []
        targets, task_labels, offsets = [], [], [0]
        for dataset in datasets:
            tensors = gather(dataset)
            if tensors is not None:
                targets.append(tensors[1])
                task_labels.append(tensors[2])
            else:  # per-item: Avalanche keeps the labels as data attributes, no image is decoded
                targets.append(torch.as_tensor(list(dataset.targets), dtype=torch.long))
                task_labels.append(torch.as_tensor(list(dataset.targets_task_labels), dtype=torch.long))
            self.parts.append((dataset, tensors))
            offsets.append(offsets[-1] + len(targets[-1]))
        self.targets = torch.cat(targets) if targets else torch.empty(0, dtype=torch.long)
        self.task_labels = torch.cat(task_labels) if task_labels else torch.empty(0, dtype=torch.long)
        self.offsets = torch.tensor(offsets)

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def tensor_resident(self) -> bool:
        return all(tensors is not None for _, tensors in self.parts)

    def load(self, rows: torch.Tensor) -> torch.Tensor:
        """The images of ``rows`` (indices into the concatenation), in that order."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        part_of_row = torch.bucketize(rows, self.offsets[1:], right=True)
        images: list[Optional[torch.Tensor]] = [None] * len(rows)
        for part in part_of_row.unique().tolist():
            (dataset, tensors), here = self.parts[part], (part_of_row == part).nonzero().flatten()
            local = rows[here] - self.offsets[part]
            if tensors is not None:
                loaded = tensors[0][local]
            else:
                loaded = torch.stack([torch.as_tensor(dataset[int(index)][0]) for index in local.tolist()])
            for position, image in zip(here.tolist(), loaded):
                images[position] = image
        if not images:
            return torch.empty(0)
        return torch.stack(images)  # type: ignore[arg-type]

    def batches(self, rows: torch.Tensor, size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(offset into ``rows``, images) for consecutive chunks of ``rows`` of at most ``size``."""
        for start in range(0, len(rows), size):
            yield start, self.load(rows[start : start + size])


class _Indices(Dataset):
    """Sample ``i`` is ``(i, targets[i])``: the image is loaded by the transform group (:class:`_LoadEdited`)."""

    def __init__(self, targets: torch.Tensor):
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return index, int(self.targets[index])


class _LoadEdited:
    """A transform group's function: sample ``index`` of ``view`` (the original dataset with that group's
    transform), edited when ``index`` is in ``edits``."""

    def __init__(self, view, edits: dict[int, Callable[[torch.Tensor], torch.Tensor]]):
        self.view = view
        self.edits = edits

    def __call__(self, index: int) -> torch.Tensor:
        image = torch.as_tensor(self.view[index][0])
        edit = self.edits.get(index)
        return image if edit is None else edit(image)


class ReplaceImage:
    """An image edit: the sample becomes ``image`` (a fixed tensor, e.g. an optimised poison)."""

    def __init__(self, image: torch.Tensor):
        self.image = image

    def __call__(self, _: torch.Tensor) -> torch.Tensor:
        return self.image.clone()


def with_edited_items(
    experience,
    edits: dict[int, Callable[[torch.Tensor], torch.Tensor]],
    targets: Optional[torch.Tensor] = None,
):
    """A copy of a per-item ``experience`` whose sample ``i`` in ``edits`` is ``edits[i](image)`` (the image after
    the dataset's own transform of the current group: the training transform while training, the eval transform
    under ``.eval()``) and whose labels are ``targets`` (default: unchanged); same samples in the same order."""
    from avalanche.benchmarks.utils import DataAttribute
    from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset
    from avalanche.benchmarks.utils.transform_groups import TransformGroups

    original = ImageSet([experience.dataset])
    new_targets = original.targets.clone() if targets is None else targets.clone()
    if new_targets.shape != original.targets.shape:
        raise ValueError(f"poisoned targets have shape {tuple(new_targets.shape)}, expected {len(original)}")
    attributes = [
        DataAttribute(new_targets.tolist(), "targets"),
        DataAttribute(original.task_labels.tolist(), "targets_task_labels", use_in_getitem=True),
    ]
    groups = {
        "train": _LoadEdited(experience.dataset.train(), edits),
        "eval": _LoadEdited(experience.dataset.eval(), edits),
    }
    edited = TaskAwareSupervisedClassificationDataset(
        [_Indices(new_targets)], data_attributes=attributes, transform_groups=TransformGroups(groups)
    )
    poisoned = copy.copy(experience)
    poisoned._dataset = edited
    return poisoned
