"""TensorBoard beyond scalars, read back with TensorBoard's own event reader; console modes."""

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convbench.visuals import confusion_image, confusion_markdown
from helpers.cli import tiny_mnist_overrides


@pytest.fixture(scope="module")
def rich_run(tmp_path_factory, mnist_root) -> tuple[Path, object]:
    from helpers.cli import run_cli

    folder = tmp_path_factory.mktemp("tb")
    run_dir = folder / "run"
    result = run_cli("train", *tiny_mnist_overrides(mnist_root), "trainer.histogram_every_n_epochs=1",
                     "trainer.log_graph=true", f"hydra.run.dir={run_dir}", cwd=folder)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return run_dir, result


def _events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"images": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def test_images_histograms_graph_and_hparams_are_written(rich_run):
    run_dir, _ = rich_run
    events = _events(run_dir)
    tags = events.Tags()
    assert {"train/samples", "filters/features.0", "test/confusion_matrix"} <= set(tags["images"])
    # The first conv layer's filters after each of the 2 epochs; the sample batch once, at step 0.
    assert len(events.Images("filters/features.0")) == 2
    first_epoch_end = events.Scalars("val/acc")[0].step
    assert [image.step for image in events.Images("train/samples")] == [first_epoch_end]
    samples = events.Images("train/samples")[0]
    assert (samples.width, samples.height) != (0, 0)
    weights = {t for t in tags["histograms"] if t.startswith("weights/")}
    grads = {t for t in tags["histograms"] if t.startswith("grads/")}
    assert "weights/features.0.weight" in weights and "grads/features.0.weight" in grads
    assert len(events.Histograms("grads/features.0.weight")) == 2  # once per epoch
    assert tags["graph"] is True
    assert "test/confusion_matrix/text_summary" in tags["tensors"]
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hparams and "_hparams_/session_start_info" in hparams
    assert {"hparam/test_acc", "hparam/best_val_acc"} <= set(tags["scalars"])


def test_histograms_are_off_by_default(cli, mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    assert cli("train", *tiny_mnist_overrides(mnist_root), "trainer.epochs=1",
               f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0  # fmt: skip
    tags = _events(run_dir).Tags()
    assert tags["histograms"] == [] and tags["graph"] is False
    assert "train/samples" in tags["images"]


def test_confusion_image_and_table():
    confusion = torch.tensor([[8, 2], [0, 10]])
    image = confusion_image(confusion, cell=4)
    assert image.shape == (3, 8, 8)
    # A perfect row (class 1) is darker than a row with mistakes on its diagonal cell.
    assert image[:, 6, 6].sum() < image[:, 2, 2].sum()
    table = confusion_markdown(confusion, ["cat", "dog"])
    assert "| cat | 8 | 2 |" in table and "| dog | 0 | 10 |" in table


def test_plain_lines_when_not_a_terminal_and_log_file(rich_run):
    run_dir, result = rich_run
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "\r" not in result.stdout  # no progress bar in a pipe
    log = (run_dir / "train.log").read_text()
    assert log.count("] epoch ") == 2 and "done: test acc" in log


def test_quiet_prints_nothing_but_keeps_the_log(cli, mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    result = cli("train", "-q", *tiny_mnist_overrides(mnist_root), "trainer.epochs=1",
                 f"hydra.run.dir={run_dir}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1" not in result.stdout and "done:" not in result.stdout
    assert "epoch 1/1" in (run_dir / "train.log").read_text()
