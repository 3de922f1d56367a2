"""Property-based fuzzing of the whole configuration surface: every field of every registered component, through
``--set``, a YAML config file, CLI flags and sweep files. Each case resolves to a valid config (whose record would
be strict JSON) or is a one-line UserError; never another exception, and nothing is written.

The default run draws a bounded number of examples from a fixed seed (``derandomize``); ``-m slow`` runs deeper.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cl_bench.cli import build_parser
from cl_bench.config import COMPONENT_KINDS, TrainConfig, load_yaml, resolve
from cl_bench.errors import UserError
from cl_bench.registry import REGISTRIES


def _fields() -> list[tuple[str, str, str]]:
    """(kind, component name, field) for every field of every registered component, and train's fields."""
    triples = [("train", "", f.name) for f in dataclasses.fields(TrainConfig)]
    for kind in COMPONENT_KINDS:
        for entry in REGISTRIES[kind].entries():
            triples += [(kind, entry.name, f.name) for f in dataclasses.fields(entry.config_class)]
    return triples


FIELDS = _fields()
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 1e308, -1e-300, 2**32, 2**64]),
    st.text(max_size=8),
    st.sampled_from(["", " ", "none", "nan", ".inf", "1e999", "\x00", "é", "[", "{a: 1}"]),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=4), SCALARS, max_size=2))
NAMES = st.one_of(
    st.sampled_from(sorted({name for _, name, _ in FIELDS if name})),
    st.sampled_from(["", " ", "none", "timm:", "timm:vit_tiny_patch16_224", "../x"]),
    st.text(max_size=6),
)


def _check(call) -> None:
    """``call()`` resolves or raises a one-line UserError; a resolved config serialises to strict JSON."""
    try:
        config = call()
    except UserError as error:
        assert "\n" not in str(error), str(error)
        assert str(error).strip()
        return
    json.dumps(config.to_dict(), allow_nan=False)
    for value in json.loads(json.dumps(config.to_dict()))["train"].values():
        assert not isinstance(value, float) or math.isfinite(value)


def _flags_for(kind: str, name: str) -> dict:
    if kind == "model":
        # a model's fields are only settable on a scenario whose inputs that model accepts
        vit = name in ("vit_micro", "timm")
        return {"scenario": "split_cifar10" if vit else "split_digits", "model": name}
    if kind in ("scenario", "strategy", "attack"):
        return {kind: name}
    return {}


DEFAULT_SETTINGS = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
DEEP_SETTINGS = settings(
    max_examples=3000,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _set_case(target, value) -> None:
    kind, name, field = target
    assignment = f"{kind}.{field}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
    _check(lambda: resolve({}, _flags_for(kind, name), [assignment]))


def _yaml_case(tmp_path: Path, target, value) -> None:
    kind, name, field = target
    spec: dict = {"train": {field: value}} if kind == "train" else {kind: {"name": name, field: value}}
    if kind == "model":
        spec["scenario"] = _flags_for(kind, name)["scenario"]
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(spec))
    _check(lambda: resolve(load_yaml(path), {}, []))


@given(target=st.sampled_from(FIELDS), value=VALUES)
@DEFAULT_SETTINGS
def test_any_set_value_resolves_or_is_a_one_line_error(target, value):
    _set_case(target, value)


@given(target=st.sampled_from(FIELDS), value=VALUES)
@DEFAULT_SETTINGS
def test_any_yaml_value_resolves_or_is_a_one_line_error(tmp_path, target, value):
    _yaml_case(tmp_path, target, value)


@given(
    names=st.fixed_dictionaries({kind: NAMES for kind in COMPONENT_KINDS + ("preset",)}),
    texts=st.fixed_dictionaries(
        {
            flag: st.one_of(
                st.text(max_size=8),
                st.sampled_from(["nan", "inf", "-inf", "1e308", "1e-320", "4294967296", "-1", "0", "0x10", "1_000"]),
            )
            for flag in ("--seed", "--epochs", "--batch-size", "--lr", "--device")
        }
    ),
    use=st.lists(
        st.sampled_from(COMPONENT_KINDS + ("preset", "--seed", "--epochs", "--batch-size", "--lr", "--device")),
        max_size=4,
        unique=True,
    ),
)
@DEFAULT_SETTINGS
def test_any_command_line_parses_and_resolves_or_is_a_one_line_error(names, texts, use, capsys):
    argv = ["run"]
    for key in use:
        argv += [f"--{key}", names[key]] if not key.startswith("--") else [key, texts[key]]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), err
        return
    flags = {
        "scenario": args.scenario,
        "model": args.model,
        "strategy": args.strategy,
        "attack": args.attack,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "device": args.device,
        "preset": args.preset,
    }
    _check(lambda: resolve({}, flags, []))


SWEEP_KEYS = st.sampled_from(["name", "out", "grid", "base", "set", "only", "exclude", "runs", "bogus"])


@given(content=st.dictionaries(SWEEP_KEYS, VALUES, max_size=4), target=st.sampled_from(FIELDS), value=VALUES)
@DEFAULT_SETTINGS
def test_any_sweep_file_expands_or_is_a_one_line_error_and_writes_nothing(tmp_path, capsys, content, target, value):
    kind, name, field = target
    grid = {"scenario": [_flags_for(kind, name).get("scenario", "split_digits")], f"{kind}.{field}": [0.1, value]}
    if kind in ("strategy", "attack", "model"):
        grid[kind] = [name]
    sweep = {"grid": grid, **content} if "grid" not in content else content
    path = tmp_path / "fuzz_sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    out = tmp_path / "fuzz_runs"
    code, stdout, err = run_cli(["sweep", str(path), "--dry-run", "--out", str(out)], capsys)
    assert code in (0, 2), err
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("error: "), err
    assert not out.exists()


@pytest.mark.slow
@given(target=st.sampled_from(FIELDS), value=VALUES)
@DEEP_SETTINGS
def test_deep_set_fuzzing(target, value):
    _set_case(target, value)


@pytest.mark.slow
@given(target=st.sampled_from(FIELDS), value=VALUES)
@DEEP_SETTINGS
def test_deep_yaml_fuzzing(tmp_path, target, value):
    _yaml_case(tmp_path, target, value)
