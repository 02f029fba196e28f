"""`compare` groups runs by what ran, not by what was typed: run folders written as Hydra writes
them (the composed config, the group options, the typed overrides), where the default run,
`model=lenet` and `optimizer.lr=0.05` typed over the same defaults are one config, and a seed
run twice is one sample."""

import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from convbench.analysis.compare import collect, differing_keys, group_runs
from convbench.config.compose import compose
from helpers.inprocess import convbench


def write_run(folder: Path, overrides: list[str], *, test_acc: float, minute: int) -> Path:
    """A finished run's folder as `convbench train OVERRIDES` leaves it, without training."""
    cfg = compose(overrides, with_hydra=True)
    hydra = OmegaConf.to_container(cfg.hydra, resolve=False)
    del cfg.hydra
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    choices = dict(hydra["runtime"]["choices"])
    (folder / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}})
    )
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    epochs = cfg.trainer.epochs
    (folder / "status.json").write_text(
        json.dumps(
            {
                "status": "finished",
                "updated": f"2026-12-06T10:{minute:02d}:00+00:00",
                "epoch": epochs,
                "epochs": epochs,
                "step": 9,
            }
        )
    )
    metrics = {
        "status": "finished",
        "test_acc": test_acc,
        "best_val_acc": test_acc,
        "epochs": epochs,
        "history": [{"epoch": e, "val_acc": test_acc} for e in range(1, epochs + 1)],
        "settled": {"precision": "bf16", "channels_last": True},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def outputs(tmp_path) -> Path:
    """Four LeNet runs typed four ways over the same config, the last a repeat of seed 1 (its
    folder's name sorts first: the time it finished decides), and an MLP."""
    root = tmp_path / "outputs"
    write_run(root / "default", [], test_acc=0.90, minute=0)  # seed 0, the default model
    write_run(root / "typed-model", ["model=lenet", "seed=1"], test_acc=0.92, minute=1)
    write_run(root / "typed-lr", ["optimizer.lr=0.05", "seed=2"], test_acc=0.94, minute=2)
    write_run(root / "a-rerun", ["seed=1"], test_acc=0.99, minute=3)  # not a new sample
    write_run(root / "mlp", ["model=mlp"], test_acc=0.80, minute=4)
    return root


def test_equal_configs_typed_differently_are_one_group_and_a_repeat_counts_once(outputs):
    groups, unfinished = group_runs(collect([outputs]))
    assert not unfinished
    by_model = {group.settings["model"]: group for group in groups}
    assert sorted(by_model) == ["lenet", "mlp"], [g.settings["model"] for g in groups]
    lenet = by_model["lenet"]
    assert sorted(run.path.name for run in lenet.runs) == ["default", "typed-lr", "typed-model"]
    assert [run.path.name for run in lenet.repeats] == ["a-rerun"]
    assert sorted(lenet.spread("test_acc").values) == pytest.approx([0.90, 0.92, 0.94])
    assert lenet.spread("test_acc").mean == pytest.approx(0.92)
    assert differing_keys(groups) == ["model"], "model.* keys follow from the model"


def test_the_command_shows_it(outputs):
    result = convbench("compare", str(outputs), "--format", "json")
    assert result.code == 0, result.stderr
    groups = {g["settings"]["model"]: g for g in json.loads(result.stdout)["groups"]}
    assert groups["lenet"]["n"] == 3 and groups["mlp"]["n"] == 1
    assert [Path(p).name for p in groups["lenet"]["repeats"]] == ["a-rerun"]
    assert groups["lenet"]["measures"]["test_acc"]["mean"] == pytest.approx(0.92)
    table = convbench("compare", str(outputs))
    assert table.code == 0, table.stderr
    header, *rows = table.stdout.splitlines()[:3]
    assert header.split()[:2] == ["model", "n"], header
    lenet = next(row for row in rows if row.startswith("lenet"))
    assert "3 (+1 repeat)" in lenet, lenet


def test_a_run_older_than_a_key_groups_with_runs_at_its_default(tmp_path):
    """A run made before trainer.steps and dataset.augment.occlude existed ran as their
    defaults do: it is one group with a run that records them at their defaults, and apart
    from one that set them."""
    root = tmp_path / "outputs"
    old = write_run(root / "old", [], test_acc=0.90, minute=0)
    config = yaml.safe_load((old / ".hydra" / "config.yaml").read_text())
    del config["trainer"]["steps"], config["dataset"]["augment"]["occlude"]
    (old / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    write_run(root / "new", ["seed=1"], test_acc=0.92, minute=1)
    write_run(root / "steps", ["seed=2", "trainer.steps=500"], test_acc=0.80, minute=2)
    groups, _ = group_runs(collect([root]))
    assert sorted(len(group.runs) for group in groups) == [1, 2]
    assert differing_keys(groups) == ["trainer.steps"]
