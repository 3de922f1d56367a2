"""Config resolution order and validation."""

import pytest

from cl_bench.config import load_yaml, parse_set, resolve
from cl_bench.errors import UserError
from cl_bench.registry import REGISTRIES


def test_layers_defaults_yaml_flags_set(tmp_path):
    spec = {
        "scenario": "split_digits",
        "strategy": {"name": "ewc", "ewc_lambda": 5.0},
        "train": {"epochs": 4, "lr": 0.2},
    }
    config = resolve(spec, {"lr": 0.3}, ["train.epochs=7", "strategy.ewc_lambda=9"])
    assert config.train.epochs == 7  # --set beats YAML
    assert config.train.lr == 0.3  # flag beats YAML
    assert config.train.batch_size == 32  # the scenario's train default
    assert config.components["strategy"].ewc_lambda == 9.0
    assert config.model == "mlp"


def test_scenario_model_defaults_apply_to_its_default_model():
    config = resolve({}, {"scenario": "continual_swiss_roll"})
    assert config.components["model"].widths == [100, 100]
    assert config.components["model"].bias is True  # suite deviation, see the scenario's docstring


def test_run_id_depends_on_config_and_config_id_ignores_seed():
    first = resolve({}, {"scenario": "split_digits", "seed": 0})
    second = resolve({}, {"scenario": "split_digits", "seed": 1})
    assert first.run_id() != second.run_id()
    assert first.config_id() == second.config_id()
    assert first.run_id() == resolve({}, {"scenario": "split_digits", "seed": 0}).run_id()


@pytest.mark.parametrize(
    "flags, sets, fragment",
    [
        ({"strategy": "ewcc"}, [], "did you mean ewc"),
        ({"scenario": "split_fmnst"}, [], "did you mean split_fmnist"),
        ({"lr": -0.1}, [], "train.lr must be > 0.0"),
        ({"epochs": 0}, [], "train.epochs must be >= 1"),
        ({}, ["strategy.nonexistent=1"], "unknown strategy field 'nonexistent'"),
        ({"strategy": "ewc"}, ["strategy.ewc_lambda=abc"], "strategy.ewc_lambda must be a number"),
        ({}, ["train.device=tpu"], "train.device must be one of"),
        ({}, ["bogus"], "--set expects kind.field=value"),
    ],
)
def test_bad_input_is_a_one_line_user_error(flags, sets, fragment):
    with pytest.raises(UserError) as error:
        resolve({}, flags, sets)
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_parse_set_reads_yaml_values():
    assert parse_set("scenario.task_labels=true") == ("scenario", "task_labels", True)
    assert parse_set("model.widths=[10, 20]") == ("model", "widths", [10, 20])


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenario: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("scenario: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(UserError):
        load_yaml(unsafe)


@pytest.mark.parametrize(
    "strategy", [entry.name for entry in REGISTRIES["strategy"].entries() if entry.meta.get("scenario_defaults")]
)
def test_scenario_defaults_name_real_scenarios_and_fields_and_sit_below_every_override(strategy):
    entry = REGISTRIES["strategy"].get(strategy)
    for scenario, chosen in entry.meta["scenario_defaults"].items():
        assert scenario in REGISTRIES["scenario"]
        resolved = resolve({}, {"scenario": scenario, "strategy": strategy}).to_dict()["strategy"]
        assert all(resolved[name] == value for name, value in chosen.items())
        name, value = next(iter(chosen.items()))
        override = [0.3] if isinstance(value, list) else 0.3
        assigned = f"strategy.{name}={override}".replace(" ", "")
        assert (
            resolve({}, {"scenario": scenario, "strategy": strategy}, [assigned]).to_dict()["strategy"][name]
            == override
        )


def test_exponent_without_a_dot_is_a_number_for_float_fields():
    # YAML 1.1 reads 5e-4 as a string; a float field takes it as the number 0.0005
    config = resolve({"scenario": "split_digits", "strategy": "naive"}, None, ["train.lr=5e-4"])
    assert config.train.lr == 0.0005
    with pytest.raises(UserError, match="must be a number"):
        resolve({"scenario": "split_digits", "strategy": "naive"}, None, ["train.lr=5e-4x"])
