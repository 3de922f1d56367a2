"""A-ViT and SlowFormer costs, measured side by side in one process (1 torch thread by default).

(1) Halting bookkeeping: the adaptive forward of ``avit_micro`` with a gate that never fires (every token through
every layer: equal active tokens) against the plain forward of the same weights (``model.adaptive=false``), on
a batch of 256 Fashion-MNIST-sized images; target <= 1.3x. Also the adaptive forward with the default gate
(fewer counted FLOPs, the same masked arithmetic: the wall time does not fall by itself).
(2) Patch fitting: one epoch of SlowFormer's patch fitting (8 px patch, batch 128) over N training images
against one epoch of the victim's own training (A-ViT: cross-entropy + ponder + prior, SGD, batch 128) over
the same images; the ratio is what a compute attack costs relative to training the model.

    python benchmarks/adaptive_compute.py [--images 2048] [--repeats 5] [--threads 1] \
        [--out benchmarks/results/adaptive_compute.txt]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn.functional as F

from attacks.adaptive_compute_patch import AdaptiveComputePatch, AdaptiveComputePatchConfig
from cl_bench.backbone import build_model
from cl_bench.models.avit import find_adaptive
from cl_bench.records import publish_report


def timed(function: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2048, help="training images of the fitting / training epoch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    _, _, model = build_model("avit_micro", {}, (1, 28, 28))
    vit = find_adaptive(model)
    model.eval()
    batch = torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(1))

    def forward(adaptive: bool, gate_center: float) -> None:
        vit.adaptive, vit.gate_center = adaptive, gate_center
        with torch.no_grad():
            model(batch)

    forward(True, 1e4)  # warm-up
    forward(False, 0.0)
    plain, every_token, default_gate = [], [], []
    for _ in range(args.repeats):  # interleaved, so that drift hits every variant alike
        plain += timed(lambda: forward(False, 0.0), 1)
        every_token += timed(lambda: forward(True, 1e4), 1)
        default_gate += timed(lambda: forward(True, 0.0), 1)
    vit.adaptive, vit.gate_center = True, 0.0

    images = torch.rand(args.images, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    labels = torch.randint(0, 10, (args.images,), generator=torch.Generator().manual_seed(3))
    frozen = build_model("avit_micro", {}, (1, 28, 28))[2].eval()
    frozen.load_state_dict(model.state_dict())
    frozen.requires_grad_(False)
    scenario = SimpleNamespace(input_shape=(1, 28, 28), input_range=(0.0, 1.0))
    attack = AdaptiveComputePatch(AdaptiveComputePatchConfig(size=8, epochs=1, batch_size=128), scenario, 0)

    def fit_epoch() -> None:
        attack.fit_on(frozen, find_adaptive(frozen), images, labels, torch.Generator().manual_seed(0))

    trained = build_model("avit_micro", {}, (1, 28, 28))[2].train()
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.01, momentum=0.9)
    trained_vit = find_adaptive(trained)

    def train_epoch() -> None:
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        for start in range(0, len(images), 128):
            rows = order[start : start + 128]
            loss = F.cross_entropy(trained(images[rows]), labels[rows]) + trained_vit.auxiliary_loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    fitting, training = [], []
    for _ in range(args.repeats):
        fitting += timed(fit_epoch, 1)
        training += timed(train_epoch, 1)

    def row(label: str, times: list[float]) -> str:
        return f"{label}: " + ", ".join(f"{t:.3f}s" for t in times) + f"  (median {statistics.median(times):.3f}s)"

    halting = statistics.median(every_token) / statistics.median(plain)
    gated = statistics.median(default_gate) / statistics.median(plain)
    fit_ratio = statistics.median(fitting) / statistics.median(training)
    lines = [
        "benchmark: A-ViT halting bookkeeping and SlowFormer patch fitting, avit_micro (patch 7, width 64, depth 4)",
        f"machine: {platform.machine()}, torch threads {torch.get_num_threads()}, torch {torch.__version__}",
        f"(1) forward of 256 images, {args.repeats} interleaved repeats",
        row("  plain ViT forward            ", plain),
        row("  adaptive, gate never fires   ", every_token),
        row("  adaptive, default gate       ", default_gate),
        f"  halting bookkeeping at equal active tokens: {halting:.2f}x the plain forward   target <= 1.3",
        f"  default gate: {gated:.2f}x the plain forward (FLOPs are counted from active tokens; masking computes all)",
        f"(2) one epoch over {args.images} images, batch 128",
        row("  patch fitting (8 px, SlowFormer)", fitting),
        row("  victim training (CE + ponder + prior)", training),
        f"  patch fitting / victim training epoch: {fit_ratio:.2f}x",
    ]
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
