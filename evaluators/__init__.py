"""Evaluator catalog (unlearning, multiplicity). Each module registers itself."""
