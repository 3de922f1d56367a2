"""HTBA's step size and iteration budget on the pre-trained vit_micro (docs/methods/vit_backdoor.md).

    python analysis/htba_step_size.py --out analysis/results/htba_step_size.txt

One batch of HTBA as ``vit_htba`` runs it (32 class-0 training images of the stream perturbed within 16/255 to
collide with 32 class-1 training images carrying the random 4-px trigger at random positions, through the
backbone of ``vit_micro-fmnist-supervised-s0``): the mean pair loss (squared feature distance after greedy
pairing) at a few iterations for several step sizes of the plain gradient step. Training images only: nothing
here looks at the test stream.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import torch

STEP_SIZES = (3e-4, 1e-3, 3e-3, 1e-2)
CHECKPOINTS = (0, 10, 50, 100, 299, 999)


def measure() -> list[str]:
    import attacks  # noqa: F401  (registers the attacks)
    import scenarios  # noqa: F401
    from attacks.vit_badnets import make_trigger, paste_triggers, trigger_positions
    from attacks.vit_htba import HTBAConfig, collide_features, feature_extractor
    from cl_bench.backbone import build_model
    from cl_bench.config import build_config
    from cl_bench.registry import SCENARIOS
    from cl_bench.tensor_data import gather

    torch.set_num_threads(1)
    entry = SCENARIOS.get("split_fmnist")
    settings = {"holdout_pretrain_pool": True, "train_per_class": 1000}
    scenario = entry.builder(build_config(entry.config_class, settings, "scenario"), 0)
    images, labels, _ = gather(scenario.benchmark.train_stream[0].dataset)
    generator = torch.Generator().manual_seed(0)
    targets, sources = images[labels == 0][:32], images[labels == 1][:32]
    trigger = make_trigger(4, 1, "random", 0.0, 1.0, seed=0)
    sources = paste_triggers(sources, trigger, trigger_positions(32, 4, 28, 28, "random", generator))
    model = build_model("vit_micro", {"weights": "vit_micro-fmnist-supervised-s0"}, (1, 28, 28))[2]
    features = feature_extractor(model)
    lines = [
        "HTBA on the pre-trained vit_micro: mean pair loss (squared feature distance) of one batch of 32 by iteration",
        "step size | " + " | ".join(f"it {i + 1}" for i in CHECKPOINTS),
    ]
    for step in STEP_SIZES:
        config = HTBAConfig(lr=step, max_iterations=max(CHECKPOINTS) + 1)
        _, losses = collide_features(features, targets, sources, config, 0.0, 1.0, config.epsilon)
        lines.append(f"{step:g} | " + " | ".join(f"{losses[i] / 32:.1f}" for i in CHECKPOINTS))
    return lines


def main(argv: Optional[list[str]] = None) -> None:
    from cl_bench.records import publish_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    publish_report(measure(), args.out)


if __name__ == "__main__":
    main()
