"""Generator unlearning against retraining, measured side by side in one run (1 torch thread per step).

(1) ``cl-bench unlearn-generator`` with its defaults (the paper's method, alpha 0.25, 10 epochs over 1,000 forget
and 1,000 retain images): the unlearning time the command records (training only, not the scoring); the median
of three runs (seeds 0, 1, 2), since a run's time on this shared machine varies by a quarter.
(2) The retrain-from-scratch reference it is compared with: ``cl-bench pretrain --method mae`` on the pool
images of the retain classes only (5,000 images, the MAE defaults: 60 epochs).
(3) One pre-training epoch of the MAE on the whole pool (10,000 images): half the 3-epoch run's time minus the
1-epoch run's (a pre-training run's time also holds its quality probes, which cancel out).
Target: unlearning >= 10x faster than the retrain reference (its whole ``cl-bench pretrain`` run).

Every step runs as the command a user types, in a temporary cache that links the pre-trained MAE and the metric
backbone (``cl-bench pretrain --model vit_micro --method mae|supervised --seed 0`` first).

    python benchmarks/generator_unlearning.py [--out benchmarks/results/generator_unlearning.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cl_bench.records import publish_report

BACKBONES = ("vit_micro-fmnist-mae-s0", "vit_micro-fmnist-supervised-s0")


def cl_bench(*arguments: str, env: dict) -> None:
    command = [str(Path(sys.executable).parent / "cl-bench"), *arguments, "--no-progress"]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generator_unlearning.txt"))
    args = parser.parse_args()
    home = Path(os.environ.get("CL_BENCH_CACHE", Path.home() / ".cache" / "cl_bench"))
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "cache"
        (cache / "backbones").mkdir(parents=True)
        for name in BACKBONES:
            if not (home / "backbones" / name).is_dir():
                raise SystemExit(f"{name} is missing from {home}/backbones; pre-train it first (see the docstring)")
            (cache / "backbones" / name).symlink_to(home / "backbones" / name)
        env = {**os.environ, "CL_BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        out = Path(scratch) / "runs"
        for seed in (0, 1, 2):
            arguments = ("--backbone", BACKBONES[0], "--tsne-images", "0", "--seed", str(seed), "--out", str(out))
            cl_bench("unlearn-generator", *arguments, env=env)
        artefacts = sorted(
            (json.loads(path.read_text()) for path in out.glob("*/generator_unlearning.json")),
            key=lambda artefact: artefact["seed"],
        )
        unlearn_runs = [artefact["timing"]["unlearn_s"] for artefact in artefacts]
        unlearn_s, steps = statistics.median(unlearn_runs), artefacts[0]["training"]["steps"]
        cl_bench("pretrain", "--method", "mae", "--classes", "5,6,7,8,9", "--name", "retrain", env=env)
        retrain = json.loads((cache / "backbones" / "retrain" / "card.json").read_text())
        runs = {}
        for epochs in (1, 3):
            cl_bench("pretrain", "--method", "mae", "--epochs", str(epochs), "--name", f"e{epochs}", env=env)
            runs[epochs] = json.loads((cache / "backbones" / f"e{epochs}" / "card.json").read_text())["wall_time_s"]
        epoch_s = (runs[3] - runs[1]) / 2
    lines = [
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 torch thread; "
        f"python benchmarks/generator_unlearning.py",
        f"unlearning (encoder_noise, defaults, {steps} steps)       : {unlearn_s:8.1f} s  (median of "
        + ", ".join(f"{seconds:.1f}" for seconds in unlearn_runs)
        + " s)",
        f"retrain reference (MAE on classes 5-9, {retrain['epochs']} epochs)  : {retrain['wall_time_s']:8.1f} s",
        f"one MAE pre-training epoch on the whole pool       : {epoch_s:8.1f} s  ((3-epoch run {runs[3]:.1f} s "
        f"- 1-epoch run {runs[1]:.1f} s) / 2)",
        f"retrain / unlearning: {retrain['wall_time_s'] / unlearn_s:.1f}x   (target >= 10x)",
        f"unlearning / one pre-training epoch: {unlearn_s / epoch_s:.2f}x",
    ]
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
