"""Evaluator catalog (unlearning, multiplicity). Each module registers itself."""

from evaluators import rashomon_dropout  # noqa: F401
