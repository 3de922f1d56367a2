"""The tables and pictures of docs/methods/adaptive_compute_patch.md (a test checks the page against the boards).

    python analysis/compute_attack_tables.py                      # the two tables, from the committed boards
    python analysis/compute_attack_tables.py --runs runs_attack_compute_fmnist \
        --plot docs/compute_patch_layers.png --out analysis/results/compute_patch_tokens.txt

1. ``leaderboards/attack_compute_fmnist/attack_adaptive_compute_patch.csv``: every attack config against the
   clean A-ViT, the random patch and NTAP (as the paper's Table 1), mean ± std over 3 seeds.
2. ``leaderboards/attack_compute_continual/attack_adaptive_compute_patch.csv``: a patch fitted after experience 2
   of a continual learner, its Attack Success after every later experience, and the clean compute per experience.

With ``--runs`` (the run directories of the first sweep): the active tokens per layer of the clean model and
of each patch (8-px patch, both signs; mean over seeds) drawn to ``--plot``, and where the extra compute comes
from: the mean depth of the tokens the patch covers against the others, clean and patched, written to ``--out``
(this loads each run's final model and re-applies its recorded patch to the test images).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Optional

BOARDS = Path(__file__).resolve().parent.parent / "leaderboards"
FMNIST = BOARDS / "attack_compute_fmnist" / "attack_adaptive_compute_patch.csv"
CONTINUAL = BOARDS / "attack_compute_continual" / "attack_adaptive_compute_patch.csv"
STRATEGIES = ("naive", "ewc", "replay", "slca")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _config(row: dict) -> dict:
    return json.loads(row["attack_config"])


def _cell(row: dict, column: str, digits: int = 1, scale: float = 1.0) -> str:
    mean, std = row.get(f"{column}_mean", ""), row.get(f"{column}_std", "")
    if mean == "":
        return "–"
    if std in ("", None):
        return f"{float(mean) * scale:.{digits}f}"
    return f"{float(mean) * scale:.{digits}f} ± {float(std) * scale:.{digits}f}"


def _label(config: dict) -> str:
    if config["perturbation"] == "linf":
        return f"l-inf {config['epsilon']:g}/255"
    return f"{config['size']} px ({100 * config['size'] ** 2 / 784:.1f} %)"


def _order(config: dict) -> tuple:
    return (
        config["perturbation"] == "linf",
        config["epsilon"],
        config["objective"] != "agnostic",
        config["objective"],
        config["distr_sign"],
        config["size"],
    )


def fmnist_table() -> str:
    by_config: dict[str, dict[str, dict]] = {}
    for row in _rows(FMNIST):
        by_config.setdefault(row["attack_config"], {})[row["patch"]] = row
    lines = [
        "| patch | objective | prior sign | MFLOPs clean → patched | Attack Success (%) | top-1 clean → patched (%) "
        "| random patch AS (%) / top-1 | NTAP AS (%) / top-1 | fit (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(by_config, key=lambda k: _order(json.loads(k))):
        patches, config = by_config[key], json.loads(key)
        clean, attack = patches["clean"], patches["slowformer"]
        random, ntap = patches["random"], patches["ntap"]
        lines.append(
            f"| {_label(config)} | {config['objective']} | {config['distr_sign']} "
            f"| {_cell(clean, 'mflops', 2)} → {_cell(attack, 'mflops', 2)} | {_cell(attack, 'attack_success')} "
            f"| {_cell(clean, 'accuracy', 1, 100)} → {_cell(attack, 'accuracy', 1, 100)} "
            f"| {_cell(random, 'attack_success')} / {_cell(random, 'accuracy', 1, 100)} "
            f"| {_cell(ntap, 'attack_success')} / {_cell(ntap, 'accuracy', 1, 100)} | {_cell(attack, 'fit_s', 0)} |"
        )
    return "\n".join(lines)


def continual_table() -> str:
    rows = _rows(CONTINUAL)
    experiences = sorted({int(row["experience"]) for row in rows})
    header = ["strategy", "prior sign", "patch"] + [f"after exp {e + 1}" for e in experiences]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keyed = {(row["strategy"], _config(row)["distr_sign"], row["patch"], int(row["experience"])): row for row in rows}
    for strategy in STRATEGIES:
        for sign in ("paper", "code"):
            for patch, column, label in (
                ("clean", "mflops", "clean MFLOPs"),
                ("slowformer", "attack_success", "SlowFormer AS (%)"),
                ("random", "attack_success", "random AS (%)"),
            ):
                if sign == "code" and patch != "slowformer":
                    continue  # the clean model and the random patch do not depend on the attack's sign
                cells = [
                    _cell(keyed[(strategy, sign, patch, e)], column, 2 if patch == "clean" else 1)
                    if (strategy, sign, patch, e) in keyed
                    else "–"
                    for e in experiences
                ]
                lines.append(
                    f"| {strategy} | {sign if patch == 'slowformer' else '–'} | {label} | " + " | ".join(cells) + " |"
                )
    return "\n".join(lines)


def plot_layers(records: list[dict], out: Path) -> None:
    """Active tokens per layer, clean and per patch, for the 8-px patch with each prior sign (mean over seeds)."""
    import numpy as np
    from matplotlib.figure import Figure

    from cl_bench.plots import save_figure_atomic

    figure = Figure(figsize=(9.0, 3.6))
    panels = figure.subplots(1, 2, sharey=True)
    for axes, sign in zip(panels, ("paper", "code")):
        chosen = [
            r
            for r in records
            if r["config"]["attack"]["size"] == 8
            and r["config"]["attack"]["perturbation"] == "patch"
            and r["config"]["attack"]["objective"] == "agnostic"
            and r["config"]["attack"]["distr_sign"] == sign
        ]
        for name in ("clean", "random", "ntap", "slowformer"):
            counts = np.array([r["test_time_attack"]["details"]["active_per_layer"][name] for r in chosen])
            layers = np.arange(1, counts.shape[1] + 1)
            axes.plot(layers, counts.mean(axis=0), marker="o", label=name)
        axes.set_title(f"8-px patch, prior sign {sign} (n={len(chosen)})", fontsize=10)
        axes.set_xlabel("layer")
        axes.set_xticks(layers)
        axes.grid(True, alpha=0.3)
    panels[0].set_ylabel("active tokens per image (of 17)")
    panels[-1].legend(fontsize=8, frameon=False)
    figure.suptitle("avit_micro on Fashion-MNIST test images: tokens still computing at each layer", fontsize=10)
    figure.tight_layout()
    save_figure_atomic(figure, out)


def token_depths(records: list[dict]) -> list[str]:
    """Mean depth of the tokens the patch covers (any pixel) and of the others, clean and patched."""
    import torch
    from safetensors.torch import load_file

    from attacks.adaptive_compute_patch import AdaptiveComputePatch
    from cl_bench import runner
    from cl_bench.config import resolve
    from cl_bench.models.avit import find_adaptive
    from cl_bench.tensor_data import gather

    by_config: dict[tuple, list[tuple[int, list[float]]]] = {}
    for record in records:
        attack_config = record["config"]["attack"]
        if attack_config["perturbation"] != "patch" or attack_config["objective"] != "agnostic":
            continue
        config = resolve(record["config"])
        prepared = runner.prepare(config, Path(record["_dir"]).parent, progress=False)
        model = prepared.strategy.model
        model.load_state_dict(load_file(str(Path(record["_dir"]) / "model.safetensors")))
        model.eval()
        attack = prepared.attack
        assert isinstance(attack, AdaptiveComputePatch)
        vit = find_adaptive(model)
        images = torch.cat([gather(e.dataset.eval())[0] for e in prepared.scenario.benchmark.test_stream])
        pixels = torch.tensor(record["test_time_attack"]["details"]["patch_pixels"])
        patch_side, size = vit.patch_embed.patch_size[0], attack_config["size"]
        rows, columns = vit.patch_embed.grid_size
        covered = [
            1 + row * columns + col
            for row in range(rows)
            for col in range(columns)
            if row * patch_side < attack_config["row"] + size and col * patch_side < attack_config["col"] + size
        ]
        others = [token for token in range(1 + rows * columns) if token not in covered]
        depths = []
        with torch.no_grad():
            for batch in (images, attack.apply(images, pixels)):
                model(batch)
                assert vit.compute is not None
                depths += [float(vit.compute.depth[:, covered].mean()), float(vit.compute.depth[:, others].mean())]
        key = (size, attack_config["distr_sign"])
        by_config.setdefault(key, []).append((len(covered), depths))
    clean_layers = [r["test_time_attack"]["details"]["active_per_layer"]["clean"] for r in records]
    per_layer = [sum(run[layer] for run in clean_layers) / len(clean_layers) for layer in range(len(clean_layers[0]))]
    lines = [
        "active tokens per layer on clean test images (mean over the runs): " + " ".join(f"{n:.2f}" for n in per_layer),
        "mean token depth (layers of 4) on the 10,000 test images, mean over the seeds' runs",
        "patch  prior sign  seeds  covered tokens  covered: clean -> patched  others: clean -> patched",
    ]
    for (size, sign), found in sorted(by_config.items()):
        mean = [sum(depths[i] for _, depths in found) / len(found) for i in range(4)]
        lines.append(
            f"{size:>2} px  {sign:<10}  {len(found):>5}  {found[0][0]:>14}  "
            f"{mean[0]:.2f} -> {mean[2]:.2f}              {mean[1]:.2f} -> {mean[3]:.2f}"
        )
    return lines


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, help="run directories of sweeps/attack_compute_fmnist.yaml")
    parser.add_argument("--plot", type=Path, help="with --runs: the active-tokens-per-layer picture")
    parser.add_argument("--out", type=Path, help="with --runs: where the per-token depths go")
    args = parser.parse_args(argv)
    print(fmnist_table(), continual_table(), sep="\n\n")
    if args.runs:
        from cl_bench.records import publish_report

        from cl_bench.records import complete_records

        records = complete_records(args.runs, "test_time_attack")
        if args.plot:
            plot_layers(records, args.plot)
        publish_report(token_depths(records), args.out)


if __name__ == "__main__":
    main()
