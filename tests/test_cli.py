"""The command line as users meet it: help, version, Hydra flags, and errors without tracebacks."""

import subprocess
import sys

import pytest


def test_help_lists_commands_without_importing_torch_or_hydra():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from convbench.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'train' in result.output\n"
        "heavy = sorted(m for m in ('torch', 'hydra', 'tensorboard') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout


def test_version(cli, tmp_path):
    from convbench import __version__

    result = cli("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"convbench {__version__}"


def test_train_help_is_hydras_help_with_our_groups(cli, tmp_path):
    result = cli("train", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    groups = dict(
        line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line and "," in line
    )
    assert {"lenet", "mlp"} <= set(groups["model"].split(", "))
    assert groups["optimizer"] == "adam, adamw, sgd"
    assert groups["scheduler"] == "cosine, none, step"
    assert "epochs: 15" in result.stdout and "--cfg" in result.stdout
    assert not (tmp_path / "outputs").exists(), "--help must not start a run"


def test_cfg_job_prints_the_composed_config(cli, tmp_path):
    result = cli("train", "--cfg", "job", "model=mlp", "optimizer=adamw", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "_target_: convbench.models.mlp.MLP" in result.stdout
    assert "_target_: torch.optim.AdamW" in result.stdout
    assert "num_classes: ${dataset.num_classes}" in result.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model=resnet9000", "resnet9000"),
        ("trainer.epochs=abc", "trainer.epochs"),
        ("trainer.device=gpu", "auto, cpu, cuda, mps"),
        ("dataset=imagenet42", "cifar10"),
    ],
)
def test_bad_overrides_exit_2_with_a_message_and_no_traceback(cli, tmp_path, override, expected):
    result = cli("train", override, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.pt"))


def test_missing_dataset_exits_2_naming_where_it_looked(cli, tmp_path):
    result = cli(
        "train",
        "dataset=mnist",
        f"dataset.root={tmp_path / 'nowhere'}",
        "trainer.device=cpu",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert str(tmp_path / "nowhere") in result.stderr and "Traceback" not in result.stderr


def test_config_errors_are_reported_without_importing_torch(tmp_path):
    """A typo must be answered at Hydra speed, not after torch's multi-second import."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "convbench", "train", "trainer.epoch=3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Did you mean trainer.epochs?" in result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "hydra" in imported and "torch" not in imported
