"""``cl-bench report``: a static HTML site of the boards and the runs, opened from disk (no server, no network).

What ``--out`` holds::

    index.html              every board, the figures, every run (sortable, filterable tables), what was skipped
    boards/<slug>.html      one board: headline columns as mean ± std, the other columns behind a toggle, each
                            row's config folded, its runs linked, the command that regenerates it
    boards/<slug>.csv       the board file itself
    runs/<slug>.html        one run: command, metrics, accuracy-matrix heatmap, timings, attack branches,
                            evaluations, resolved config, environment
    runs/<slug>/            its heatmap, the PNGs its run directory holds, record.json and evaluations/*.json
    figures/*.png           the documentation figures the boards' commands draw, and plots drawn here
    assets/                 report.css and report.js (shipped in the package: nothing is fetched)

Every string read from a record, an evaluation, a board or the boards' README goes through :func:`html.escape`
(records may be hostile), and every page carries a Content-Security-Policy that allows only the report's own
script, stylesheet and images. The site is built in a temporary directory beside ``--out`` and renamed into
place, so a failure leaves the previous report (or nothing) and never half a site; ``--out`` is replaced only
when it is empty or a previous report (it holds :data:`MARKER`).

Bad input: a missing directory, no complete record at all, a run directory named on the command line whose
record is unreadable or corrupt, or no board under ``--leaderboards`` is a one-line :class:`UserError` (exit 2,
nothing written). A corrupt or incomplete run *inside* a ``--runs`` directory, a malformed evaluation or board,
or a figure that cannot be drawn is skipped with a warning that names it (stderr, and the index's "Skipped"
section): one bad file among many does not cost the whole report.

Output is deterministic: inputs are read in sorted order and no page holds a time that is not in a record.
"""

from __future__ import annotations

import csv
import fnmatch
import html
import json
import os
import re
import secrets
import shutil
import sys
import urllib.parse
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from cl_bench.errors import UserError
from cl_bench.records import (
    EVALUATIONS_DIR,
    RECORD_FILE,
    REFERENCES_DIR,
    check_output_dir,
    install_directory,
    read_evaluation,
    read_record,
)

MARKER = ".cl-bench-report"  # a directory holding it was written by this command and may be replaced
ASSET_FILES = ("report.css", "report.js")
# a JSON block longer than this is cut on the page (the full file is linked): compute attacks keep example images
JSON_LIMIT = 20_000
# a PNG copied from a run directory larger than this is left out (a run's figures are ~100 KB)
MAX_COPIED_PNG_BYTES = 20_000_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# only files (the report's own): no inline script or handler, nothing from the network, so even a string that escaped
# escaping could not run; file: beside 'self' because browsers differ on whether 'self' covers file:// pages
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' file:; style-src 'self' file:; img-src 'self' file: data:; "
    "base-uri 'none'; form-action 'none'"
)
METRIC_NAMES = ("acc", "bwt", "forgetting", "learning_acc", "fwt", "a_auc", "a_last")
# the config columns of a board, folded into one cell per row
CONFIG_SUFFIX = "_config"

Warn = Callable[[str], None]


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- what the report is built from


@dataclass
class Run:
    """One complete run: its record, where it came from, its well-formed evaluations and its page's name."""

    record: dict
    run_dir: Path
    source: str  # the --runs directory it was found in, or the run directory named on the command line, as given
    slug: str = ""
    evaluations: list[tuple[dict, Path]] = field(default_factory=list)


@dataclass
class Figure:
    """A picture on the index or a board page: its file inside the report and what produced it."""

    file: str  # path inside the report, e.g. figures/attack_bwt.png
    title: str
    command: Optional[str] = None  # the command that draws the same picture
    note: str = ""


@dataclass
class BoardFile:
    """One board CSV with the README row that says how it is produced."""

    path: Path
    relative: str  # posix path under the leaderboards directory
    header: list[str]
    rows: list[dict]
    slug: str = ""
    command_cell: str = ""  # Markdown cell of leaderboards/README.md: inline code and text
    sweeps_cell: str = ""
    command_is_folders: bool = False  # the README names this board's folder, not the board itself
    figures: list[Figure] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return Path(self.relative).stem


def _slug(text: str, taken: set[str]) -> str:
    """A file-name-safe, unique name for ``text`` (a run id or a board path: both may come from hostile files)."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:80] or "item"
    slug, number = base, 2
    while slug.lower() in taken:  # case-insensitive: the report may be copied to a case-insensitive disk
        slug, number = f"{base}-{number}", number + 1
    taken.add(slug.lower())
    return slug


def collect_runs(runs_dirs: Sequence[Path], run_paths: Sequence[Path], warn: Warn) -> list[Run]:
    """The complete runs named on the command line and found under the ``--runs`` directories, in that order
    (each directory's runs sorted by name).

    A run directory named on the command line must hold a complete record (a UserError otherwise); a run that
    is incomplete or corrupt inside a ``--runs`` directory is skipped with a warning."""
    for directory in runs_dirs:
        if not directory.is_dir():
            raise UserError(f"--runs {directory} is not a directory; pass a directory of run directories")
    runs: list[Run] = []
    for path in run_paths:
        if not path.exists():
            raise UserError(f"run directory {path} does not exist")
        run_dir = path.parent if path.is_file() else path
        if path.is_dir() and not (path / RECORD_FILE).exists():
            raise UserError(
                f"{path} holds no {RECORD_FILE}: pass a run directory, or a directory of runs with --runs {path}"
            )
        record, problem = read_record(path)
        if record is None:
            raise UserError(f"{problem}; pass a run directory that holds a complete record")
        runs.append(Run(record, run_dir, str(path)))
    for directory in runs_dirs:
        # hidden entries are runs being written; references/ holds baselines evaluators trained, not runs
        children = sorted(
            child
            for child in directory.iterdir()
            if child.is_dir() and not child.name.startswith(".") and child.name != REFERENCES_DIR
        )
        if (directory / RECORD_FILE).is_file():
            children = [directory]  # --runs given one run directory: take it as a run of its own
        for child in children:
            if not (child / RECORD_FILE).exists():
                warn(f"skipping {child}: no {RECORD_FILE} (incomplete run)")
                continue
            record, problem = read_record(child)
            if record is None:
                warn(f"skipping {problem}")
                continue
            runs.append(Run(record, child, str(directory)))
    if not runs:
        where = ", ".join(str(path) for path in [*run_paths, *runs_dirs])
        raise UserError(f"no complete run records under {where}; run `cl-bench run` or `cl-bench sweep` first")
    taken: set[str] = set()
    for run in runs:
        run.slug = _slug(str(run.record["run_id"]), taken)
        run.evaluations = _evaluations(run, warn)
    return runs


def _evaluations(run: Run, warn: Warn) -> list[tuple[dict, Path]]:
    """The well-formed evaluation artefacts of one run, in file-name order (others skipped with a warning)."""
    folder = run.run_dir / EVALUATIONS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        artefact, problem = read_evaluation(path)
        if artefact is None:
            warn(f"skipping {problem}")
        elif artefact["run_id"] != run.record["run_id"]:
            warn(f"skipping {path}: it evaluates run {artefact['run_id']}, not {run.record['run_id']}")
        else:
            found.append((artefact, path))
    return found


def _split_markdown_row(line: str) -> list[str]:
    """The cells of one Markdown table row; a ``|`` inside inline code does not split."""
    cells: list[str] = []
    current: list[str] = []
    in_code = False
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    cells.append("".join(current).strip())
    return cells


def board_commands(readme_text: str) -> list[tuple[list[str], str, str]]:
    """(board file patterns, sweeps cell, commands cell) for each row of the table in ``leaderboards/README.md``.

    A commands cell that starts with ``same`` repeats the row above's command (its remainder is kept as a note)."""
    rows: list[tuple[list[str], str, str]] = []
    previous = ["", ""]  # the sweeps and commands cells of the row above
    for line in readme_text.splitlines():
        if not line.startswith("|") or re.match(r"^\|[\s|:-]+\|?$", line):
            continue
        cells = _split_markdown_row(line)
        if len(cells) < 3 or cells[0].lower() == "file":
            continue
        patterns = re.findall(r"`([^`]+\.csv)`", cells[0])
        resolved = [
            before + cell[len("same") :] if cell.lower().startswith("same") and before else cell
            for cell, before in zip(cells[1:3], previous)
        ]
        previous = resolved
        if patterns:
            rows.append((patterns, resolved[0], resolved[1]))
    return rows


def read_boards(leaderboards: Path, warn: Warn) -> list[BoardFile]:
    """Every ``**/*.csv`` under ``leaderboards`` (sorted) with the README row that produces it."""
    if not leaderboards.is_dir():
        raise UserError(f"--leaderboards {leaderboards} is not a directory; pass the directory of the board CSVs")
    readme = leaderboards / "README.md"
    commands = board_commands(readme.read_text(encoding="utf-8", errors="replace")) if readme.is_file() else []
    boards: list[BoardFile] = []
    taken: set[str] = set()
    for path in sorted(leaderboards.rglob("*.csv")):
        relative = path.relative_to(leaderboards).as_posix()
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                rows = list(reader)
                header = list(reader.fieldnames or [])
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            warn(f"skipping board {path}: not a readable CSV ({str(error).splitlines()[0][:120]})")
            continue
        if not header:
            warn(f"skipping board {path}: empty file")
            continue
        board = BoardFile(path, relative, header, rows, slug=_slug(relative.removesuffix(".csv"), taken))
        _attach_command(board, commands)
        boards.append(board)
    if not boards:
        raise UserError(f"no board CSVs under {leaderboards}; write them with `cl-bench leaderboard`")
    return boards


def _attach_command(board: BoardFile, commands: list[tuple[list[str], str, str]]) -> None:
    for patterns, sweeps, command in commands:
        if any(fnmatch.fnmatchcase(board.relative, pattern) for pattern in patterns):
            board.command_cell, board.sweeps_cell = command, sweeps
            return
    # a board the README does not name (e.g. a pre-trained variant) is regenerated by its folder's command
    folder = Path(board.relative).parent.as_posix()
    if folder != ".":
        for patterns, sweeps, command in commands:
            if any(Path(pattern).parent.as_posix() == folder for pattern in patterns):
                board.command_cell, board.sweeps_cell, board.command_is_folders = command, sweeps, True
                return


def inline_code(cell: str) -> list[str]:
    """The inline-code spans of a Markdown cell (the commands themselves)."""
    return re.findall(r"`([^`]+)`", cell)


# ----------------------------------------------------------------------------- figures


def plot_accuracy_heatmap(panels: Sequence[tuple[str, list[list[float]]]], out_path: Path) -> Path:
    """Accuracy matrices as heatmaps side by side (row i: after training experience i; column j: test experience
    j), values written in the cells up to 12 experiences. Titles are fixed strings, never record text."""
    import numpy as np
    from matplotlib.figure import Figure as MatplotlibFigure

    from cl_bench.plots import save_figure_atomic

    size = len(panels[0][1])
    side = min(max(3.2, 0.42 * size + 1.6), 9.0)
    figure = MatplotlibFigure(figsize=(side * len(panels) + 1.0, side))
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for axes, (title, matrix) in zip(axes_list, panels):
        values = np.asarray(matrix, dtype=float)
        image = axes.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
        n_rows, n_columns = values.shape
        if n_columns <= 12:
            for i in range(n_rows):
                for j in range(n_columns):
                    shade = "black" if values[i, j] > 0.6 else "white"
                    axes.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7, color=shade)
        step = 1 if n_columns <= 20 else int(np.ceil(n_columns / 10))
        axes.set_xticks(range(0, n_columns, step), [str(j + 1) for j in range(0, n_columns, step)])
        axes.set_yticks(range(0, n_rows, step), [str(i + 1) for i in range(0, n_rows, step)])
        axes.set_xlabel("test experience")
        axes.set_ylabel("after training experience")
        axes.set_title(title, fontsize=10)
    if image is not None:
        figure.colorbar(image, ax=list(axes_list), shrink=0.85, label="test accuracy")
    return save_figure_atomic(figure, out_path)


def _draw(what: str, draw: Callable[[], Any], warn: Warn) -> bool:
    """Run one plotting call; a figure that cannot be drawn (odd record content) is left out with a warning."""
    try:
        draw()
    except (UserError, ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as error:
        warn(f"figure {what} not drawn: {str(error).splitlines()[0][:160] if str(error) else type(error).__name__}")
        return False
    return True


def _plot_command(
    options: Sequence[str], group: Sequence[Run], runs_dirs: Sequence[Path], scenario: str, out: str
) -> str:
    """The ``cl-bench plot`` command that draws the same figure from the same runs."""
    import shlex

    sources = {run.source for run in group}
    if len(sources) == 1 and Path(next(iter(sources))) in runs_dirs:
        selection = ["--runs", next(iter(sources)), "--scenario", scenario]
    else:
        selection = [str(run.run_dir) for run in group]
    return "cl-bench plot " + " ".join(shlex.quote(part) for part in [*options, *selection, "--out", out])


def run_figures(runs: Sequence[Run], runs_dirs: Sequence[Path], folder: Path, warn: Warn) -> list[Figure]:
    """Plots drawn from the records with :mod:`cl_bench.plots`, one per scenario of each runs directory (a sweep:
    runs of two sweeps may share strategy names but not protocols): forgetting curves (runs without an attack,
    strategies overlaid, seeds averaged), GPM memory per layer and anytime accuracy where runs have them."""
    from cl_bench import plots

    figures: list[Figure] = []
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        if run.record.get("attack") is None:
            # the run directories named on the command line are one group
            source = run.source if Path(run.source) in runs_dirs else "the named runs"
            groups.setdefault((source, str(run.record["scenario"])), []).append(run)
    taken: set[str] = set()
    for (source, scenario), clean in groups.items():
        if len(clean) < 2:
            continue  # one run: its page already shows its own pictures
        name = _slug(f"{Path(source).name}_{scenario}", taken)
        kinds: list[tuple[str, list[Run], Callable[[list[dict], Path], Path], list[str], str]] = [
            ("forgetting", clean, plots.plot_overlay, [], "forgetting curves (strategies overlaid, seeds averaged)")
        ]
        memory = [run for run in clean if (run.record.get("strategy_info") or {}).get("gpm_memory")]
        if memory:
            strategies = sorted({str(run.record["strategy"]) for run in memory})
            memory.sort(key=lambda run: (strategies.index(str(run.record["strategy"])), run.record["seed"]))
            options = ["--memory", "--strategy", *strategies]
            kinds.append(("gpm_memory", memory, plots.plot_memory, options, "GPM memory occupancy per layer"))
        anytime = [run for run in clean if (run.record.get("anytime_accuracy") or {}).get("samples")]
        if anytime:
            kinds.append(("anytime", anytime, plots.plot_anytime, ["--anytime"], "anytime accuracy of task-free runs"))
        for kind, group, plot, options, title in kinds:
            file_name = f"{kind}_{name}.png"
            records = [run.record for run in group]
            if _draw(f"{kind} of {scenario} in {source}", partial(plot, records, folder / file_name), warn):
                figures.append(
                    Figure(
                        f"figures/{file_name}",
                        f"{scenario} ({source}): {title}",
                        _plot_command(options, group, runs_dirs, scenario, file_name),
                        f"drawn by cl-bench report from {len(group)} run(s)",
                    )
                )
    return figures


def board_figures(boards: Sequence[BoardFile], leaderboards: Path, folder: Path, warn: Warn) -> list[Figure]:
    """The documentation figures a board's README command draws (``docs/*.png``, copied) and, for a training-time
    attack board, the paired BWT bars drawn here with :func:`cl_bench.plots.plot_attack_boards`."""
    from cl_bench import plots

    figures: list[Figure] = []
    root = leaderboards.parent  # the README's commands run from the repository root
    copied: dict[str, Figure] = {}
    taken: set[str] = set()
    for board in boards:
        for command in inline_code(board.command_cell):
            for relative in re.findall(r"(?:^|\s)(docs/[\w./-]+\.png)", command):
                if relative in copied:
                    board.figures.append(copied[relative])
                    continue
                source = root / relative
                if ".." in Path(relative).parts or not _is_png_file(source):
                    continue  # a README line may not reach outside the documentation folder
                file_name = f"docs_{_slug(Path(relative).stem, taken)}.png"
                shutil.copyfile(source, folder / file_name)
                figure = Figure(f"figures/{file_name}", relative, command, "the documentation's figure")
                copied[relative] = figure
                board.figures.append(figure)
                figures.append(figure)
        if "bwt_difference_mean" in board.header and board.rows:
            file_name = f"attack_bwt_{board.slug}.png"
            csv_path = leaderboards / board.relative
            if _draw(
                f"paired BWT bars of {board.relative}",
                partial(plots.plot_attack_boards, board.rows, folder / file_name),
                warn,
            ):
                figure = Figure(
                    f"figures/{file_name}",
                    f"{board.relative}: paired BWT change per victim",
                    f"cl-bench plot --attack-board {csv_path.as_posix()} --out {file_name}",
                    "drawn by cl-bench report from the board",
                )
                board.figures.append(figure)
                figures.append(figure)
    return figures


def _is_png_file(path: Path) -> bool:
    """A regular file (not a link: a hostile run directory could point anywhere) that starts like a PNG."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_COPIED_PNG_BYTES:
            return False
        with path.open("rb") as handle:
            return handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


# ----------------------------------------------------------------------------- HTML pieces


def esc(value: Any) -> str:
    """Text for HTML (element content and quoted attributes)."""
    return html.escape(str(value), quote=True)


def page(title: str, body: str, depth: int, where: str = "") -> str:
    """A whole page: assets linked relative to the report's root, ``depth`` folders above this page."""
    root = "../" * depth
    crumbs = f'<span class="where">{esc(where)}</span>' if where else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{esc(title)} · cl-bench report</title>\n"
        '<link rel="icon" href="data:,">\n'
        f'<link rel="stylesheet" href="{root}assets/report.css">\n'
        f'<script src="{root}assets/report.js" defer></script>\n'
        "</head>\n<body>\n"
        f'<header class="site"><a href="{root}index.html">cl-bench report</a>{crumbs}</header>\n'
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


@dataclass(frozen=True)
class Cell:
    """One table cell: its HTML (already escaped), the value it sorts by, and its classes."""

    html: str
    sort: Optional[str] = None
    classes: str = ""


def text_cell(value: Any) -> Cell:
    return Cell("" if value is None else esc(value))


def number_cell(value: Any, digits: str = ".4f") -> Cell:
    """A number formatted for reading, sorted by its exact value; anything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return text_cell(value if value is not None else "")
    shown = str(value) if isinstance(value, int) else format(value, digits)
    return Cell(esc(shown), repr(value), "number")


def table(
    table_id: str,
    header: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    extra: Sequence[bool] = (),
    titles: Sequence[str] = (),
    tools: bool = True,
) -> str:
    """A sortable table (click a header); with ``tools``, a filter box and a row count above it, and, when some
    columns are ``extra``, a button that shows them (hidden by default)."""
    extra = list(extra) or [False] * len(header)
    titles = list(titles) or [""] * len(header)
    head = []
    for name, hidden, title in zip(header, extra, titles):
        classes = ' class="extra"' if hidden else ""
        tip = f' title="{esc(title)}"' if title else ""
        head.append(f'<th{classes}{tip}><button type="button" class="sort">{esc(name)}</button></th>')
    body = []
    for row in rows:
        cells = []
        for cell, hidden in zip(row, extra):
            classes = " ".join(part for part in (cell.classes, "extra" if hidden else "") if part)
            attributes = (f' class="{classes}"' if classes else "") + (
                f' data-sort="{esc(cell.sort)}"' if cell.sort is not None else ""
            )
            cells.append(f"<td{attributes}>{cell.html}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    parts = []
    if tools:
        toggle = (
            f'<button type="button" class="column-toggle" data-table="{table_id}" aria-pressed="false">'
            "show every column</button>"
            if any(extra)
            else ""
        )
        parts.append(
            '<div class="table-tools">'
            f'<input type="search" class="row-filter" data-table="{table_id}" '
            'placeholder="filter rows: every word must match" aria-label="filter rows">'
            f'<span class="row-count muted" data-table="{table_id}"></span>{toggle}</div>'
        )
    parts.append(
        f'<div class="table-scroll"><table id="{table_id}" class="sortable">'
        f"<thead><tr>{''.join(head)}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>"
    )
    return "\n".join(parts)


def facts(pairs: Iterable[tuple[str, str]]) -> str:
    """A definition list; values are HTML (escape them first)."""
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def json_block(value: Any, link: str = "") -> str:
    """Pretty JSON in a <pre>, cut at :data:`JSON_LIMIT` characters (``link``: where the whole file is)."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    if len(text) > JSON_LIMIT:
        where = f' (the whole file: <a href="{esc(link)}">{esc(Path(link).name)}</a>)' if link else ""
        return (
            f"<pre>{esc(text[:JSON_LIMIT])}\n…</pre>"
            f'<p class="note">cut at {JSON_LIMIT:,} of {len(text):,} characters{where}</p>'
        )
    return f"<pre>{esc(text)}</pre>"


def folded(summary: str, inner: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>{inner}</details>"


def markdown_cell(cell: str) -> str:
    """A Markdown table cell from the boards' README as HTML: inline code as <code>, the rest as text."""
    parts = cell.split("`")
    return "".join(f"<code>{esc(part)}</code>" if index % 2 else esc(part) for index, part in enumerate(parts))


def figure_html(figure: Figure, root: str) -> str:
    command = f'<pre class="command">{esc(figure.command)}</pre>' if figure.command else ""
    note = f"{esc(figure.note)}; " if figure.note else ""
    return (
        f'<figure><img src="{root}{esc(figure.file)}" alt="{esc(figure.title)}">'
        f"<figcaption><strong>{esc(figure.title)}</strong> ({note}the command that draws it:){command}"
        "</figcaption></figure>"
    )


def _rows_table(table_id: str, rows: Sequence[dict]) -> str:
    """A table of result rows (dicts): every key seen, in the order first seen."""
    if not rows:
        return '<p class="muted">no rows</p>'
    columns = list(dict.fromkeys(key for row in rows if isinstance(row, dict) for key in row))
    body = [
        [number_cell(row.get(column), ".4g") if isinstance(row, dict) else text_cell(row) for column in columns]
        for row in rows
    ]
    return table(table_id, columns, body, tools=len(rows) > 8)


def _metrics_rows(record: dict) -> list[tuple[str, dict]]:
    blocks = [("test", record.get("metrics"))]
    if record.get("metrics_validation"):
        blocks.append(("validation (held out of training data)", record["metrics_validation"]))
    if record.get("metrics_clean"):
        blocks.append(("clean branch (no attack)", record["metrics_clean"]))
    return [(name, block) for name, block in blocks if isinstance(block, dict)]


# ----------------------------------------------------------------------------- pages


def _format_mean_std(mean: str, std: str) -> str:
    return f"{mean} ± {std}" if mean and std else mean


def board_table(board: BoardFile, runs_by_key: dict[tuple[str, str], Run]) -> str:
    """The board as a table: the headline columns shown (mean ± std in one cell, sorted by the mean), the others
    behind the toggle, the config columns folded in one cell per row, the runs of each row linked."""
    from cl_bench.leaderboard import headline_columns

    headline = set(headline_columns(board.stem))
    if board.stem.startswith("cl_"):
        headline |= {"val_acc_mean", "val_acc_std", "val_bwt_mean"}  # the number cl_ boards are ranked by
    headline |= {"n_seeds"}
    header_set = set(board.header)
    columns: list[tuple[str, str, Optional[str]]] = []  # (label, mean or plain column, std column)
    config_columns = [name for name in board.header if name.endswith(CONFIG_SUFFIX)]
    for name in board.header:
        if name in config_columns or (name.endswith("_std") and f"{name[:-4]}_mean" in header_set):
            continue
        if name.endswith("_mean"):
            stem = name[: -len("_mean")]
            columns.append((stem, name, f"{stem}_std" if f"{stem}_std" in header_set else None))
        else:
            columns.append((name, name, None))
    extra = [not (mean in headline or (std or "") in headline) for _, mean, std in columns]
    titles = ["mean ± sample std (ddof 1) over seeds" if std else "" for _, _, std in columns]
    labels = [label for label, _, _ in columns]
    linked = any(
        (row.get("config_id", ""), seed) in runs_by_key
        for row in board.rows
        for seed in (row.get("seeds") or "").split(";")
    )
    if config_columns:
        labels.append("config")
        extra.append(False)
        titles.append("the configuration columns of the row (" + ", ".join(config_columns) + ")")
    if linked:
        labels.append("runs")
        extra.append(False)
        titles.append("the run pages of this row (each shows the command that produced it)")
    body = []
    for row in board.rows:
        cells = []
        for _, mean, std in columns:
            value = row.get(mean) or ""
            try:
                number: Optional[float] = float(value)
            except ValueError:
                number = None
            if number is not None and value.strip():
                cells.append(Cell(esc(_format_mean_std(value, row.get(std or "") or "")), value, "number"))
            else:
                cells.append(text_cell(value))
        if config_columns:
            inner = "".join(f"<h4>{esc(name)}</h4>{_pretty_config(row.get(name) or '')}" for name in config_columns)
            cells.append(Cell(folded("config", inner), ""))
        if linked:
            links = []
            for seed in (row.get("seeds") or "").split(";"):
                run = runs_by_key.get((row.get("config_id", ""), seed))
                if run is not None:
                    links.append(f'<a href="../runs/{esc(run.slug)}.html">seed {esc(seed)}</a>')
            cells.append(Cell(" ".join(links), str(len(links))))
        body.append(cells)
    return table(f"board-{board.slug}", labels, body, extra=extra, titles=titles)


def _pretty_config(text: str) -> str:
    try:
        return json_block(json.loads(text)) if text else '<p class="muted">none</p>'
    except ValueError:
        return f"<pre>{esc(text)}</pre>"


def board_command_html(board: BoardFile) -> str:
    if not board.command_cell:
        return (
            '<p class="note">leaderboards/README.md lists no command for this board. Every board is written by '
            "<code>cl-bench leaderboard --runs RUNS --out DIR</code> from complete run records.</p>"
        )
    folder_note = (
        f'<p class="note">The README names this board\'s folder ({esc(Path(board.relative).parent.as_posix())}/), '
        "not the file: the same commands write every board in it.</p>"
        if board.command_is_folders
        else ""
    )
    # the cell's first inline code is the command; the rest of the cell, if any, is a note about it
    command, *_ = inline_code(board.command_cell) or [""]
    remainder = board.command_cell.replace(f"`{command}`", "", 1).strip()
    parts = [f'<pre class="command">{esc(command)}</pre>' if command else "", folder_note]
    if remainder:
        parts.append(f'<p class="note">leaderboards/README.md says: {markdown_cell(board.command_cell)}</p>')
    if board.sweeps_cell:
        parts.append(f'<p class="note">Sweep files: {markdown_cell(board.sweeps_cell)}</p>')
    return "".join(parts)


def render_board(board: BoardFile, runs_by_key: dict[tuple[str, str], Run]) -> str:
    figures = "".join(figure_html(figure, "../") for figure in board.figures)
    body = [
        f"<h1>{esc(board.relative)}</h1>",
        f'<p>{len(board.rows)} rows; the file: <a href="{esc(board.slug)}.csv">{esc(Path(board.relative).name)}</a>. '
        "Each number is the mean ± sample std (ddof 1) over the seeds of its row, written by "
        "<code>cl-bench leaderboard</code> from complete run records; the run pages (where the runs are in "
        "this report) show each run's own command.</p>",
        "<h2>How it is produced</h2>",
        board_command_html(board),
    ]
    if figures:
        body += ["<h2>Figures</h2>", f'<div class="figures">{figures}</div>']
    body += ["<h2>Rows</h2>", board_table(board, runs_by_key)]
    return page(board.relative, "\n".join(body), 1, board.relative)


def _board_kind(stem: str) -> str:
    for prefix in ("cl_", "online_", "attack_", "eval_"):
        if stem.startswith(prefix):
            return prefix[:-1]
    return "other"


def render_index(
    boards: Sequence[BoardFile],
    runs: Sequence[Run],
    figures: Sequence[Figure],
    skipped: Sequence[str],
    command: str,
) -> str:
    body = [
        "<h1>cl-bench report</h1>",
        f"<p>{len(boards)} boards, {len(runs)} runs, {len(figures)} figures"
        + (f', <a href="#skipped">{len(skipped)} inputs skipped</a>' if skipped else "")
        + f'. Written by:</p><pre class="command">{esc(command)}</pre>',
    ]
    if boards:
        rows = [
            [
                Cell(f'<a href="boards/{esc(board.slug)}.html">{esc(board.relative)}</a>', board.relative),
                text_cell(_board_kind(board.stem)),
                number_cell(len(board.rows)),
                Cell(f'<a href="boards/{esc(board.slug)}.csv">csv</a>', ""),
                Cell(
                    folded("command", "".join(f"<pre>{esc(c)}</pre>" for c in inline_code(board.command_cell)[:1]))
                    if board.command_cell
                    else '<span class="muted">none listed</span>',
                    board.command_cell,
                ),
            ]
            for board in boards
        ]
        body += [
            "<h2>Boards</h2>",
            "<p>One row per configuration, mean ± std over seeds; open a board for its table, figures and the "
            "command that regenerates it.</p>",
            table("boards", ["board", "kind", "rows", "file", "regenerated by"], rows),
        ]
    if figures:
        body += ["<h2>Figures</h2>", '<div class="figures">' + "".join(figure_html(f, "") for f in figures) + "</div>"]
    if runs:
        body += ["<h2>Runs</h2>", table("runs", *_runs_table(runs))]
    if skipped:
        body += [
            '<h2 id="skipped">Skipped</h2>',
            "<p>Inputs left out of this report (also printed as warnings):</p>",
            "<ul>" + "".join(f'<li class="warning">{esc(line)}</li>' for line in skipped) + "</ul>",
        ]
    return page("index", "\n".join(body), 0)


def _runs_table(runs: Sequence[Run]) -> tuple[list[str], list[list[Cell]]]:
    from cl_bench.leaderboard import record_setting

    header = [
        "run",
        "scenario",
        "setting",
        "strategy",
        "model",
        "attack",
        "seed",
        "ACC",
        "BWT",
        "forgetting",
        "evaluations",
        "wall time (s)",
        "found in",
        "created",
    ]
    rows = []
    for run in runs:
        record = run.record
        metrics = record.get("metrics") or {}
        rows.append(
            [
                Cell(f'<a href="runs/{esc(run.slug)}.html">{esc(record["run_id"])}</a>', str(record["run_id"])),
                text_cell(record.get("scenario")),
                text_cell(record_setting(record)),
                text_cell(record.get("strategy")),
                text_cell(record.get("model")),
                text_cell(record.get("attack") or ""),
                number_cell(record.get("seed")),
                number_cell(metrics.get("acc")),
                number_cell(metrics.get("bwt")),
                number_cell(metrics.get("forgetting")),
                number_cell(len(run.evaluations)),
                number_cell((record.get("timing") or {}).get("total_s"), ".1f"),
                text_cell(run.source),
                text_cell(record.get("created", "")),
            ]
        )
    return header, rows


def _matrix_table(table_id: str, matrix: list[list[float]], initial: Optional[list[float]]) -> str:
    header = ["trained"] + [f"exp {j + 1}" for j in range(len(matrix))]
    rows = [[Cell(f"after {i + 1}", str(i))] + [number_cell(v) for v in line] for i, line in enumerate(matrix)]
    if initial:
        rows.insert(0, [Cell("untrained", "-1")] + [number_cell(v) for v in initial])
    return table(table_id, header, rows, tools=False)


def render_run(run: Run, folder: Path, warn: Warn) -> str:
    """One run's page; its heatmap, figures, record and evaluations go into ``folder`` (runs/<slug>/)."""
    record = run.record
    slug = run.slug
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.run_dir / RECORD_FILE, folder / RECORD_FILE)
    title = " / ".join(
        str(part)
        for part in (record.get("scenario"), record.get("strategy"), record.get("model"), record.get("attack"))
        if part
    )
    body = [
        f"<h1>run {esc(record['run_id'])}</h1>",
        f"<p>{esc(title)}, seed {esc(record.get('seed'))}"
        + (f", created {esc(record['created'])}" if record.get("created") else "")
        + f'. The record: <a href="{esc(slug)}/{RECORD_FILE}">{RECORD_FILE}</a> (from {esc(run.run_dir)}).</p>',
        "<h2>Command</h2>",
        f'<pre class="command">{esc(record.get("command") or "(the record holds no command)")}</pre>',
        '<p class="note">Every number on this page but the evaluations (each with its own command below) was '
        f"produced by this command; config id {esc(record.get('config_id', ''))}.</p>",
        "<h2>Metrics</h2>",
        table(
            f"metrics-{slug}",
            ["measured on"] + list(METRIC_NAMES),
            [
                [text_cell(name)] + [number_cell(block.get(m)) for m in METRIC_NAMES]
                for name, block in _metrics_rows(record)
            ],
            tools=False,
        ),
    ]
    body += _matrix_section(run, folder, warn)
    # the run's own pictures (forgetting_curve.png, gpm_memory.png, compute_patch.png ...): plain names only, so
    # that a name read from disk is a safe URL as it is; heatmap.png is the report's
    pictures = [
        path.name
        for path in sorted(run.run_dir.glob("*.png"))
        if SAFE_FILE_NAME.fullmatch(path.name) and path.name != "heatmap.png" and _is_png_file(path)
    ]
    if "forgetting_curve.png" not in pictures:
        from cl_bench.plots import plot_run

        if _draw(
            f"forgetting curve of run {record['run_id']}",
            lambda: plot_run(record, folder / "forgetting_curve.png"),
            warn,
        ):
            pictures.insert(0, "forgetting_curve.png")
    for name in pictures:
        if (run.run_dir / name).is_file():
            shutil.copyfile(run.run_dir / name, folder / name)
    if pictures:
        body += [
            "<h2>Figures</h2>",
            '<p class="note">The run directory\'s pictures (drawn by the run; a missing forgetting curve is drawn '
            'here from the record).</p><div class="figures">'
            + "".join(
                f'<figure><img src="{esc(slug)}/{esc(name)}" alt="{esc(name)}">'
                f"<figcaption>{esc(name)}</figcaption></figure>"
                for name in pictures
            )
            + "</div>",
        ]
    body += _timing_section(record, slug)
    body += _attack_section(record, slug)
    body += _evaluations_section(run, folder)
    body += [
        "<h2>Resolved config</h2>",
        json_block(record.get("config"), f"{slug}/{RECORD_FILE}"),
        "<h2>Environment</h2>",
        facts((str(k), esc(v)) for k, v in (record.get("environment") or {}).items())
        if isinstance(record.get("environment"), dict) and record.get("environment")
        else '<p class="muted">not recorded</p>',
        "<h2>More of the record</h2>",
    ]
    for key in ("scenario_info", "strategy_info", "backbone_card", "anytime_accuracy", "stream", "final_model"):
        if record.get(key):
            body.append(folded(key, json_block(record[key], f"{slug}/{RECORD_FILE}")))
    return page(f"run {record['run_id']}", "\n".join(body), 1, f"run {record['run_id']}")


def _matrix_section(run: Run, folder: Path, warn: Warn) -> list[str]:
    record = run.record
    panels = [("attacked branch" if record.get("accuracy_matrix_clean") else "test", record["accuracy_matrix"])]
    if record.get("accuracy_matrix_clean"):
        panels.append(("clean branch", record["accuracy_matrix_clean"]))
    if record.get("accuracy_matrix_validation"):
        panels.append(("validation", record["accuracy_matrix_validation"]))
    parts = ["<h2>Accuracy matrix</h2>"]
    if _draw(
        f"accuracy heatmap of run {record['run_id']}",
        lambda: plot_accuracy_heatmap(panels, folder / "heatmap.png"),
        warn,
    ):
        parts.append(
            f'<figure><img src="{esc(run.slug)}/heatmap.png" alt="accuracy matrix heatmap">'
            "<figcaption>Row i: accuracy on every test experience after training experience i.</figcaption></figure>"
        )
    initial = record.get("accuracy_initial")
    for index, (name, matrix) in enumerate(panels):
        parts += [f"<h3>{esc(name)}</h3>", _matrix_table(f"matrix-{index}", matrix, initial if index == 0 else None)]
    return parts


def _timing_section(record: dict, slug: str) -> list[str]:
    timing = record.get("timing") or {}
    rows = [
        [
            number_cell(index + 1),
            text_cell(phase.get("branch") or ""),
            number_cell(phase.get("train_s"), ".2f"),
            number_cell(phase.get("eval_s"), ".2f"),
        ]
        for index, phase in enumerate(timing.get("per_experience") or [])
        if isinstance(phase, dict)
    ]
    parts = [
        "<h2>Timings</h2>",
        facts(
            [
                ("total", esc(f"{timing.get('total_s', 0):.2f} s")),
                ("training", esc(f"{timing.get('train_s', 0):.2f} s")),
                ("evaluation", esc(f"{timing.get('eval_s', 0):.2f} s")),
            ]
            + ([("peak memory", esc(f"{record['peak_memory_mb']} MB"))] if record.get("peak_memory_mb") else [])
        ),
    ]
    if rows:
        parts.append(table(f"timing-{slug}", ["phase", "branch", "train (s)", "eval (s)"], rows, tools=False))
    return parts


def _attack_section(record: dict, slug: str) -> list[str]:
    parts: list[str] = []
    info = record.get("attack_info")
    if isinstance(info, dict):
        parts += [
            "<h2>Attack</h2>",
            facts(
                [
                    ("attack", esc(info.get("name"))),
                    ("poisoned experience", esc(int(info.get("target_experience", 0)) + 1)),
                    ("budget", esc(json.dumps(info.get("budget"), ensure_ascii=False))),
                    ("attack time", esc(f"{info.get('wall_time_s', 0):.2f} s")),
                ]
            ),
        ]
        if info.get("metrics"):
            parts.append(folded("the attack's own measurements", json_block(info["metrics"], f"{slug}/{RECORD_FILE}")))
    effect = record.get("attack_effect")
    if isinstance(effect, dict) and effect:
        rows = [
            [text_cell(name)] + [number_cell((pair or {}).get(key)) for key in ("clean", "attacked", "difference")]
            for name, pair in effect.items()
        ]
        parts += [
            "<h3>Paired effect (same seed, clean and attacked branch)</h3>",
            table(f"effect-{slug}", ["number", "clean", "attacked", "attacked − clean"], rows, tools=len(rows) > 8),
        ]
    attacked, clean = record.get("attack_rows"), record.get("attack_rows_clean")
    if isinstance(attacked, list) and attacked:
        clean = clean if isinstance(clean, list) else []
        rows = []
        for index, row in enumerate(attacked):
            twin = clean[index] if index < len(clean) and isinstance(clean[index], dict) else {}
            for name, value in (row or {}).items():
                other = twin.get(name)
                difference = (
                    value - other if isinstance(value, (int, float)) and isinstance(other, (int, float)) else None
                )
                rows.append(
                    [
                        number_cell(index + 1),
                        text_cell(name),
                        number_cell(value),
                        number_cell(other),
                        number_cell(difference),
                    ]
                )
        parts += [
            "<h3>After every experience: attacked and clean branches (attack_rows, attack_rows_clean)</h3>",
            table(f"attack-rows-{slug}", ["after experience", "measure", "attacked", "clean", "difference"], rows),
        ]
    block = record.get("test_time_attack")
    if isinstance(block, dict):
        parts += [
            f"<h2>Test-time attack {esc(block.get('name'))}</h2>",
            facts(
                [(str(k), esc("undefined" if v is None else v)) for k, v in (block.get("metrics") or {}).items()]
                + [("attack time", esc(f"{block.get('wall_time_s', 0):.2f} s"))]
            ),
            _rows_table(f"test-attack-{slug}", block.get("rows") or []),
            folded("details", json_block(block.get("details"), f"{slug}/{RECORD_FILE}")),
        ]
    return parts


def _evaluations_section(run: Run, folder: Path) -> list[str]:
    if not run.evaluations:
        return []
    target = folder / EVALUATIONS_DIR
    target.mkdir(exist_ok=True)
    parts = ["<h2>Evaluations</h2>"]
    for index, (artefact, path) in enumerate(run.evaluations):
        shutil.copyfile(path, target / path.name)
        link = f"{run.slug}/{EVALUATIONS_DIR}/{urllib.parse.quote(path.name)}"
        metrics = artefact.get("metrics") or {}
        seconds = artefact["timing"]["total_s"]
        parts += [
            f"<h3>{esc(artefact['evaluator'])} ({esc(artefact['eval_id'])})</h3>",
            f'<p>The file: <a href="{esc(link)}">{esc(path.name)}</a>; {seconds:.1f} s. '
            "Its numbers were produced by:</p>",
            f'<pre class="command">{esc(artefact.get("command") or "(the evaluation holds no command)")}</pre>',
            facts((str(k), esc("undefined" if v is None else v)) for k, v in metrics.items()) if metrics else "",
            _rows_table(f"evaluation-{index}", artefact.get("rows") or []),
            folded("evaluator config", json_block(artefact.get("config"), link)),
            folded("details", json_block(artefact.get("details"), link)),
        ]
    return parts


# ----------------------------------------------------------------------------- building the site


def _check_out(out: Path) -> None:
    """A UserError unless ``out`` may be written: absent, an empty directory, or a previous report."""
    check_output_dir(out, "the report")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserError(
            f"--out {out} is a directory that cl-bench report did not write; choose a new or empty directory "
            "(an earlier report there would be replaced)"
        )


def build_report(
    out: Path,
    runs_dirs: Sequence[Path] = (),
    run_paths: Sequence[Path] = (),
    leaderboards: Optional[Path] = None,
    command: str = "cl-bench report",
    warn: Optional[Warn] = None,
) -> Path:
    """Write the report into ``out`` (atomically) and return the page to open: the index, or the run's page when
    the report is of one run directory named on the command line."""
    if not runs_dirs and not run_paths and leaderboards is None:
        raise UserError("nothing to report: pass run directories, --runs DIR or --leaderboards DIR")
    skipped: list[str] = []

    def note(message: str) -> None:
        skipped.append(message)
        (warn or _warn_stderr)(message)

    out = Path(out)
    if out.name in ("", ".", ".."):
        out = out.resolve()  # the site is renamed into place, so it needs a name in its parent
    _check_out(out)
    # every input is read and checked before anything is written
    runs: list[Run] = []
    if runs_dirs or run_paths:
        runs = collect_runs(runs_dirs, run_paths, note)
    boards = read_boards(leaderboards, note) if leaderboards is not None else []

    out.parent.mkdir(parents=True, exist_ok=True)
    built = out.parent / f".{out.name}.building-{os.getpid()}-{secrets.token_hex(4)}"
    built.mkdir()
    try:
        _write_site(built, runs, list(runs_dirs), boards, leaderboards, command, note, skipped)
        install_directory(built, out)
    finally:
        if built.exists():
            shutil.rmtree(built, ignore_errors=True)
    if len(runs) == 1 and run_paths and not runs_dirs and not boards:
        return out / "runs" / f"{runs[0].slug}.html"
    return out / "index.html"


def _write_site(
    built: Path,
    runs: list[Run],
    runs_dirs: list[Path],
    boards: list[BoardFile],
    leaderboards: Optional[Path],
    command: str,
    note: Warn,
    skipped: list[str],
) -> None:
    from cl_bench.leaderboard import record_config_id

    (built / MARKER).write_text("written by cl-bench report; the next report may replace this directory\n")
    assets = built / "assets"
    assets.mkdir()
    for name in ASSET_FILES:
        (assets / name).write_bytes((resources.files("cl_bench") / "report_assets" / name).read_bytes())
    figures_dir = built / "figures"
    figures_dir.mkdir()
    (built / "runs").mkdir()
    (built / "boards").mkdir()

    figures: list[Figure] = []
    if boards and leaderboards is not None:
        figures += board_figures(boards, leaderboards, figures_dir, note)
    if runs:
        figures += run_figures(runs, runs_dirs, figures_dir, note)
    for run in runs:
        page_text = render_run(run, built / "runs" / run.slug, note)
        (built / "runs" / f"{run.slug}.html").write_text(page_text, encoding="utf-8")
    runs_by_key = {(record_config_id(run.record), str(run.record["seed"])): run for run in runs}
    for board in boards:
        shutil.copyfile(board.path, built / "boards" / f"{board.slug}.csv")
        (built / "boards" / f"{board.slug}.html").write_text(render_board(board, runs_by_key), encoding="utf-8")
    # last: the index lists what was skipped while everything else was written
    (built / "index.html").write_text(render_index(boards, runs, figures, skipped, command), encoding="utf-8")
