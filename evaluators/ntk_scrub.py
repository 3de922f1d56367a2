"""NTK scrubbing on a parameter subset: the closed form behind Fast-NTK (Li, Hsu, Chen, Marculescu; CVPR 2024
Workshops, arXiv 2312.14923) and the full-model NTK unlearning it builds on (Golatkar, Achille, Soatto; ECCV 2020).

The model is linearised around a centre theta_c in the trained subset theta (BatchNorm affine parameters of a
CNN, a ViT's prompt tokens, optionally the head; every other parameter frozen): f_lin(x; theta) = f(x; theta_c)
+ J(x) (theta - theta_c). A ridge fit of f_lin on a set S (squared loss + lam ||theta - theta_c||^2) is

    primal:  theta_S = theta_c + (J_S^T J_S + lam I)^-1 J_S^T e_S
    dual:    theta_S = theta_c + J_S^T (Theta_SS + lam I)^-1 e_S,        Theta_SS = J_S J_S^T (the empirical NTK)

with J_S the per-sample Jacobians stacked sample-major then class, and e_S the residual: target - output (mse) or
one-hot(y) - softmax (ce, the official notebook's Gauss-Newton surrogate). The unlearning direction is
Delta = theta_{D_r} - theta_D (theta_c cancels) and theta_u = theta_D + s Delta. The single-formula (Schur) form
of the ECCV paper gives the same Delta by block inversion (:func:`schur_direction`).

Deviations from the official notebook: one absolute lam for both solves (the notebook scales it by the set size,
n wd and n_r wd, so a tiny forget set gives Delta != 0); Jacobians by ``torch.func`` (vmap over jacrev) in batches,
streamed into the p x p normal equations in primal mode so J is never stored; every solve in float64 with its
condition number reported. This module is the math only; the evaluator is :mod:`evaluators.fast_ntk`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

LOSSES = ("mse", "ce")


def subset_size(model: nn.Module, names: Sequence[str]) -> int:
    """p: the number of scalars in the parameters ``names``."""
    named = dict(model.named_parameters())
    return sum(named[name].numel() for name in names)


def shifted_condition(eigenvalues: Tensor, lam: float) -> float:
    """Condition number of A + lam I from the ascending eigenvalues of a positive semi-definite A: (e_max + lam) /
    (e_min + lam), e_min clamped at 0 (rounding can make it negative); inf when singular, 1 for an empty A."""
    if not len(eigenvalues):
        return 1.0
    smallest = max(float(eigenvalues[0]), 0.0) + lam
    return (float(eigenvalues[-1]) + lam) / smallest if smallest > 0 else float("inf")


def flat(parameters: dict[str, Tensor]) -> Tensor:
    return torch.cat([value.reshape(-1) for value in parameters.values()])


def jacobian(model: nn.Module, names: Sequence[str], inputs: Tensor) -> Tensor:
    """Per-sample Jacobians of the logits with respect to the parameters ``names``: (B * K, p), rows sample-major
    then class, columns in the order of ``names``. The model is evaluated as it is (call it in eval mode)."""
    named = dict(model.named_parameters())
    theta = {name: named[name].detach() for name in names}
    rest = {name: value.detach() for name, value in named.items() if name not in theta}
    buffers = dict(model.named_buffers())

    def logits(subset: dict[str, Tensor], sample: Tensor) -> Tensor:
        return functional_call(model, {**rest, **subset, **buffers}, (sample.unsqueeze(0),))[0]

    per_sample = vmap(jacrev(logits), in_dims=(None, 0))(theta, inputs)  # name -> (B, K, *shape)
    batch, classes = inputs.shape[0], next(iter(per_sample.values())).shape[1]
    return torch.cat([per_sample[name].reshape(batch, classes, -1) for name in names], dim=2).reshape(
        batch * classes, -1
    )


def residual(outputs: Tensor, targets: Tensor, loss: str) -> Tensor:
    """e = target - output (mse: ``targets`` are the regression targets, shape of ``outputs``) or one-hot(y) -
    softmax (ce), flattened sample-major."""
    if loss == "mse":
        return (targets - outputs).reshape(-1)
    if loss == "ce":
        one_hot = nn.functional.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
        return (one_hot - torch.softmax(outputs, dim=1)).reshape(-1)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


@dataclass
class NormalEquations:
    """J^T J and J^T e of one set, accumulated batch by batch in float64 (J itself is never kept)."""

    gram: Tensor
    rhs: Tensor
    rows: int = 0
    _eigenvalues: Optional[Tensor] = field(default=None, repr=False, compare=False)

    @classmethod
    def empty(cls, size: int) -> "NormalEquations":
        return cls(torch.zeros(size, size, dtype=torch.float64), torch.zeros(size, dtype=torch.float64))

    def condition(self, lam: float) -> float:
        """Condition number of gram + lam I, from the gram matrix's spectrum (computed once)."""
        if self._eigenvalues is None:
            self._eigenvalues = torch.linalg.eigvalsh(self.gram)
        return shifted_condition(self._eigenvalues, lam)

    def add(self, jacobian_rows: Tensor, residual_rows: Tensor) -> None:
        self._eigenvalues = None
        rows = jacobian_rows.double()
        self.gram += rows.T @ rows
        self.rhs += rows.T @ residual_rows.double()
        self.rows += len(residual_rows)


def accumulate(
    model: nn.Module, names: Sequence[str], batches: Iterable[tuple[Tensor, Tensor]], loss: str
) -> NormalEquations:
    """The normal equations of a set given as (inputs, targets) batches, at the model's current parameters."""
    size = subset_size(model, names)
    equations = NormalEquations.empty(size)
    for inputs, targets in batches:
        with torch.no_grad():
            outputs = model(inputs)
        equations.add(jacobian(model, names, inputs), residual(outputs, targets, loss))
    return equations


def ridge_step(equations: NormalEquations, lam: float) -> tuple[Tensor, float]:
    """(theta_S - theta_c, condition number) of the primal ridge solve, in float64. The condition number of
    J^T J + lam I comes from the spectrum of J^T J, computed once per set, so a list of lam costs one solve each."""
    system = equations.gram + lam * torch.eye(len(equations.rhs), dtype=torch.float64)
    return torch.linalg.solve(system, equations.rhs), equations.condition(lam)


def primal_direction(retain: NormalEquations, forget: NormalEquations, lam: float) -> tuple[Tensor, dict]:
    """Delta = theta_{D_r} - theta_D from the two sets' normal equations; the diagnostics hold both condition
    numbers."""
    whole = NormalEquations(retain.gram + forget.gram, retain.rhs + forget.rhs, retain.rows + forget.rows)
    step_retain, condition_retain = ridge_step(retain, lam)
    step_whole, condition_whole = ridge_step(whole, lam)
    return step_retain - step_whole, {"condition_retain": condition_retain, "condition_whole": condition_whole}


def stacked(
    model: nn.Module, names: Sequence[str], batches: Sequence[tuple[Tensor, Tensor]], loss: str
) -> tuple[Tensor, Tensor]:
    """(J, e) of a set, materialised in float64 (the dual form needs them; the primal form never does). J is
    written batch by batch into one preallocated (n K, p) tensor, so the peak is J plus one batch's rows."""
    size = subset_size(model, names)
    total = 0
    for inputs, _ in batches:
        total += len(inputs)
    jacobians: Optional[Tensor] = None
    residuals: Optional[Tensor] = None
    offset = 0
    for inputs, targets in batches:
        with torch.no_grad():
            outputs = model(inputs)
        rows = jacobian(model, names, inputs)
        if jacobians is None or residuals is None:  # K is known after the first batch
            classes = len(rows) // len(inputs)
            jacobians = torch.empty(total * classes, size, dtype=torch.float64)
            residuals = torch.empty(total * classes, dtype=torch.float64)
        jacobians[offset : offset + len(rows)] = rows.double().cpu()
        residuals[offset : offset + len(rows)] = residual(outputs, targets, loss).double().cpu()
        offset += len(rows)
    if jacobians is None or residuals is None:
        return torch.empty(0, size, dtype=torch.float64), torch.empty(0, dtype=torch.float64)
    return jacobians, residuals


class DualSystem:
    """The dual (NTK) solves of D_r and D = D_r U D_f from the two sets' stacked Jacobians, without concatenating
    them: the kernel blocks Theta_rr, Theta_rf, Theta_ff are computed once, and each lam costs two solves of the
    kernel size (condition numbers from the blocks' spectra, also computed once)."""

    def __init__(self, retain: tuple[Tensor, Tensor], forget: tuple[Tensor, Tensor]):
        self.j_r, self.e_r = (tensor.double() for tensor in retain)
        self.j_f, self.e_f = (tensor.double() for tensor in forget)
        self.k_rr = self.j_r @ self.j_r.T
        k_rf = self.j_r @ self.j_f.T
        self.k_whole = torch.cat([torch.cat([self.k_rr, k_rf], 1), torch.cat([k_rf.T, self.j_f @ self.j_f.T], 1)])
        self._spectra: dict[str, Tensor] = {}

    def _condition(self, which: str, kernel: Tensor, lam: float) -> float:
        if which not in self._spectra:
            self._spectra[which] = torch.linalg.eigvalsh(kernel)
        return shifted_condition(self._spectra[which], lam)

    def step_retain(self, lam: float) -> tuple[Tensor, float]:
        """(theta_{D_r} - theta_c, condition number of Theta_rr + lam I)."""
        if not len(self.k_rr):
            return torch.zeros(self.j_r.shape[1], dtype=torch.float64), 1.0
        eye = torch.eye(len(self.k_rr), dtype=torch.float64)
        alpha = torch.linalg.solve(self.k_rr + lam * eye, self.e_r)
        return self.j_r.T @ alpha, self._condition("retain", self.k_rr, lam)

    def step_whole(self, lam: float) -> tuple[Tensor, float]:
        """(theta_D - theta_c, condition number of Theta_DD + lam I), as J_r^T alpha_r + J_f^T alpha_f."""
        eye = torch.eye(len(self.k_whole), dtype=torch.float64)
        alpha = torch.linalg.solve(self.k_whole + lam * eye, torch.cat([self.e_r, self.e_f]))
        n_r = len(self.e_r)
        step = self.j_r.T @ alpha[:n_r] + self.j_f.T @ alpha[n_r:]
        return step, self._condition("whole", self.k_whole, lam)


def dual_step(jacobian_rows: Tensor, residual_rows: Tensor, lam: float) -> tuple[Tensor, float]:
    """(theta_S - theta_c = J^T (J J^T + lam I)^-1 e, condition number of the kernel system), in float64."""
    rows = jacobian_rows.double()
    if not len(rows):
        return torch.zeros(rows.shape[1], dtype=torch.float64), 1.0
    kernel = rows @ rows.T + lam * torch.eye(len(rows), dtype=torch.float64)
    return rows.T @ torch.linalg.solve(kernel, residual_rows.double()), shifted_condition(
        torch.linalg.eigvalsh(kernel), 0
    )


def dual_direction(retain: tuple[Tensor, Tensor], forget: tuple[Tensor, Tensor], lam: float) -> Tensor:
    whole = (torch.cat([retain[0], forget[0]]), torch.cat([retain[1], forget[1]]))
    return dual_step(*retain, lam)[0] - dual_step(*whole, lam)[0]


def predicted_scale(delta: Tensor, residual_motion: Tensor, clip: float = 5.0) -> float:
    """Golatkar's predicted step scale s = ||Delta||_pred / ||Delta||, clipped to [0, clip]. ``residual_motion`` is
    m = (theta_D - theta_init) - w_retain; with c = cos(Delta, m), ||Delta||_pred = ||Delta|| + 2 c ||m|| when
    c >= 0, else ||Delta|| + 2 sin(arccos(c) - pi/2) ||m||."""
    import math

    norm, motion = float(delta.norm()), float(residual_motion.norm())
    if norm == 0.0 or motion == 0.0:
        return 1.0
    cosine = float(delta.double() @ residual_motion.double()) / (norm * motion)
    cosine = max(-1.0, min(1.0, cosine))
    if cosine < 0:
        predicted = norm + 2.0 * math.sin(math.acos(cosine) - math.pi / 2) * motion
    else:
        predicted = norm + 2.0 * cosine * motion
    return min(max(predicted / norm, 0.0), clip)


def schur_direction(retain: tuple[Tensor, Tensor], forget: tuple[Tensor, Tensor], lam: float) -> Tensor:
    """The ECCV paper's single formula, Delta = -P J_f^T M v, with P = I - J_r^T (K_rr)^-1 J_r, M the inverse Schur
    complement (K_ff - Theta_fr K_rr^-1 Theta_rf)^-1 and v = e_f - Theta_fr K_rr^-1 e_r (K = Theta + lam I); valid
    when theta_D is the ridge fit on D."""
    j_r, e_r = (tensor.double() for tensor in retain)
    j_f, e_f = (tensor.double() for tensor in forget)
    k_rr = j_r @ j_r.T + lam * torch.eye(len(j_r), dtype=torch.float64)
    theta_fr = j_f @ j_r.T
    k_ff = j_f @ j_f.T + lam * torch.eye(len(j_f), dtype=torch.float64)
    projector = torch.eye(j_r.shape[1], dtype=torch.float64) - j_r.T @ torch.linalg.solve(k_rr, j_r)
    schur = k_ff - theta_fr @ torch.linalg.solve(k_rr, theta_fr.T)
    v = e_f - theta_fr @ torch.linalg.solve(k_rr, e_r)
    return -projector @ j_f.T @ torch.linalg.solve(schur, v)


def apply_update(model: nn.Module, names: Sequence[str], delta: Tensor, scale: float = 1.0) -> nn.Module:
    """A copy of ``model`` with theta + scale * Delta written back into ``names`` (every other tensor untouched)."""
    import copy

    updated = copy.deepcopy(model)
    named = dict(updated.named_parameters())
    offset = 0
    with torch.no_grad():
        for name in names:
            parameter = named[name]
            step = delta[offset : offset + parameter.numel()].reshape(parameter.shape)
            parameter.add_(scale * step.to(parameter.dtype))
            offset += parameter.numel()
    if offset != len(delta):
        raise ValueError(f"Delta has {len(delta)} entries, the parameters {offset}")
    return updated
