"""Start-up time of the commands that only list, validate or aggregate, beside the bare interpreter.

Every case is a fresh process, timed by wall clock; each is run ``--repeat`` times (after one warm-up
run of the whole list, so the file cache is warm for all) and the median is reported. The baselines
are measured in the same invocation: ``python -c pass``, ``python -c "import torch"``, and for each
command the imports it truly needs (``yaml`` for the config layers, ``pydantic`` for run records,
``matplotlib`` for plots). The ratios printed are the command against the bare interpreter plus those
imports; the target (issue 14) is <= 1.5x and well under 3 s.

For contrast the last row is a run whose error only a cross-field check finds: that check is code in
the component's config class, which runs once the component is imported (torch and Avalanche).

    python benchmarks/startup.py [--repeat 5] [--out benchmarks/results/startup.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cl_bench.records import publish_report

ROOT = Path(__file__).resolve().parents[1]
# the console script users type, next to this interpreter (python -m cl_bench.cli where it is not installed)
_SCRIPT = Path(sys.executable).with_name("cl-bench")
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "cl_bench.cli"]


def _cases(scratch: Path) -> list[tuple[str, list[str]]]:
    """(label, arguments) of every command timed."""
    empty = scratch / "no_runs"
    empty.mkdir(exist_ok=True)
    return [
        ("cl-bench --help", ["--help"]),
        ("cl-bench list", ["list"]),
        ("cl-bench list -v", ["list", "-v"]),
        ("run --lr -1 (bad value)", ["run", "--lr", "-1"]),
        ("run --strategy gmp (unknown name)", ["run", "--strategy", "gmp"]),
        ("sweep --dry-run (39 runs)", ["sweep", "--dry-run", "sweeps/gpm_sparse_grid_v2.yaml"]),
        ("leaderboard (no runs)", ["leaderboard", "--runs", str(empty), "--out", str(scratch / "boards")]),
        ("plot (no runs)", ["plot", "--runs", str(empty)]),
    ]


CROSS_FIELD = (
    "run: cross-field error (imports the component)",
    ["run", "--strategy", "gpm_sparse", "--set", "strategy.hd_rescale=true", "--set", "strategy.hd_eval=expected"],
)
TORCH_LABEL = "python -c 'import torch'"
OURS = ("cl_bench", "scenarios", "strategies", "attacks", "evaluators", "__editable__")
_MODULES_AFTER = """
import sys
before = set(sys.modules)
from cl_bench.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
added = set(sys.modules) - before
print('MODULES: ' + ' '.join(sorted(name for name in added if not name.startswith(OURS))), file=sys.stderr)
"""


def needed_imports(arguments: list[str]) -> list[str]:
    """Every module outside this project that a command imports (beyond the bare interpreter), dotted names."""
    done = subprocess.run(
        [sys.executable, "-c", "OURS = %r\n" % (OURS,) + _MODULES_AFTER, *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stderr.rsplit("MODULES:", 1)[1].split()


def _import_line(modules: list[str], scratch: Path) -> list[str]:
    """A process that imports exactly ``modules`` (an alias that cannot be imported by name is skipped); the
    names go through a file, as a command that imports torch loads thousands of modules."""
    if not modules:
        return [sys.executable, "-c", "pass"]
    listing = scratch / f"modules_{len(list(scratch.glob('modules_*')))}.txt"
    listing.write_text("\n".join(modules))
    code = (
        "import importlib, sys\nfor name in open(sys.argv[1]).read().split():\n    try:\n"
        "        importlib.import_module(name)\n    except Exception:\n        pass\n"
    )
    return [sys.executable, "-c", code, str(listing)]


def _top_level(modules: list[str]) -> str:
    return ", ".join(sorted({name.split(".")[0] for name in modules if not name.startswith("_")})) or "none"


def _seconds(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def _median(argv: list[str], repeat: int) -> float:
    return statistics.median(_seconds(argv) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the median is reported")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        cases = _cases(Path(scratch)) + [CROSS_FIELD]
        needed = {label: needed_imports(arguments) for label, arguments in cases}
        timed = {label: CLI + arguments for label, arguments in cases}
        timed |= {f"imports of {label}": _import_line(needed[label], Path(scratch)) for label, _ in cases}
        timed |= {
            "python -c pass": _import_line([], Path(scratch)),
            TORCH_LABEL: _import_line(["torch"], Path(scratch)),
        }
        for argv in timed.values():  # warm the file cache for every case before timing any
            _seconds(argv)
        seconds = {label: _median(argv, args.repeat) for label, argv in timed.items()}
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
        f"median of {args.repeat} fresh processes",
        "",
        f"{'python -c pass':45s} {seconds['python -c pass']:6.2f} s",
        f"{TORCH_LABEL:45s} {seconds[TORCH_LABEL]:6.2f} s",
        "",
        f"{'command':45s} {'time':>8s}   {'bare + its imports':>18s}   ratio   own work   "
        "imports beyond the interpreter",
    ]
    ratios = {}
    for label, _ in cases:
        command_s, baseline_s = seconds[label], seconds[f"imports of {label}"]
        ratios[label] = command_s / baseline_s
        modules = _top_level(needed[label])
        if len(modules) > 70:
            modules = modules[:67] + "..."
        lines.append(
            f"{label:45s} {command_s:6.2f} s   {baseline_s:16.2f} s   {ratios[label]:5.2f}x   "
            f"{1000 * (command_s - baseline_s):5.0f} ms   {modules}"
        )
    light = [label for label, _ in cases if label != CROSS_FIELD[0]]
    worst = max(light, key=lambda label: ratios[label])
    slowest = max(light, key=lambda label: seconds[label])
    lines += [
        "",
        f"light commands: worst ratio {ratios[worst]:.2f}x ({worst}; target <= 1.5x), slowest "
        f"{seconds[slowest]:.2f} s ({slowest}; target well under 3 s)",
        "the last row is for contrast: a cross-field check is code in the component's config class, run once "
        "the component is imported",
    ]
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
