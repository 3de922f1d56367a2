"""How useful are a backbone's features? 20-NN and linear-probe accuracy on the Fashion-MNIST test set.

The same probes `cl-bench pretrain` writes into a backbone's card (the cards' own numbers, wall time and
final loss included, are printed at the end) (features of the pre-training pool as
the training set, the Fashion-MNIST test set as the test set), here also for the two references the README
compares the pre-trained backbones with: raw pixels and a randomly initialised `vit_micro` (seed 0).

    python analysis/backbone_quality.py [NAME ...] [--out analysis/results/backbone_quality.txt]

NAME: backbones in the pretrain cache (default: vit_micro-fmnist-supervised-s0 and vit_micro-fmnist-mae-s0,
those that exist).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cl_bench import pretrain
from cl_bench.backbone import build_model
from cl_bench.models.vit import backbones_dir, read_card, resolve_weights
from cl_bench.device import seed_everything
from cl_bench.records import publish_report

DEFAULT_BACKBONES = ("vit_micro-fmnist-supervised-s0", "vit_micro-fmnist-mae-s0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="pretrain cache names (default: the two default backbones)")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    images, labels, test_images, test_labels, _ = pretrain.pool_images("fmnist")
    lines = [
        f"features of the {len(labels)} pool images -> Fashion-MNIST test set ({len(test_labels)} images)",
        f"{'features':42s} {'20-NN':>7s} {'linear probe':>13s}",
    ]

    def report(title: str, scores: dict) -> None:
        lines.append(f"{title:42s} {scores['knn_accuracy']:7.4f} {scores['linear_probe_accuracy']:13.4f}")

    pixels, test_pixels = images.flatten(1), test_images.flatten(1)
    report(
        "raw pixels",
        {
            "knn_accuracy": pretrain.knn_accuracy(pixels, labels, test_pixels, test_labels),
            "linear_probe_accuracy": pretrain.linear_probe_accuracy(pixels, labels, test_pixels, test_labels),
        },
    )
    seed_everything(0)
    _, _, random_model = build_model("vit_micro", {}, [1, 28, 28])
    report(
        "vit_micro, random initialisation (seed 0)",
        pretrain.feature_probes(random_model.backbone, images, labels, test_images, test_labels),
    )
    names = args.names or [name for name in DEFAULT_BACKBONES if (backbones_dir() / name).is_dir()]
    cards = []
    for name in names:
        card = read_card(resolve_weights(name))
        values = {key: value for key, value in card["model"].items() if key != "name"}
        _, _, model = build_model(card["model"]["name"], {**values, "weights": name}, card["data"]["input_shape"])
        report(name, pretrain.feature_probes(model.backbone, images, labels, test_images, test_labels))
        cards.append(card)
    lines.append("")
    lines.append("the backbones' cards (written by the `cl-bench pretrain` command each one names):")
    for card in cards:
        quality = {key: round(value, 4) for key, value in card["quality"].items() if isinstance(value, float)}
        lines.append(
            f"{card['name']}: {card['method']['name']}, {card['epochs']} epochs, "
            f"{card['wall_time_s']:.0f} s on {card['environment']['torch_threads']} threads, final training "
            f"loss {card['final_train_loss']:.4f}, {quality}; `{card['command']}`"
        )
    publish_report(lines, args.out)


if __name__ == "__main__":
    main()
