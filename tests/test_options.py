"""The options' text forms and rules (``msptcli.options``) without Typer, the CLI's choices against the
config's, and the config a training run starts from (fine-tuning: the parent's ``model:`` section)."""

from __future__ import annotations

import typing

import pytest
import yaml
from helpers import write_config

from msptcli import cli_options, options
from msptcli.checkpoint import load_checkpoint
from msptcli.config import TrainConfig
from msptcli.errors import MsptError, OptionError
from msptcli.prepare import prepare_dataset
from msptcli.runtime.portable import FORMATS

pytest_plugins = ["helpers"]


def refused(call, *needles: str) -> str:
    """``call()`` raises one line of :class:`OptionError` (an ``MsptError``: the CLI's exit 1) with every needle."""
    with pytest.raises(OptionError) as info:
        call()
    message = str(info.value)
    assert isinstance(info.value, MsptError) and "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def test_names_split_on_commas_and_drop_blanks():
    assert options.names("p, wallShearStress") == ["p", "wallShearStress"]
    assert options.names(" U ,, p ,") == ["U", "p"]
    assert options.names("") == [] and options.names(" , ") == []


def test_field_map_reads_new_equals_old_of_part_and_name():
    assert options.field_map("surface/pMean=surface/p, volume/nut=volume/p") == {
        "surface/pMean": "surface/p",
        "volume/nut": "volume/p",
    }
    assert options.field_map("") == {}


@pytest.mark.parametrize("text", ["nut=p", "volume/nut", "volume/nut=p", "wall/p=surface/p", "volume/a=volume/b,x"])
def test_field_map_refuses_what_is_not_new_equals_old_fields(text):
    refused(lambda: options.field_map(text), "--field-map", "expected NEW=OLD of part/name fields")


def test_conditions_are_numbers_by_key_and_a_later_one_wins():
    assert options.conditions(["Re=250", " dt = 0.5", "Re=1e3"]) == {"Re": 1000.0, "dt": 0.5}
    assert options.conditions([]) == {}


@pytest.mark.parametrize("item", ["Re=fast", "Re", "=250", " =250", "Re="])
def test_conditions_refuse_what_is_not_key_equals_number(item):
    refused(lambda: options.conditions(["dt=1", item]), f"--condition {item!r}", "KEY=NUMBER")


def test_fine_tuning_options_need_init_and_exclude_resume():
    options.check_fine_tuning(init=None, resume=True, freeze=None, field_map=None)
    options.check_fine_tuning(init="runs/a", resume=False, freeze="encoder", field_map={"volume/q": "volume/p"})
    refused(lambda: options.check_fine_tuning(init="runs/a", resume=True, freeze=None, field_map=None), "--resume")
    for given in ({"freeze": "attention"}, {"freeze": "none"}, {"field_map": {}}):  # given at all, even as none
        kwargs = {"init": None, "resume": False, "freeze": None, "field_map": None, **given}
        refused(lambda kwargs=kwargs: options.check_fine_tuning(**kwargs), "give --init RUN too")


def test_predict_rolls_out_with_initial_only():
    assert options.rolls_out(geometries=[], initial="s.pvd", start=1, steps=2, conditions=["Re=1"])
    assert not options.rolls_out(geometries=["a.stl"], initial=None)
    refused(lambda: options.rolls_out(geometries=["a.stl"], initial="s.pvd"), "not both")
    refused(lambda: options.rolls_out(geometries=[], initial=None), "mspt rollout RUN SERIES")
    for extra in ({"start": 0}, {"steps": 1}, {"conditions": ["Re=1"]}):
        refused(lambda extra=extra: options.rolls_out(geometries=["a.stl"], initial=None, **extra), "to --initial")


def test_prediction_volume_options():
    options.check_prediction(geometries=["a.stl", "b.stl"], volume=None, volume_points=0)
    options.check_prediction(geometries=["a.stl"], volume="v.vtu", volume_points=None)
    refused(lambda: options.check_prediction(geometries=["a"], volume="v.vtu", volume_points=10), "not both")
    refused(lambda: options.check_prediction(geometries=["a", "b"], volume="v.vtu", volume_points=None), "one geo")


def test_cli_choices_are_the_configs_and_the_librarys():
    def values(enum_type) -> set[str]:
        return {member.value for member in enum_type}

    def field(name: str) -> set[str]:
        return set(typing.get_args(TrainConfig.model_fields[name].annotation))

    assert values(cli_options.Device) == field("device") == {"auto", "cpu", "cuda", "mps"}
    assert values(cli_options.Freeze) == field("freeze") == {"none", "attention", "encoder"}
    assert values(cli_options.OnError) == set(typing.get_args(typing.get_type_hints(prepare_dataset)["on_error"]))
    assert values(cli_options.ExportFormat) == set(FORMATS) == {"onnx", "torchscript"}
    assert all(isinstance(member, str) for member in cli_options.Device)  # Typer compares the values as text


def test_train_config_starts_from_the_datasets_or_the_runs_own_config(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    run.mkdir()
    assert options.train_config(data, run).train.epochs == TrainConfig().epochs  # neither: the defaults
    write_config(data / "config.yaml", train={"epochs": 3, "lr": 0.01})
    write_config(run / "config.yaml", train={"epochs": 7})
    assert options.train_config(data, run).train.epochs == 3
    assert options.train_config(data, run, resume=True).train.epochs == 7
    # overrides after the file, values after the overrides
    cfg = options.train_config(data, run, overrides=["train.epochs=4", "train.seed=2"], values={"train.epochs": 5})
    assert (cfg.train.epochs, cfg.train.seed, cfg.train.lr) == (5, 2, 0.01)
    other = write_config(tmp_path / "other.yaml", train={"epochs": 9})
    assert options.train_config(data, run, config_file=other, resume=True).train.epochs == 9
    refused(lambda: options.train_config(data, run, freeze="attention"), "give --init RUN too")


def test_fine_tuning_takes_the_parents_model_section(trained, tmp_path):
    parent = load_checkpoint(trained.run).config
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.yaml").write_text(yaml.safe_dump({"model": {"width": 32, "num_heads": 4, "depth": 3}}))
    cfg = options.train_config(data, tmp_path / "run", init=trained.run)
    assert cfg.model == parent.model and cfg.model.width == 16  # not the dataset's width 32
    assert (cfg.train.init, cfg.train.freeze, cfg.train.field_map) == (str(trained.run), "none", {})
    cfg = options.train_config(
        data,
        tmp_path / "run",
        overrides=["model.depth=2"],
        init=trained.run,
        freeze="attention",
        field_map={"volume/nut": "volume/p"},
    )
    assert cfg.model.depth == 2 and cfg.model.width == parent.model.width  # changed only by overrides
    assert cfg.train.freeze == "attention" and cfg.train.field_map == {"volume/nut": "volume/p"}
