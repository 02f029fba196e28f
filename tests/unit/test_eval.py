"""`convbench eval RUN_DIR`: a run's checkpoint tested again from the run folder alone, in this
process (helpers.inprocess and Typer's CliRunner)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convbench.cli import app
from convbench.errors import CheckpointError
from convbench.run.checkpoint import load_checkpoint, save_checkpoint
from helpers.cli import ONE_THREAD, tiny_mnist_overrides
from helpers.inprocess import convbench


@pytest.fixture(scope="module")
def run_dir(mnist_root, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("eval")
    result = convbench(
        "train",
        *tiny_mnist_overrides(mnist_root),
        ONE_THREAD,
        f"hydra.run.dir={work / 'run'}",
        cwd=work,
    )
    assert result.code == 0, result.stderr
    return work / "run"


def eval_json(*args: str) -> dict:
    result = CliRunner().invoke(app, ["eval", *args, "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_best_checkpoint_reproduces_the_runs_test_accuracy(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report = eval_json(str(run_dir))
    assert report["test_acc"] == metrics["test_acc"]  # same weights, same data, same batches
    assert report["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)
    assert report["epoch"] == metrics["best_epoch"] and report["images"] == 200
    assert [row["class"] for row in report["per_class"]] == [str(d) for d in range(10)]
    assert sum(row["images"] for row in report["per_class"]) == 200
    assert sum(row["correct"] for row in report["per_class"]) / 200 == report["test_acc"]


def test_last_checkpoint_and_the_text_report(run_dir):
    assert eval_json(str(run_dir), "--checkpoint", "last")["epoch"] == 2
    result = CliRunner().invoke(app, ["eval", str(run_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    test_acc = json.loads((run_dir / "metrics.json").read_text())["test_acc"]
    assert f"test acc {test_acc:.4f}" in result.stdout
    table = lines[lines.index(next(line for line in lines if line.startswith("Class"))) :]
    assert [line.split()[0] for line in table[1:]] == [str(d) for d in range(10)]
    for line in table[1:]:
        images, correct, acc = line.split()[1:]
        assert float(acc) == pytest.approx(int(correct) / int(images), abs=5e-5)


def test_a_folder_without_checkpoints_exits_2_without_traceback(tmp_path):
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    result = convbench("eval", str(tmp_path / "run"), cwd=tmp_path)
    assert result.code == 2
    assert "has no checkpoints/best.pt" in result.stderr and "Traceback" not in result.stderr
    missing = convbench("eval", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.code == 2 and "is not a folder" in missing.stderr


@pytest.mark.parametrize("content", ["weights", "text"])
def test_a_foreign_checkpoint_exits_2_without_traceback(tmp_path, content):
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    best.parent.mkdir(parents=True)
    if content == "weights":
        torch.save({"model": {}}, best)  # a PyTorch file, but not one convbench wrote
    else:
        best.write_text("not a checkpoint\n")
    result = convbench("eval", str(tmp_path / "run"), cwd=tmp_path)
    assert result.code == 2, result.stderr
    assert "convbench checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_weights_that_do_not_fit_their_config_are_refused(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    payload = load_checkpoint(copy / "checkpoints" / "best.pt")
    payload["model"].pop(next(iter(payload["model"])))  # as if the model's code had changed
    save_checkpoint(payload, copy / "checkpoints" / "best.pt")
    result = CliRunner().invoke(app, ["eval", str(copy), "--device", "cpu"])
    assert isinstance(result.exception, CheckpointError)  # main() prints it and exits 2
    assert "weights do not fit" in str(result.exception)
