"""Every config group option and every experiment composes against the typed schema."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from convbench.config.compose import compose, config_dir
from helpers.imagefolders import write_class_folders

CONF = config_dir()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(*overrides: str):
    return compose(overrides)


def test_defaults_are_lenet_on_fashion_mnist():
    cfg = compose_cfg()
    assert cfg.model._target_ == "convbench.models.lenet.LeNet"
    assert cfg.dataset.name == "fashionmnist"


@pytest.mark.parametrize("group", ["model", "dataset", "optimizer", "scheduler", "trainer"])
def test_every_option_of_every_group_composes_and_resolves(group, tmp_path):
    assert options(group), f"conf/{group} is empty"
    for option in options(group):
        overrides = [f"{group}={option}"]
        if option == "imagefolder":  # classes and channels come from the folder
            write_class_folders(tmp_path / "images", per_class=2)
            overrides.append(f"dataset.root={tmp_path / 'images'}")
        cfg = compose_cfg(*overrides)
        OmegaConf.resolve(cfg)  # every interpolation must resolve


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_cfg(f"experiment={experiment}")
    OmegaConf.resolve(cfg)
    text = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_"), "experiments are deltas on the root config"


def test_experiment_sweeps_name_real_choices():
    """The sweep of each experiment only uses groups/keys that exist (Hydra reads them at -m):
    a config group's values are options of the group; a key composes with its first value,
    and every other value fits the key's type in the schema."""
    for experiment in options("experiment"):
        cfg = compose([f"experiment={experiment}"], with_hydra=True)
        for key, values in (cfg.hydra.sweeper.params or {}).items():
            first, *others = str(values).split(",")
            if (CONF / key).is_dir():
                assert {first, *others} <= set(options(key)), f"{experiment}: {key}={values}"
                continue
            composed = compose_cfg(f"experiment={experiment}", f"{key}={first}")
            for value in others:  # the typed config refuses a value of the wrong type
                OmegaConf.merge(composed, OmegaConf.from_dotlist([f"{key}={value}"]))


def test_facts_come_from_the_dataset_config():
    cfg = compose_cfg("dataset=cifar10", "model=mlp")
    assert (cfg.model.num_classes, cfg.model.in_channels, cfg.model.image_size) == (10, 3, 32)
    resized = compose_cfg("dataset=cifar10", "dataset.image_size=224")
    assert resized.model.image_size == 224
    for option in options("model"):
        raw = OmegaConf.to_container(compose_cfg(f"model={option}").model, resolve=False)
        for key in ("num_classes", "in_channels", "image_size"):
            assert raw[key] == f"${{dataset.{key}}}", f"model={option} must interpolate {key}"


def test_optimizers_and_schedulers_are_partial():
    for group in ("optimizer", "scheduler"):
        for option in options(group):
            assert compose_cfg(f"{group}={option}")[group]._partial_ is True


def test_schema_rejects_wrong_types_and_unknown_keys():
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg("trainer.batch_size=big")
    assert isinstance(info.value.__cause__, ValidationError)
    with pytest.raises(ConfigCompositionException):
        compose_cfg("trainer.epoch=3")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("model.kernel=3")


def test_configs_live_in_one_place():
    assert (CONF / "config.yaml").is_file()
    assert Path(__file__).resolve().parents[2] / "conf" == CONF
