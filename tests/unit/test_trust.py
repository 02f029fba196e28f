"""Nothing in a run folder, checkpoint or sweep record chooses code (convbench.config.trust): a planted
`_target_` is refused by name with exit 2 by every command that reads one, and nothing it names
runs, so the file it would write never appears."""

import copy
from pathlib import Path

import pytest
import torch
import yaml

from convbench.config.compose import compose
from convbench.config.trust import Trust, UntrustedTarget, check_config, is_built_in
from convbench.engine import TrainState
from convbench.run.build import plain_config
from convbench.run.checkpoint import save_checkpoint
from helpers.imagefolders import write_class_folders
from helpers.inprocess import convbench

MODEL = "convbench.models.lenet.LeNet"


def plants(victim: Path) -> dict[str, dict]:
    """Configs of callables that write `victim` when instantiated, by name."""
    return {
        "builtins.open": {"_target_": "builtins.open", "file": str(victim), "mode": "w"},
        "shutil.copyfile": {"_target_": "shutil.copyfile", "src": __file__, "dst": str(victim)},
        "os.makedirs": {"_target_": "os.makedirs", "name": str(victim)},
        "pathlib.Path.touch": {"_target_": "pathlib.Path.touch", "_args_": [str(victim)]},
        "torch.save": {"_target_": "torch.save", "obj": 1, "f": str(victim)},
        "numpy.savetxt": {"_target_": "numpy.savetxt", "fname": str(victim), "X": [1.0]},
    }


@pytest.fixture(scope="module")
def clean_config(mnist_root) -> dict:
    cfg = compose(["dataset=mnist", f"dataset.root={mnist_root}", "trainer.device=cpu"])
    config = plain_config(cfg)
    config.trainer.precision, config.trainer.channels_last = "fp32", False
    return dict(__import__("omegaconf").OmegaConf.to_container(config))


def write_run(folder: Path, config: dict, hydra_config: dict | None = None) -> Path:
    """A run folder as a run leaves it after its first epoch: both checkpoints, and
    .hydra/config.yaml (the same config unless `hydra_config` is given)."""
    state = TrainState(epoch=1, step=10, best_val_acc=0.5, best_epoch=1)
    payload = {"config": config, "model": {}, "state": state.state_dict()}
    for name in ("last.pt", "best.pt"):
        save_checkpoint(payload, folder / "checkpoints" / name)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(hydra_config or config))
    return folder


def test_built_in_classes_pass_and_everything_else_is_refused():
    assert is_built_in("model", MODEL)
    assert is_built_in("optimizer", "torch.optim.SGD")
    assert is_built_in("scheduler", "torch.optim.lr_scheduler.CosineAnnealingLR")
    refused = [
        ("model", "builtins.open"),
        ("model", "convbench.models.lenet.torch.save"),  # a function reached through a model
        ("model", "convbench.models.layers.nn.Linear"),  # torch's class, imported there
        ("model", "convbench.models.lenet.LeNet.__init__"),
        ("optimizer", "torch.optim.lr_scheduler.StepLR"),  # a scheduler is no optimizer
        ("optimizer", "torch.save"),
        ("scheduler", "torch.optim.SGD"),
    ]
    for group, target in refused:
        assert not is_built_in(group, target), target


def test_a_planted_target_is_refused_at_any_depth(clean_config, tmp_path):
    for name, plant in plants(tmp_path / "victim").items():
        for where in ("model", "optimizer", "scheduler", "nested"):
            config = copy.deepcopy(clean_config)
            if where == "nested":
                config["model"]["block"] = {"inner": [plant]}
            else:
                config[where] = plant
            with pytest.raises(UntrustedTarget, match=name.replace(".", r"\.")):
                check_config(config, Trust(), "last.pt")
    check_config(clean_config, Trust(), "last.pt")  # the config a run writes passes


def test_a_config_folder_vouches_for_the_classes_it_names(clean_config, tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mine.yaml").write_text("_target_: mynets.TinyNet\n")
    config = copy.deepcopy(clean_config)
    config["model"] = {"_target_": "mynets.TinyNet"}
    with pytest.raises(UntrustedTarget, match="--config-dir DIR"):
        check_config(config, Trust(), "last.pt")
    check_config(config, Trust.of_folders([tmp_path / "conf"]), "last.pt")
    assert Trust.of_config({"model": config["model"]}).targets == {"mynets.TinyNet"}


@pytest.mark.parametrize("name", list(plants(Path("v"))))
def test_eval_resume_and_summary_refuse_a_planted_checkpoint(clean_config, tmp_path, name):
    victim = tmp_path / "victim"
    config = copy.deepcopy(clean_config)
    config["model"] = plants(victim)[name]
    run = write_run(tmp_path / "run", config)
    before = sorted(run.rglob("*"))
    for command in (
        ["eval", run],
        ["resume", run],
        ["summary", run],
        ["eval", run, "--shift", "0,2"],
    ):
        result = convbench(*command)
        assert result.code == 2, (command, result)
        assert f"model._target_={name}" in result.stderr and "Traceback" not in result.stderr
        assert not victim.exists(), command
    assert sorted(run.rglob("*")) == before  # no train.log, no lock: nothing written


def test_a_planted_hydra_config_is_refused(clean_config, tmp_path):
    victim = tmp_path / "victim"
    planted = copy.deepcopy(clean_config)
    planted["model"] = plants(victim)["builtins.open"]
    run = write_run(tmp_path / "run", clean_config, hydra_config=planted)
    for command in (["eval", run], ["resume", run], ["summary", run]):
        result = convbench(*command)
        assert result.code == 2, (command, result)
        assert "builtins.open" in result.stderr, command
        assert not victim.exists()
    # Before the first checkpoint, .hydra/config.yaml is all summary has: refused by name.
    for name in ("last.pt", "best.pt"):
        (run / "checkpoints" / name).unlink()
    result = convbench("summary", run)
    assert result.code == 2 and "model._target_=builtins.open" in result.stderr
    assert not victim.exists()


def test_an_unreadable_hydra_config_is_named(clean_config, tmp_path):
    run = write_run(tmp_path / "run", clean_config)
    (run / ".hydra" / "config.yaml").write_text("model: [unclosed\n")
    result = convbench("eval", run)
    assert result.code == 2 and "config.yaml cannot be read" in result.stderr, result


def sweep_record(folder: Path, task: list[str], hydra: list[str] = (), dirs=()) -> Path:
    sources = [{"path": str(d), "schema": "file", "provider": "command-line"} for d in dirs]
    record = {
        "hydra": {
            "overrides": {"hydra": ["hydra.mode=MULTIRUN", *hydra], "task": task},
            "runtime": {"config_sources": sources},
        }
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "multirun.yaml").write_text(yaml.safe_dump(record))
    return folder


def test_a_sweep_record_cannot_choose_code(tmp_path, mnist_root):
    victim = tmp_path / "victim"
    base = ["dataset=mnist", f"dataset.root={mnist_root}", "trainer.epochs=1", "seed=0,1"]
    open_it = f"file: {victim}, mode: w"
    cases = {
        "model._target_": ([*base, "model._target_=builtins.open"], []),
        "+model={_target_": (
            [*base, "~model", f"+model={{_target_: builtins.open, {open_it}}}"],
            [],
        ),
        "optimizer._target_": ([*base, "optimizer._target_=torch.save"], []),
        "hydra.callbacks": (base, [f"+hydra.callbacks.x={{_target_: builtins.open, {open_it}}}"]),
        "job_logging": (base, ["hydra.job_logging.handlers.file.class=shutil.copyfile"]),
    }
    for name, (task, hydra) in cases.items():
        sweep = sweep_record(tmp_path / name.strip("+={_"), task, hydra)
        result = convbench("resume", sweep)
        assert result.code == 2, (name, result)
        assert "Nothing was launched" in result.stderr or "Nothing was run" in result.stderr
        assert [p.name for p in sweep.iterdir()] == ["multirun.yaml"], name  # no job folder
        assert not victim.exists(), name


def test_a_sweep_started_with_a_config_folder_needs_it_given_again(tmp_path, mnist_root):
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    sweep = sweep_record(tmp_path / "sweep", ["dataset=mnist", "seed=0,1"], dirs=[conf])
    result = convbench("resume", sweep)
    assert result.code == 2 and f"--config-dir {conf}" in result.stderr, result
    assert [p.name for p in sweep.iterdir()] == ["multirun.yaml"]


@pytest.mark.parametrize(
    "content",
    ["", "[not: a mapping", "hydra: 5\n", "just text\n", "hydra:\n  overrides:\n    task: 7\n"],
)
def test_an_unreadable_sweep_record_launches_nothing(tmp_path, content):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(content)
    result = convbench("resume", sweep)
    assert result.code == 2, result
    assert "multirun.yaml is not a readable sweep record" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in sweep.iterdir()] == ["multirun.yaml"]


def test_the_folder_cache_is_read_weights_only(monkeypatch, tmp_path):
    """A cache file is a pickle from disk: it is read with weights_only=True."""
    from convbench.data import folder

    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    root = tmp_path / "images"
    write_class_folders(root, per_class=10)
    cfg = compose(["dataset=imagefolder", f"dataset.root={root}", "dataset.native_size=8"])
    folder.folder_splits(cfg.dataset)  # decodes and writes the cache
    folder.folder_splits(cfg.dataset)  # reads it
    assert seen == [True]
