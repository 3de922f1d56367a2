"""Fast-NTK against full-model NTK as the model grows, side by side in one run, with retraining as the yardstick.

The Fast-NTK paper (Li et al., CVPR-W 2024) claims that restricting NTK scrubbing to a parameter-efficient subset
lets it scale where full-model NTK (Golatkar et al., ECCV 2020) stopped (about 8M parameters and 500 images), at an
unlearning quality comparable to retraining. This measures both on the same forget set for cnns of growing width:

* each size is pre-trained on the pre-training pool (``cl-bench pretrain --model cnn --set model.batch_norm=true``,
  ``--epochs`` passes), then fine-tuned by its BatchNorm affine parameters and head (``train.trainable=bn+head``)
  on a small-data regime: one experience of all 10 Fashion-MNIST classes, ``--per-class`` images per class;
* ``fast_ntk`` evaluates it with ``forget=class:3`` and one method at a time (``fast_ntk`` on bn+head,
  ``full_ntk`` on every parameter; ``finetune`` as the memory baseline), each in a fresh process so that its
  peak memory is its own (a first, unmeasured evaluation trains the retrained reference); ``max_memory_gb``
  decides which full-NTK sizes are attempted (the rest are reported with the memory they would need);
* the retrained reference (the same recipe without class 3) is the evaluator's own, trained once per size.

Printed per size: parameters (all and the subset), seconds of each unlearning step and its ratio to the retrain
time, the peak resident memory of the evaluation process above the finetune-only baseline, and Avg. Gap on the
test split. Targets (issue 16): Fast-NTK >= 10x cheaper than full NTK at an Avg. Gap no worse by more than 1
point, and >= 5x faster than retraining.

    python benchmarks/fast_ntk.py [--per-class 10] [--epochs 3] [--max-memory-gb 12]
        [--out benchmarks/results/fast_ntk.txt]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from cl_bench.records import publish_report
from evaluators.fast_ntk import auto_solver, solve_memory_bytes

# (conv channels, hidden width): the cnn grows from ~7k to ~820k parameters
SIZES = [((4, 8), 16), ((8, 16), 32), ((16, 32), 64), ((32, 64), 128), ((32, 64), 256)]
METHODS = ("finetune", "fast_ntk", "full_ntk")


def model_sets(channels: tuple[int, int], hidden: int) -> list[str]:
    return [f"model.channels=[{channels[0]},{channels[1]}]", f"model.hidden={hidden}", "model.batch_norm=true"]


def worker(run_dir: str, method: str, max_memory_gb: float) -> None:
    """In a fresh process: evaluate one method and print (peak RSS growth in MB, its rows) as JSON."""
    import psutil

    from cl_bench import evaluation

    torch.set_num_threads(1)
    settings = {
        "name": "fast_ntk",
        "forget": "class:3",
        "methods": [method],
        "lam": [1.0],
        "max_memory_gb": max_memory_gb,
        "finetune_epochs": 1,
        "mia_samples": 500,
    }
    (spec,) = evaluation.resolve_evaluators([settings])
    before_mb = psutil.Process().memory_info().rss / 2**20
    evaluation.evaluate_runs([Path(run_dir)], [spec], force=True, log=lambda line: None)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    artefact = json.loads(evaluation.evaluation_path(Path(run_dir), spec).read_text())
    print(json.dumps({"peak_growth_mb": peak_mb - before_mb, "artefact": artefact}))


def measure(run_dir: Path, method: str, max_memory_gb: float) -> dict:
    script = [sys.executable, __file__, "--worker", str(run_dir), method, str(max_memory_gb)]
    output = subprocess.run(script, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def train(workdir: Path, channels: tuple[int, int], hidden: int, per_class: int, epochs: int) -> tuple[Path, int]:
    """(run dir, parameter count) of one size, pre-trained on the pool and fine-tuned by bn+head."""
    from cl_bench import runner
    from cl_bench.config import resolve
    from cl_bench.pretrain import pretrain

    name = f"bench-cnn-{channels[0]}-{channels[1]}-{hidden}-e{epochs}"
    pretrain("cnn", model_sets(channels, hidden), {"epochs": epochs, "seed": 0}, name=name, progress=False)
    sets = model_sets(channels, hidden) + [
        f"model.weights={name}",
        "scenario.n_experiences=1",
        "scenario.holdout_pretrain_pool=true",
        f"scenario.train_per_class={per_class}",
        "train.trainable=bn+head",
        "train.threads=1",
    ]
    config = resolve({"scenario": "split_fmnist", "model": "cnn", "seed": 0}, {"device": "cpu"}, sets)
    model = runner.prepare(config, workdir, progress=False).strategy.model
    run_dir = runner.execute(config, workdir, progress=False, log=lambda line: None)
    return run_dir, sum(parameter.numel() for parameter in model.parameters())


def row_of(artefact: dict, method: str) -> dict:
    return next(row for row in artefact["rows"] if row["method"] == method and row["split"] == "test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=10, help="training images per class (Golatkar: 100)")
    parser.add_argument("--epochs", type=int, default=3, help="pre-training epochs of each size")
    parser.add_argument("--max-memory-gb", type=float, default=12.0, help="full NTK is attempted up to this")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        f"fast_ntk vs full_ntk on split_fmnist (1 experience, {args.per_class} images/class), forget class:3, "
        f"lam 1, cnn + BatchNorm fine-tuned by bn+head ({platform.machine()}, 1 torch thread, "
        f"full NTK attempted up to {args.max_memory_gb:g} GB)",
        "",
        f"{'cnn':>14} {'params':>8} {'subset':>6} {'retrain s':>9} | {'method':>8} {'seconds':>8} {'x retrain':>9} "
        f"{'peak MB':>8} {'Avg.Gap':>7} {'UA':>6} {'RA':>6}",
    ]
    summary, sizes = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for channels, hidden in SIZES:
            run_dir, params = train(Path(workdir), channels, hidden, args.per_class, args.epochs)
            measure(run_dir, "finetune", args.max_memory_gb)  # trains the retrained reference, outside the timings
            found = {method: measure(run_dir, method, args.max_memory_gb) for method in METHODS}
            baseline_mb = found["finetune"]["peak_growth_mb"]
            artefact = found["fast_ntk"]["artefact"]
            retrain_s = artefact["metrics"]["retrain_s"]
            label = f"{channels[0]}-{channels[1]}-{hidden}"
            head = f"{label:>14} {params:>8} {int(artefact['metrics']['subset_size']):>6} {retrain_s:>9.2f}"
            measured = {}
            for method in ("fast_ntk", "full_ntk"):
                result = found[method]["artefact"]
                skipped = result["details"]["skipped"].get(method)
                if skipped:
                    lines.append(f"{head} | {method:>8} skipped: {skipped}")
                else:
                    row = row_of(result, method)
                    growth = found[method]["peak_growth_mb"] - baseline_mb
                    measured[method] = (row["seconds"], row["avg_gap"])
                    lines.append(
                        f"{head} | {method:>8} {row['seconds']:>8.2f} {row['seconds'] / retrain_s:>9.2f} "
                        f"{growth:>8.0f} {row['avg_gap']:>7.2f} {row['ua']:>6.1f} {row['ra']:>6.1f}"
                    )
                head = " " * len(head)
            summary.append((label, measured, retrain_s))
            sizes.append((label, params, int(artefact["metrics"]["subset_size"])))
    lines += [
        "",
        "per size: full NTK time / Fast-NTK time (target >= 10), Avg. Gap difference (target <= 1 point), "
        "retrain time / Fast-NTK time (target >= 5)",
    ]
    for label, measured, retrain_s in summary:
        fast_s, fast_gap = measured["fast_ntk"]
        if "full_ntk" in measured:
            full_s, full_gap = measured["full_ntk"]
            versus = f"full/fast {full_s / fast_s:6.1f}x, gap fast-full {fast_gap - full_gap:+6.2f}"
        else:
            versus = "full NTK skipped (memory)"
        lines.append(f"{label:>14}: {versus}, retrain/fast {retrain_s / fast_s:5.2f}x")
    lines += [
        "",
        "memory the evaluator's solve would hold (float64, solver=auto) at the paper's data sizes, per size:",
        f"{'cnn':>14} {'params':>8} {'subset':>6} | {'full 500 img':>12} {'full 5k img':>12} | "
        f"{'fast 500 img':>12} {'fast 5k img':>12}",
    ]
    for label, params, subset in sizes:
        needed = [
            solve_memory_bytes(p, images * 10, auto_solver(p, images * 10)) / 2**30
            for p in (params, subset)
            for images in (500, 5000)
        ]
        lines.append(
            f"{label:>14} {params:>8} {subset:>6} | {needed[0]:>9.2f} GB {needed[1]:>9.2f} GB | "
            f"{needed[2]:>9.3f} GB {needed[3]:>9.3f} GB"
        )
    publish_report(lines, args.out)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        main()
