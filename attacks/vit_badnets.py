"""``vit_badnets``: a dirty-label patch-trigger backdoor planted in one experience of the stream.

Papers: Gu, Dolan-Gavitt, Garg, "BadNets", 2017 (the attack); Subramanya, Saha, Koohpayegani, Tejankar,
Pirsiavash, "Backdoor Attacks on Vision Transformers", arXiv 2206.08477 / WACV 2024 (on ViTs; their official
code runs the clean-label HTBA variant, see the spec's variant (A) for this one).

Threat model. The attacker may change a fraction of the training samples of one experience (image and label)
and nothing else: no access to the model. It picks ``floor(poison_rate * N)`` samples of that experience whose
label is not the target class (from its own generator: the victim's randomness is untouched), pastes a
``trigger_size`` x ``trigger_size`` trigger on each (pixel space, after any resizing, fully inside the
image: the bottom-right corner, or a uniformly random position per image) and relabels them to
``target_class`` (all-to-one). The rest of the experience is bit-identical. At test time it pastes the same
trigger on test images.

Measured after every training experience, in the clean and the poisoned branch (``row_metrics``):

    asr              fraction of triggered test images of non-target classes classified as the target
    asr_not_patched  the same images without the trigger classified as the target (the sanity floor)

and with ``defence=block``, on a fixed random subset of ``defence_images`` test images:

    asr_before_blocking / asr_blocked    ASR on the subset's triggered images before / after blocking
    peak_on_trigger                      share of those images whose blocked square overlaps the trigger
    source_acc_patched / _recovered      triggered images classified as their true class before / after
    clean_acc / clean_acc_blocked        accuracy on clean test images of every class without / with blocking

so the record holds the backdoor's success after each experience (its persistence through the rest of the
stream) beside the clean branch, and the board reports ``asr_at_target`` and ``asr_final`` paired.

Trigger: a checkerboard of the valid range's extremes (``pattern=checkerboard``, BadNets' classic) or a
uniform random pattern drawn once from the run seed (``pattern=random``, the kind of smooth colour trigger the
official code loads from PNGs is not reproduced). Random test-time locations come from a generator fixed by the
run seed, the same after every experience.

Per-item image data (CIFAR, ImageNet-R, at 224 px): a poisoned sample is pasted each time it is loaded, after
the dataset's own transform (resize, crop, augmentation, normalisation), so the trigger sits where the model sees
it; where the transform normalises, the trigger and the blocking square's black are the [0, 1] pixel values
normalised per channel (``ScenarioData.pixel_normalisation``). The test images load and are measured in
batches (the test set is never held whole).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from cl_bench.attack import Attack, attack_generator, with_inputs
from cl_bench.config import ComponentConfig, param
from cl_bench.backbone import is_vit
from cl_bench.errors import UserError
from cl_bench.interpret import attention_rollout, block_squares, grad_cam, peak_squares
from cl_bench.item_images import ImageSet, with_edited_items
from cl_bench.registry import ATTACKS
from cl_bench.tensor_data import gather
from cl_bench.templates import eval_mode, predict_logits
from cl_bench.traits import AttackTraits

# what a backdoor measures after every experience (with the defence: the last seven too), for the attack traits
BACKDOOR_ROWS = (
    "asr",
    "asr_not_patched",
    "asr_before_blocking",
    "asr_blocked",
    "peak_on_trigger",
    "source_acc_patched",
    "source_acc_recovered",
    "clean_acc",
    "clean_acc_blocked",
)
TEST_LOCATION_SEED = 7_919  # fixed offset: the test-time trigger positions are the same after every experience
PREDICT_BATCH = 1000  # test images per forward pass (streamed: a 224-px test set is never held whole)
DEFENCE_BATCH = 250  # images per interpretation map (the maps need a backward)


@dataclass
class BadNetsConfig(ComponentConfig):
    target_class: int = param(0, "the class every triggered image is relabelled to (all-to-one)", low=0)
    poison_rate: float = param(
        0.1,
        "fraction of the poisoned experience's samples that get the trigger and the target label",
        low=0.0,
        high=1.0,
        low_open=True,
    )
    trigger_size: int = param(4, "side of the square trigger in pixels", low=1)
    location: str = param(
        "fixed",
        "fixed: the bottom-right corner; random: a uniform position per image, fully inside",
        choices=("fixed", "random"),
    )
    pattern: str = param(
        "checkerboard",
        "checkerboard of the valid range's extremes, or random (uniform, from the run seed)",
        choices=("checkerboard", "random"),
    )
    target_experience: int = param(-1, "index of the poisoned training experience; -1 = the last")
    defence: str = param(
        "none",
        "block: also measure the test-time blocking defence after every experience (ASR and accuracy after "
        "blocking the square around the interpretation map's peak)",
        choices=("none", "block"),
    )
    interpretation: str = param(
        "auto",
        "the defence's map: rollout (ViT attention-gradient rollout), gradcam (CNN), auto: by the model",
        choices=("auto", "rollout", "gradcam"),
    )
    block_size: int = param(0, "side of the blocked square in pixels; 0: the trigger size (assumed known)", low=0)
    rollout_normalisation: str = param(
        "row",
        "row: each row by its sum; official: the official code's column-by-row-sum quirk",
        choices=("row", "official"),
    )
    defence_images: int = param(
        1000, "test images per measurement of the defence (a fixed random subset; the maps need a backward)", low=1
    )


def make_trigger(size: int, channels: int, pattern: str, low: float, high: float, seed: int) -> torch.Tensor:
    """The (C, size, size) trigger: a checkerboard of ``low``/``high`` or uniform pixels from ``seed``."""
    if pattern == "checkerboard":
        board = (torch.arange(size).unsqueeze(0) + torch.arange(size).unsqueeze(1)) % 2
        return (low + (high - low) * board.float()).expand(channels, size, size).clone()
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(channels, size, size, generator=generator)


def trigger_positions(
    count: int, size: int, height: int, width: int, location: str, generator: Optional[torch.Generator]
) -> torch.Tensor:
    """(count, 2) top-left corners: the bottom-right corner, or uniform positions with the trigger inside."""
    if location == "fixed":
        return torch.tensor([[height - size, width - size]]).expand(count, 2).clone()
    rows = torch.randint(0, height - size + 1, (count,), generator=generator)
    cols = torch.randint(0, width - size + 1, (count,), generator=generator)
    return torch.stack([rows, cols], dim=1)


def paste_triggers(images: torch.Tensor, trigger: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``images`` (N, C, H, W) with ``trigger`` pasted at each image's position; a new tensor."""
    pasted = images.clone()
    size = trigger.shape[-1]
    for index, (row, col) in enumerate(positions.tolist()):
        pasted[index, :, row : row + size, col : col + size] = trigger
    return pasted


class PasteTrigger:
    """An image edit (per-item data): ``trigger`` pasted with its top-left corner at (row, col)."""

    def __init__(self, trigger: torch.Tensor, row: int, col: int):
        self.trigger, self.row, self.col = trigger, row, col

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        size = self.trigger.shape[-1]
        pasted = image.clone()
        pasted[:, self.row : self.row + size, self.col : self.col + size] = self.trigger
        return pasted


@dataclass
class BackdoorTestImages:
    """The test set of a backdoor's measurements; every image loads on demand through the eval transform."""

    images: ImageSet
    asr_rows: torch.Tensor  # rows of ``images`` that count for the ASR
    positions: torch.Tensor  # (len(asr_rows), 2): each one's trigger corner
    pick: torch.Tensor  # the defence's subset, as positions into asr_rows
    pick_all: torch.Tensor  # the defence's clean-accuracy subset, as rows of ``images``


def to_model_input(pixels: torch.Tensor, scenario: Any) -> torch.Tensor:
    """(C, H, W) values in [0, 1] pixel space mapped into the model's input space (the scenario's Normalize)."""
    if scenario.pixel_normalisation is None:
        return pixels
    mean, std = (torch.tensor(values).view(-1, 1, 1) for values in scenario.pixel_normalisation)
    return (pixels - mean) / std


def squares_overlap(corners: torch.Tensor, size: int, others: torch.Tensor, other_size: int) -> torch.Tensor:
    """(N,) whether the ``size`` square at each corner shares a pixel with the ``other_size`` square at ``others``."""
    rows = (corners[:, 0] < others[:, 0] + other_size) & (others[:, 0] < corners[:, 0] + size)
    cols = (corners[:, 1] < others[:, 1] + other_size) & (others[:, 1] < corners[:, 1] + size)
    return rows & cols


class BadNets(Attack):
    poisons_training = True
    relabels = True
    measures_rows = True

    def __init__(self, config: BadNetsConfig, scenario: Any, seed: int):
        super().__init__(config, scenario, seed)
        shape = tuple(scenario.input_shape)
        if len(shape) != 3:
            raise UserError(f"vit_badnets pastes an image trigger; this scenario's inputs have shape {shape}")
        channels, self.height, self.width = shape
        if config.trigger_size > min(self.height, self.width):
            raise UserError(
                f"attack.trigger_size={config.trigger_size} is larger than the {self.height}x{self.width} image; "
                f"choose at most {min(self.height, self.width)}"
            )
        self.classes = sorted({c for experience in scenario.classes_per_experience for c in experience})
        if config.target_class not in self.classes:
            raise UserError(
                f"attack.target_class={config.target_class} is not a class of this stream; choose one of "
                f"{', '.join(map(str, self.classes))}"
            )
        if scenario.input_range is not None:
            low, high = scenario.input_range
            self.trigger = make_trigger(config.trigger_size, channels, config.pattern, low, high, seed)
            self.fill: float | torch.Tensor = low  # a blocked square is black
        else:  # a normalised input: the trigger is made in [0, 1] pixels and normalised like the images
            pixels = make_trigger(config.trigger_size, channels, config.pattern, 0.0, 1.0, seed)
            self.trigger = to_model_input(pixels, scenario)
            self.fill = to_model_input(torch.zeros(channels, 1, 1), scenario)
        self.block_size = config.block_size or config.trigger_size
        if config.block_size > min(self.height, self.width):
            raise UserError(
                f"attack.block_size={config.block_size} is larger than the {self.height}x{self.width} image"
            )
        self.poisoned_indices: list[int] = []
        self._test: Optional[BackdoorTestImages] = None

    @property
    def calls_model(self) -> bool:  # type: ignore[override]
        return self.config.defence == "block"  # the maps differentiate the model; the rest uses predict_logits

    def poison(self, experience, strategy):
        targets = ImageSet([experience.dataset]).targets
        generator = attack_generator(self.seed, experience.current_experience)
        count = math.floor(self.config.poison_rate * len(targets))
        candidates = (targets != self.config.target_class).nonzero().flatten()
        if count > len(candidates):
            raise UserError(
                f"attack.poison_rate={self.config.poison_rate} asks for {count} poisoned samples, but experience "
                f"{experience.current_experience} has only {len(candidates)} outside the target class; lower it"
            )
        chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]].sort().values
        self.poisoned_indices = chosen.tolist()
        if count == 0:
            return experience
        positions = trigger_positions(
            count, self.config.trigger_size, self.height, self.width, self.config.location, generator
        )
        poisoned_targets = targets.clone()
        poisoned_targets[chosen] = self.config.target_class
        tensors = gather(experience.dataset)
        if tensors is None:  # per-item data: pasted on the transformed image each time the sample is loaded
            edits = {
                index: PasteTrigger(self.trigger, row, col)
                for index, (row, col) in zip(chosen.tolist(), positions.tolist())
            }
            return with_edited_items(experience, edits, targets=poisoned_targets)
        poisoned_inputs = tensors[0].clone()
        poisoned_inputs[chosen] = paste_triggers(tensors[0][chosen], self.trigger, positions)
        return with_inputs(experience, poisoned_inputs, "vit_badnets", targets=poisoned_targets)

    def check(self, model: nn.Module) -> None:
        if self.config.defence == "block":
            self._interpret(model)  # a one-line error when the model has no map of the kind asked for

    def _interpret(self, model: nn.Module) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
        kind = self.config.interpretation
        if kind == "auto":
            kind = "rollout" if is_vit(model) else "gradcam"
        if kind == "rollout":
            if not is_vit(model):
                raise UserError(f"attack.interpretation=rollout needs attention maps; {type(model).__name__} is no ViT")
            official = self.config.rollout_normalisation == "official"
            return lambda m, x: attention_rollout(m, x, official_normalisation=official)
        if not any(isinstance(module, nn.Conv2d) for module in model.modules()):
            raise UserError("the blocking defence needs a ViT (rollout) or a CNN (gradcam); this model is neither")
        return grad_cam

    def asr_images(self, labels: torch.Tensor) -> torch.Tensor:
        """Which test images count for the ASR: every class but the target (all-to-one)."""
        return labels != self.config.target_class

    def test_images(self) -> BackdoorTestImages:
        """The test set (eval transform) and which of its images count for the ASR (:meth:`asr_images`), their
        trigger positions (fixed by the seed) and the defence's fixed random subsets; images load on demand."""
        if self._test is None:
            images = ImageSet([experience.dataset.eval() for experience in self.scenario.benchmark.test_stream])
            asr_rows = self.asr_images(images.targets).nonzero().flatten()
            generator = torch.Generator().manual_seed(self.seed + TEST_LOCATION_SEED)
            positions = trigger_positions(
                len(asr_rows), self.config.trigger_size, self.height, self.width, self.config.location, generator
            )
            order = torch.Generator().manual_seed(self.seed + TEST_LOCATION_SEED + 1)
            count = self.config.defence_images  # the defence's images: a fixed random subset of every class
            pick = torch.randperm(len(asr_rows), generator=order)[:count]
            self._test = BackdoorTestImages(
                images, asr_rows, positions, pick, torch.randperm(len(images), generator=order)[:count]
            )
        return self._test

    def triggered(self, asr_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clean, triggered) images of the ASR images ``asr_index`` (positions into ``test_images().asr_rows``)."""
        test = self.test_images()
        clean = test.images.load(test.asr_rows[asr_index])
        return clean, paste_triggers(clean, self.trigger, test.positions[asr_index])

    def _predict(self, strategy: Any, images: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        logits = predict_logits(strategy, images.to(strategy.device), tasks.to(strategy.device))
        return logits.argmax(1).cpu()

    def _blocked(self, strategy: Any, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images blocked around their map's peak, and the blocked squares' top-left corners."""
        interpret, size = self._interpret(strategy.model), self.block_size
        maps = interpret(strategy.model, images.to(strategy.device))
        corners = peak_squares(maps, self.height, self.width, size).cpu()
        return block_squares(images, corners, size, self.fill), corners

    @torch.no_grad()
    def row_metrics(self, strategy: Any) -> dict[str, float]:
        test = self.test_images()
        target = self.config.target_class
        labels = test.images.targets[test.asr_rows]
        tasks = test.images.task_labels[test.asr_rows]
        triggered_predictions, clean_predictions = [], []
        with eval_mode(strategy.model):
            for start in range(0, len(test.asr_rows), PREDICT_BATCH):  # streamed: a 224-px test set is not held
                index = torch.arange(start, min(start + PREDICT_BATCH, len(test.asr_rows)))
                clean, triggered = self.triggered(index)
                triggered_predictions.append(self._predict(strategy, triggered, tasks[index]))
                clean_predictions.append(self._predict(strategy, clean, tasks[index]))
            on_trigger, off_trigger = torch.cat(triggered_predictions), torch.cat(clean_predictions)
            rates = {
                "asr": float((on_trigger == target).float().mean()),
                "asr_not_patched": float((off_trigger == target).float().mean()),
            }
            if self.config.defence == "block":
                rates.update(self._defence_rates(strategy, on_trigger, labels, tasks))
        return rates

    def _defence_rates(
        self, strategy: Any, on_trigger: torch.Tensor, labels: torch.Tensor, tasks: torch.Tensor
    ) -> dict[str, float]:
        """The blocking defence on the fixed subsets: triggered ASR images, then clean images of every class."""
        test, target = self.test_images(), self.config.target_class
        pick = test.pick
        blocked, overlaps = [], []
        for start in range(0, len(pick), DEFENCE_BATCH):
            index = pick[start : start + DEFENCE_BATCH]
            blocked_images, corners = self._blocked(strategy, self.triggered(index)[1])
            blocked.append(self._predict(strategy, blocked_images, tasks[index]))
            overlaps.append(squares_overlap(corners, self.block_size, test.positions[index], self.config.trigger_size))
        after = torch.cat(blocked)
        every_labels = test.images.targets[test.pick_all]
        every_tasks = test.images.task_labels[test.pick_all]
        clean_before, clean_after = [], []
        for start in range(0, len(test.pick_all), DEFENCE_BATCH):
            images = test.images.load(test.pick_all[start : start + DEFENCE_BATCH])
            part_tasks = every_tasks[start : start + DEFENCE_BATCH]
            clean_before.append(self._predict(strategy, images, part_tasks))
            clean_after.append(self._predict(strategy, self._blocked(strategy, images)[0], part_tasks))
        return {
            "asr_before_blocking": float((on_trigger[pick] == target).float().mean()),
            "asr_blocked": float((after == target).float().mean()),
            "peak_on_trigger": float(torch.cat(overlaps).float().mean()),
            "source_acc_patched": float((on_trigger[pick] == labels[pick]).float().mean()),
            "source_acc_recovered": float((after == labels[pick]).float().mean()),
            "clean_acc": float((torch.cat(clean_before) == every_labels).float().mean()),
            "clean_acc_blocked": float((torch.cat(clean_after) == every_labels).float().mean()),
        }

    def budget(self) -> dict:
        return {
            "poison_rate": self.config.poison_rate,
            "trigger_size": self.config.trigger_size,
            "target_class": self.config.target_class,
            "location": self.config.location,
        }

    def metrics(self) -> dict:
        return {"poisoned_samples": len(self.poisoned_indices)}


@ATTACKS.register(
    "vit_badnets",
    config=BadNetsConfig,
    traits=AttackTraits(
        phase="training",
        label_fields=("poison_rate", "trigger_size"),
        row_metrics=BACKDOOR_ROWS,
        budget_field="poison_rate",
        smoke=("scenario=split_digits", "train.epochs=1", "model.widths=[32]", "attack.trigger_size=2"),
    ),
)
def build_vit_badnets(config: BadNetsConfig, scenario: Any, seed: int) -> Attack:
    """BadNets: a patch trigger and the target label on a fraction of one experience (dirty label, all-to-one)."""
    return BadNets(config, scenario, seed)
