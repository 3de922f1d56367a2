"""The ``cl-bench`` command line: run, evaluate, sweep, leaderboard, plot, report, pretrain, unlearn-generator, list,
docs, data prepare.

Bad input of any kind ends with one line on stderr (``error: ...``) and exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence

from cl_bench.config import TRAIN_SHORTCUTS, TrainConfig, config_fields
from cl_bench.errors import UserError
from cl_bench.flags import add_config_flags, given
from cl_bench.generator_unlearning_config import DEFAULT_OUT_DIR, GeneratorUnlearningConfig
from cl_bench.pretrain_config import PretrainConfig


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose errors are one line and a pointer to --help (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(UserError.exit_code, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="cl-bench", description="Continual learning under attack: run, sweep, tabulate and plot."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run_command(commands)
    _add_evaluate_command(commands)
    _add_sweep_command(commands)
    _add_leaderboard_command(commands)
    _add_plot_command(commands)
    _add_report_command(commands)
    _add_pretrain_command(commands)
    _add_unlearn_generator_command(commands)
    _add_list_command(commands)
    _add_docs_command(commands)
    _add_data_command(commands)
    return parser


def _add_run_command(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="train one strategy on one scenario and write a run record",
        description="Train one strategy on one scenario; write runs/<run_id>/record.json, "
        "accuracy_matrix.csv and forgetting_curve.png. The last line printed is "
        "the run directory.",
    )
    run.add_argument("--scenario", help="scenario name (default continual_swiss_roll; see `cl-bench list scenario`)")
    run.add_argument("--model", help="model name (default: the scenario's recommended model)")
    run.add_argument("--strategy", help="strategy name (default naive; see `cl-bench list strategy`)")
    run.add_argument("--attack", help="attack name (default none)")
    run.add_argument(
        "--evaluator",
        action="append",
        default=[],
        metavar="NAME",
        help="measure the final model with this evaluator after training, written to "
        "runs/<run_id>/evaluations/ (repeatable; settings with --set evaluator.FIELD=VALUE; "
        "see `cl-bench list evaluator`)",
    )
    run.add_argument("--seed", type=int, help="random seed (default 0)")
    add_config_flags(run, TrainConfig, TRAIN_SHORTCUTS)  # --epochs, --batch-size, --lr, --device
    run.add_argument("--out", type=Path, default=Path("runs"), help="output directory (default runs)")
    run.add_argument(
        "--preset",
        help="a paper's hyperparameters for a benchmark, e.g. pmnist, cifar100_10split, "
        "swiss_roll (see `cl-bench list preset`); --config, flags and --set override it",
    )
    run.add_argument("--config", type=Path, help="YAML file with scenario/model/strategy/attack/train/seed")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KIND.FIELD=VALUE",
        help="override one field, e.g. strategy.ewc_lambda=100 or scenario.task_labels=true (repeatable)",
    )
    _add_tracking_flags(run)
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--force", action="store_true", help="redo the run even if a complete record exists")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_evaluate_command(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="run evaluators on the final model of finished runs",
        description="Rebuild each finished run from its record, load its final model and run the evaluators "
        "on it; each result goes to RUN_DIR/evaluations/<evaluator>-<eval_id>.json (an existing one is kept "
        "unless --force). Training is never redone.",
    )
    evaluate.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories")
    evaluate.add_argument(
        "--evaluator",
        action="append",
        default=[],
        required=True,
        metavar="NAME",
        help="evaluator name (repeatable; see `cl-bench list evaluator`)",
    )
    evaluate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="evaluator.FIELD=VALUE",
        help="an evaluator setting, e.g. evaluator.dropout=gaussian (repeatable)",
    )
    evaluate.add_argument("--force", action="store_true", help="redo evaluations that already exist")


def _add_tracking_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking",
        choices=("tensorboard", "mlflow", "wandb"),
        help="stream per-experience metrics, the accuracy matrix, attack and evaluator results and the config to "
        "a tracker (local stores by default: RUN_DIR/tensorboard, OUT/mlruns, W&B offline in RUN_DIR/wandb; "
        "pip install 'cl-bench[tracking]')",
    )
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="mlflow: the tracking URI (e.g. sqlite:///mlflow.db or a server); wandb: the project name; "
        "tensorboard: a log directory (one sub-directory per run)",
    )


def _add_sweep_command(commands: Any) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="run a grid of configs from a sweep YAML file",
        description="Expand a sweep file (scenarios x strategies x seeds ...) and run every "
        "config whose complete record does not exist yet.",
    )
    sweep.add_argument("file", type=Path, help="sweep YAML (see sweeps/baselines.yaml)")
    sweep.add_argument("--out", type=Path, help="output directory (default: the file's `out`, else runs)")
    sweep.add_argument("--workers", type=_positive_int, default=1, help="parallel runs (local executor)")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local", help="local process pool or Ray")
    sweep.add_argument("--address", help="Ray cluster address (with --executor ray), e.g. 10.0.0.1:6379")
    sweep.add_argument(
        "--ray-cpus-per-run",
        type=_positive_int,
        default=1,
        metavar="N",
        help="with --executor ray: CPUs Ray reserves for each run, which is also its torch thread count (default 1)",
    )
    sweep.add_argument(
        "--ray-runtime-env",
        metavar="JSON",
        help="""with --executor ray: Ray runtime_env for the tasks, e.g. '{"env_vars": {"CL_BENCH_DATA": "/data"}}'""",
    )
    sweep.add_argument("--force", action="store_true", help="redo runs that already have a complete record")
    _add_tracking_flags(sweep)
    sweep.add_argument("--dry-run", action="store_true", help="list the expanded runs and exit")
    sweep.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY=NAME[,NAME]",
        help="run only the part of the sweep whose scenario / model / strategy / attack / seed is one "
        "of the names (repeatable; keys combine with and), "
        "e.g. --only scenario=continual_swiss_roll",
    )


def _add_leaderboard_command(commands: Any) -> None:
    board = commands.add_parser(
        "leaderboard",
        help="aggregate run records into leaderboard CSVs",
        description="Group complete records by board and write one CSV per board (mean and std over seeds).",
    )
    board.add_argument("--runs", type=Path, default=Path("runs"), help="directory of run directories (default runs)")
    board.add_argument("--out", type=Path, default=Path("leaderboards"), help="output directory (default leaderboards)")
    board.add_argument("--markdown", action="store_true", help="also print each board's headline columns as Markdown")


def _add_plot_command(commands: Any) -> None:
    plot = commands.add_parser(
        "plot",
        help="draw forgetting curves of one run or overlay several",
        description="One run directory: its forgetting curve. Several runs (or --runs with "
        "filters): an overlay, seeds of the same strategy averaged.",
    )
    plot.add_argument("paths", nargs="*", type=Path, help="run directories or record.json files")
    plot.add_argument("--runs", type=Path, help="take every complete run under this directory (filtered below)")
    plot.add_argument("--scenario", help="keep runs of this scenario (with --runs)")
    plot.add_argument("--strategy", nargs="+", help="keep runs of these strategies (with --runs)")
    plot.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KIND.FIELD=VALUE",
        help="keep runs whose resolved config has this value, e.g. scenario.task_labels=true",
    )
    plot.add_argument(
        "--attack-board",
        nargs="+",
        type=Path,
        metavar="CSV",
        help="bar plot of the paired BWT change per victim from attack_<attack>.csv boards "
        "(e.g. leaderboards/attack_brainwash.csv leaderboards/attack_uniform_noise.csv)",
    )
    plot.add_argument(
        "--eval-board",
        nargs="+",
        type=Path,
        metavar="CSV",
        help="one metric of eval_<evaluator>.csv boards against a key, a line per strategy, e.g. "
        "--eval-board leaderboards/rashomon_fmnist/eval_rashomon_dropout.csv --y ambiguity",
    )
    plot.add_argument(
        "--x", default="epsilon", help="with --eval-board: the key column on the x axis (default epsilon)"
    )
    plot.add_argument("--y", help="with --eval-board: the metric (its _mean column; std as error bars)")
    plot.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="with --eval-board: keep rows whose column has this value (numbers compare as numbers), e.g. "
        "experience=all (repeatable)",
    )
    plot.add_argument(
        "--memory",
        action="store_true",
        help="plot the GPM memory occupancy per layer after each task instead of forgetting curves",
    )
    plot.add_argument(
        "--anytime",
        action="store_true",
        help="task-free runs: anytime accuracy against stream samples seen, one panel per stream mode, "
        "loss plateaus (Online-LoRA) marked",
    )
    plot.add_argument(
        "--out",
        type=Path,
        help="PNG path (default: forgetting_curve.png in the run dir, or "
        "overlay.png; "
        "with --memory, gpm_memory.png; with --anytime, anytime_accuracy.png)",
    )


def _add_report_command(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="write a static HTML report of boards and runs (opens from disk, works offline)",
        description="Write a static site: an index of every board under --leaderboards (sortable, filterable "
        "tables, mean ± std, the command that regenerates each, its figures), figures drawn from the runs, "
        "and one page per run (accuracy-matrix heatmap, timings, command, resolved config, environment, "
        "evaluations, the attack's paired branches). It is built beside --out and renamed into place; --out is "
        "replaced only when it is a previous report. A corrupt run inside a --runs directory is skipped with a "
        "warning. The last line printed is the page to open.",
    )
    report.add_argument(
        "run_dirs", nargs="*", type=Path, metavar="RUN_DIR", help="run directories (each with a complete record)"
    )
    report.add_argument(
        "--runs",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="a directory of run directories, e.g. runs (repeatable)",
    )
    report.add_argument(
        "--leaderboards",
        type=Path,
        metavar="DIR",
        help="directory of board CSVs (every **/*.csv; README.md there gives each board's command)",
    )
    report.add_argument("--out", type=Path, default=Path("report"), help="output directory (default report)")


def _add_pretrain_command(commands: Any) -> None:
    pretrain = commands.add_parser(
        "pretrain",
        help="pre-train a backbone (a ViT or the cnn) on the held-out pre-training pool",
        description="Pre-train a backbone (a ViT, or the cnn) on the pre-training pool (10,000 "
        "Fashion-MNIST training images that streams with "
        "scenario.holdout_pretrain_pool=true leave out) and store it with a "
        "card in $CL_BENCH_CACHE (default ~/.cache/cl_bench)/backbones/NAME. "
        "Use it with --set model.weights=NAME. The last line printed is the "
        "weights path.",
    )
    pretrain.add_argument(
        "--model",
        default="vit_micro",
        help="vit_micro (default), timm:NAME, or cnn (--method supervised; e.g. --set model.batch_norm=true)",
    )
    # every PretrainConfig field is a flag; --decoder-dim and --decoder-heads are the older short names
    add_config_flags(
        pretrain,
        PretrainConfig,
        aliases={"decoder_embed_dim": ["--decoder-dim"], "decoder_num_heads": ["--decoder-heads"]},
    )
    pretrain.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="model.FIELD=VALUE",
        help="a model field, e.g. model.embed_dim=128 (repeatable)",
    )
    pretrain.add_argument("--name", help="cache entry name (default MODEL-DATA-METHOD-sSEED)")
    pretrain.add_argument("--force", action="store_true", help="re-train even if the entry exists")
    pretrain.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_unlearn_generator_command(commands: Any) -> None:
    unlearn = commands.add_parser(
        "unlearn-generator",
        help="unlearn classes from a pre-trained MAE used as an image-to-image generator, and score it",
        description="Unlearn the forget classes from a `cl-bench pretrain --method mae` backbone used as an "
        "image-to-image generator (Li et al., ICLR 2024: only the encoder changes; or a baseline), then score "
        "the original, the unlearned and the retrain-reference models on forget and retain test images. Writes "
        "OUT/RUN_ID/generator_unlearning.json with grid.png and tsne.png, and regenerates "
        "OUT/eval_generator_unlearning.csv. The last line printed is the run directory.",
    )
    unlearn.add_argument("--backbone", required=True, help="the MAE backbone: a name in the cache or a weights file")
    # every GeneratorUnlearningConfig field is a flag, and a --set FIELD=VALUE too
    add_config_flags(unlearn, GeneratorUnlearningConfig)
    unlearn.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a setting, the value read as YAML, e.g. alpha=0.5 or retain_classes=[5,6] (repeatable; beats the flags)",
    )
    unlearn.add_argument("--seed", type=int, default=0, help="seed of the batches, masks and noise (default 0)")
    unlearn.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT_DIR), help=f"output directory (default {DEFAULT_OUT_DIR})"
    )
    unlearn.add_argument("--force", action="store_true", help="redo the run even if its artefact exists")
    unlearn.add_argument("--no-progress", action="store_true", help="hide the per-epoch losses")


def _add_list_command(commands: Any) -> None:
    listing = commands.add_parser("list", help="list registered scenarios, models, strategies, attacks, evaluators")
    listing.add_argument("kind", nargs="?", choices=("scenario", "model", "strategy", "attack", "evaluator", "preset"))
    listing.add_argument("--verbose", "-v", action="store_true", help="also list every config field and default")


def _add_docs_command(commands: Any) -> None:
    docs = commands.add_parser(
        "docs",
        help="write the generated documentation pages (catalog, results)",
        description="Write docs/catalog.md from the registries and docs/results/*.md from "
        "the committed leaderboard CSVs; --check only compares.",
    )
    docs.add_argument("--docs", type=Path, default=Path("docs"), help="documentation directory (default docs)")
    docs.add_argument(
        "--leaderboards",
        type=Path,
        default=Path("leaderboards"),
        help="directory of the committed boards (default leaderboards)",
    )
    docs.add_argument(
        "--readme",
        type=Path,
        default=Path("README.md"),
        help="README whose registered-components block is regenerated (default README.md)",
    )
    docs.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and name the pages that differ from what would be written",
    )


def _add_data_command(commands: Any) -> None:
    data = commands.add_parser("data", help="dataset preparation")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    data_prepare = data_commands.add_parser("prepare", help="put a dataset where the loaders find it")
    data_prepare.add_argument("dataset", help="fmnist, cifar10, cifar100 or imagenet-r")
    data_prepare.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="directory holding the files (default for fmnist: "
        "/usr/share/datasets/fashion-mnist); "
        "imagenet-r: the class folders, a directory holding imagenet-r/, or imagenet-r.tar",
    )
    data_prepare.add_argument("--root", type=Path, help="data root (default $CL_BENCH_DATA or ~/.cache/cl_bench/data)")


def _format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *rows]
    ]
    return "\n".join(lines)


def summary_table(record: dict) -> str:
    matrix = record["accuracy_matrix"]
    matrix_rows = [[f"after {i + 1}"] + [f"{value:.3f}" for value in line] for i, line in enumerate(matrix)]
    matrix_text = _format_table(["accuracy"] + [f"exp {j + 1}" for j in range(len(matrix))], matrix_rows)
    if "attack_effect" in record:
        return _attack_table(record) + "\n\n" + matrix_text
    metric_values = record["metrics"]
    header = ["scenario", "strategy", "seed", "ACC", "BWT", "forgetting", "learning ACC", "wall time"]
    row = [
        record["scenario"],
        record["strategy"],
        str(record["seed"]),
        f"{metric_values['acc']:.4f}",
        f"{metric_values['bwt']:+.4f}",
        f"{metric_values['forgetting']:.4f}",
        f"{metric_values['learning_acc']:.4f}",
        f"{record['timing']['total_s']:.1f} s",
    ]
    if record.get("metrics_validation"):  # selection happens on these, never on the test numbers
        header[-1:-1] = ["val ACC", "val BWT"]
        row[-1:-1] = [f"{record['metrics_validation']['acc']:.4f}", f"{record['metrics_validation']['bwt']:+.4f}"]
    if metric_values.get("a_auc") is not None:  # a task-free stream: the anytime numbers too
        header[-1:-1] = ["A_auc", "A_last"]
        row[-1:-1] = [f"{metric_values['a_auc']:.4f}", f"{metric_values['a_last']:.4f}"]
    return (
        _format_table(header, [row]) + _backbone_line(record) + _test_time_attack_table(record) + "\n\n" + matrix_text
    )


def _test_time_attack_table(record: dict) -> str:
    """The rows a test-time attack measured (the columns its traits declare; with an ``experience`` key, those of
    the last experience), or nothing."""
    from cl_bench.registry import ATTACKS

    block = record.get("test_time_attack")
    if not block or record["attack"] not in ATTACKS:
        return ""
    traits = ATTACKS.traits(record["attack"])
    rows = block.get("rows") or []
    if "experience" in traits.row_keys and rows:
        last = max(row["experience"] for row in rows)
        rows = [row for row in rows if row["experience"] == last]
    keys = [key for key in traits.row_keys if key != "experience"]

    def cell(value: object) -> str:
        return "undefined" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    table = _format_table(
        keys + list(traits.row_columns), [[cell(row.get(c)) for c in keys + list(traits.row_columns)] for row in rows]
    )
    return f"\n\ntest-time attack {record['attack']} ({block['wall_time_s']:.1f} s)\n{table}"


def _backbone_line(record: dict) -> str:
    """Which pre-trained backbone the run used (from its card), or nothing."""
    card = record.get("backbone_card")
    if not card:
        return ""
    method = card.get("method", {})
    method_name = method.get("name", "") if isinstance(method, dict) else str(method)
    details = ", ".join(part for part in (method_name, f"sha256 {str(card.get('sha256', '?'))[:12]}") if part)
    return f"\nbackbone: {card.get('name') or card.get('weights', '?')} ({details})"


def _attack_table(record: dict) -> str:
    """Clean and attacked branches side by side, with the paired difference."""
    info, effect = record["attack_info"], record["attack_effect"]
    labels = {
        "acc": "ACC",
        "bwt": "BWT",
        "forgetting": "forgetting",
        "previous_acc": "ACC before target",
        "poisoned_acc": "ACC on target",
    }
    columns = [name for name in labels if name in effect]
    columns += sorted(name for name in effect if name not in labels)  # the attack's own numbers (a backdoor's ASR)
    header = ["branch"] + [labels.get(name, name) for name in columns]
    rows = [[branch] + [f"{effect[c][branch]:.4f}" for c in columns] for branch in ("clean", "attacked")]
    rows.append(["difference"] + [f"{effect[c]['difference']:+.4f}" for c in columns])
    budget = ", ".join(f"{k} {v}" for k, v in info["budget"].items() if v is not None)
    title = (
        f"{record['scenario']} / {record['strategy']} / attack {info['name']} on experience "
        f"{info['target_experience'] + 1} ({budget}; attack {info['wall_time_s']:.1f} s, "
        f"run {record['timing']['total_s']:.1f} s), seed {record['seed']}"
    )
    return title + "\n" + _format_table(header, rows) + "\n\naccuracy matrix of the attacked branch:"


def command_run(args: argparse.Namespace, argv: Sequence[str]) -> None:
    from cl_bench.config import load_yaml, resolve

    spec = load_yaml(args.config) if args.config else {}
    flags = {
        "scenario": args.scenario,
        "model": args.model,
        "strategy": args.strategy,
        "attack": args.attack,
        "seed": args.seed,
        "preset": args.preset,
        **given(args, TRAIN_SHORTCUTS),
    }
    config = resolve(spec, flags, args.set)  # a bad name or value fails here, before torch is imported
    from cl_bench import evaluation, records, runner

    evaluator_entries = evaluation.as_entries(spec.get("evaluator")) + list(args.evaluator)
    evaluators = evaluation.resolve_evaluators(evaluator_entries, args.set)
    command = "cl-bench " + " ".join(shlex.quote(part) for part in argv)
    run_dir = runner.execute(
        config,
        args.out,
        command=command,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
        evaluators=evaluators,
        tracking=args.tracking,
        tracking_uri=args.tracking_uri,
    )
    record, _ = records.read_record(run_dir)
    if record is not None:
        print(summary_table(record))
    for spec_ in evaluators:
        artefact, _ = records.read_evaluation(evaluation.evaluation_path(run_dir, spec_))
        if artefact is not None:
            print(evaluation_table(artefact))
    print(run_dir)


def evaluation_table(artefact: dict) -> str:
    """An evaluation's scalar metrics in one table (its multi-row results stay in the file)."""
    numbers = {k: v for k, v in artefact["metrics"].items() if isinstance(v, (int, float)) or v is None}
    header = ["evaluator"] + list(numbers) + ["wall time"]
    row = [artefact["evaluator"]]
    row += ["undefined" if v is None else f"{v:.4g}" for v in numbers.values()]
    row.append(f"{artefact['timing']['total_s']:.1f} s")
    rows_note = f" ({len(artefact['rows'])} rows in the file)" if artefact["rows"] else ""
    return "\n" + _format_table(header, [row]) + rows_note


def command_evaluate(args: argparse.Namespace, argv: Sequence[str]) -> None:
    from cl_bench import evaluation, records

    for assignment in args.set:
        if not assignment.startswith("evaluator."):
            raise UserError(f"--set {assignment!r}: `cl-bench evaluate` takes evaluator.FIELD=VALUE settings only")
    evaluation.resolve_evaluators(list(args.evaluator), args.set, import_components=False)  # fails fast
    specs = evaluation.resolve_evaluators(list(args.evaluator), args.set)
    command = "cl-bench " + " ".join(shlex.quote(part) for part in argv)
    written = evaluation.evaluate_runs(
        args.run_dirs, specs, command=command, force=args.force, log=lambda line: print(line, file=sys.stderr)
    )
    for path in written:
        artefact, _ = records.read_evaluation(path)
        if artefact is not None:
            print(evaluation_table(artefact).strip())
        print(path)


def command_pretrain(args: argparse.Namespace, argv: Sequence[str]) -> None:
    from cl_bench import pretrain
    from cl_bench.models.vit import read_card

    values = given(args, list(config_fields(PretrainConfig)))
    command = "cl-bench " + " ".join(shlex.quote(part) for part in argv)
    weights = pretrain.pretrain(
        args.model, args.set, values, name=args.name, force=args.force, progress=not args.no_progress, command=command
    )
    card = read_card(weights)
    assert card is not None  # pretrain() returns only weights it wrote (or found) with their card
    print(pretrain.card_summary(card))
    print(weights)


def parse_unlearn_sets(assignments: Sequence[str]) -> dict:
    """``--set FIELD=VALUE`` (or ``unlearn.FIELD=VALUE``) of unlearn-generator, the value read as YAML."""
    import yaml

    values = {}
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        name = name.strip().removeprefix("unlearn.")
        if not sep or not name:
            raise UserError(f"--set expects FIELD=VALUE (e.g. alpha=0.5), got {assignment!r}")
        try:
            values[name] = yaml.safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, RecursionError):
            values[name] = raw
    return values


def command_unlearn_generator(args: argparse.Namespace, argv: Sequence[str]) -> None:
    values = {**given(args, list(config_fields(GeneratorUnlearningConfig))), **parse_unlearn_sets(args.set)}
    from cl_bench.unlearn_generator import build_settings, unlearn_generator

    build_settings(values)  # a bad name or value fails here, before any backbone is read
    command = "cl-bench " + " ".join(shlex.quote(part) for part in argv)
    run_dir = unlearn_generator(
        args.backbone,
        values,
        seed=args.seed,
        out=args.out,
        force=args.force,
        progress=not args.no_progress,
        command=command,
    )
    print(run_dir)


def command_sweep(args: argparse.Namespace) -> None:
    from cl_bench import sweep

    selection = sweep.parse_selection(args.only)
    if args.dry_run:
        # planned_runs() resolves every run: print their run ids and labels
        _, runs = sweep.planned_runs(args.file, selection, import_components=False)
        for run_spec in runs:
            print(f"{run_spec.run_id}  {run_spec.label}")
        print(f"{len(runs)} runs")
        return
    from cl_bench.tracking import check_tracking

    check_tracking(args.tracking)  # before any run starts
    result = sweep.run_sweep(
        args.file,
        args.out,
        selection,
        workers=args.workers,
        executor=args.executor,
        address=args.address,
        force=args.force,
        ray_options={"num_cpus": args.ray_cpus_per_run},
        ray_runtime_env=_runtime_env(args.ray_runtime_env),
        tracking={"name": args.tracking, "uri": args.tracking_uri} if args.tracking else None,
    )
    print(f"{result.done} done, {result.skipped} skipped, {result.failed} failed")
    if result.failed:
        raise SystemExit(1)


def _runtime_env(text: Optional[str]) -> Optional[dict]:
    """``--ray-runtime-env``: a JSON object, or a one-line error."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        example = '{"env_vars": {"KEY": "value"}}'
        raise UserError(f"--ray-runtime-env is not valid JSON ({error.msg}); pass an object like '{example}'") from None
    if not isinstance(value, dict):
        raise UserError("""--ray-runtime-env must be a JSON object, e.g. '{"env_vars": {"KEY": "value"}}'""")
    return value


def command_leaderboard(args: argparse.Namespace) -> None:
    from cl_bench import leaderboard

    if not args.runs.is_dir():
        raise UserError(f"runs directory {args.runs} does not exist; run `cl-bench run` or `cl-bench sweep` first")
    from cl_bench.records import check_output_dir

    check_output_dir(args.out, "the boards")
    for path in leaderboard.build_leaderboards(args.runs, args.out, markdown=print if args.markdown else None):
        print(path)


def _matches(record: dict, assignments: Sequence[str]) -> bool:
    from cl_bench.config import parse_set

    for assignment in assignments:
        kind, name, value = parse_set(assignment)
        section = record["config"].get(kind) or {}
        if section.get(name) != value:
            return False
    return True


def _read_attack_board(path: Path) -> list[dict]:
    """The rows of an ``attack_<attack>.csv`` board, each checked for what the bar plot reads."""
    import json
    import math

    board = _read_board(path, "attack board")
    if board and "bwt_difference_mean" not in board[0]:
        raise UserError(f"{path} is not an attack board (no bwt_difference_mean column)")
    for number, row in enumerate(board, start=2):
        try:
            config = json.loads(row.get("attack_config") or "{}")
            mean = float(row["bwt_difference_mean"])
            std = float(row.get("bwt_difference_std") or 0)
            well_formed = (
                isinstance(config, dict)
                and math.isfinite(mean)
                and math.isfinite(std)
                and all(isinstance(row.get(key), str) for key in ("scenario", "setting", "strategy", "attack"))
            )
        except (ValueError, TypeError, KeyError):
            well_formed = False
        if not well_formed:
            raise UserError(
                f"{path} line {number} is not a well-formed attack board row; regenerate the board with "
                f"`cl-bench leaderboard`"
            )
    return board


def _read_board(path: Path, what: str) -> list[dict]:
    """The rows of a board CSV written by `cl-bench leaderboard` (a one-line UserError otherwise)."""
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; write it with `cl-bench leaderboard`")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path} is not a CSV board ({error}); regenerate it with `cl-bench leaderboard`") from None


def _where(row: dict, condition: str) -> bool:
    column, sep, wanted = condition.partition("=")
    if not sep or column not in row:
        raise UserError(f"--where {condition!r}: expected COLUMN=VALUE with a column of the board")
    value = row[column]
    try:
        return float(value) == float(wanted)
    except ValueError:
        return value == wanted


def command_plot(args: argparse.Namespace) -> None:
    from cl_bench import plots, records

    if args.out is not None:
        if args.out.is_dir():
            raise UserError(f"--out {args.out} is a directory; give the PNG file to write")
        records.check_output_dir(args.out.parent, "the plot")

    if args.eval_board:
        if not args.y:
            raise UserError("--eval-board needs --y METRIC (a column of the board without _mean, e.g. ambiguity)")
        for path in args.eval_board:
            if not path.name.startswith("eval_"):
                raise UserError(f"{path} is not an eval_<name>.csv board")
        rows = [row for path in args.eval_board for row in _read_board(path, "evaluation board")]
        rows = [row for row in rows if all(_where(row, condition) for condition in args.where)]
        print(plots.plot_eval_board(rows, args.x, args.y, args.out or Path(f"{args.y}.png")))
        return
    if args.attack_board:
        rows = [row for path in args.attack_board for row in _read_attack_board(path)]
        print(plots.plot_attack_boards(rows, args.out or Path("attack_bwt.png")))
        return
    selected: list[dict] = []
    for path in args.paths:
        record, reason = records.read_record(path)
        if record is None:
            raise UserError(f"{path}: {reason}; pass a run directory that holds a complete record.json")
        selected.append(record)
    if args.runs is not None:
        if not args.runs.is_dir():
            raise UserError(f"runs directory {args.runs} does not exist")
        for run_dir in sorted(p for p in args.runs.iterdir() if p.is_dir()):
            record, _ = records.read_record(run_dir)
            if record is None or record.get("attack") is not None:
                continue
            if args.scenario and record["scenario"] != args.scenario:
                continue
            if args.strategy and record["strategy"] not in args.strategy:
                continue
            if _matches(record, args.set):
                selected.append(record)
        if args.strategy:
            order = {name: i for i, name in enumerate(args.strategy)}
            selected.sort(key=lambda r: (order[r["strategy"]], r["seed"]))
    if not selected:
        raise UserError("no runs to plot; pass run directories or --runs DIR (check the filters)")
    if args.memory:
        print(plots.plot_memory(selected, args.out or Path("gpm_memory.png")))
    elif args.anytime:
        print(plots.plot_anytime(selected, args.out or Path("anytime_accuracy.png")))
    elif len(selected) == 1 and args.runs is None:
        run_dir = args.paths[0] if args.paths[0].is_dir() else args.paths[0].parent
        out = args.out or Path(run_dir) / "forgetting_curve.png"
        print(plots.plot_run(selected[0], out))
    else:
        scenarios = {r["scenario"] for r in selected}
        if len(scenarios) > 1:
            raise UserError(f"runs mix scenarios ({', '.join(sorted(scenarios))}); add --scenario NAME")
        print(plots.plot_overlay(selected, args.out or Path("overlay.png")))


def command_report(args: argparse.Namespace, argv: Sequence[str]) -> None:
    from cl_bench.report import build_report

    command = "cl-bench " + " ".join(shlex.quote(part) for part in argv)
    print(build_report(args.out, args.runs, args.run_dirs, args.leaderboards, command=command))


def command_list(args: argparse.Namespace) -> None:
    from cl_bench.registry import REGISTRIES

    kinds = [args.kind] if args.kind else list(REGISTRIES) + ["preset"]
    for kind in kinds:
        if kind == "preset":
            _list_presets(args.verbose)
            continue
        entries = REGISTRIES[kind].cards()
        print({"strategy": "strategies"}.get(kind, kind + "s") + ":")
        if not entries:
            print("  (none registered yet)")
        width = max((len(e.name) for e in entries), default=0)
        for entry in entries:
            print(f"  {entry.name.ljust(width)}  {entry.summary}")
            if args.verbose:
                for name, type_name, default, doc in entry.describe_fields():
                    print(f"      {name} ({type_name}, default {default!r}): {doc}")
                for scenario, chosen in entry.meta.get("scenario_defaults", {}).items():
                    values = ", ".join(f"{name}={value!r}" for name, value in chosen.items())
                    print(f"      on {scenario}: {values}")
        print()


def _list_presets(verbose: bool) -> None:
    import yaml

    from cl_bench.presets import load_preset, preset_names

    print("presets (cl-bench run --preset NAME):")
    width = max((len(name) for name in preset_names()), default=0)
    for name in preset_names():
        description, spec = load_preset(name)
        print(f"  {name.ljust(width)}  {description}")
        if verbose:
            for line in yaml.safe_dump(spec, sort_keys=False, default_flow_style=None).splitlines():
                print(f"      {line}")
    print()


def command_data(args: argparse.Namespace) -> None:
    from cl_bench.data_prepare import prepare
    from cl_bench.scenario import data_root

    print(prepare(args.dataset, args.source, args.root or data_root()))


def command_docs(args: argparse.Namespace) -> None:
    from cl_bench.docs import write_pages

    if not args.leaderboards.is_dir():
        raise UserError(f"leaderboards directory {args.leaderboards} does not exist; pass --leaderboards DIR")
    differing = write_pages(args.docs, args.leaderboards, check=args.check, readme=args.readme)
    if args.check and differing:
        print(
            f"generated pages out of date: {', '.join(differing)}; run `cl-bench docs` and commit them", file=sys.stderr
        )
        raise SystemExit(1)
    print(f"{len(differing)} page(s) {'differ' if args.check else 'written'}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            command_run(args, argv)
        elif args.command == "evaluate":
            command_evaluate(args, argv)
        elif args.command == "pretrain":
            command_pretrain(args, argv)
        elif args.command == "unlearn-generator":
            command_unlearn_generator(args, argv)
        elif args.command == "sweep":
            command_sweep(args)
        elif args.command == "leaderboard":
            command_leaderboard(args)
        elif args.command == "plot":
            command_plot(args)
        elif args.command == "report":
            command_report(args, argv)
        elif args.command == "list":
            command_list(args)
        elif args.command == "data":
            command_data(args)
        elif args.command == "docs":
            command_docs(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(UserError.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
