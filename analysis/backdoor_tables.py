"""The tables and pictures of docs/methods/vit_backdoor.md (a test checks the page against the boards).

    python analysis/backdoor_tables.py                          # the tables, from the committed boards
    python analysis/backdoor_tables.py --runs runs_attack_backdoor_fmnist \
        --plot docs/backdoor_persistence.png --examples docs/backdoor_examples.png

From ``leaderboards/attack_backdoor_fmnist/attack_vit_badnets.csv`` and ``attack_vit_htba.csv`` (mean ± std over
seeds, in %):

1. persistence: the 10 %, 4-px BadNets trigger planted in experience 2, per strategy: ASR right after the
   poisoned experience and after the last one, poisoned branch against the clean branch;
2. the blocking defence right after the poisoned experience (and the 8-px trigger);
3. strength: poison rate and trigger size for full and head-only fine-tuning, and the clean-label HTBA.

With ``--runs`` (the run directories of the two sweeps): the ASR after every experience per strategy drawn to
``--plot``, and four test images of one run (clean, triggered, the rollout map of the triggered image, blocked)
drawn to ``--examples`` from the final model of the run that keeps the highest ASR to the end.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Optional

BOARDS = Path(__file__).resolve().parent.parent / "leaderboards" / "attack_backdoor_fmnist"
BADNETS = BOARDS / "attack_vit_badnets.csv"
HTBA = BOARDS / "attack_vit_htba.csv"
STRATEGIES = ("naive", "ewc", "replay", "lwf", "gpm", "slca", "online_lora", "l2p")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _fine_tuning(train_config: dict) -> str:
    return "head only" if train_config.get("trainable") == "head" else "full"


def _key(row: dict) -> tuple[str, str, float, int, bool]:
    """(strategy, fine-tuning, poison rate, trigger size, defence) of a board row."""
    attack = json.loads(row["attack_config"])
    return (
        row["strategy"],
        _fine_tuning(json.loads(row["train_config"] or "{}")),
        float(attack["poison_rate"]),
        int(attack["trigger_size"]),
        attack.get("defence") == "block",
    )


def _strategy(row: dict) -> str:
    """The strategy's name, with the settings that differ from its defaults (L2P without its training mask)."""
    import dataclasses

    import strategies  # noqa: F401  (registers the strategies)
    from cl_bench.registry import STRATEGIES

    defaults = dataclasses.asdict(STRATEGIES.get(row["strategy"]).config_class())
    settings = json.loads(row.get("strategy_config") or "{}")
    changed = {field: value for field, value in settings.items() if defaults.get(field, value) != value}
    return row["strategy"] + "".join(f" ({field}={json.dumps(value)})" for field, value in sorted(changed.items()))


def _cell(row: dict, column: str) -> str:
    mean, std = row.get(f"{column}_mean", ""), row.get(f"{column}_std", "")
    if mean in ("", None):
        return "–"
    if std in ("", None):
        return f"{100 * float(mean):.1f}"
    return f"{100 * float(mean):.1f} ± {100 * float(std):.1f}"


def _pair(row: dict, metric: str) -> str:
    """The poisoned branch's value with the clean branch's in brackets."""
    return f"{_cell(row, f'{metric}_attacked')} ({_cell(row, f'{metric}_clean')})"


def _persistence_rows() -> list[dict]:
    rows = [row for row in _rows(BADNETS) if _key(row)[2:4] == (0.1, 4)]
    order = {name: index for index, name in enumerate(STRATEGIES)}
    return sorted(rows, key=lambda row: (order.get(row["strategy"], 99), _key(row)[1]))


def persistence_table() -> str:
    lines = [
        "| strategy | fine-tuning | n | ACC | ASR after exp 2 | not-patched after exp 2 | ASR after exp 5 "
        "| not-patched after exp 5 | final accuracy on exp 2 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in _persistence_rows():
        lines.append(
            f"| {_strategy(row)} | {_key(row)[1]} | {row['n_seeds']} | {_pair(row, 'acc')} "
            f"| {_pair(row, 'asr_at_target')} | {_pair(row, 'asr_not_patched_at_target')} "
            f"| {_pair(row, 'asr_final')} | {_pair(row, 'asr_not_patched_final')} | {_pair(row, 'poisoned_acc')} |"
        )
    return "\n".join(lines)


def defence_table() -> str:
    lines = [
        "| strategy | fine-tuning | trigger | ASR before → after blocking | peak on the trigger "
        "| source accuracy before → after | clean accuracy without → with blocking |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [row for row in _rows(BADNETS) if _key(row)[4]]
    order = {name: index for index, name in enumerate(STRATEGIES)}
    for row in sorted(rows, key=lambda r: (_key(r)[3], order.get(r["strategy"], 99), _key(r)[1])):
        stage = "at_target_attacked"
        lines.append(
            f"| {_strategy(row)} | {_key(row)[1]} | {_key(row)[3]} px "
            f"| {_cell(row, f'asr_before_blocking_{stage}')} → {_cell(row, f'asr_blocked_{stage}')} "
            f"| {_cell(row, f'peak_on_trigger_{stage}')} "
            f"| {_cell(row, f'source_acc_patched_{stage}')} → {_cell(row, f'source_acc_recovered_{stage}')} "
            f"| {_cell(row, f'clean_acc_{stage}')} → {_cell(row, f'clean_acc_blocked_{stage}')} |"
        )
    return "\n".join(lines)


def strength_table() -> str:
    lines = [
        "| attack | fine-tuning | poison rate | trigger | n | ASR after the poisoned experience "
        "| not-patched | ASR after exp 5 | final accuracy on the poisoned experience |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [("vit_badnets", row) for row in _rows(BADNETS) if row["strategy"] == "naive"]
    rows += [("vit_htba", row) for row in _rows(HTBA)] if HTBA.exists() else []
    for attack, row in sorted(rows, key=lambda pair: (pair[0], _key(pair[1])[1], _key(pair[1])[3:1:-1])):
        _, fine_tuning, rate, size, _ = _key(row)
        lines.append(
            f"| {attack} | {fine_tuning} | {100 * rate:g} % | {size} px | {row['n_seeds']} "
            f"| {_pair(row, 'asr_at_target')} | {_pair(row, 'asr_not_patched_at_target')} "
            f"| {_pair(row, 'asr_final')} | {_pair(row, 'poisoned_acc')} |"
        )
    return "\n".join(lines)


def _persistence_label(record: dict) -> Optional[str]:
    attack = record["config"]["attack"]
    if record["attack"] != "vit_badnets" or attack["poison_rate"] != 0.1 or attack["trigger_size"] != 4:
        return None
    head = record["config"]["train"].get("trainable") == "head"
    unmasked = record["config"]["strategy"].get("use_mask") is False
    return f"{record['strategy']}{' (head only)' if head else ''}{' (use_mask=false)' if unmasked else ''}"


def plot_persistence(records: list[dict], out: Path) -> None:
    """ASR after every experience per strategy: the poisoned branch and the clean branch (mean over seeds)."""
    import numpy as np
    from matplotlib.figure import Figure

    from cl_bench.plots import save_figure_atomic

    groups: dict[str, list[dict]] = {}
    for record in records:
        label = _persistence_label(record)
        if label is not None:
            groups.setdefault(label, []).append(record)
    figure = Figure(figsize=(10.0, 4.0))
    panels = figure.subplots(1, 2, sharey=True)
    views = (
        (lambda row: row["asr"], "ASR"),
        (lambda row: row["asr"] - row["asr_not_patched"], "ASR minus not-patched ASR (what the trigger adds)"),
    )
    for axes, (value, title) in zip(panels, views):
        for label in sorted(groups, key=lambda name: (STRATEGIES.index(name.split()[0]), name)):
            curves = np.array([[value(row) for row in record["attack_rows"]] for record in groups[label]])
            experiences = np.arange(1, curves.shape[1] + 1)
            style = "--" if "head" in label else "-"
            axes.plot(experiences, 100 * curves.mean(axis=0), style, marker="o", label=f"{label} (n={len(curves)})")
        axes.axvline(2, color="grey", lw=0.8, ls=":")
        axes.set_title(f"poisoned branch: {title}", fontsize=9)
        axes.set_xlabel("after training experience")
        axes.set_xticks(experiences)
        axes.grid(True, alpha=0.3)
    panels[0].set_ylabel("% of triggered test images of classes 1-9")
    panels[1].legend(fontsize=7, frameon=False, loc="upper right")
    figure.suptitle(
        "BadNets 4-px trigger planted in 10 % of experience 2 (dotted), pre-trained vit_micro, split Fashion-MNIST; "
        "mean over seeds",
        fontsize=10,
    )
    figure.tight_layout()
    save_figure_atomic(figure, out)


def plot_examples(records: list[dict], out: Path) -> str:
    """Clean, triggered, rollout map and blocked versions of four test images, from the final model of the
    blocking-defence run whose poisoned branch keeps the highest ASR; returns which run it drew."""
    import torch
    from matplotlib.figure import Figure

    from attacks.vit_badnets import BadNets
    from cl_bench import runner
    from cl_bench.config import resolve
    from cl_bench.evaluation import load_model
    from cl_bench.interpret import block_squares, peak_squares
    from cl_bench.plots import save_figure_atomic

    candidates = [
        record
        for record in records
        if record["attack"] == "vit_badnets" and record["config"]["attack"].get("defence") == "block"
    ]
    chosen = max(candidates, key=lambda record: (record["attack_rows"][-1]["asr"], record["run_id"]))
    prepared = runner.prepare(resolve(chosen["config"]), Path(chosen["_dir"]).parent, progress=False)
    model = prepared.strategy.model
    load_model(Path(chosen["_dir"]), model, (chosen.get("final_model") or {}).get("sha256"))
    model.eval()
    attack = prepared.attack
    assert isinstance(attack, BadNets)
    test = attack.test_images()
    with torch.no_grad():
        hits = model(attack.triggered(torch.arange(2000))[1]).argmax(1) == attack.config.target_class
    fooled, others = hits.nonzero().flatten(), (~hits).nonzero().flatten()
    picks = torch.cat([fooled[:3], others])[:4]  # triggered images the backdoor fools first, then one it does not
    clean, triggered = attack.triggered(picks)
    labels = test.images.targets[test.asr_rows[picks]]
    maps = attack._interpret(model)(model, triggered)  # the run's own map (rollout and its normalisation)
    corners = peak_squares(maps, attack.height, attack.width, attack.block_size)
    blocked = block_squares(triggered, corners, attack.block_size, attack.fill)
    with torch.no_grad():
        predicted = {
            name: model(images).argmax(1).tolist()
            for name, images in (("clean", clean), ("triggered", triggered), ("blocked", blocked))
        }
    figure = Figure(figsize=(8.0, 8.4))
    grid = figure.subplots(4, 4)
    for row in range(4):
        panels = (
            (clean[row, 0], f"clean: {predicted['clean'][row]}"),
            (triggered[row, 0], f"triggered: {predicted['triggered'][row]}"),
            (maps[row], "rollout map"),
            (blocked[row, 0], f"blocked: {predicted['blocked'][row]}"),
        )
        for col, (image, title) in enumerate(panels):
            axes = grid[row, col]
            axes.imshow(image.detach().numpy(), cmap="gray" if col != 2 else "magma", vmin=0)
            axes.set_title(f"{title}" if col != 0 else f"label {int(labels[row])}, {title}", fontsize=8)
            axes.set_xticks([])
            axes.set_yticks([])
    description = (
        f"{chosen['strategy']} ({_fine_tuning(chosen['config']['train'])} fine-tuning), seed {chosen['seed']}, "
        f"final model (ASR {100 * chosen['attack_rows'][-1]['asr']:.1f} %); predicted class in the titles, target 0"
    )
    figure.suptitle(description, fontsize=9)
    figure.tight_layout()
    save_figure_atomic(figure, out)
    return description


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, help="run directories of the backdoor sweeps")
    parser.add_argument("--plot", type=Path, help="with --runs: ASR against experiences per strategy")
    parser.add_argument("--examples", type=Path, help="with --runs: example images (clean, triggered, map, blocked)")
    args = parser.parse_args(argv)
    print(persistence_table(), defence_table(), strength_table(), sep="\n\n")
    if args.runs:
        from cl_bench.records import complete_records

        records = complete_records(args.runs, "attack_rows")
        if args.plot:
            plot_persistence(records, args.plot)
        if args.examples:
            print(plot_examples(records, args.examples))


if __name__ == "__main__":
    main()
