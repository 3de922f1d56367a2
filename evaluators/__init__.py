"""Evaluator catalog (unlearning, multiplicity). Each module registers itself."""

from evaluators import fast_ntk, rashomon_dropout  # noqa: F401
