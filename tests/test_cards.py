"""Component cards: the light stand-ins validate as the real configs do, and the commands that only list,
validate or aggregate never import torch or Avalanche."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any, Optional, Union

import pytest

from cl_bench import cards
from cl_bench.cards import StaleCardsError, card_config_class, config_card, entry_card, parse_type, type_text
from cl_bench.config import build_config, config_to_dict, materialize, resolve
from cl_bench.errors import UserError
from cl_bench.registry import REGISTRIES, load_catalogs
from cl_bench.sweep import expand, load_sweep

ROOT = Path(__file__).resolve().parents[1]


def _registered() -> list[tuple[str, str]]:
    load_catalogs()
    return [(kind, name) for kind, registry in REGISTRIES.items() for name in cards.load_cards().get(kind, {})]


@pytest.mark.parametrize(
    "hint",
    [
        int,
        float,
        str,
        bool,
        Any,
        list[int],
        list[float],
        Optional[int],
        Optional[list[int]],
        Union[bool, str],
        tuple[int, ...],
        Optional[tuple[str, ...]],
    ],
)
def test_a_type_survives_its_text(hint):
    assert parse_type(type_text(hint)) == hint


@pytest.mark.parametrize(
    "text",
    ["__import__('os')", "list[int", "dict[str, int]", "int]", "Optional[]", "tuple[int, int]", "list[int] int", ""],
)
def test_text_outside_the_grammar_is_refused(text):
    with pytest.raises(ValueError):
        parse_type(text)


def test_a_type_outside_the_grammar_cannot_be_carded():
    with pytest.raises(ValueError, match="cards can describe"):
        type_text(dict[str, int])


@pytest.mark.parametrize("kind,name", _registered())
def test_a_card_stand_in_has_the_real_configs_fields_defaults_and_checks(kind, name):
    entry = REGISTRIES[kind].get(name)
    stand_in = card_config_class(entry_card(entry))
    assert stand_in.from_card and not entry.config_class.from_card
    assert config_card(stand_in) == json.loads(json.dumps(config_card(entry.config_class)))
    assert config_to_dict(stand_in()) == config_to_dict(entry.config_class())
    real_hints, card_hints = typing.get_type_hints(entry.config_class), typing.get_type_hints(stand_in)
    for spec in dataclasses.fields(entry.config_class):
        assert card_hints[spec.name] == real_hints[spec.name], spec.name


def test_the_committed_cards_are_the_registries_today():
    assert cards.CARDS_FILE.read_text(encoding="utf-8") == cards.cards_text(REGISTRIES)


def test_a_card_stand_in_refuses_what_the_real_config_refuses():
    real = REGISTRIES["strategy"].get("gpm_sparse").config_class
    stand_in = REGISTRIES["strategy"].card("gpm_sparse").config_class
    for bad in (
        {"k_ratio": 0.0},
        {"rho": -1},
        {"threshold": [1.5]},
        {"hd_eval": "mean"},
        {"nonsense": 1},
        {"k_ratio": "a"},
    ):
        with pytest.raises(UserError) as from_real:
            build_config(real, bad, "strategy")
        with pytest.raises(UserError) as from_card:
            build_config(stand_in, bad, "strategy")
        assert str(from_card.value) == str(from_real.value)


def test_resolving_from_cards_gives_the_same_ids_and_materialize_the_real_configs():
    light = resolve(
        {"strategy": "gpm_sparse"}, {"attack": "brainwash"}, ["strategy.k_ratio=0.3"], import_components=False
    )
    full = resolve({"strategy": "gpm_sparse"}, {"attack": "brainwash"}, ["strategy.k_ratio=0.3"])
    assert all(type(component).from_card for component in light.components.values())
    assert not any(type(component).from_card for component in full.components.values())
    assert light.to_dict() == full.to_dict() and light.run_id() == full.run_id()
    real = materialize(light)
    assert real.to_dict() == full.to_dict()
    assert type(real.components["strategy"]) is type(full.components["strategy"])


def test_cross_field_checks_run_when_the_config_is_materialized():
    light = resolve(
        None,
        {"strategy": "gpm_sparse"},
        ["strategy.hd_rescale=true", "strategy.hd_eval=expected"],
        import_components=False,
    )
    with pytest.raises(UserError, match="set one of them"):
        materialize(light)


@pytest.mark.parametrize("sweep_file", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda path: path.stem)
def test_a_dry_run_plans_the_run_ids_the_sweep_executes(sweep_file):
    sweep = load_sweep(sweep_file)
    assert [run.run_id for run in expand(sweep, import_components=False)] == [run.run_id for run in expand(sweep)]


def test_a_stale_card_is_refused_with_the_command_that_fixes_it(monkeypatch):
    registry = REGISTRIES["strategy"]
    stale = json.loads(json.dumps(cards.load_cards()))
    stale["strategy"]["ewc"]["config"]["fields"][0]["default"] = 12345.0
    monkeypatch.setattr("cl_bench.registry.load_cards", lambda: stale)
    monkeypatch.setattr(registry, "_checked", set())
    with pytest.raises(StaleCardsError, match="cl-bench docs"):
        registry.get("ewc")


LIGHT_COMMANDS = [
    ["list"],
    ["list", "strategy", "-v"],
    ["run", "--lr", "-1"],
    ["run", "--strategy", "gmp"],
    ["run", "--set", "strategy.k_ratio=2", "--strategy", "gpm_sparse"],
    ["sweep", "--dry-run", "sweeps/gpm_sparse_grid_v2.yaml"],
    ["leaderboard", "--runs", "no_such_dir"],
]


@pytest.mark.parametrize("argv", LIGHT_COMMANDS, ids=" ".join)
def test_listing_validating_and_dry_runs_import_neither_torch_nor_avalanche(argv):
    code = (
        "import sys\nfrom cl_bench.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'avalanche', 'timm') if m in sys.modules]\nassert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
