"""Backdoor costs, measured side by side in one process (1 torch thread by default).

(1) The test-time blocking defence per image: attention-gradient rollout of the predicted class (a forward with
hooks and one backward), the box-filtered peak, the blocked square and the second prediction, against one
plain forward of the same model (``vit_micro``, patch 7, width 64, depth 4) on a batch of 250 Fashion-MNIST-sized
images; target <= 4x. Grad-CAM on the ``cnn`` against its own forward for comparison.
(2) HTBA poison generation: 64 poisons (2 batches of 32, ``max_iterations`` steps each, the default 300) through
the frozen backbone, against the victim's fine-tuning of the poisoned experience (2,000 images, 2 epochs of
batch 32, SGD, the sweep's recipe).

    python benchmarks/backdoor.py [--repeats 5] [--threads 1] [--out benchmarks/results/backdoor.txt]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from attacks.vit_badnets import make_trigger, paste_triggers, trigger_positions
from attacks.vit_htba import HTBAConfig, collide_features, feature_extractor
from cl_bench.backbone import build_model
from cl_bench.interpret import attention_rollout, block_squares, grad_cam, peak_squares
from cl_bench.records import publish_report


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(250, 1, 28, 28, generator=generator)
    vit = build_model("vit_micro", {}, (1, 28, 28))[2].eval()
    cnn = build_model("cnn", {}, (1, 28, 28))[2].eval()

    def forward(model: torch.nn.Module) -> None:
        with torch.no_grad():
            model(images)

    def defend(model: torch.nn.Module, interpret: Callable) -> None:
        maps = interpret(model, images)
        blocked = block_squares(images, peak_squares(maps, 28, 28, 4), 4)
        with torch.no_grad():
            model(blocked)

    rollout = lambda model, batch: attention_rollout(model, batch)  # noqa: E731
    for model in (vit, cnn):  # warm-up
        forward(model)
    defend(vit, rollout)
    defend(cnn, grad_cam)
    times: dict[str, list[float]] = {name: [] for name in ("vit", "vit defence", "cnn", "cnn defence")}
    for _ in range(args.repeats):  # interleaved, so that drift hits every variant alike
        times["vit"].append(timed(lambda: forward(vit)))
        times["vit defence"].append(timed(lambda: defend(vit, rollout)))
        times["cnn"].append(timed(lambda: forward(cnn)))
        times["cnn defence"].append(timed(lambda: defend(cnn, grad_cam)))

    config = HTBAConfig()
    features = feature_extractor(vit)
    trigger = make_trigger(4, 1, "random", 0.0, 1.0, seed=0)
    targets = torch.rand(64, 1, 28, 28, generator=generator)
    sources = paste_triggers(
        torch.rand(64, 1, 28, 28, generator=generator),
        trigger,
        trigger_positions(64, 4, 28, 28, "random", generator),
    )

    def generate() -> None:
        for start in (0, 32):
            collide_features(
                features, targets[start : start + 32], sources[start : start + 32], config, 0.0, 1.0, config.epsilon
            )

    train_images = torch.rand(2000, 1, 28, 28, generator=generator)
    train_labels = torch.randint(0, 10, (2000,), generator=generator)
    victim = build_model("vit_micro", {}, (1, 28, 28))[2].train()
    optimizer = torch.optim.SGD(victim.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def fine_tune() -> None:
        for epoch in range(2):
            order = torch.randperm(2000, generator=torch.Generator().manual_seed(epoch))
            for start in range(0, 2000, 32):
                rows = order[start : start + 32]
                loss = F.cross_entropy(victim(train_images[rows]), train_labels[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    generation, training = [], []
    for _ in range(max(1, args.repeats // 2)):
        generation.append(timed(generate))
        training.append(timed(fine_tune))

    def row(label: str, values: list[float]) -> str:
        return f"{label}: " + ", ".join(f"{t:.3f}s" for t in values) + f"  (median {statistics.median(values):.3f}s)"

    def ratio(numerator: list[float], denominator: list[float]) -> float:
        return statistics.median(numerator) / statistics.median(denominator)

    lines = [
        "benchmark: the blocking defence and HTBA poison generation, vit_micro (patch 7, width 64, depth 4)",
        f"machine: {platform.machine()}, torch threads {torch.get_num_threads()}, torch {torch.__version__}",
        f"(1) 250 images of 28 x 28, {args.repeats} interleaved repeats",
        row("  vit_micro plain forward                     ", times["vit"]),
        row("  vit_micro rollout + block + second forward  ", times["vit defence"]),
        row("  cnn plain forward                           ", times["cnn"]),
        row("  cnn Grad-CAM + block + second forward       ", times["cnn defence"]),
        f"  defence per image / plain forward: vit_micro {ratio(times['vit defence'], times['vit']):.2f}x"
        f"   target <= 4;  cnn {ratio(times['cnn defence'], times['cnn']):.2f}x",
        f"(2) HTBA: 64 poisons ({config.max_iterations} iterations per batch of 32) against fine-tuning the "
        "poisoned experience",
        row("  poison generation                            ", generation),
        row("  victim fine-tuning (2,000 images, 2 epochs)  ", training),
        f"  poison generation / victim fine-tuning: {ratio(generation, training):.2f}x",
    ]
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
