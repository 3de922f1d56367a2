"""When does Online-LoRA's plateau detector fire, relative to the hidden task switches it is never told about?

Reads the records of `sweeps/online_fmnist.yaml` (or any task-free runs of ``online_lora``) and prints, per run,
the stream positions of the detected plateaus (``strategy_info.online_lora.plateau_samples``) against the
hidden boundaries (``stream.hidden_boundaries``), and for every hidden task after the first the delay of its
first plateau after the switch, in incoming mini-batches (samples / ``scenario.stream_batch_size``). The
README's sentence on the detector quotes these delays.

    python analysis/plateau_delays.py [--runs runs] [--out analysis/results/plateau_delays.txt]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from cl_bench.leaderboard import load_records
from cl_bench.records import publish_report


def first_plateau_delays(plateau_samples: list[int], boundaries: list[int], batch_size: int) -> list[Optional[float]]:
    """For each hidden task after the first: mini-batches from its start to the first plateau inside it
    (None when it has none)."""
    delays: list[Optional[float]] = []
    for start, stop in zip(boundaries[:-1], boundaries[1:]):
        inside = [sample for sample in plateau_samples if start < sample <= stop]
        delays.append((inside[0] - start) / batch_size if inside else None)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    rows = []
    for record in load_records(args.runs, warn=lambda message: None):
        config = record["config"]
        info = record.get("strategy_info", {}).get("online_lora")
        if config["strategy"]["name"] != "online_lora" or not info or not info["plateau_samples"]:
            continue
        boundaries = record["stream"]["hidden_boundaries"]
        batch_size = config["scenario"]["stream_batch_size"]
        delays = first_plateau_delays(info["plateau_samples"], boundaries, batch_size)
        in_first_task = [sample for sample in info["plateau_samples"] if sample <= boundaries[0]]
        rows.append(
            (
                config["scenario"]["name"],
                config["scenario"].get("mode", ""),
                config["seed"],
                info["plateau_samples"],
                boundaries,
                in_first_task,
                delays,
            )
        )
    lines = [
        f"{'scenario':18s} {'mode':9s} {'seed':>4s}  plateaus in task 1 (samples)  "
        f"first plateau after each later switch (mini-batches)"
    ]
    for scenario, mode, seed, _, _, in_first_task, delays in sorted(rows, key=lambda row: row[:3]):
        shown = ", ".join("none" if delay is None else f"{delay:.0f}" for delay in delays)
        lines.append(f"{scenario:18s} {mode:9s} {seed:4d}  {str(in_first_task):28s} {shown}")
    for mode in sorted({row[1] for row in rows}):
        found = [delay for row in rows if row[1] == mode for delay in row[6] if delay is not None]
        missed = sum(delay is None for row in rows if row[1] == mode for delay in row[6])
        if found:
            lines.append(
                f"{mode}: delays {min(found):.0f}-{max(found):.0f} mini-batches over {len(found)} switches, "
                f"no plateau after {missed} of {len(found) + missed}"
            )
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
