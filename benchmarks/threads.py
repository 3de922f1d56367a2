"""Torch threads per run: 1 against 2, alone and with two runs at once, side by side in one invocation.

Each case is a real ``cl-bench run`` in its own process (``--set train.threads=N``), timed by wall clock:

* (a) the default scenario (Continual Swiss Roll, naive, batch 32, 20 epochs x 10 tasks);
* (b) a fixed prefix of GPM's permuted protocol, ``--preset pmnist --strategy gpm`` (batch 10: per-step
  overhead dominates) cut to 2 tasks of 1 epoch (about 10,800 optimizer steps, the second task projected);
* (c) two runs of a 2-task prefix of (a) started at the same moment, each with 1 thread, then each with 2
  threads (torch's default on 2 cores): the wall time until both finish, against one such run alone. Two
  2-thread runs on 2 cores can slow each other down by tens of times, so that case stops after
  ``--pair-timeout`` seconds and reports a lower bound.

Prints the seconds of every case and the ratios. (b) needs Fashion-MNIST (`cl-bench data prepare fmnist`).

    python benchmarks/threads.py [--out benchmarks/results/threads.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cl_bench.records import publish_report

DEFAULT = ["--device", "cpu"]
DEFAULT_PREFIX = DEFAULT + ["--set", "scenario.n_tasks=2"]
PMNIST_PREFIX = [
    "--preset",
    "pmnist",
    "--strategy",
    "gpm",
    "--device",
    "cpu",
    "--set",
    "scenario.n_experiences=2",
    "--set",
    "train.epochs=1",
]


def _command(args: list[str], threads: int, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cl_bench.cli",
        "run",
        *args,
        "--set",
        f"train.threads={threads}",
        "--no-progress",
        "--force",
        "--out",
        str(out),
    ]


def timed(args: list[str], threads: int, copies: int = 1, timeout: float = 3600.0) -> tuple[float, bool]:
    """(wall seconds, finished) until ``copies`` simultaneous runs of ``args`` with ``threads`` threads each have
    finished, or until ``timeout`` (then the runs are killed and finished is False)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        processes = [
            subprocess.Popen(
                _command(args, threads, Path(tmp) / str(copy)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for copy in range(copies)
        ]
        try:
            for process in processes:
                _, err = process.communicate(timeout=max(1.0, timeout - (time.perf_counter() - start)))
                if process.returncode:
                    raise SystemExit(f"benchmark run failed: {err.strip().splitlines()[-1]}")
        except subprocess.TimeoutExpired:
            for process in processes:
                process.kill()
                process.wait()
            return time.perf_counter() - start, False
        return time.perf_counter() - start, True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--pair-timeout", type=float, default=120.0, help="seconds before case (c) gives up")
    args = parser.parse_args()
    lines = [
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python "
        f"{platform.python_version()}",
        "",
    ]
    cases = (("(a) default scenario, naive", DEFAULT), ("(b) pmnist prefix, gpm, batch 10", PMNIST_PREFIX))
    for label, run_args in cases:
        one, two = timed(run_args, 1)[0], timed(run_args, 2)[0]
        lines.append(f"{label:36s} 1 thread {one:6.1f} s   2 threads {two:6.1f} s   2/1 = {two / one:.2f}")
        print(lines[-1], flush=True)
    alone = timed(DEFAULT_PREFIX, 1)[0]
    lines += ["", f"(c) 2-task prefix of (a), one run alone, 1 thread: {alone:.1f} s"]
    for threads in (1, 2):
        seconds, finished = timed(DEFAULT_PREFIX, threads, copies=2, timeout=args.pair_timeout)
        bound = "" if finished else " or more (stopped: did not finish)"
        lines.append(
            f"    two at once, {threads} thread(s) each: {seconds:.1f} s{bound} = {seconds / alone:.1f} x one run alone"
        )
        print(lines[-1], flush=True)
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
