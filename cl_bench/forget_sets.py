"""Forget sets: which training rows an unlearning evaluation forgets, and which a retrained reference never sees.

Written ``class:K`` (every training row of class K), ``random:FRACTION`` (that share of all training rows, drawn
uniformly) or ``experience:K`` (every row of training experience K, 0-based). The evaluator and the reference run
(``--set scenario.exclude=...``) must select the same rows, so the random draw comes from
:func:`forget_generator`, fixed by the run seed alone (a suite choice: seeds then average over forget sets too).
Masks are taken over the training rows as the runner holds them (after ``scenario.train_per_class`` and the
validation hold-out), concatenated in experience order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from cl_bench.errors import UserError

FORGET_KINDS = ("class", "random", "experience")
FORGET_STREAM = 0xF0E7  # mixed into the run seed for the random draw


def forget_generator(seed: int) -> torch.Generator:
    """The generator of a ``random:`` forget set of a run with ``seed`` (shared by evaluator and reference)."""
    return torch.Generator().manual_seed(int(seed) * 65_537 + FORGET_STREAM)


@dataclass(frozen=True)
class ForgetSpec:
    """What to forget: every training sample of a class, a random fraction, or a whole experience."""

    kind: str
    value: float

    @classmethod
    def parse(cls, text: str) -> "ForgetSpec":
        kind, sep, raw = text.partition(":")
        if not sep or kind not in FORGET_KINDS:
            raise UserError(
                f"forget set {text!r}: write class:K, random:FRACTION or experience:K (e.g. class:3, random:0.1)"
            )
        try:
            value = float(raw)
        except ValueError:
            raise UserError(f"forget set {text!r}: {raw!r} is not a number") from None
        if kind == "random" and not (0.0 < value < 1.0):
            raise UserError(f"forget set {text!r}: a random fraction must lie strictly between 0 and 1")
        if kind != "random" and (not value.is_integer() or value < 0):
            raise UserError(f"forget set {text!r}: a {kind} must be a non-negative integer")
        return cls(kind, value)

    def mask(
        self, targets: torch.Tensor, experiences: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Boolean mask over the training rows (labels ``targets``, experience index ``experiences``) of D_f; a
        UserError when it selects nothing or everything (nothing would be left to forget or to retain)."""
        chosen = self.members(targets, experiences)
        if chosen is None:
            count = round(self.value * len(targets))
            order = torch.randperm(len(targets), generator=generator)[:count]
            chosen = torch.zeros(len(targets), dtype=torch.bool)
            chosen[order] = True
        selected = int(chosen.sum())
        if selected == 0:
            raise UserError(
                f"forget set {self.text()} selects no training sample; choose a class or experience present"
            )
        if selected == len(targets):
            raise UserError(f"forget set {self.text()} selects the whole training set; nothing would be retained")
        return chosen

    def members(self, targets: torch.Tensor, experiences: torch.Tensor) -> Optional[torch.Tensor]:
        """Mask of the rows of the forgotten class or experience, in any split (training or held-out); None for a
        random forget set, which names training rows only."""
        if self.kind == "class":
            return targets == int(self.value)
        if self.kind == "experience":
            return experiences == int(self.value)
        return None

    def text(self) -> str:
        return f"{self.kind}:{self.value:g}"
