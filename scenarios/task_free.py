"""Task-free streams: one pass over mini-batches whose task boundaries the learner never sees.

``task_free_fmnist`` cuts Fashion-MNIST into hidden tasks and streams them once, mini-batch by
mini-batch. The runner (``cl_bench.runner``, online loop) hands the strategy one mini-batch at a time as
a bare Avalanche experience: task label 0, no task id, no boundary flag, no origin experience. Only the
runner knows where the hidden boundaries are; it uses them for the accuracy matrix (one row per hidden
task, evaluated on each hidden task's test classes) and for checkpoints, and it evaluates the **anytime
accuracy** (accuracy on the test images of every class seen so far in the stream) every
``anytime_eval_every`` stream samples; its mean over the stream is ``a_auc`` (Si-Blurry's A_auc, Moon et
al., ICCV 2023, "Online Class Incremental Learning on Stochastic Blurry Task Boundary via Mask and Visual
Prompt Tuning").

Modes (``scenario.mode``):

* ``disjoint``: class-incremental; hidden task t holds every training image of its classes (consecutive
  chunks of the class order, ``n_tasks`` equal chunks), in a random order drawn from the run seed (the
  Online-LoRA "Disjoint" setting: natural class order unless ``shuffle_classes``).
* ``blurry`` (Si-Blurry-style): the classes are split, by the run seed, into disjoint classes (a share
  ``disjoint_class_ratio`` = N, default 0.5) and blurry classes (the rest). Each group is dealt into the
  ``n_tasks`` tasks in equal chunks; a task holds its disjoint and its blurry classes' images, except that a
  share ``blurry_sample_ratio`` = M (default 0.1) of every blurry class's images is moved to tasks drawn
  uniformly among the other tasks. So disjoint classes appear in one task only, blurry classes mostly in
  their home task and a little everywhere else.

Suite choices (Si-Blurry draws stochastic task sizes; here they are equal, so every run of a seed has the
same number of classes per task; both the disjoint and the blurry groups must divide into ``n_tasks``):

* Mini-batches never straddle a hidden boundary (as in the official Online-LoRA loop, which iterates over
  tasks to build the stream): a task's last mini-batch may be smaller.
* Test experience t = the test images of the classes whose home task is t.
* The anytime evaluation set is ``anytime_test_per_class`` test images per class (a fixed seeded choice,
  the same for every run), to keep frequent evaluation cheap; 0 means the whole test set.
* ``holdout_pretrain_pool`` (default true) leaves the pre-training pool of ``cl-bench pretrain`` out of the
  stream (``cl_bench/pretrain_pool.py``), because these streams are meant for pre-trained backbones.
* Pixels in [0, 1], no normalisation, no augmentation (as the other Fashion-MNIST scenarios).
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch

from cl_bench import pretrain_pool
from cl_bench.config import ComponentConfig, param
from cl_bench.data import fmnist_dir, load_fmnist
from cl_bench.errors import UserError
from cl_bench.registry import SCENARIOS
from cl_bench.scenario import OnlineStream, ScenarioData, tensor_scenario
from cl_bench.tensor_data import TensorBank

FMNIST_CLASSES = 10
ANYTIME_SEED = 0  # fixed: every run evaluates its anytime accuracy on the same test images


@dataclass
class TaskFreeFMNISTConfig(ComponentConfig):
    mode: str = param("disjoint", "disjoint (class-incremental) or blurry (Si-Blurry-style boundaries)",
                      choices=("disjoint", "blurry"))
    n_tasks: int = param(5, "hidden tasks in the stream", low=1)
    shuffle_classes: bool = param(False, "disjoint mode: order classes by a permutation drawn from the run seed "
                                         "(default: natural order, as Online-LoRA's disjoint setting)")
    disjoint_class_ratio: float = param(0.5, "blurry mode: share N of classes that appear in one task only "
                                             "(Si-Blurry: 0.5)", low=0.0, high=1.0)
    blurry_sample_ratio: float = param(0.1, "blurry mode: share M of each blurry class's images moved to other "
                                            "tasks (Si-Blurry: 0.1)", low=0.0, high=1.0, high_open=True)
    stream_batch_size: int = param(64, "images per incoming mini-batch (Online-LoRA: 64)", low=1)
    anytime_eval_every: int = param(2000, "evaluate the anytime accuracy every this many stream samples", low=1)
    anytime_test_per_class: int = param(200, "test images per class in the anytime evaluation (0: all)", low=0)
    holdout_pretrain_pool: bool = param(True, "leave the pre-training pool of `cl-bench pretrain` out of the stream")

    def validate(self) -> None:
        if self.anytime_eval_every < self.stream_batch_size:
            raise UserError(f"scenario.anytime_eval_every ({self.anytime_eval_every}) must be at least "
                            f"scenario.stream_batch_size ({self.stream_batch_size}): the anytime accuracy is "
                            f"measured between mini-batches")
        if self.mode == "disjoint" and FMNIST_CLASSES % self.n_tasks:
            raise UserError(f"scenario.n_tasks must divide the {FMNIST_CLASSES} classes in disjoint mode, "
                            f"got {self.n_tasks}")
        if self.mode == "blurry":
            if self.n_tasks < 2:
                raise UserError("scenario.n_tasks must be at least 2 in blurry mode (samples leak between tasks)")
            n_disjoint = round(FMNIST_CLASSES * self.disjoint_class_ratio)
            if n_disjoint % self.n_tasks or (FMNIST_CLASSES - n_disjoint) % self.n_tasks:
                raise UserError(f"blurry mode deals {n_disjoint} disjoint and {FMNIST_CLASSES - n_disjoint} blurry "
                                f"classes into {self.n_tasks} equal tasks; choose scenario.disjoint_class_ratio and "
                                f"scenario.n_tasks so that both divide (e.g. ratio 0.5 with 5 tasks)")


def hidden_tasks(labels: np.ndarray, config: TaskFreeFMNISTConfig, seed: int
                 ) -> tuple[list[np.ndarray], list[list[int]]]:
    """(training rows of each hidden task in stream order, home classes of each task)."""
    rng = np.random.default_rng(seed)
    classes = np.arange(FMNIST_CLASSES)
    if config.mode == "disjoint":
        order = rng.permutation(classes) if config.shuffle_classes else classes
        home = [sorted(chunk.tolist()) for chunk in np.split(order, config.n_tasks)]
        task_rows = [np.flatnonzero(np.isin(labels, chunk)) for chunk in home]
    else:
        order = rng.permutation(classes)
        n_disjoint = round(FMNIST_CLASSES * config.disjoint_class_ratio)
        disjoint_chunks = np.split(order[:n_disjoint], config.n_tasks)
        blurry_chunks = np.split(order[n_disjoint:], config.n_tasks)
        home = [sorted(d.tolist() + b.tolist()) for d, b in zip(disjoint_chunks, blurry_chunks)]
        parts: list[list[np.ndarray]] = [[np.flatnonzero(np.isin(labels, chunk))] for chunk in disjoint_chunks]
        for task, chunk in enumerate(blurry_chunks):
            for label in chunk.tolist():
                rows = rng.permutation(np.flatnonzero(labels == label))
                n_moved = int(round(len(rows) * config.blurry_sample_ratio))
                parts[task].append(rows[n_moved:])
                others = [t for t in range(config.n_tasks) if t != task]
                destinations = rng.choice(others, size=n_moved)
                for other in others:
                    parts[other].append(rows[:n_moved][destinations == other])
        task_rows = [np.concatenate(rows) for rows in parts]
    # the order inside each task is the stream order
    return [rng.permutation(rows) for rows in task_rows], home


def anytime_rows(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Sorted test rows of the anytime evaluation set: ``per_class`` per class (all when 0)."""
    if per_class == 0:
        return np.arange(len(labels))
    rng = np.random.default_rng(ANYTIME_SEED)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:per_class] for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def _to_inputs(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).unsqueeze(1)


@SCENARIOS.register("task_free_fmnist", config=TaskFreeFMNISTConfig, default_model="mlp", requires_data="fmnist",
                    train_defaults={"epochs": 1, "batch_size": 64, "lr": 0.01, "momentum": 0.0})
def build_task_free_fmnist(config: TaskFreeFMNISTConfig, seed: int) -> ScenarioData:
    """Task-free Fashion-MNIST: one pass over 64-image mini-batches, hidden tasks, disjoint or blurry boundaries."""
    directory = fmnist_dir()
    arrays = load_fmnist(directory)
    train_rows = (pretrain_pool.stream_indices(arrays.train_labels) if config.holdout_pretrain_pool
                  else np.arange(len(arrays.train_labels)))
    labels = arrays.train_labels[train_rows]
    task_rows, home = hidden_tasks(labels, config, seed)
    train_parts = [(_to_inputs(arrays.train_images[train_rows[rows]]), torch.from_numpy(labels[rows]))
                   for rows in task_rows]
    test_parts = []
    for classes in home:
        rows = np.flatnonzero(np.isin(arrays.test_labels, classes))
        test_parts.append((_to_inputs(arrays.test_images[rows]), torch.from_numpy(arrays.test_labels[rows])))
    anytime = anytime_rows(arrays.test_labels, config.anytime_test_per_class)
    stream_size = sum(len(rows) for rows in task_rows)
    description = (f"Task-free Fashion-MNIST ({config.mode}): {config.n_tasks} hidden tasks, home classes {home}, "
                   f"one pass over {stream_size} training images in mini-batches of {config.stream_batch_size}"
                   + (f", blurry N={config.disjoint_class_ratio} M={config.blurry_sample_ratio}"
                      if config.mode == "blurry" else "")
                   + (", pre-training pool held out" if config.holdout_pretrain_pool else "") + ", pixels in [0,1]")
    scenario = tensor_scenario(train_parts, test_parts, setting="task-free", task_labels=False,
                               num_classes=FMNIST_CLASSES, description=description, input_range=(0.0, 1.0))
    scenario.classes_per_experience = home  # the home classes (blurry tasks also hold a few others)
    scenario.class_order = [c for classes in home for c in classes]
    if config.holdout_pretrain_pool:
        scenario.excluded_pools = [pretrain_pool.POOL_NAME]
    anytime_bank = TensorBank(_to_inputs(arrays.test_images[anytime]), torch.from_numpy(arrays.test_labels[anytime]),
                              torch.zeros(len(anytime), dtype=torch.long), name="anytime")
    scenario.online = OnlineStream(mode=config.mode, batch_size=config.stream_batch_size,
                                   eval_every=config.anytime_eval_every, anytime_test=anytime_bank.dataset())
    return scenario

