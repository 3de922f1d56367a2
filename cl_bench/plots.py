"""Plots of run records: the forgetting curve of one run, and an overlay comparing runs.

Figures are built on :class:`matplotlib.figure.Figure` directly (the Agg canvas, no pyplot and
no display), so plotting never touches global backend state and works in worker processes.
Every PNG is written atomically (temporary file + rename).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cl_bench.errors import UserError
from cl_bench.metrics import seen_average_curve
from cl_bench.records import atomic_output, stream_mode

DPI = 120


def _matrix(record: dict) -> np.ndarray:
    matrix = np.asarray(record["accuracy_matrix"], dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise UserError(f"run {record.get('run_id', '?')} has no accuracy matrix to plot")
    return matrix


def seen_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Mean accuracy over the experiences seen so far: entry i = mean_{j<=i} R[i][j] (see metrics)."""
    return np.array(seen_average_curve(matrix.tolist()), dtype=float)


def _task_colors(n_tasks: int) -> list:
    """Distinct colours: tab10 up to 10 tasks, tab20 up to 20, a continuous map beyond."""
    from matplotlib import colormaps

    if n_tasks <= 10:
        return [colormaps["tab10"](j) for j in range(n_tasks)]
    if n_tasks <= 20:
        return [colormaps["tab20"](j) for j in range(n_tasks)]
    return [colormaps["viridis"](j / max(1, n_tasks - 1)) for j in range(n_tasks)]


def save_figure_atomic(figure: Figure, out_path: Path) -> Path:
    """Save ``figure`` as PNG through a temporary file in the same directory + rename."""
    out_path = Path(out_path)
    with atomic_output(out_path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return out_path


def _run_title(record: dict) -> str:
    parts = [str(record.get("scenario", "?")), str(record.get("strategy", "?"))]
    if record.get("attack"):
        parts.append(f"attack {record['attack']}")
    metrics = record.get("metrics") or {}
    numbers = []
    if isinstance(metrics.get("acc"), (int, float)):
        numbers.append(f"ACC {metrics['acc']:.3f}")
    if isinstance(metrics.get("bwt"), (int, float)):
        numbers.append(f"BWT {metrics['bwt']:+.3f}")
    return f"{' / '.join(parts)}  (seed {record.get('seed', '?')})\n{'   '.join(numbers)}"


def plot_run(record: dict, out_path: Path) -> Path:
    """The forgetting curve of one run, written as a PNG to ``out_path``.

    x = number of experiences trained (1..T). One coloured line per test experience j with
    R[i][j]: solid from the experience where it is trained (i = j) on, dotted and faint before
    (forward transfer). A thick black line is the mean accuracy over the experiences seen so far.
    """
    matrix = _matrix(record)
    n_trained, n_tasks = matrix.shape
    x = np.arange(1, n_trained + 1)
    colors = _task_colors(n_tasks)

    figure = Figure(figsize=(7.5 if n_tasks <= 10 else 8.5, 4.5))
    axes = figure.add_subplot()
    for j in range(n_tasks):
        if j > 0:  # before experience j is trained: from x=1 up to and including x=j+1
            upto = min(j + 1, n_trained)
            axes.plot(x[:upto], matrix[:upto, j], linestyle=":", linewidth=1, color=colors[j], alpha=0.45)
        if j < n_trained:
            axes.plot(
                x[j:],
                matrix[j:, j],
                linestyle="-",
                linewidth=1.6,
                marker="o",
                markersize=3,
                color=colors[j],
                label=f"exp {j + 1}",
            )
    axes.plot(
        x, seen_accuracy(matrix), color="black", linewidth=3, marker="o", markersize=4, label="mean (seen)", zorder=5
    )

    axes.set_xlim(0.8, n_trained + 0.2)
    axes.set_ylim(0.0, 1.02)
    axes.set_xticks(x if n_trained <= 20 else np.linspace(1, n_trained, 11).round().astype(int))
    axes.set_xlabel("experiences trained")
    axes.set_ylabel("test accuracy")
    axes.grid(True, alpha=0.3)
    axes.set_title(_run_title(record), fontsize=10)
    # outside the axes so the curves stay visible; two columns once there are many tasks
    axes.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
        ncol=1 if n_tasks <= 12 else 2,
        title="test experience",
        title_fontsize=8,
    )
    return save_figure_atomic(figure, out_path)


def default_label(record: dict) -> str:
    """The overlay label of a record: its strategy with the settings that differ from the registered defaults
    (so that variants are not averaged as if they were seeds), plus its attack when it has one."""
    from cl_bench.leaderboard import component_setting
    from cl_bench.registry import STRATEGIES

    label = str(record.get("strategy", "?"))
    config = (record.get("config") or {}).get("strategy")
    if label in STRATEGIES and isinstance(config, dict):
        setting = component_setting("strategy", label, config)
        label = label if setting == "defaults" else f"{label} ({setting})"
    return f"{label} + {record['attack']}" if record.get("attack") else label


def _curve_groups(records: Sequence[dict], labels: Sequence[str]) -> dict[str, list[dict]]:
    """Records grouped by label, in the order labels first appear."""
    groups: dict[str, list[dict]] = {}
    for record, label in zip(records, labels):
        groups.setdefault(label, []).append(record)
    for label, group in groups.items():
        shapes = {_matrix(record).shape for record in group}
        if len(shapes) > 1:
            raise UserError(
                f"runs labelled {label!r} have different numbers of experiences {sorted(shapes)}; "
                f"give them distinct labels"
            )
    return groups


def _draw_band(axes, x: np.ndarray, curves: np.ndarray, color, label: str) -> None:
    """Mean line, with a shaded min-max band when there is more than one seed."""
    axes.plot(x, curves.mean(axis=0), color=color, linewidth=2, marker="o", markersize=3, label=label)
    if curves.shape[0] > 1:
        axes.fill_between(x, curves.min(axis=0), curves.max(axis=0), color=color, alpha=0.2, linewidth=0)


def plot_overlay(records: list[dict], out_path: Path, labels: Optional[Sequence[str]] = None) -> Path:
    """Compare runs: left, mean accuracy on seen experiences; right, accuracy on experience 1.

    Both against the number of experiences trained. Records sharing a label (by default the
    strategy name: the same strategy over several seeds) are drawn as their mean with a shaded
    min-max band over seeds.
    """
    if not records:
        raise UserError("no runs to plot")
    labels = list(labels) if labels is not None else [default_label(r) for r in records]
    if len(labels) != len(records):
        raise ValueError(f"{len(labels)} labels for {len(records)} records")
    groups = _curve_groups(records, labels)
    colors = _task_colors(len(groups))

    figure = Figure(figsize=(11, 4.3))
    seen_axes, first_axes = figure.subplots(1, 2, sharey=True)
    max_trained = 1
    for color, (label, group) in zip(colors, groups.items()):
        matrices = [_matrix(record) for record in group]
        n_trained = matrices[0].shape[0]
        max_trained = max(max_trained, n_trained)
        x = np.arange(1, n_trained + 1)
        shown = f"{label} (n={len(group)})" if len(group) > 1 else label
        _draw_band(seen_axes, x, np.stack([seen_accuracy(m) for m in matrices]), color, shown)
        _draw_band(first_axes, x, np.stack([m[:, 0] for m in matrices]), color, shown)

    ticks = np.arange(1, max_trained + 1) if max_trained <= 20 else np.linspace(1, max_trained, 11).round()
    for axes, title in (
        (seen_axes, "mean accuracy on experiences seen so far"),
        (first_axes, "accuracy on experience 1 (forgetting)"),
    ):
        axes.set_xlim(0.8, max_trained + 0.2)
        axes.set_ylim(0.0, 1.02)
        axes.set_xticks(ticks)
        axes.set_xlabel("experiences trained")
        axes.grid(True, alpha=0.3)
        axes.set_title(title, fontsize=10)
    seen_axes.set_ylabel("test accuracy")
    first_axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    scenarios = sorted({str(record.get("scenario", "?")) for record in records})
    band_note = "; band: min-max over seeds" if any(len(g) > 1 for g in groups.values()) else ""
    figure.suptitle(f"{', '.join(scenarios)}{band_note}", fontsize=11)
    return save_figure_atomic(figure, out_path)


def memory_occupancy(record: dict) -> tuple[list[str], np.ndarray]:
    """(layer names, fractions (tasks, layers)) of a GPM run's memory: r_l / d_l after each task."""
    memory = (record.get("strategy_info") or {}).get("gpm_memory")
    if not memory or not memory.get("occupancy"):
        raise UserError(
            f"run {record.get('run_id', '?')} ({record.get('strategy', '?')}) has no GPM memory "
            f"to plot; --memory needs runs of gpm, gpm_sparse, gpm_kwta or gpm_hd"
        )
    layer_dims, occupancy = memory.get("layer_dims"), memory["occupancy"]
    layers = list(layer_dims) if isinstance(layer_dims, dict) else []
    well_formed = (
        layers
        and all(isinstance(dim, int) for dim in layer_dims.values())
        and isinstance(occupancy, list)
        and all(
            isinstance(after_task, dict) and all(_is_number(after_task.get(layer, 0.0)) for layer in layers)
            for after_task in occupancy
        )
    )
    if not well_formed:
        raise UserError(
            f"run {record.get('run_id', '?')}: its strategy_info.gpm_memory is malformed (layer_dims "
            f"and occupancy per task expected); rerun it with --force"
        )
    fractions = np.array([[after_task.get(layer, 0.0) for layer in layers] for after_task in occupancy], dtype=float)
    return layers, fractions


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def plot_memory(records: list[dict], out_path: Path) -> Path:
    """How much of each layer's input space the GPM memory occupies after each task (r_l / d_l).

    One panel per strategy (seeds averaged, min-max band), one line per projected layer,
    labelled with its input dimension d_l: the paper's analysis of how fast the memory fills.
    """
    if not records:
        raise UserError("no runs to plot")
    groups = _curve_groups(records, [default_label(r) for r in records])
    figure = Figure(figsize=(4.2 * len(groups) + 1.5, 3.8))
    panels = figure.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    for axes, (label, group) in zip(panels, groups.items()):
        layers, _ = memory_occupancy(group[0])
        stacked = np.stack([memory_occupancy(record)[1] for record in group])  # (seeds, tasks, layers)
        dims = group[0]["strategy_info"]["gpm_memory"]["layer_dims"]
        x = np.arange(1, stacked.shape[1] + 1)
        for color, (index, layer) in zip(_task_colors(len(layers)), enumerate(layers)):
            _draw_band(axes, x, stacked[:, :, index], color, f"{layer} (d={dims[layer]})")
        axes.set_title(f"{label} (n={len(group)})" if len(group) > 1 else label, fontsize=10)
        axes.set_xlabel("tasks learned")
        axes.set_xticks(x if len(x) <= 20 else np.linspace(1, len(x), 11).round())
        axes.set_ylim(0.0, 1.02)
        axes.grid(True, alpha=0.3)
    panels[0].set_ylabel("memory occupancy r_l / d_l")
    panels[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title="layer")
    scenarios = sorted({str(record.get("scenario", "?")) for record in records})
    figure.suptitle(f"GPM memory per layer, {', '.join(scenarios)}", fontsize=11)
    return save_figure_atomic(figure, out_path)


def attack_label(attack: str, attack_config: dict) -> str:
    """Short bar label of one attack config: the attack and the fields it declares for labels
    (``AttackTraits.label_fields``), e.g. ``brainwash objective=reckless epsilon=0.3``."""
    parts = [attack] + [
        f"{name}={attack_config[name]:g}" if isinstance(attack_config[name], float) else f"{name}={attack_config[name]}"
        for name in _attack_traits(attack).label_fields
        if name in attack_config
    ]
    return " ".join(parts)


def _attack_traits(attack: str):
    from cl_bench.registry import ATTACKS
    from cl_bench.traits import AttackTraits

    return ATTACKS.traits(attack) if attack in ATTACKS else AttackTraits()


def _budget(row: dict) -> float:
    """The strength of one attack board row (the attack's declared ``budget_field``; 0 when it has none)."""
    import json

    field = _attack_traits(row["attack"]).budget_field
    value = json.loads(row["attack_config"] or "{}").get(field, 0.0) if field else 0.0
    return float(value) if isinstance(value, (int, float)) else 0.0


def bar_label(row: dict) -> str:
    """The label of one attack board row's bar: the attack and its setting column (budget, objective and every
    field off its default, so that e.g. 10 and 200 noise steps get two bars), else the short label."""
    if row.get("attack_setting"):
        return f"{row['attack']} {row['attack_setting']}"
    import json

    return attack_label(row["attack"], json.loads(row["attack_config"] or "{}"))


def plot_attack_boards(rows: list[dict], out_path: Path, effect: str = "bwt") -> Path:
    """Grouped bars of the paired attack effect (attacked - clean) per victim, one panel per scenario/setting.

    ``rows``: rows of ``attack_<attack>.csv`` boards (``attack``, ``attack_config`` as JSON, ``<effect>_difference_
    mean/std``); error bars are the std over seeds of the paired difference.
    """

    if not rows:
        raise UserError("no attack board rows to plot; pass leaderboards/attack_<attack>.csv files")
    panels_keys = sorted({(row["scenario"], row["setting"]) for row in rows})
    figure = Figure(figsize=(11, 3.4 * len(panels_keys) + 0.8))
    panels = figure.subplots(len(panels_keys), 1, squeeze=False)[:, 0]
    for axes, (scenario, setting) in zip(panels, panels_keys):
        panel_rows = [row for row in rows if (row["scenario"], row["setting"]) == (scenario, setting)]
        strategies = list(dict.fromkeys(row["strategy"] for row in panel_rows))
        # each panel has its own budgets (input units differ between scenarios): smaller budget first
        budgets = {bar_label(row): _budget(row) for row in panel_rows}
        # within a budget, natural order of the other settings (steps=50 before steps=200)
        labels = sorted(
            budgets,
            key=lambda label: (
                budgets[label],
                [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", label)],
            ),
        )
        colors = _task_colors(len(labels))
        width = 0.8 / len(labels)
        for index, label in enumerate(labels):
            cells = {row["strategy"]: row for row in panel_rows if bar_label(row) == label}
            x = [position + (index - (len(labels) - 1) / 2) * width for position in range(len(strategies))]
            means = [float(cells[s][f"{effect}_difference_mean"]) if s in cells else np.nan for s in strategies]
            stds = [float(cells[s][f"{effect}_difference_std"] or 0) if s in cells else 0.0 for s in strategies]
            axes.bar(x, means, width, yerr=stds, color=colors[index], label=label, capsize=2)
        axes.axhline(0.0, color="black", linewidth=0.8)
        axes.set_xticks(range(len(strategies)))
        axes.set_xticklabels(strategies)
        axes.set_ylabel(f"{effect.upper()} attacked - clean")
        axes.set_title(f"{scenario} ({setting})", fontsize=10)
        axes.grid(True, axis="y", alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.suptitle(
        f"Paired {effect.upper()} change under attack (negative: more forgetting); mean and std over seeds", fontsize=11
    )
    figure.tight_layout()
    return save_figure_atomic(figure, out_path)


def plateau_samples(record: dict) -> list[int]:
    """Stream positions (samples seen) where a strategy detected a loss plateau (Online-LoRA), else []."""
    info = record.get("strategy_info") or {}
    samples = [s for entry in info.values() if isinstance(entry, dict) for s in entry.get("plateau_samples") or []]
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in samples):
        raise UserError(
            f"run {record.get('run_id', '?')}: its plateau_samples are not stream positions; rerun it with --force"
        )
    return samples


MODE_ORDER = {"disjoint": 0, "blurry": 1}  # panel order of the task-free stream modes


def plot_anytime(records: list[dict], out_path: Path, labels: Optional[Sequence[str]] = None) -> Path:
    """Anytime accuracy of task-free runs against stream samples seen, one panel per stream mode (stacked).

    Records sharing a label (default: the strategy) are averaged over seeds (point k of every seed; the
    positions differ by at most a mini-batch), with a min-max band. Dotted vertical lines: the hidden task
    boundaries of the first run of the panel. Triangles: the loss plateaus a strategy detected (Online-LoRA
    merges its LoRA there), one row per strategy above the curves, every seed's plateaus in that row.
    """
    records = [r for r in records if r.get("anytime_accuracy", {}).get("samples")]
    if not records:
        raise UserError(
            "no task-free runs to plot; --anytime needs runs of a task-free scenario (e.g. --scenario task_free_fmnist)"
        )
    labels = list(labels) if labels is not None else [default_label(r) for r in records]
    modes = sorted({stream_mode(r) for r in records}, key=lambda mode: (MODE_ORDER.get(mode, len(MODE_ORDER)), mode))
    all_labels = list(dict.fromkeys(labels))
    colors = dict(zip(all_labels, _task_colors(len(all_labels))))
    longest = max(len(label) for label in all_labels)  # the legend sits right of the axes
    figure = Figure(figsize=(7.0 + 0.075 * max(longest, 30), 4.2 * len(modes)))
    panels = figure.subplots(len(modes), 1, squeeze=False)[:, 0]
    for axes, mode in zip(panels, modes):
        in_panel = [(r, label) for r, label in zip(records, labels) if stream_mode(r) == mode]
        for boundary in (in_panel[0][0].get("stream") or {}).get("hidden_boundaries", [])[:-1]:
            axes.axvline(boundary, color="grey", linestyle=":", linewidth=1)
        groups: dict[str, list[dict]] = {label: [] for label in all_labels}  # the same order in every panel
        for record, label in in_panel:
            groups[label].append(record)
        for label, group in groups.items():
            if not group:
                continue
            length = min(len(r["anytime_accuracy"]["samples"]) for r in group)
            x = np.mean([r["anytime_accuracy"]["samples"][:length] for r in group], axis=0)
            curves = np.array([r["anytime_accuracy"]["accuracy"][:length] for r in group])
            a_auc = np.mean([r["metrics"].get("a_auc") or 0.0 for r in group])
            shown = f"{label} (A_auc {a_auc:.3f}{f', n={len(group)}' if len(group) > 1 else ''})"
            _draw_band(axes, x, curves, colors[label], shown)
            # plateaus as a rug above the curves (one row per strategy): a plateau often fires before the
            # first anytime evaluation, where the curve has no value to put it on
            row = 1.04 + 0.03 * all_labels.index(label)
            for record in group:
                plateaus = plateau_samples(record)
                axes.plot(
                    plateaus,
                    [row] * len(plateaus),
                    linestyle="none",
                    marker="v",
                    markersize=6,
                    color=colors[label],
                    markeredgecolor="black",
                    markeredgewidth=0.5,
                    alpha=0.8,
                )
        has_plateaus = any(plateau_samples(r) for r, _ in in_panel)
        axes.set_ylim(0.0, 1.02 + (0.03 * len(all_labels) + 0.03 if has_plateaus else 0.0))
        axes.set_yticks(np.linspace(0.0, 1.0, 6))
        axes.set_xlabel("stream samples seen")
        axes.set_ylabel("anytime accuracy\n(classes seen so far)")
        axes.grid(True, alpha=0.3)
        axes.set_title(f"{in_panel[0][0].get('scenario', '?')} ({mode})", fontsize=10)
        handles, texts = axes.get_legend_handles_labels()
        if has_plateaus:
            handles.append(Line2D([], [], linestyle="none", marker="v", color="grey", markeredgecolor="black"))
            texts.append("loss plateau (LoRA merged), per seed")
        handles.append(Line2D([], [], color="grey", linestyle=":"))
        texts.append("hidden task boundary")
        axes.legend(handles, texts, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.tight_layout()
    return save_figure_atomic(figure, out_path)


def _number_or_none(text: str) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def plot_eval_board(rows: list[dict], x: str, y: str, out_path: Path) -> Path:
    """One metric of ``eval_<evaluator>.csv`` rows against one of its keys (e.g. ambiguity against epsilon): a
    line per strategy (mean over seeds, error bars the std over seeds), a panel per scenario and setting. Rows
    whose x or mean is not a number (e.g. ``experience=all`` with ``x=experience``) are left out."""
    if not rows:
        raise UserError("no evaluation board rows to plot (check the board files and the --where filters)")
    for column in (x, f"{y}_mean"):
        if column not in rows[0]:
            known = sorted(key[: -len("_mean")] for key in rows[0] if key.endswith("_mean"))
            raise UserError(f"the board has no column {column!r}; metrics: {', '.join(known)}")
    panels_keys = sorted({(row["scenario"], row["setting"]) for row in rows})
    figure = Figure(figsize=(5.0 * len(panels_keys) + 1.8, 3.8))
    panels = figure.subplots(1, len(panels_keys), squeeze=False, sharey=True)[0]
    strategies = list(dict.fromkeys(row["strategy"] for row in rows))
    colors = dict(zip(strategies, _task_colors(len(strategies))))
    for axes, (scenario, setting) in zip(panels, panels_keys):
        for strategy in strategies:
            points = sorted(
                (_number_or_none(row[x]), _number_or_none(row[f"{y}_mean"]), _number_or_none(row.get(f"{y}_std", "")))
                for row in rows
                if (row["scenario"], row["setting"], row["strategy"]) == (scenario, setting, strategy)
                and _number_or_none(row[x]) is not None
                and _number_or_none(row[f"{y}_mean"]) is not None
            )
            if not points:
                continue
            xs, means = [p[0] for p in points], [p[1] for p in points]
            stds = [p[2] or 0.0 for p in points]
            axes.errorbar(
                xs,
                means,
                yerr=stds,
                color=colors[strategy],
                marker="o",
                markersize=3,
                capsize=2,
                linewidth=1.6,
                label=strategy,
            )
        axes.set_title(f"{scenario} ({setting})", fontsize=10)
        axes.set_xlabel(x)
        axes.grid(True, alpha=0.3)
    panels[0].set_ylabel(y.replace("_", " "))
    panels[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    seeds = sorted({row.get("n_seeds", "?") for row in rows})
    figure.suptitle(f"{y} against {x}; mean over {'/'.join(seeds)} seeds, bars: std", fontsize=11)
    return save_figure_atomic(figure, out_path)


# the per-run pictures a strategy may declare in StrategyTraits.run_plots: name -> plot(records, out_path)
def plot_compute_patch(records: list[dict], out_path: Path) -> Path:
    """What a compute attack does (one run's ``test_time_attack`` block): example test images clean and patched,
    the active tokens per layer of the clean model and each patch, and, for an attack followed through a stream,
    Attack Success after each experience."""
    record = records[0]
    block = record.get("test_time_attack") or {}
    details, rows = block.get("details") or {}, block.get("rows") or []
    clean = np.asarray(details.get("example_images", []), dtype=float)
    patched = np.asarray(details.get("example_images_patched", []), dtype=float)
    experiences = sorted({row["experience"] for row in rows})
    follow = len(experiences) > 1
    columns = max(len(clean), 1)
    figure = Figure(figsize=(3.2 * columns / 2 + 4.2 * (2 if follow else 1), 4.0))
    grid = figure.add_gridspec(2, columns + (8 if follow else 4))
    for index in range(len(clean)):
        for line, images, title in ((0, clean, "clean"), (1, patched, "patched")):
            axes = figure.add_subplot(grid[line, index])
            axes.imshow(np.moveaxis(images[index], 0, -1).squeeze(), cmap="gray", vmin=0, vmax=255)
            axes.set_xticks([])
            axes.set_yticks([])
            if index == 0:
                axes.set_ylabel(title, fontsize=9)
    layers_axes = figure.add_subplot(grid[:, columns : columns + 4])
    for name, counts in (details.get("active_per_layer") or {}).items():
        layers = np.arange(1, len(counts) + 1)
        layers_axes.plot(layers, counts, marker="o", label=name)
        layers_axes.set_xticks(layers)
    layers_axes.set_xlabel("layer")
    layers_axes.set_ylabel("active tokens per image")
    layers_axes.grid(True, alpha=0.3)
    layers_axes.legend(fontsize=8, frameon=False)
    if follow:
        stream_axes = figure.add_subplot(grid[:, columns + 4 :])
        for name in ("random", "ntap", "slowformer"):
            points = [(row["experience"] + 1, row["attack_success"]) for row in rows if row["patch"] == name]
            if points:
                stream_axes.plot(*zip(*points), marker="o", label=name)
        stream_axes.axvline(int(details.get("fitted_after_experience") or 0) + 1, color="grey", linestyle=":")
        stream_axes.set_xlabel("experiences learned (dotted: patch fitted)")
        stream_axes.set_ylabel("Attack Success (%)")
        stream_axes.grid(True, alpha=0.3)
        stream_axes.legend(fontsize=8, frameon=False)
    metrics = block.get("metrics") or {}

    def number(name: str, digits: int) -> str:  # None: undefined (e.g. Attack Success when F_min = F_max)
        value = metrics.get(name)
        return "undefined" if value is None else f"{value:.{digits}f}"

    figure.suptitle(
        f"{record.get('attack')} on {record.get('model')} ({record.get('strategy')}): "
        f"Attack Success {number('attack_success', 1)} %, "
        f"MFLOPs {number('mflops_clean', 2)} -> {number('mflops_patched', 2)}",
        fontsize=10,
    )
    figure.tight_layout()
    return save_figure_atomic(figure, out_path)


RUN_PLOTS: dict[str, Callable[[list[dict], Path], Path]] = {
    "gpm_memory": plot_memory,
    "compute_patch": plot_compute_patch,
}
