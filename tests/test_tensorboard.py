"""TensorBoard beyond scalars, read back with TensorBoard's own event reader; console modes."""

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convbench.monitor import pictures as visuals
from convbench.monitor.pictures import confusion_markdown
from convbench.run.checkpoint import load_checkpoint
from helpers.cli import ONE_THREAD, tiny_mnist_overrides


@pytest.fixture(scope="module")
def rich_run(tmp_path_factory, mnist_root) -> tuple[Path, object]:
    from helpers.cli import run_cli

    folder = tmp_path_factory.mktemp("tb")
    run_dir = folder / "run"
    result = run_cli(
        "train",
        *tiny_mnist_overrides(mnist_root),
        "trainer.histogram_every_n_epochs=1",
        "trainer.log_graph=true",
        ONE_THREAD,
        f"hydra.run.dir={run_dir}",
        cwd=folder,
    )
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
    assert (
        cli(
            "train",
            *tiny_mnist_overrides(mnist_root),
            "trainer.epochs=1",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    tags = _events(run_dir).Tags()
    assert tags["histograms"] == [] and tags["graph"] is False
    assert "train/samples" in tags["images"]


def test_confusion_table():
    table = confusion_markdown(torch.tensor([[8, 2], [0, 10]]), ["cat", "dog"])
    assert "| cat | 8 | 2 |" in table and "| dog | 0 | 10 |" in table


def _pixels(event) -> np.ndarray:
    """An image event decoded as a person's viewer would: uint8 [H, W, 3]."""
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def test_confusion_matrix_is_a_figure_large_enough_to_read(rich_run):
    run_dir, _ = rich_run
    (image,) = _events(run_dir).Images("test/confusion_matrix")
    # Ten classes with their names and counts (which tests/test_pictures.py reads from the
    # figure's own objects) need room: a bare 10x10 heat map would be 160 px.
    assert image.width >= 400 and image.height >= 400


def test_filter_grid_has_a_cell_per_filter_at_the_chosen_scale(rich_run):
    run_dir, _ = rich_run
    images = _events(run_dir).Images("filters/features.0")
    # LeNet's first layer: 6 filters of 1x5x5, upscaled by ceil(48 / 5) = 10 to 50 px cells, one
    # row of 6 under a band of indices and the title band.
    scale = math.ceil(visuals.FILTER_CELL / 5)
    cell = 5 * scale
    grid_width = 6 * cell + 5 * visuals.GAP
    width = max(visuals.MIN_WIDTH, grid_width + 2 * visuals.PAD)
    height = 2 * visuals.PAD + visuals.TITLE_H + visuals.LABEL_H + cell
    assert [(image.width, image.height) for image in images] == [(width, height)] * 2
    # The last epoch's picture shows the weights saved with it, one cell per filter: each
    # stretched to its own [0, 1], grey, every weight a scale x scale block.
    weights = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]["features.0.weight"]
    expected = visuals._stretch(weights.float(), (1, 2, 3))[:, 0].numpy() * 255  # [6, 5, 5]
    pixels = _pixels(images[-1]).astype(float)
    top = visuals.PAD + visuals.TITLE_H + visuals.LABEL_H
    for index in range(6):
        left = visuals.PAD + index * (cell + visuals.GAP)
        shown = pixels[top : top + cell, left : left + cell]  # [cell, cell, 3]
        assert (shown == shown[..., :1]).all()  # grey
        blocks = shown[::scale, ::scale, 0]
        assert np.array_equal(shown[..., 0], np.kron(blocks, np.ones((scale, scale))))
        assert np.abs(blocks - expected[index]).max() <= 1.5
    between = np.s_[top : top + cell, visuals.PAD + cell : visuals.PAD + cell + visuals.GAP]
    assert (pixels[between] == 255).all()  # white between two cells


def _feature_grid_size(map_side: int, channels: int, rows: int = visuals.FEATURE_IMAGES):
    """The picture of one conv layer: a column for the input and one per channel shown."""
    cell = map_side * math.ceil(visuals.MAP_CELL / map_side)
    columns = 1 + min(channels, visuals.FEATURE_CHANNELS)
    grid_width = columns * cell + (columns - 1) * visuals.GAP
    grid_height = visuals.LABEL_H + rows * cell + (rows - 1) * visuals.GAP
    return max(visuals.MIN_WIDTH, grid_width + 2 * visuals.PAD), (
        grid_height + visuals.TITLE_H + 2 * visuals.PAD
    )


def test_feature_maps_of_every_conv_layer_every_epoch(rich_run):
    run_dir, _ = rich_run
    events = _events(run_dir)
    epoch_ends = [point.step for point in events.Scalars("val/acc")]
    feature_tags = sorted(tag for tag in events.Tags()["images"] if tag.startswith("features/"))
    assert feature_tags == ["features/features.0", "features/features.3"]  # LeNet's two convs
    # MNIST's 28x28 images, padded to 32 by LeNet: 5x5 convs give 28x28 maps (6 channels), then
    # pooled to 14, 10x10 maps (16 channels).
    for tag, (side, channels) in zip(feature_tags, [(28, 6), (10, 16)], strict=True):
        images = events.Images(tag)
        assert [image.step for image in images] == epoch_ends
        assert {(image.width, image.height) for image in images} == {
            _feature_grid_size(side, channels)
        }
    # The same validation images every epoch: the input column does not change.
    cell = 28 * math.ceil(visuals.MAP_CELL / 28)
    top, left = visuals.PAD + visuals.TITLE_H + visuals.LABEL_H, visuals.PAD
    first, last = (_pixels(image) for image in events.Images("features/features.0"))
    column = np.s_[top : top + 4 * cell, left : left + cell]
    assert np.array_equal(first[column], last[column]) and first[column].std() > 0
    assert not np.array_equal(first, last)  # while the maps change with the weights


def test_plain_lines_when_not_a_terminal_and_log_file(rich_run):
    run_dir, result = rich_run
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "\r" not in result.stdout  # no progress bar in a pipe
    log = (run_dir / "train.log").read_text()
    assert log.count("] epoch ") == 2 and "done: test acc" in log


def test_quiet_prints_nothing_but_keeps_the_log(cli, mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    result = cli(
        "train",
        "-q",
        *tiny_mnist_overrides(mnist_root),
        "trainer.epochs=1",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1" not in result.stdout and "done:" not in result.stdout
    assert "epoch 1/1" in (run_dir / "train.log").read_text()
