"""The command line's light modules stay light: no torch, no Avalanche, and no import cycle among them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIGHT = [
    "cl_bench.params",
    "cl_bench.cards",
    "cl_bench.registry",
    "cl_bench.config",
    "cl_bench.flags",
    "cl_bench.pretrain_config",
    "cl_bench.presets",
    "cl_bench.leaderboard",
    "cl_bench.sweep",
    "cl_bench.cli",
]


@pytest.mark.parametrize("module", LIGHT)
def test_a_light_module_imports_alone_without_torch(module):
    code = (
        f"import sys, {module}; heavy = [m for m in ('torch', 'avalanche') if m in sys.modules]; "
        f"assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_leaf_modules_import_nothing_else_from_the_package():
    for leaf in ("params.py", "errors.py"):
        text = (ROOT / "cl_bench" / leaf).read_text()
        assert "from cl_bench" not in text and "import cl_bench" not in text, leaf
