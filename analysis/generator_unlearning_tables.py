"""The tables of docs/methods/generator_unlearning.md (a test checks the page against the board).

    python analysis/generator_unlearning_tables.py
    python analysis/generator_unlearning_tables.py --pictures runs_generator_unlearning   # + the page's pictures

From ``leaderboards/generator_unlearning_fmnist/eval_generator_unlearning.csv`` (one row per run of
``sweeps/generator_unlearning_fmnist.sh``; mean ± std over the seeds of each setting, seed S unlearning from the
MAE pre-trained with seed S and comparing with the retrain reference pre-trained with seed S):

1. methods: the original MAE, the paper's method (alpha 0.25), the four baselines and the retrain reference, on
   forget and retain test images (masked-region MSE, Fréchet distance and cosine of vit_micro features);
2. alpha: the paper's method at alpha 0.1, 0.25 and 1;
3. proxy retain data: real retain images against scikit-learn's digits (another dataset), and real retain
   images of classes 5-7 against pool images of classes 8-9 standing in for them;
4. paired: each model's masked MSE and FD over those of the original MAE of the same seed (mean ± std of the
   per-seed ratios), since the three pre-trained MAEs differ more from one another than some methods change them.

The cost is measured side by side by ``benchmarks/generator_unlearning.py`` instead: the board's times come from
runs sharing the machine with others, and the retrain reference's from its backbone card.

With ``--pictures RUNS``: the image grid and the t-SNE of the paper's method (alpha 0.25, real retain images,
seed 0) are copied from its run directory to ``docs/generator_unlearning_grid.png`` and ``..._tsne.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
from pathlib import Path
from typing import Callable, Iterable, Optional

BOARD = (
    Path(__file__).resolve().parent.parent
    / "leaderboards"
    / "generator_unlearning_fmnist"
    / "eval_generator_unlearning.csv"
)
ALL_RETAIN = "5;6;7;8;9"
# (column, header, digits): the quality columns of the tables, for the forget and the retain test images
QUALITY = (("mse_masked", "MSE", 4), ("fd_vitmicro", "FD (vit_micro)", 2), ("cos_vitmicro", "cos (vit_micro)", 3))


def rows(path: Path = BOARD) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _select(board: list[dict], **wanted: str) -> list[dict]:
    return [row for row in board if all(row[key] == value for key, value in wanted.items())]


def _cell(values: Iterable[str], digits: int) -> str:
    numbers = [float(value) for value in values if value not in ("", None)]
    if not numbers:
        return "–"
    if len(set(numbers)) == 1:  # one run, or a model every seed shares
        return f"{numbers[0]:.{digits}f}"
    return f"{statistics.mean(numbers):.{digits}f} ± {statistics.stdev(numbers):.{digits}f}"


def _quality(selected: list[dict], prefix: str = "") -> list[str]:
    """The forget then retain quality cells of ``selected`` runs (``prefix``: original_ or reference_)."""
    return [
        _cell((row[f"{prefix}{group}_{column}"] for row in selected), digits)
        for group in ("forget", "retain")
        for column, _, digits in QUALITY
    ]


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def _quality_header(first: list[str]) -> list[str]:
    return first + [f"{group} {name}" for group in ("forget", "retain") for _, name, _ in QUALITY]


def _seeds(selected: list[dict]) -> str:
    return str(len({row["seed"] for row in selected}))


def methods_table(board: Optional[list[dict]] = None) -> str:
    board = rows() if board is None else board
    main = _select(board, retain_classes=ALL_RETAIN, retain_source="real")
    paper = _select(main, method="encoder_noise", alpha="0.25")
    body = [["original (before unlearning)", _seeds(paper), *_quality(paper, "original_")]]
    body.append(["**encoder_noise** (the paper's, α 0.25)", _seeds(paper), *_quality(paper)])
    for method in ("random_encoder", "max_loss", "noisy_label", "retain_label"):
        selected = _select(main, method=method)
        body.append([method, _seeds(selected), *_quality(selected)])
    body.append(["retrain reference (MAE on classes 5-9 only)", _seeds(paper), *_quality(paper, "reference_")])
    return _table(_quality_header(["model", "seeds"]), body)


def alpha_table(board: Optional[list[dict]] = None) -> str:
    board = rows() if board is None else board
    main = _select(board, retain_classes=ALL_RETAIN, retain_source="real", method="encoder_noise")
    alphas = sorted({row["alpha"] for row in main}, key=float)
    body = [[alpha, _seeds(_select(main, alpha=alpha)), *_quality(_select(main, alpha=alpha))] for alpha in alphas]
    return _table(_quality_header(["α", "seeds"]), body)


def proxy_table(board: Optional[list[dict]] = None) -> str:
    board = rows() if board is None else board
    paper = _select(board, method="encoder_noise", alpha="0.25")
    settings: list[tuple[str, Callable[[dict], bool]]] = [
        (
            "classes 5-9, real retain images",
            lambda r: r["retain_classes"] == ALL_RETAIN and r["retain_source"] == "real",
        ),
        (
            "classes 5-9, digits as proxy",
            lambda r: r["retain_classes"] == ALL_RETAIN and r["retain_source"] == "digits",
        ),
        (
            "classes 5-7, real retain images",
            lambda r: r["retain_classes"] == "5;6;7" and r["retain_source"] == "real",
        ),
        (
            "classes 5-7, pool classes 8-9 as proxy",
            lambda r: r["retain_classes"] == "5;6;7" and r["retain_source"] == "classes",
        ),
    ]
    body = []
    for label, keep in settings:
        selected = [row for row in paper if keep(row)]
        if label.endswith("real retain images"):  # the model before unlearning, on the same test classes
            original = f"{label.split(',')[0]}, original (before unlearning)"
            body.append([original, _seeds(selected), *_quality(selected, "original_")])
        body.append([label, _seeds(selected), *_quality(selected)])
    return _table(_quality_header(["retain classes, unlearning's retain set", "seeds"]), body)


def _ratio_cell(selected: list[dict], column: str, prefix: str) -> str:
    """Mean ± std over runs of (``prefix`` model's ``column``) / (the same run's original model's ``column``)."""
    ratios = [float(row[f"{prefix}{column}"]) / float(row[f"original_{column}"]) for row in selected]
    if not ratios:
        return "–"
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}×"
    return f"{statistics.mean(ratios):.2f} ± {statistics.stdev(ratios):.2f}×"


PAIRED = (("forget", "mse_masked", "MSE"), ("forget", "fd_vitmicro", "FD"))
PAIRED += (("retain", "mse_masked", "MSE"), ("retain", "fd_vitmicro", "FD"))


def paired_table(board: Optional[list[dict]] = None) -> str:
    """Each model against the original MAE of its own seed: the seeds pre-train different MAEs, whose quality
    varies more between seeds than unlearning changes it, so the change is read within a seed."""
    board = rows() if board is None else board
    main = _select(board, retain_classes=ALL_RETAIN, retain_source="real")
    paper = _select(main, method="encoder_noise", alpha="0.25")
    entries: list[tuple[str, list[dict], str]] = [("**encoder_noise** (the paper's, α 0.25)", paper, "")]
    for alpha in ("0.1", "1"):  # the board writes floats with %g
        entries.append((f"encoder_noise, α {float(alpha):g}", _select(main, method="encoder_noise", alpha=alpha), ""))
    for method in ("random_encoder", "max_loss", "noisy_label", "retain_label"):
        entries.append((method, _select(main, method=method), ""))
    entries.append(("retrain reference (MAE on classes 5-9 only)", paper, "reference_"))
    digits = _select(board, method="encoder_noise", alpha="0.25", retain_classes=ALL_RETAIN, retain_source="digits")
    entries.append(("encoder_noise, digits as proxy retain set", digits, ""))
    few = _select(board, method="encoder_noise", alpha="0.25", retain_classes="5;6;7")
    entries.append(("encoder_noise, retain 5-7, real retain images", _select(few, retain_source="real"), ""))
    entries.append(("encoder_noise, retain 5-7, pool classes 8-9 as proxy", _select(few, retain_source="classes"), ""))
    body = [
        [label, _seeds(selected), *(_ratio_cell(selected, f"{group}_{column}", prefix) for group, column, _ in PAIRED)]
        for label, selected, prefix in entries
    ]
    header = ["model / original of the same seed", "seeds"] + [f"{group} {name}" for group, _, name in PAIRED]
    return _table(header, body)


DOCS = Path(__file__).resolve().parent.parent / "docs"


def copy_pictures(runs: Path) -> list[Path]:
    """The grid and t-SNE of the paper's method at alpha 0.25, real retain images, seed 0, copied into docs/."""
    for path in sorted(runs.glob("*/generator_unlearning.json")):
        artefact = json.loads(path.read_text())
        config = artefact["config"]
        if (
            config["method"] == "encoder_noise"
            and config["alpha"] == 0.25
            and config["retain_source"] == "real"
            and config["retain_classes"] == [5, 6, 7, 8, 9]
            and artefact["seed"] == 0
        ):
            written = [DOCS / f"generator_unlearning_{name}.png" for name in ("grid", "tsne")]
            for source, target in zip((path.parent / "grid.png", path.parent / "tsne.png"), written):
                shutil.copyfile(source, target)
            return written
    raise SystemExit(f"no run of encoder_noise (alpha 0.25, real retain images, seed 0) in {runs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=Path, metavar="RUNS", help="copy the page's pictures from these runs")
    args = parser.parse_args()
    print(methods_table(), paired_table(), alpha_table(), proxy_table(), sep="\n\n")
    if args.pictures:
        for path in copy_pictures(args.pictures):
            print(path)


if __name__ == "__main__":
    main()
