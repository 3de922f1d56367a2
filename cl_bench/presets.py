"""Named presets: the papers' hyperparameters per benchmark, as config files shipped with the package.

A preset is a YAML file in ``cl_bench/presets/`` in the ``--config`` format plus a one-line
``description``. It is the lowest explicit layer of a run's config: ``--config``, the CLI flags
and ``--set`` override it. Its component settings apply to the fields the chosen component has,
so ``--preset pmnist --strategy ewc`` runs EWC under the same protocol (scenario, model, train)
and simply ignores GPM's thresholds. The resolved values, not the preset's name, define the run
(its id and record); the command line in the record names the preset.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cl_bench.errors import UserError

PRESET_DIR = Path(__file__).parent / "presets"
# libyaml's parser where PyYAML has it (the wheels do): the presets are read on every command that validates
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> tuple[str, dict]:
    """(description, config spec) of the preset ``name``; a UserError naming the valid ones otherwise."""
    path = PRESET_DIR / f"{name}.yaml"
    if name not in preset_names():  # a name, never a path: "../x" must not reach another file
        raise UserError(f"unknown preset {name!r}; valid: {', '.join(preset_names())} (see `cl-bench list preset`)")
    spec = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER) or {}
    description = str(spec.pop("description", ""))
    return description, spec
