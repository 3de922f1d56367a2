"""Online-LoRA: task-free online continual learning with LoRA (Wei, Li, Marculescu; WACV 2025, arXiv 2411.05663).

Official code: github.com/Christina200/Online-LoRA-official (``Disjoint/engine.py``, ``Disjoint/lora.py``).

Model (spec section 2). The pre-trained timm ViT is frozen; the fused ``qkv`` Linear of every block is
wrapped by :class:`LoRAQKV`, which adds low-rank updates to the query and value slices only (key
untouched), rank ``r``, scale 1 (no ``alpha / r``), no dropout::

    q = W_q x + F_q x + B_q A_q x,    k = W_k x,    v = W_v x + F_v x + B_v A_v x

``(A, B)`` is the trainable pair (``A`` Kaiming-uniform with ``a = sqrt(5)``, ``B = 0``, so the wrapped
model starts equal to the backbone) and ``F`` the frozen part. The classification head is trained.
We wrap the Linear ourselves rather than use ``peft``: peft is not installed here, and peft's LoRA
layer for an ``nn.Linear`` adapts the layer's whole weight (one ``A`` of shape ``(r, dim)``, one ``B`` of
shape ``(3 dim, r)``), so targeting the fused ``qkv`` would also adapt the key rows and tie q and v to
one shared ``A``. peft's early ``MergedLinear`` (``enable_lora=[True, False, True]``, after Microsoft's
loralib) did adapt slices of a fused projection, but peft dropped it when it introduced multiple adapters
(huggingface/peft#263, see peft issue #852); reaching q and v alone with current peft would need the timm
attention rewritten with separate projections first.

Algorithm per training iteration (= one incoming mini-batch in a task-free stream, spec section 3):

1. ``L_data = CE(f(x), y) + sum_h CE(f(x_h), y_h)`` over the hard buffer ``H`` (mini-batches, summed).
2. ``w = L_data`` goes to the loss window *before* the regulariser.
3. ``L = L_data + (lambda / 2) sum Omega * (P - P_anchor)^2`` over the trainable LoRA matrices, once an
   importance estimate exists.
4. One Adam step (betas 0.9/0.999, eps 1e-8); the optimizer is built once and never reset.
5-7. :class:`PlateauDetector` on the window of the last ``window_length`` values ``w``: a new peak when
   ``mean > mean_last + sqrt(var_last)``; a plateau when ``mean < tau_mean``, ``var < tau_var`` (population
   variance) and a peak was seen. At a plateau: importance ``F`` on the hard buffer (squared gradients of
   the NLL at the model's own argmax prediction, eval mode), running average
   ``Omega <- F / n + (1 - 1 / n) Omega`` over the ``n`` plateaus so far, then merge + new trainable pair.
8. Hard buffer: the current batch (its pre-update loss) and the old entries (their losses of step 1),
   sorted by loss, the top ``hard_buffer_size`` mini-batches kept (stored tensors, not samples).

Paper vs official code (spec section 4), flag ``merge_mode``:

* ``paper`` (default): the frozen part is the sum of products ``F = sum_i B_i A_i``, kept as one dense
  frozen buffer ``frozen_delta_q/_v`` of shape ``(dim, dim)`` (the state-dict shape stays fixed for
  ``--resume`` however many merges happen); a merge adds ``B A`` to it and re-initialises ``A`` (Kaiming)
  and ``B = 0`` in place: function-preserving. The forward uses ``(W + F) x`` (one matmul, no extra cost).
* ``official``: one frozen pair, ``A_fz += A``, ``B_fz += B``, then ``A = B = 0`` in place; ``F = B_fz A_fz``,
  which adds the cross terms ``B_fz A + B A_fz`` from the second merge on (not function-preserving). The
  pair only revives through Adam's leftover moments (the "dead LoRA" of spec section 4), which is why the
  optimizer state must persist and Parameters are always modified in place, never replaced.
* In both modes the Adam state of the trainable pair is kept across merges (the official behaviour; the
  paper does not say).

Suite choices (each a flag):

* ``importance_mode``: ``official_flat`` (the official quirk: a whole hard-buffer mini-batch is one
  "sample", its ``(B, C)`` logits flattened to one row before log-softmax/argmax) or ``per_sample``
  (per-sample empirical Fisher with per-sample argmax, summed over the samples; computed with
  ``torch.func.vmap``; its scale is about ``B`` times larger, so ``reg_lambda`` means something else).
* ``anchor`` (pitfall 10): the penalty pulls ``A`` towards its value right after the last reset
  (``reset``, default; ``B``'s anchor is 0) or towards 0 (``zero``, the official penalty on the magnitude).
  In official mode both anchors are 0 anyway (the pair restarts at zero).
* ``tau_mean`` / ``tau_var``: the official 6.0 / 0.1 are for 100-200 classes (chance-level CE
  ln 100 = 4.6 per term, up to 5 terms summed, pitfall 1). Our streams have 10 classes (ln 10 = 2.3), so
  the defaults rescale them by the loss scale ln 10 / ln 100 = 1/2: ``tau_mean = 6.0 / 2 = 3.0`` and
  ``tau_var = 0.1 / 4 = 0.025`` (a variance scales with the square). Their calibration on task-free
  Fashion-MNIST is on the method's docs page.
* Learning rate (``train_defaults``): 3e-4, the official Sketch-20 script's value (configs 1e-4, README
  2e-4); measured against 1e-3 and 1e-4 on the docs page.

Deviations from the official code:

* The hard-buffer losses come from one forward pass over the concatenated buffer (same values up to
  float rounding as one pass per entry; the ViT has no batch statistics).
* Importance is computed in eval mode and the model is put back in train mode afterwards (the official
  loop leaves it in eval mode, pitfall 9; identical without dropout).
* Offline split scenarios work too: every training iteration is one incoming mini-batch and experience
  boundaries and task labels are never read (task-incremental scenarios are rejected).
* The record's ``plateau_samples`` counts training samples consumed (stream samples when ``epochs = 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from avalanche.training.supervised import Naive
from torch import nn

from cl_bench.checkpoint import state_type
from cl_bench.config import ComponentConfig, param
from cl_bench.errors import UserError
from cl_bench.registry import STRATEGIES
from cl_bench.templates import SMOKE_DIGITS_VIT, ReportingPlugin, StrategyContext, eval_mode, fast
from cl_bench.traits import StrategyTraits

ONLINE_LORA_TRAIN_DEFAULTS = {"optimizer": "adam", "lr": 3e-4, "batch_size": 64, "epochs": 1, "weight_decay": 0.0}


@dataclass
class OnlineLoRAConfig(ComponentConfig):
    rank: int = param(4, "LoRA rank r of the q and v updates (official 4)", low=1)
    merge_mode: str = param(
        "paper",
        "merge at a plateau: paper (sum of products, new pair re-initialised) or official (factor sums, pair zeroed)",
        choices=("paper", "official"),
    )
    reg_lambda: float = param(2000.0, "importance-penalty weight lambda (official MAS-weight 2000)", low=0.0)
    hard_buffer_size: int = param(4, "mini-batches kept in the hard buffer (official 4; CUB-200 8)", low=0)
    window_length: int = param(5, "length of the loss window (official 5)", low=1)
    tau_mean: float = param(
        3.0,
        "plateau threshold on the window mean (suite choice for 10 classes: the official "
        "6.0 for 100 classes times ln10/ln100)",
        low=0.0,
    )
    tau_var: float = param(
        0.025, "plateau threshold on the window variance (suite choice: the official 0.1 times (ln10/ln100)^2)", low=0.0
    )
    importance_mode: str = param(
        "official_flat",
        "importance: official_flat (a mini-batch is one flattened "
        "sample) or per_sample (per-sample Fisher, suite choice)",
        choices=("official_flat", "per_sample"),
    )
    anchor: str = param(
        "reset",
        "penalty anchor of A in paper mode: reset (its post-reset value, suite choice) or zero",
        choices=("reset", "zero"),
    )


# ----------------------------------------------------------------------------- the LoRA module


class LoRAQKV(nn.Module):
    """A timm fused ``qkv`` Linear with trainable and frozen low-rank updates of the q and v slices."""

    # parameters and buffers registered by name in __init__ (the frozen ones depend on merge_mode)
    lora_A_q: nn.Parameter
    lora_B_q: nn.Parameter
    lora_A_v: nn.Parameter
    lora_B_v: nn.Parameter
    frozen_delta_q: torch.Tensor  # merge_mode "paper"
    frozen_delta_v: torch.Tensor
    frozen_A_q: torch.Tensor  # other merge modes
    frozen_B_q: torch.Tensor
    frozen_A_v: torch.Tensor
    frozen_B_v: torch.Tensor

    def __init__(self, qkv: nn.Linear, rank: int, merge_mode: str = "paper"):
        super().__init__()
        if qkv.out_features % 3:
            raise UserError(f"online_lora expects a fused qkv Linear (out = 3 x dim), got out={qkv.out_features}")
        self.base = qkv
        self.merge_mode = merge_mode
        self.dim = qkv.out_features // 3
        factory: dict[str, Any] = {"device": qkv.weight.device, "dtype": qkv.weight.dtype}
        for name in ("q", "v"):
            setattr(self, f"lora_A_{name}", nn.Parameter(torch.empty(rank, qkv.in_features, **factory)))
            setattr(self, f"lora_B_{name}", nn.Parameter(torch.zeros(self.dim, rank, **factory)))
            nn.init.kaiming_uniform_(getattr(self, f"lora_A_{name}"), a=math.sqrt(5))
            if merge_mode == "paper":
                self.register_buffer(f"frozen_delta_{name}", torch.zeros(self.dim, qkv.in_features, **factory))
            else:
                self.register_buffer(f"frozen_A_{name}", torch.zeros(rank, qkv.in_features, **factory))
                self.register_buffer(f"frozen_B_{name}", torch.zeros(self.dim, rank, **factory))

    def trainable_pairs(self) -> dict[str, tuple[nn.Parameter, nn.Parameter]]:
        return {"q": (self.lora_A_q, self.lora_B_q), "v": (self.lora_A_v, self.lora_B_v)}

    def frozen_update(self, name: str) -> torch.Tensor:
        """The dense frozen update ``F`` of the q or v slice, shape (dim, in_features)."""
        if self.merge_mode == "paper":
            return getattr(self, f"frozen_delta_{name}")
        return getattr(self, f"frozen_B_{name}") @ getattr(self, f"frozen_A_{name}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight_q, weight_k, weight_v = self.base.weight.split(self.dim)
        if self.merge_mode == "paper":
            weight = torch.cat([weight_q + self.frozen_delta_q, weight_k, weight_v + self.frozen_delta_v])
            q, k, v = F.linear(x, weight, self.base.bias).split(self.dim, dim=-1)
        else:
            q, k, v = self.base(x).split(self.dim, dim=-1)
            q = q + F.linear(F.linear(x, self.frozen_A_q), self.frozen_B_q)
            v = v + F.linear(F.linear(x, self.frozen_A_v), self.frozen_B_v)
        q = q + F.linear(F.linear(x, self.lora_A_q), self.lora_B_q)
        v = v + F.linear(F.linear(x, self.lora_A_v), self.lora_B_v)
        return torch.cat([q, k, v], dim=-1)

    @torch.no_grad()
    def merge_and_reset(self) -> None:
        """Freeze the trainable pair into the frozen part and restart it, in place (see module docstring)."""
        for name, (lora_a, lora_b) in self.trainable_pairs().items():
            if self.merge_mode == "paper":
                getattr(self, f"frozen_delta_{name}").add_(lora_b @ lora_a)
                nn.init.kaiming_uniform_(lora_a, a=math.sqrt(5))
            else:
                getattr(self, f"frozen_A_{name}").add_(lora_a)
                getattr(self, f"frozen_B_{name}").add_(lora_b)
                lora_a.zero_()
            lora_b.zero_()


def add_lora(model: nn.Module, rank: int, merge_mode: str) -> nn.Module:
    """Freeze the ViT backbone and wrap the qkv of every block (in place); the head stays trainable."""
    from cl_bench.models.vit import find_vit

    vit = find_vit(model)
    for parameter in getattr(model, "backbone", vit).parameters():
        parameter.requires_grad_(False)
    for index, block in enumerate(vit.blocks):
        attn: Any = getattr(block, "attn", None)
        qkv = getattr(attn, "qkv", None)
        if isinstance(qkv, LoRAQKV):
            raise UserError("this model already carries LoRA adapters")
        if not isinstance(qkv, nn.Linear):
            raise UserError(f"online_lora expects block {index} to have attn.qkv as one fused Linear")
        attn.qkv = LoRAQKV(qkv, rank, merge_mode)
    return model


def lora_modules(model: nn.Module) -> list[LoRAQKV]:
    return [m for m in model.modules() if isinstance(m, LoRAQKV)]


def trainable_lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable LoRA matrices by qualified name, in module order."""
    return {name: p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1].startswith("lora_")}


# ----------------------------------------------------------------------------- pure pieces


@state_type  # held by the plugin, restored on --resume
class PlateauDetector:
    """The loss-window peak/plateau rule of spec section 3 (steps 5-7), a pure function of the sequence."""

    def __init__(self, window_length: int, tau_mean: float, tau_var: float):
        self.window_length = window_length
        self.tau_mean = tau_mean
        self.tau_var = tau_var
        self.window: list[float] = []
        self.peak = True  # official start: the first low, flat window is a plateau (pitfall 2)
        self.last_mean: Optional[float] = None
        self.last_var = 0.0

    def update(self, value: float) -> bool:
        """Add one loss value; True when this value completes a plateau."""
        self.window = (self.window + [float(value)])[-self.window_length :]
        mean = sum(self.window) / len(self.window)
        var = sum((v - mean) ** 2 for v in self.window) / len(self.window)
        if not self.peak:
            assert self.last_mean is not None  # set whenever peak turns False
            if mean > self.last_mean + math.sqrt(self.last_var):
                self.peak = True
        if self.peak and mean < self.tau_mean and var < self.tau_var:
            self.peak, self.last_mean, self.last_var = False, mean, var
            return True
        return False


def update_hard_buffer(entries: list, size: int) -> list:
    """The ``size`` highest-loss ``[inputs, targets, loss]`` entries of the pool (stable for ties)."""
    return sorted(entries, key=lambda entry: entry[2], reverse=True)[:size]


def running_average(previous: Optional[dict], estimate: dict, count: int) -> dict:
    """``estimate / count + (1 - 1 / count) previous``: the mean of ``count`` estimates (``previous`` the mean
    of the first ``count - 1``)."""
    if previous is None or count == 1:
        return {name: value.clone() for name, value in estimate.items()}
    return {name: estimate[name] / count + (1 - 1 / count) * previous[name] for name in estimate}


def importance_penalty(parameters: dict, importance: dict, anchors: dict, reg_lambda: float) -> torch.Tensor:
    """``(lambda / 2) sum Omega * (P - anchor)^2`` over the named parameters (missing anchor = 0)."""
    total = sum(
        (importance[name] * (p - anchors[name] if name in anchors else p) ** 2).sum() for name, p in parameters.items()
    )
    return reg_lambda / 2 * total


def hard_buffer_importance(model: nn.Module, parameters: dict, entries: list, mode: str) -> dict:
    """Sum over the hard-buffer entries of the squared gradients of the NLL at the predicted label (eval mode)."""
    names, values = list(parameters), tuple(parameters.values())
    fisher = {name: torch.zeros_like(p) for name, p in parameters.items()}
    with eval_mode(model), torch.enable_grad():
        for inputs, _, _ in entries:
            inputs = inputs.to(values[0].device)
            if mode == "official_flat":
                log_probs = F.log_softmax(model(inputs).reshape(1, -1), dim=1)
                loss = F.nll_loss(log_probs, log_probs.argmax(dim=1))
                squared = [g**2 for g in torch.autograd.grad(loss, values)]
            else:
                squared = [g.pow(2).sum(0) for g in per_sample_gradients(model, names, values, inputs)]
            for name, value in zip(names, squared):
                fisher[name] += value.detach()
    return fisher


def per_sample_gradients(model: nn.Module, names: list, values: tuple, inputs: torch.Tensor) -> tuple:
    """Gradient of each sample's NLL at its own predicted label w.r.t. ``values`` (leading batch dim)."""
    import warnings

    from torch.func import functional_call, grad, vmap

    def sample_loss(parameter_values, sample):
        logits = functional_call(model, dict(zip(names, parameter_values)), (sample.unsqueeze(0),))
        log_probs = F.log_softmax(logits, dim=-1)
        return -log_probs.max(dim=-1).values.sum()  # NLL at the argmax = minus the max log-probability

    with warnings.catch_warnings():
        # CPU attention has no batching rule yet: vmap falls back to a loop (correct, slower)
        warnings.filterwarnings("ignore", message="There is a performance drop")
        # detached: the outer autograd must not see the importance as a function of the parameters
        return vmap(grad(sample_loss), in_dims=(None, 0))(tuple(v.detach() for v in values), inputs)


# ----------------------------------------------------------------------------- the plugin


class OnlineLoRAPlugin(ReportingPlugin):
    """Hard-buffer loss, importance penalty, loss-window plateaus and merges; all its state is checkpointed."""

    def __init__(self, config: OnlineLoRAConfig):
        super().__init__()
        self.config = config
        self.detector = PlateauDetector(config.window_length, config.tau_mean, config.tau_var)
        self.importance: Optional[dict] = None  # Omega per trainable LoRA matrix
        self.anchors: dict = {}  # paper mode, anchor=reset: A right after its last re-initialisation
        self.hard_buffer: list = []  # [inputs, targets, loss] mini-batches
        self.batches_seen = 0
        self.samples_seen = 0
        self.plateau_batches: list[int] = []
        self.plateau_samples: list[int] = []
        self.loss_trace: list[float] = []  # the window value w of every mini-batch
        self.step: Optional[dict] = None  # losses of the current iteration, between backward and update

    def before_training_exp(self, strategy, **kwargs):
        # checkpoints restore tensors on the CPU
        device = strategy.device
        if self.importance is not None:
            self.importance = {name: value.to(device) for name, value in self.importance.items()}
        self.anchors = {name: value.to(device) for name, value in self.anchors.items()}
        self.hard_buffer = [[x.to(device), y.to(device), loss] for x, y, loss in self.hard_buffer]

    def before_backward(self, strategy, **kwargs):
        current = F.cross_entropy(strategy.mb_output.detach(), strategy.mb_y)
        terms = []
        if self.hard_buffer:
            logits = strategy.model(torch.cat([entry[0] for entry in self.hard_buffer]))
            terms = [
                F.cross_entropy(part, entry[1])
                for part, entry in zip(logits.split([len(entry[1]) for entry in self.hard_buffer]), self.hard_buffer)
            ]
            strategy.loss = strategy.loss + sum(terms)
        # one device sync for all the floats of this step
        window, current_loss, *hard_losses = torch.stack(
            [value.detach().reshape(()) for value in [strategy.loss, current, *terms]]
        ).tolist()
        self.step = {"current": current_loss, "hard": hard_losses, "window": window}
        if self.importance is not None:
            strategy.loss = strategy.loss + importance_penalty(
                trainable_lora_parameters(strategy.model), self.importance, self.anchors, self.config.reg_lambda
            )

    def after_update(self, strategy, **kwargs):
        step, self.step = self.step, None
        self.batches_seen += 1
        self.samples_seen += len(strategy.mb_y)
        self.loss_trace.append(step["window"])
        if self.detector.update(step["window"]):
            self.on_plateau(strategy.model)
        pool = [[strategy.mb_x.detach().clone(), strategy.mb_y.detach().clone(), step["current"]]]
        pool += [[x, y, loss] for (x, y, _), loss in zip(self.hard_buffer, step["hard"])]
        self.hard_buffer = update_hard_buffer(pool, self.config.hard_buffer_size)

    def on_plateau(self, model: nn.Module) -> None:
        """Importance on the (pre-update) hard buffer, running average, then merge and a new trainable pair."""
        self.plateau_batches.append(self.batches_seen)
        self.plateau_samples.append(self.samples_seen)
        parameters = trainable_lora_parameters(model)
        estimate = hard_buffer_importance(model, parameters, self.hard_buffer, self.config.importance_mode)
        self.importance = running_average(self.importance, estimate, len(self.plateau_batches))
        for module in lora_modules(model):
            module.merge_and_reset()
        if self.config.merge_mode == "paper" and self.config.anchor == "reset":
            self.anchors = {name: p.detach().clone() for name, p in parameters.items() if ".lora_A_" in name}

    def record_info(self) -> dict:
        return {
            "online_lora": {
                "plateau_batches": list(self.plateau_batches),
                "plateau_samples": list(self.plateau_samples),
                "merges": len(self.plateau_batches),
                "merge_mode": self.config.merge_mode,
                "importance_mode": self.config.importance_mode,
                "anchor": self.config.anchor,
                "tau_mean": self.config.tau_mean,
                "tau_var": self.config.tau_var,
                "batches_seen": self.batches_seen,
                "samples_seen": self.samples_seen,
                "loss_window_values": list(self.loss_trace),
            }
        }


@STRATEGIES.register(
    "online_lora",
    config=OnlineLoRAConfig,
    traits=StrategyTraits(needs_vit=True, smoke=SMOKE_DIGITS_VIT),
    train_defaults=ONLINE_LORA_TRAIN_DEFAULTS,
)
def build_online_lora(config: OnlineLoRAConfig, context: StrategyContext):
    """Online-LoRA: LoRA on a frozen ViT's q and v, merged at loss plateaus, importance-weighted penalty."""
    if context.train.optimizer != "adam":
        raise UserError("online_lora trains with Adam (official); drop train.optimizer=sgd")
    if getattr(context.scenario, "task_labels", False):
        raise UserError(
            "online_lora is class-incremental and never reads task labels; "
            "use a scenario without task labels (e.g. --set scenario.task_labels=false)"
        )
    model = add_lora(context.model, config.rank, config.merge_mode)
    kwargs = context.template_kwargs([OnlineLoRAPlugin(config)])
    # every parameter, in model order, like Avalanche's own optimizer reset (frozen ones never get a gradient)
    kwargs["optimizer"] = torch.optim.Adam(
        model.parameters(), lr=context.train.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=context.train.weight_decay
    )
    return fast(Naive)(**kwargs)
