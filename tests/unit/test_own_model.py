"""Users bring their own model (examples/own_model): trained and summarized from outside
convbench's package, through Hydra's search path or a config given on the command line, in this
process (`import mynets` made to work here). Training with the package on PYTHONPATH as the
README says, and evaluating and resuming such a run, are in tests/process/."""

import json

import pytest
from typer.testing import CliRunner

from convbench.cli import app
from convbench.commands.summary import summarize_config
from helpers.cli import ONE_THREAD, REPO, tiny_mnist_overrides
from helpers.inprocess import convbench

EXAMPLE = REPO / "examples" / "own_model"
# The direct form from the README: no YAML file, the model config on the command line.
DIRECT = [
    "~model",
    "+model={_target_: mynets.TinyNet, num_classes: ${dataset.num_classes}, "
    "in_channels: ${dataset.in_channels}, image_size: ${dataset.image_size}}",
]


@pytest.fixture
def importable(monkeypatch):
    """`import mynets` works in this process too."""
    monkeypatch.syspath_prepend(str(EXAMPLE))


def test_trains_with_the_model_config_on_the_command_line(mnist_root, tmp_path, importable):
    run_dir = tmp_path / "run"
    result = convbench(
        "train",
        *DIRECT,
        *tiny_mnist_overrides(mnist_root),
        ONE_THREAD,
        "trainer.epochs=1",
        "dataset.train_limit=64",
        f"hydra.run.dir={run_dir}",
        cwd=REPO,
    )
    assert result.code == 0, result.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["model"] == "mynets.TinyNet"


@pytest.mark.parametrize(
    "form",
    [
        {"extra_config_dir": str(EXAMPLE / "conf"), "overrides": ["model=tinynet"]},
        {"overrides": [f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]", "model=tinynet"]},
        {"overrides": DIRECT},
    ],
    ids=["config-dir", "searchpath", "direct"],
)
def test_summary_composes_every_form(importable, form):
    summary = summarize_config(
        [*form["overrides"], "dataset=cifar10"], form.get("extra_config_dir")
    )
    assert summary["target"] == "mynets.TinyNet" and summary["dataset"] == "cifar10"
    assert summary["params"] == 16 * 3 * 9 + 16 + 32 * 16 * 9 + 32 + 32 * 10 + 10
    assert summary["layers"][0]["output_shape"] == [1, 16, 32, 32]


def test_summary_cli_takes_config_dir(importable):
    result = CliRunner().invoke(
        app, ["summary", "--config-dir", str(EXAMPLE / "conf"), "model=tinynet"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("tinynet (mynets.TinyNet) on fashionmnist")
