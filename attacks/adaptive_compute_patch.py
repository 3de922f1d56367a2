"""``adaptive_compute_patch``: SlowFormer's universal patch that inflates an input-adaptive ViT's compute.

Paper: Navaneet, Koohpayegani, Sleiman, Pirsiavash, "SlowFormer: Adversarial Attack on Compute and Energy
Consumption of Efficient Vision Transformers", CVPR 2024 (arXiv 2310.02544); official code
github.com/UCDvision/SlowFormer (the ``avit/`` attack).

Threat model. White box on a frozen, trained A-ViT (:mod:`cl_bench.models.avit`): the attacker has the
weights and the training data, and controls one universal patch P (side ``size`` at (``row``, ``col``),
default top-left), pasted by replacing pixels of every image; the victim is never changed. On the model's
training images, with the patch pasted (projected to the valid pixel box and quantised to 256 levels in
every forward), Adam (AdamW, weight decay 0, constant lr) minimises::

    agnostic (default):  -(alpha_p L_ponder + s alpha_d L_distr)
    preserve:            -(alpha_p L_ponder + s alpha_d L_distr) + w CE(f(x + P), y)
    destroy:             -(alpha_p L_ponder + s alpha_d L_distr) - w CE(f(x + P), y)

with L_ponder the mean ponder cost rho and L_distr the KL to the depth prior of the A-ViT (its own weights
alpha_p, alpha_d), s = +1 (paper) or -1 (``distr_sign=code``: the official code minimises the KL). The
variant ``perturbation=linf`` fits a universal full-image delta with ||delta||_inf <= epsilon / 255 instead.

The same run measures, on the test images, the clean model and three patches: a random patch (uniform
pixels, the paper's baseline), NTAP (the non-targeted accuracy patch of Table 1: maximise CE) and SlowFormer's,
each with its FLOPs per image (counted from active tokens, :func:`cl_bench.models.avit.flops_per_image`),
top-1 accuracy and mean token depth, and Attack Success = (F - F_min) / (F_max - F_min) x 100 capped at 100
(F_min: the clean model's FLOPs on the same images, F_max: every token through every layer).

Continual learners (``fit_after_experience = k``): the patch is fitted on the model after experience k and
measured after every later experience (does continued learning wash it out?), with the clean compute of every
experience; rows are keyed by (experience, patch).

Deviations from the official code, each a choice here:

* Pixel space: the patch lives in the scenario's input range (Fashion-MNIST [0, 1]); quantisation is
  ``floor(255 p) / 255`` with a straight-through gradient, and the continuous patch is clamped to the range
  after every step (the official code projects and quantises the stored patch). lr 0.05 in [0, 1] units is
  the official 0.2 in ImageNet-normalised units (std about 0.23) [suite choice].
* Initialisation: uniform pixels (the paper; ``init=mean`` starts at the mid grey the code's near-mean start
  gives). Epochs: 4 (official 1 for 64 px, 4 for <= 32 px) over the training data, batch 128, full precision.
* NTAP is fitted with the same optimiser and epochs as the attack; TAP (targeted) is not implemented.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cl_bench.attack import Attack, TestTimeAttack
from cl_bench.config import ComponentConfig, param
from cl_bench.errors import UserError
from cl_bench.evaluator import EvaluationContext, EvaluationResult
from cl_bench.models.avit import AdaptiveVisionTransformer, find_adaptive, flops_per_image, full_flops
from cl_bench.registry import ATTACKS
from cl_bench.traits import AttackTraits

PATCHES = ("clean", "random", "ntap", "slowformer")
Predict = Callable[[torch.Tensor], torch.Tensor]
EXAMPLES = 4  # test images kept in the record for the picture


@dataclass
class AdaptiveComputePatchConfig(ComponentConfig):
    size: int = param(8, "patch side in pixels (8 on 28 px = 8.2 % of the area, the paper's 64 on 224); 0: none", low=0)
    row: int = param(0, "top row of the patch (0: the top edge, as the paper)", low=0)
    col: int = param(0, "left column of the patch (0: the left edge, as the paper)", low=0)
    perturbation: str = param(
        "patch", "patch (replace pixels) or linf (a universal full-image perturbation)", choices=("patch", "linf")
    )
    epsilon: float = param(16.0, "linf only: budget in 1/255 units (paper: 16, 32)", low=0.0, high=255.0)
    objective: str = param(
        "agnostic",
        "agnostic: maximise compute only; preserve: + CE (keep accuracy); destroy: - CE (also destroy accuracy)",
        choices=("agnostic", "preserve", "destroy"),
    )
    task_weight: float = param(1.0, "weight w of the cross-entropy term of preserve / destroy", low=0.0)
    distr_sign: str = param(
        "paper",
        "paper: maximise the depth-prior KL too; code: minimise it (the official implementation)",
        choices=("paper", "code"),
    )
    lr: float = param(
        0.05, "Adam learning rate in input units (official 0.2 in normalised units)", low=0.0, low_open=True
    )
    epochs: int = param(4, "passes over the fitting images (official: 1 for 64 px, 4 for <= 32 px)", low=1)
    batch_size: int = param(128, "fitting mini-batch size", low=1)
    fit_fraction: float = param(
        1.0, "fraction of the training images the patch is fitted on", low=0.0, high=1.0, low_open=True
    )
    init: str = param("uniform", "uniform pixels (paper) or mean (mid grey)", choices=("uniform", "mean"))
    baselines: bool = param(True, "also measure a random patch and the non-targeted accuracy patch (NTAP)")
    fit_after_experience: int = param(
        -1, "fit the patch on the model after this experience and measure it after every later one; -1: the last"
    )


@dataclass
class Measurement:
    mflops: float
    accuracy: float
    depth: float
    active_per_layer: list[float]


@dataclass
class FittedPatch:
    name: str
    pixels: torch.Tensor  # (C, s, s) for a patch, (C, H, W) for a perturbation: quantised
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def attack_success(flops: float, flops_min: float, flops_max: float) -> float:
    """SlowFormer's Attack Success in %: (F - F_min) / (F_max - F_min) x 100, capped at 100, negative when the
    patch lowers compute; NaN when the clean model already spends the maximum."""
    span = flops_max - flops_min
    if span <= 0:
        return float("nan")
    return min(100.0 * (flops - flops_min) / span, 100.0)


def quantise(values: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Valid pixels: clamped to [low, high] and floored to one of 256 levels; the gradient passes straight."""
    unit = ((values - low) / (high - low)).clamp(0.0, 1.0)
    levels = torch.floor(unit * 255.0) / 255.0
    snapped = low + (high - low) * levels
    return values + (snapped - values).detach()


def paste(images: torch.Tensor, patch: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """``images`` with ``patch`` (C, s, s) replacing the pixels at (row, col) of every image; a new tensor."""
    size = patch.shape[-1]
    if size == 0:
        return images
    rows = torch.arange(images.shape[-2], device=images.device)
    cols = torch.arange(images.shape[-1], device=images.device)
    inside = ((rows >= row) & (rows < row + size)).unsqueeze(1) & ((cols >= col) & (cols < col + size)).unsqueeze(0)
    canvas = F.pad(patch, (col, images.shape[-1] - col - size, row, images.shape[-2] - row - size))
    return torch.where(inside, canvas.unsqueeze(0).to(images.dtype), images)


class AdaptiveComputePatch(TestTimeAttack):
    def __init__(self, config: AdaptiveComputePatchConfig, scenario: Any, seed: int):
        super().__init__(config, scenario, seed)
        shape = tuple(scenario.input_shape)
        if len(shape) != 3:
            raise UserError(f"adaptive_compute_patch needs image inputs (C, H, W); this scenario's are {shape}")
        if scenario.input_range is None:
            raise UserError("adaptive_compute_patch needs a scenario with a valid pixel range (an image scenario)")
        _, height, width = shape
        if config.perturbation == "patch":
            if config.size > min(height, width):
                raise UserError(
                    f"attack.size={config.size} is larger than the {height}x{width} image; "
                    f"choose at most {min(height, width)}"
                )
            if config.row + config.size > height or config.col + config.size > width:
                raise UserError(
                    f"a {config.size}-px patch at row {config.row}, col {config.col} leaves the {height}x{width} "
                    f"image; choose row <= {height - config.size} and col <= {width - config.size}"
                )
        self.low, self.high = (float(v) for v in scenario.input_range)
        self.patches: dict[str, FittedPatch] = {}
        self.rows: list[dict] = []
        self.fitted_at: Optional[int] = None
        self.examples: Optional[torch.Tensor] = None

    target_field = "fit_after_experience"

    def target_index(self, n_experiences: int) -> int:
        return Attack.target_index(self, n_experiences)  # the experience it fits at, not the last one

    # ------------------------------------------------------------------ applying a patch

    def apply(self, images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Images with the patch (or the perturbation) ``pixels`` applied, valid and quantised."""
        if self.config.perturbation == "linf":
            return quantise(images + pixels, self.low, self.high)
        return paste(images, quantise(pixels, self.low, self.high), self.config.row, self.config.col)

    def _shape(self, channels: int, height: int, width: int) -> tuple[int, int, int]:
        if self.config.perturbation == "linf":
            return (channels, height, width)
        return (channels, self.config.size, self.config.size)

    def _project(self, pixels: torch.Tensor) -> None:
        with torch.no_grad():
            if self.config.perturbation == "linf":
                bound = self.config.epsilon / 255.0 * (self.high - self.low)
                pixels.clamp_(-bound, bound)
            else:
                pixels.clamp_(self.low, self.high)

    def _start(self, shape: tuple[int, int, int], generator: torch.Generator, init: str) -> torch.Tensor:
        if self.config.perturbation == "linf":
            bound = self.config.epsilon / 255.0 * (self.high - self.low)
            return (torch.rand(shape, generator=generator) * 2 - 1) * bound
        if init == "mean":
            return torch.full(shape, (self.low + self.high) / 2)
        return self.low + (self.high - self.low) * torch.rand(shape, generator=generator)

    # ------------------------------------------------------------------ fitting

    def _loss(self, adaptive: AdaptiveVisionTransformer, logits: torch.Tensor, targets: torch.Tensor, goal: str):
        stats = adaptive.compute
        assert stats is not None  # an adaptive forward always reports
        sign = 1.0 if self.config.distr_sign == "paper" else -1.0
        compute = adaptive.ponder_weight * adaptive.ponder_loss(
            stats
        ) + sign * adaptive.distr_weight * adaptive.distr_loss(stats)
        task = F.cross_entropy(logits, targets)
        if goal == "ntap":
            return -task
        weight = self.config.task_weight
        return -compute + {"agnostic": 0.0, "preserve": weight, "destroy": -weight}[self.config.objective] * task

    def fit(self, context: EvaluationContext, goal: str) -> FittedPatch:
        """Fit SlowFormer's patch (``goal='slowformer'``) or NTAP (``'ntap'``) on the run's training images."""
        fraction = self.config.fit_fraction if self.config.fit_fraction < 1 else None
        inputs, targets, _ = context.tensors("train", fraction=fraction)
        return self.fit_on(context.predict, find_adaptive(context.model), inputs, targets, context.generator, goal)

    def fit_on(
        self,
        predict: Predict,
        adaptive: AdaptiveVisionTransformer,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        generator: torch.Generator,
        goal: str = "slowformer",
    ) -> FittedPatch:
        """Fit a patch on ``inputs`` through ``predict`` (images -> logits of a model holding ``adaptive``)."""
        device = next(adaptive.parameters()).device
        pixels = self._start(self._shape(*inputs.shape[1:]), generator, self.config.init).to(device)
        pixels.requires_grad_(True)
        optimizer = torch.optim.AdamW([pixels], lr=self.config.lr, weight_decay=0.0)
        fitted = FittedPatch(goal, pixels)
        started = time.perf_counter()
        steps = self.config.epochs * math.ceil(len(inputs) / self.config.batch_size)
        bar = tqdm(total=steps, desc=f"{goal} patch", unit="step", leave=False, disable=None if self.progress else True)
        for _ in range(self.config.epochs):
            order = torch.randperm(len(inputs), generator=generator)
            total = 0.0
            for start in range(0, len(inputs), self.config.batch_size):
                rows = order[start : start + self.config.batch_size]
                batch, labels = inputs[rows].to(device), targets[rows].to(device)
                loss = self._loss(adaptive, predict(self.apply(batch, pixels)), labels, goal)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                self._project(pixels)
                total += float(loss.detach()) * len(rows)
                bar.update(1)
            fitted.losses.append(total / len(inputs))
        bar.close()
        fitted.pixels = pixels.detach()
        if self.config.perturbation == "patch":
            fitted.pixels = quantise(fitted.pixels, self.low, self.high)
        fitted.seconds = time.perf_counter() - started
        return fitted

    # ------------------------------------------------------------------ measuring

    def measure(self, context: EvaluationContext, pixels: Optional[torch.Tensor]) -> Measurement:
        inputs, targets, _ = context.tensors("test")
        adaptive = find_adaptive(context.model)
        return self.measure_on(context.predict, adaptive, inputs, targets, pixels, context.eval_batch_size)

    @torch.no_grad()
    def measure_on(
        self,
        predict: Predict,
        adaptive: AdaptiveVisionTransformer,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        pixels: Optional[torch.Tensor],
        batch_size: int = 1000,
    ) -> Measurement:
        """Accuracy, mean token depth, MFLOPs per image and active tokens per layer on ``inputs`` (patched when
        ``pixels`` is given)."""
        device = next(adaptive.parameters()).device
        correct, depth, flops = 0, 0.0, 0.0
        active = torch.zeros(len(adaptive.blocks), dtype=torch.float64)
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size].to(device)
            if pixels is not None:
                batch = self.apply(batch, pixels)
            logits = predict(batch)
            stats = adaptive.compute
            if stats is None:
                raise UserError(
                    "the model ran its plain forward (model.adaptive=false); the compute attack needs halting"
                )
            correct += int((logits.argmax(1).cpu() == targets[start : start + len(batch)]).sum())
            depth += float(stats.depth.mean(dim=1).sum())
            flops += float(flops_per_image(adaptive, stats.active).sum())
            active += stats.active.double().sum(dim=0).cpu()
        count = max(len(inputs), 1)
        return Measurement(flops / count / 1e6, correct / count, depth / count, (active / count).tolist())

    def observe(self, context: EvaluationContext, experience: int, n_experiences: int) -> None:
        """After experience ``experience``: fit at the target, measure from there on (and clean compute always)."""
        adaptive = find_adaptive(context.model)
        target = self.target_index(n_experiences)
        follow = target < n_experiences - 1
        if experience < target and not follow:
            return
        if self.examples is None:
            self.examples = context.tensors("test")[0][:EXAMPLES].clone()
        if experience == target:
            self.fitted_at = experience
            shape = self._shape(*context.tensors("test")[0].shape[1:])
            self.patches["slowformer"] = self._fitted(context, "slowformer", shape)
            if self.config.baselines:
                random = quantise(self._start(shape, context.generator, "uniform"), self.low, self.high)
                self.patches["random"] = FittedPatch("random", random.to(context.device))
                self.patches["ntap"] = self._fitted(context, "ntap", shape)
        full = full_flops(adaptive) / 1e6
        clean = self.measure(context, None)
        self.rows.append(self._row(experience, "clean", clean, clean, full))
        if experience >= target:
            for name in PATCHES[1:]:
                if name in self.patches:
                    self.rows.append(
                        self._row(experience, name, self.measure(context, self.patches[name].pixels), clean, full)
                    )

    def _fitted(self, context: EvaluationContext, goal: str, shape: tuple[int, int, int]) -> FittedPatch:
        if self.config.perturbation == "patch" and self.config.size == 0:  # nothing to fit: the identity
            return FittedPatch(goal, torch.zeros(shape))
        return self.fit(context, goal)

    def _row(self, experience: int, name: str, measured: Measurement, clean: Measurement, full: float) -> dict:
        return {
            "experience": experience,
            "patch": name,
            "mflops": measured.mflops,
            "mflops_max": full,
            "attack_success": attack_success(measured.mflops, clean.mflops, full),
            "accuracy": measured.accuracy,
            "mean_depth": measured.depth,
            "active_per_layer": measured.active_per_layer,
        }

    # ------------------------------------------------------------------ the record

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        if not self.rows or self.rows[-1]["experience"] != context.n_experiences - 1:  # not run in a stream
            self.observe(context, context.n_experiences - 1, context.n_experiences)
        last = context.n_experiences - 1
        final = {row["patch"]: row for row in self.rows if row["experience"] == last}
        metrics: dict[str, float] = {
            "attack_success": final["slowformer"]["attack_success"],
            "mflops_clean": final["clean"]["mflops"],
            "mflops_patched": final["slowformer"]["mflops"],
            "mflops_max": final["clean"]["mflops_max"],
            "accuracy_clean": final["clean"]["accuracy"],
            "accuracy_patched": final["slowformer"]["accuracy"],
            "depth_clean": final["clean"]["mean_depth"],
            "depth_patched": final["slowformer"]["mean_depth"],
            "fit_s": self.patches["slowformer"].seconds,
        }
        for name in ("random", "ntap"):
            if name in final:
                metrics[f"{name}_attack_success"] = final[name]["attack_success"]
                metrics[f"{name}_accuracy"] = final[name]["accuracy"]
        examples = self.examples
        assert examples is not None  # observe() keeps them at the last experience at the latest
        patched = self.apply(examples.to(context.device), self.patches["slowformer"].pixels).cpu()
        details = {
            "fitted_after_experience": self.fitted_at,
            "active_per_layer": {p: r["active_per_layer"] for p, r in final.items()},
            "loss_per_epoch": {name: fitted.losses for name, fitted in self.patches.items()},
            "patch_pixels": self.patches["slowformer"].pixels.cpu().tolist(),
            "example_images": (examples * 255).round().to(torch.uint8).tolist(),
            "example_images_patched": (patched * 255).round().to(torch.uint8).tolist(),
            "flops": "counted from active tokens per layer (matrix products), MFLOPs per image",
        }
        rows = [{k: v for k, v in row.items() if k != "active_per_layer"} for row in self.rows]
        return EvaluationResult(metrics=metrics, rows=rows, details=details)

    def budget(self) -> dict:
        if self.config.perturbation == "linf":
            return {"norm": "linf", "epsilon_255": self.config.epsilon}
        return {"patch_size": self.config.size, "row": self.config.row, "col": self.config.col}


@ATTACKS.register(
    "adaptive_compute_patch",
    config=AdaptiveComputePatchConfig,
    traits=AttackTraits(
        phase="test",
        needs_vit=True,
        needs_compute_statistics=True,
        label_fields=("perturbation", "size", "objective"),
        budget_field="size",
        run_plots=("compute_patch",),
        columns=("fit_s",),
        row_keys=("experience", "patch"),
        row_columns=("attack_success", "mflops", "accuracy", "mean_depth", "mflops_max"),
        smoke=(
            "scenario=split_digits",
            "model=avit_micro",
            "strategy=naive",
            "train.epochs=1",
            "model.patch_size=4",
            "model.embed_dim=16",
            "model.depth=2",
            "model.num_heads=2",
            "attack.size=4",
            "attack.epochs=1",
        ),
    ),
)
def build_adaptive_compute_patch(config: AdaptiveComputePatchConfig, scenario: Any, seed: int) -> TestTimeAttack:
    """SlowFormer's universal patch against A-ViT's compute, with the random and NTAP baselines."""
    return AdaptiveComputePatch(config, scenario, seed)
