"""GPM: Gradient Projection Memory (Saha, Garg, Roy; ICLR 2021, arXiv 2103.09762).

Official code: github.com/sahagobinda/GPM (``main_pmnist.py``, ``main_cifar100.py``).

What is stored between tasks: for every projected layer l (every ``nn.Linear`` / ``nn.Conv2d``
of the shared network; per-task heads are not projected, a shared single head is, as in the
official PMNIST script) an orthonormal basis ``M_l`` of shape ``(d_l, r_l)``, ``d_l`` the fan-in.

At the end of task t (``after_training_exp``):

* Representation: ``n`` random training samples of the task, one forward pass in eval mode
  (dropout off; the official nets' BatchNorm uses batch statistics). The *input* of layer l on
  its first ``n_l`` samples gives ``R_l``: columns are input vectors (Linear) or im2col patches in
  ``weight.view(out, -1)`` order, one per output position (Conv2d, ``F.unfold``).
* Task 1 (paper Eq. 5 region): ``R = U S V^T``; keep ``k`` leading columns of ``U`` by the energy
  criterion on ``e_i = s_i^2 / sum_j s_j^2``. ``threshold_rule=official`` (default) keeps
  ``k = #{i : cumsum(e)_i < eps}``, one vector fewer than the paper's rule (smallest ``k`` with
  ``cumsum(e)_k >= eps``) unless the sum hits ``eps`` exactly; ``threshold_rule=paper`` keeps
  the paper's ``k``.
* Task t >= 2 (Eq. 8-9 region): ``R_hat = R - M M^T R``, ``R_hat = U S V^T``; the energy already
  explained is ``(||R||^2 - ||R_hat||^2) / ||R||^2``; new directions are added, each counting
  ``s_i^2 / ||R||^2`` (the energy of the *full* R), until the explained energy reaches ``eps``;
  ``M <- [M, U[:, :k]]``, capped at ``d_l`` columns. Both rules agree here.
* The SVD and the criterion run in float64 on the CPU, as the official numpy code does.
* Thresholds: ``eps_l(t) = threshold[l] + t * threshold_increment`` with t = 0 at the first
  update (10-split CIFAR-100: 0.97 + 0.003 t; PMNIST: 0.95, 0.99, 0.99 constant).

While training task t >= 2 (``before_update``, i.e. after ``backward`` and before the optimizer
step, so momentum only ever sees projected gradients): ``G_l <- G_l - G_l M_l M_l^T`` for every
projected weight, computed as ``(G M) M^T`` when ``2 r < d`` and with the cached dense projector
``M M^T`` otherwise (same result, cheaper form). For a Linear layer used once per step,
``G = g^T X`` (``g`` the output gradient, ``X`` the batch's input rows), so the projected gradient
is also ``g^T (X - X M M^T)``; when the batch is small this input-side form is much cheaper and
is used instead (mathematically the same; the tests check both forms against the oracle). One-dimensional
parameters of the shared
network (biases, BatchNorm affine) get zero gradient from task 2 on.

Official behaviour vs paper, and the flags (official is the default everywhere):

* First-task basis size: ``threshold_rule`` (above).
* BatchNorm and biases: the official nets use BatchNorm without running statistics (see the
  ``alexnet_gpm`` model) and freeze every 1-D parameter after task 1 (``freeze_1d=true``);
  ``freeze_1d=false`` lets them train on every task (unprotected), which the paper does not
  discuss.
* Optimizer: the official scripts use a fresh plain SGD per task (no momentum, no weight
  decay). ``reset_optimizer=true`` clears the optimizer state at every task, and the strategy's
  train defaults set momentum 0. A momentum given explicitly is kept (it acts on projected
  gradients only, so it does not break the protection); weight decay does break it (it adds
  ``lambda W`` after the projection) and is the user's responsibility.
* Not reproduced: the official per-task validation split with learning-rate patience and
  best-weights restore (CIFAR-100, 5-Datasets); the suite trains a fixed number of epochs, and
  the memory is built from the last-epoch weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, cast

import torch
import torch.nn.functional as F
from avalanche.models import MultiHeadClassifier
from avalanche.models.utils import avalanche_forward
from avalanche.training.supervised import Naive
from torch import nn

from cl_bench.config import ComponentConfig, param
from cl_bench.errors import UserError
from cl_bench.models.heads import MultiHeadNet
from cl_bench.registry import STRATEGIES
from cl_bench.tensor_data import gather
from cl_bench.templates import SMOKE_DIGITS_MLP, ReportingPlugin, StrategyContext, eval_mode, fast
from cl_bench.traits import StrategyTraits

GPM_TRAIN_DEFAULTS = {"momentum": 0.0, "weight_decay": 0.0}  # the official plain SGD


@dataclass
class GPMConfig(ComponentConfig):
    threshold: list[float] = param(
        [0.97],
        "energy threshold eps per projected layer, in layer order (the last "
        "value repeats); paper: PMNIST 0.95,0.99,0.99, CIFAR-100 0.97",
        low=0.0,
        high=1.0,
        low_open=True,
    )
    threshold_increment: float = param(0.0, "added to every threshold per finished task (CIFAR-100: 0.003)", low=0.0)
    threshold_rule: str = param(
        "official", "first-task basis size: official (one vector fewer) or paper", choices=("official", "paper")
    )
    representation_samples: list[int] = param(
        [300],
        "samples per projected layer for the representation matrix, "
        "in layer order, last repeats (PMNIST 300; CIFAR-100 "
        "24,100,100,125,125)",
        low=1,
    )
    freeze_1d: bool = param(True, "freeze biases and BatchNorm affine parameters after task 1 (official)")
    reset_optimizer: bool = param(True, "fresh optimizer state at every task (official)")


# ----------------------------------------------------------------------------- pure memory maths


def energy_rank(singular_values: torch.Tensor, threshold: float, rule: str = "official") -> int:
    """Number of leading singular vectors the first-task criterion keeps (see module docstring)."""
    energy = singular_values.double() ** 2
    cumulative = torch.cumsum(energy / energy.sum(), 0)
    below = int((cumulative < threshold).sum())
    if rule == "paper":
        return min(below + 1, len(singular_values))
    return below


def update_basis(
    basis: Optional[torch.Tensor], representation: torch.Tensor, threshold: float, rule: str = "official"
) -> torch.Tensor:
    """GPM's memory update of one layer: the new orthonormal basis (float64, ``(d, r)``).

    ``basis`` is None (or has no columns) before the first update; ``representation`` is ``R``,
    shape ``(d, n)``.
    """
    matrix = representation.detach().to("cpu", torch.float64)
    dim = matrix.shape[0]
    if basis is None or basis.shape[1] == 0:
        left, singular_values, _ = torch.linalg.svd(matrix, full_matrices=False)
        return left[:, : energy_rank(singular_values, threshold, rule)].contiguous()
    basis = basis.to(torch.float64)
    total = (matrix**2).sum()
    residual = matrix - basis @ (basis.T @ matrix)
    left, singular_values, _ = torch.linalg.svd(residual, full_matrices=False)
    explained = (total - (singular_values**2).sum()) / total
    # energy explained before adding direction i: walk while it is below the threshold
    before_each = explained + torch.cumsum(singular_values**2 / total, 0) - singular_values**2 / total
    added = int((before_each < threshold).sum())
    if added == 0:
        return basis
    return torch.cat([basis, left[:, :added]], dim=1)[:, :dim].contiguous()


def project_out(gradient: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``G - G M M^T`` for a gradient viewed as ``(out, d)`` (the oracle form, for tests)."""
    flat = gradient.reshape(gradient.shape[0], -1)
    return (flat - (flat @ basis) @ basis.T).reshape(gradient.shape)


def layer_input_matrix(module: nn.Module, layer_input: torch.Tensor) -> torch.Tensor:
    """``R`` of one layer from its input batch: columns are inputs (Linear) or im2col patches (Conv2d)."""
    if isinstance(module, nn.Linear):
        return layer_input.reshape(-1, module.in_features).T
    conv = cast(nn.Conv2d, module)  # projected_layers holds only Linear and Conv2d layers
    padding = cast(tuple[int, ...], conv.padding)  # numeric: unfold takes no padding="same"
    patches = F.unfold(
        layer_input, conv.kernel_size, dilation=conv.dilation, padding=padding, stride=conv.stride
    )  # (N, C*kh*kw, L), rows in weight.view(out, -1) order
    return patches.permute(1, 0, 2).reshape(patches.shape[1], -1)


# ----------------------------------------------------------------------------- which layers


def head_modules(model: nn.Module) -> set[int]:
    """ids of the modules inside per-task heads (never projected, never frozen)."""
    heads: set[int] = set()
    for module in model.modules():
        task_heads = module.heads if isinstance(module, MultiHeadNet) else module
        if isinstance(module, (MultiHeadNet, MultiHeadClassifier)):
            heads.update(id(sub) for sub in task_heads.modules())
    return heads


def projected_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear/Conv2d of the shared network, in module order, keyed by qualified name."""
    heads = head_modules(model)
    layers: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if id(module) in heads or not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros"):
            raise UserError(
                f"GPM supports plain convolutions only; layer {name} has groups={module.groups}, "
                f"padding_mode={module.padding_mode!r}"
            )
        layers[name] = module
    if not layers:
        raise UserError("GPM found no Linear or Conv2d layer to protect in this model")
    return layers


def shared_1d_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Biases and norm-layer affine parameters outside the per-task heads."""
    heads = head_modules(model)
    return [
        parameter
        for module in model.modules()
        if id(module) not in heads
        for parameter in module.parameters(recurse=False)
        if parameter.dim() == 1
    ]


def per_layer(values: list, count: int) -> list:
    """``values`` extended to ``count`` entries by repeating the last one."""
    return [values[min(i, len(values) - 1)] for i in range(count)]


# ----------------------------------------------------------------------------- the plugin


class GPMPlugin(ReportingPlugin):
    """Builds the per-layer memory at the end of each experience and projects gradients during the next."""

    def __init__(self, config: GPMConfig):
        super().__init__()
        self.config = config
        self.bases: dict[str, torch.Tensor] = {}  # layer name -> (d, r) float64 on the CPU
        self.tasks_done = 0
        self.memory_history: list[dict] = []  # per finished task: layer -> fraction of d_l occupied
        self._projectors: dict[str, tuple[nn.Module, str, torch.Tensor]] = {}
        self._frozen: list[nn.Parameter] = []
        self._captured: dict[str, list] = {}
        self._hooks: list = []

    # -- training
    def before_training_exp(self, strategy, **kwargs):
        if self.config.reset_optimizer:
            strategy.optimizer.state.clear()
        self._release()
        if self.tasks_done == 0:
            return
        for name, module in projected_layers(strategy.model).items():
            basis = self.bases.get(name)
            if basis is None or basis.shape[1] == 0:
                continue
            basis = basis.to(strategy.device, module.weight.dtype)
            if 2 * basis.shape[1] < basis.shape[0]:
                self._projectors[name] = (module, "basis", basis)
            else:
                self._projectors[name] = (module, "dense", basis @ basis.T)
            if isinstance(module, nn.Linear):
                self._hooks.append(module.register_forward_hook(self._capture_hook(name)))
        if self.config.freeze_1d:
            self._frozen = shared_1d_parameters(strategy.model)

    def _capture_hook(self, name: str):
        """Keeps a Linear layer's input rows and output gradient of the current step (see before_update)."""

        def hook(module, args, output):
            if not (module.training and torch.is_grad_enabled() and output.requires_grad):
                return
            calls = self._captured.setdefault(name, [])
            calls.append([args[0].detach().reshape(-1, module.in_features), None])
            output.register_hook(lambda grad, entry=calls[-1]: entry.__setitem__(1, grad.reshape(-1, grad.shape[-1])))

        return hook

    def before_update(self, strategy, **kwargs):
        for name, (module, form, matrix) in self._projectors.items():
            gradient = module.weight.grad
            calls = self._captured.get(name, ())
            if gradient is None:
                continue
            flat = gradient.view(gradient.shape[0], -1)
            if (
                len(calls) == 1
                and calls[0][1] is not None
                and self._input_side_is_cheaper(flat, form, matrix, len(calls[0][0]))
            ):
                # G = g^T X, so G - G M M^T = g^T (X - X M M^T): with a small batch, projecting the batch's
                # input rows is much cheaper than projecting the (out x d) gradient (same result)
                inputs, output_gradient = calls[0]
                if form == "basis":
                    projected_inputs = torch.addmm(inputs, inputs @ matrix, matrix.T, alpha=-1)
                else:
                    projected_inputs = torch.addmm(inputs, inputs, matrix, alpha=-1)
                torch.mm(output_gradient.T, projected_inputs, out=flat)
            elif form == "basis":
                flat.addmm_(flat @ matrix, matrix.T, alpha=-1)
            else:
                flat.sub_(flat @ matrix)
        self._captured = {}
        for parameter in self._frozen:
            if parameter.grad is not None:
                parameter.grad.zero_()

    @staticmethod
    def _input_side_is_cheaper(flat: torch.Tensor, form: str, matrix: torch.Tensor, rows: int) -> bool:
        out_features, dim = flat.shape
        per_row = 2 * matrix.shape[1] if form == "basis" else dim  # multiply-adds per input element
        return rows * dim * per_row + out_features * rows * dim < out_features * dim * per_row

    def _release(self) -> None:
        """Drops the per-task caches and hooks (rebuilt from the bases at the next task; never checkpointed)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks, self._projectors, self._frozen, self._captured = [], {}, [], {}

    # -- memory update
    def after_training_exp(self, strategy, **kwargs):
        self._release()
        layers = projected_layers(strategy.model)
        samples = per_layer(self.config.representation_samples, len(layers))
        thresholds = [
            value + self.tasks_done * self.config.threshold_increment
            for value in per_layer(self.config.threshold, len(layers))
        ]
        inputs = self.layer_inputs(strategy, layers, max(samples))
        occupancy = {}
        for (name, module), n_samples, threshold in zip(layers.items(), samples, thresholds):
            representation = layer_input_matrix(module, inputs[name][:n_samples])
            self.bases[name] = update_basis(self.bases.get(name), representation, threshold, self.config.threshold_rule)
            occupancy[name] = self.bases[name].shape[1] / self.bases[name].shape[0]
        self.memory_history.append(occupancy)
        self.tasks_done += 1
        self._release()

    @torch.no_grad()
    def layer_inputs(self, strategy, layers: dict[str, nn.Module], n_samples: int) -> dict[str, torch.Tensor]:
        """Inputs of every layer on ``n_samples`` random training samples, one eval-mode pass."""
        inputs, task_labels = sample_experience(strategy.experience.dataset, n_samples)
        captured: dict[str, torch.Tensor] = {}
        hooks = [
            module.register_forward_pre_hook(
                lambda _module, args, name=name: captured.__setitem__(name, args[0].detach())
            )
            for name, module in layers.items()
        ]
        try:
            with eval_mode(strategy.model) as model:
                avalanche_forward(model, inputs.to(strategy.device), task_labels.to(strategy.device))
        finally:
            for hook in hooks:
                hook.remove()
        return captured

    def record_info(self) -> dict:
        """Memory occupancy per layer after each task, for the run record and the memory plot."""
        dims = {name: basis.shape[0] for name, basis in self.bases.items()}
        return {"gpm_memory": {"layer_dims": dims, "occupancy": self.memory_history}}


def sample_experience(dataset, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, task labels) of ``n_samples`` training samples drawn without replacement (fresh permutation)."""
    order = torch.randperm(len(dataset))[:n_samples]
    tensors = gather(dataset)
    if tensors is not None:
        inputs, _, task_labels = tensors
        return inputs[order], task_labels[order]
    items = [dataset.eval()[int(i)] for i in order]  # per-item datasets (e.g. CIFAR): eval transforms
    return torch.stack([item[0] for item in items]), torch.tensor([int(item[2]) for item in items])


def build_gpm_template(context: StrategyContext, plugins: list):
    """Avalanche's plain SGD template; the GPM plugins do the rest."""
    return fast(Naive)(**context.template_kwargs(plugins))


# the bases are updated at every experience end: a task-free stream would make every mini-batch a task
GPM_TRAITS = StrategyTraits(task_free=False, run_plots=("gpm_memory",), smoke=SMOKE_DIGITS_MLP)


@STRATEGIES.register("gpm", config=GPMConfig, traits=GPM_TRAITS, train_defaults=GPM_TRAIN_DEFAULTS)
def build_gpm(config: GPMConfig, context: StrategyContext):
    """Gradient Projection Memory: gradients projected orthogonal to the stored input subspaces of past tasks."""
    return build_gpm_template(context, [GPMPlugin(config)])
