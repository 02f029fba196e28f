"""What the command line says about itself, in this process (helpers.inprocess): the version,
`train --help` as Hydra's help with our config groups, and `train --cfg job` printing the
composed config, none of them starting a run. The console script as a process, its imports and
its shell completion are in tests/process/test_cli.py."""

from convbench import __version__
from helpers.inprocess import convbench


def test_version(tmp_path):
    result = convbench("--version", cwd=tmp_path)
    assert result.code == 0 and result.stdout.strip() == f"convbench {__version__}"


def test_train_help_is_hydras_help_with_our_groups(tmp_path):
    result = convbench("train", "--help", cwd=tmp_path)
    assert result.code == 0, result.stderr
    groups = dict(
        line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line and "," in line
    )
    assert {"lenet", "mlp"} <= set(groups["model"].split(", "))
    assert groups["optimizer"] == "adam, adamw, sgd"
    assert groups["scheduler"] == "cosine, none, step"
    assert "trainer.epochs=15  passes over the training split" in result.stdout
    assert "--cfg" in result.stdout
    assert not (tmp_path / "outputs").exists(), "--help must not start a run"


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = convbench("train", "--cfg", "job", "model=mlp", "optimizer=adamw", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "_target_: convbench.models.mlp.MLP" in result.stdout
    assert "_target_: torch.optim.AdamW" in result.stdout
    assert "num_classes: ${dataset.num_classes}" in result.stdout
    assert not (tmp_path / "outputs").exists()
