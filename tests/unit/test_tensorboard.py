"""The pictures a person reads and what TensorBoard receives. The pictures are checked through
matplotlib's own objects and the files a viewer opens: the confusion matrix's labels and counts,
feature maps saved as PNG and SVG, and the model left as it was. The event files of real runs
(in this process, helpers.inprocess) are read back with TensorBoard's own event reader: images,
histograms, the graph and hparams. `convbench tb` refuses what it cannot serve; the server itself
is in tests/process/test_tb_server.py."""

import io
import math
import socket
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convbench.models.lenet import LeNet
from convbench.monitor import pictures as visuals
from convbench.monitor.pictures import (
    confusion_figure,
    confusion_markdown,
    figure_to_rgb,
    save_feature_maps,
)
from convbench.run.build import build_model
from convbench.run.checkpoint import load_checkpoint
from helpers.cli import ONE_THREAD, tiny_mnist_overrides
from helpers.configs import FAMILIES, composed
from helpers.inprocess import convbench

# --- pictures, drawn here -------------------------------------------------------------------------

FASHION = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def test_confusion_figure_names_the_classes_and_writes_every_count():
    confusion = torch.randint(0, 30, (10, 10), generator=torch.Generator().manual_seed(0))
    confusion[3] = 0
    confusion[3, 3] = 500  # a class always right: its diagonal cell is dark
    figure = confusion_figure(confusion, FASHION)
    axes, colour_bar = figure.axes
    assert [label.get_text() for label in axes.get_xticklabels()] == FASHION
    assert [label.get_text() for label in axes.get_yticklabels()] == FASHION
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("predicted class", "true class")
    cells = {
        (round(text.get_position()[1]), round(text.get_position()[0])): text for text in axes.texts
    }
    assert {key: text.get_text() for key, text in cells.items()} == {
        (row, column): str(int(confusion[row, column])) for row in range(10) for column in range(10)
    }
    assert cells[3, 3].get_color() == "white"  # on the darkest blue
    light = min(
        ((r, c) for r in range(10) for c in range(10) if confusion[r, c] and r != 3),
        key=lambda key: int(confusion[key]),
    )
    assert cells[light].get_color() == "black"
    accuracy = confusion.diagonal().sum() / confusion.sum()
    assert f"accuracy {accuracy:.2%}" in axes.get_title()
    assert colour_bar.get_ylabel() == "share of the true class (row)"
    height, width, _ = figure_to_rgb(figure).shape
    assert width >= 400 and height >= 400


def test_confusion_figure_without_class_names_numbers_them():
    figure = confusion_figure(torch.tensor([[3, 1], [0, 4]]), [])
    assert [label.get_text() for label in figure.axes[0].get_xticklabels()] == ["0", "1"]


@pytest.fixture
def lenet() -> LeNet:
    torch.manual_seed(0)
    model = LeNet(num_classes=10, in_channels=1, image_size=28)
    model.train()
    model.features[1].eval()  # a module in another mode than its parent, to be kept so
    return model


def _grid_size(panels: list[tuple[int, int]]) -> tuple[int, int]:
    """The picture of (map side, channels) panels, a column for the input and one per channel."""
    widths, heights = [], []
    for side, channels in panels:
        cell = side * -(-visuals.MAP_CELL // side)
        columns, rows = 1 + channels, visuals.FEATURE_IMAGES
        widths.append(columns * cell + (columns - 1) * visuals.GAP)
        heights.append(visuals.TITLE_H + visuals.LABEL_H + rows * cell + (rows - 1) * visuals.GAP)
    width = max(visuals.MIN_WIDTH, max(widths) + 2 * visuals.PAD)
    return width, sum(heights) + visuals.PANEL_GAP * (len(panels) - 1) + 2 * visuals.PAD


def test_save_feature_maps_writes_a_png_and_an_svg(lenet, tmp_path):
    images = torch.randn(4, 1, 28, 28)  # as the model sees them: normalized floats
    flags = [module.training for module in lenet.modules()]
    weights = {name: value.clone() for name, value in lenet.state_dict().items()}
    png = save_feature_maps(lenet, images, tmp_path / "maps.png")
    with Image.open(png) as picture:
        assert picture.format == "PNG"
        # LeNet on 28x28 (padded to 32): 6 maps of 28x28, then 16 of 10x10.
        assert picture.size == _grid_size([(28, 6), (10, 16)])
    svg = save_feature_maps(lenet, images, tmp_path / "maps.svg")
    root = ElementTree.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.findall(".//{http://www.w3.org/2000/svg}image")) == 2  # a grid per layer
    text = svg.read_text()  # matplotlib draws glyphs as paths, naming each text in a comment
    assert "features.0: conv output, 28x28" in text and "features.3: conv output, 10x10" in text
    assert "ch 15" in text and "input" in text
    # The model is left as it was: modes, weights, no hooks, no gradients.
    assert [module.training for module in lenet.modules()] == flags
    assert all(torch.equal(weights[k], v) for k, v in lenet.state_dict().items())
    assert not any(module._forward_hooks for module in lenet.modules())
    assert all(parameter.grad is None for parameter in lenet.parameters())


def test_save_feature_maps_refuses_other_formats(lenet, tmp_path):
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        save_feature_maps(lenet, torch.randn(1, 1, 28, 28), tmp_path / "maps.jpg")
    assert not list(tmp_path.iterdir())


def test_colour_input_and_more_than_sixteen_channels(tmp_path):
    """RGB images in the input column; only the first 16 channels of a wide layer."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU())
    panels = visuals.feature_panels(model, torch.randn(2, 3, 8, 8), epoch=5)
    ((name, panel),) = panels
    assert name == "0" and panel.cells.shape == (2, 17, 3, 64, 64)  # 8 px maps upscaled x 8
    assert panel.title.startswith("0: conv output, 8x8, channels 0-15 of 32, epoch 5")
    assert not torch.equal(panel.cells[0, 0, 0], panel.cells[0, 0, 1])  # colour, not grey


def test_a_deep_net_shows_a_few_evenly_spaced_conv_layers():
    from convbench.models.resnet import ResNet
    from convbench.monitor.pictures import FEATURE_LAYERS, conv_outputs

    model = ResNet(num_classes=10, in_channels=1, image_size=28, depth=20)
    convs = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    shown = [name for name, _, _ in conv_outputs(model, torch.zeros(2, 1, 28, 28))]
    assert len(convs) == 19 and len(shown) == FEATURE_LAYERS
    assert shown[0] == convs[0] and shown[-1] == convs[-1], "from the first to the last"
    assert shown == sorted(shown, key=convs.index), "in forward order"


class ImageWriter:
    """SummaryWriter's add_image, kept."""

    def __init__(self):
        self.images: dict[str, np.ndarray] = {}

    def add_image(self, tag, image, step, dataformats):
        assert dataformats == "HWC"
        self.images[tag] = image


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_draws_its_filters_and_feature_maps(family):
    """What a run logs after each epoch, drawn for each family's model as shipped: the first
    layer's filters and a picture per shown conv layer (none for the MLP)."""
    torch.manual_seed(0)
    model = build_model(composed([f"model={family}", "dataset=fashionmnist"]), torch.device("cpu"))
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    validation = SimpleNamespace(epoch=lambda _: iter([(torch.randn(8, 1, 28, 28), None)]))
    writer = ImageWriter()
    visuals.log_filters(writer, model, step=1, epoch=1)
    visuals.log_feature_maps(writer, model, validation, step=1, epoch=1)
    shown = min(len(convs), visuals.FEATURE_LAYERS)
    assert len(writer.images) == (1 + shown if convs else 0)
    for tag, image in writer.images.items():
        assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] > visuals.TITLE_H, tag
        assert image.min() < 128 < image.max(), f"{tag}: something is drawn on the white"


# --- what TensorBoard receives from a run ---------------------------------------------------


@pytest.fixture(scope="module")
def rich_run(tmp_path_factory, mnist_root) -> Path:
    folder = tmp_path_factory.mktemp("tb")
    run_dir = folder / "run"
    result = convbench(
        "train",
        *tiny_mnist_overrides(mnist_root),
        "trainer.log_images=true",
        "trainer.histogram_every_n_epochs=1",
        "trainer.log_graph=true",
        ONE_THREAD,
        f"hydra.run.dir={run_dir}",
        cwd=folder,
    )
    assert result.code == 0, result.stderr
    return run_dir


def _events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"images": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def test_images_histograms_graph_and_hparams_are_written(rich_run):
    run_dir = rich_run
    events = _events(run_dir)
    tags = events.Tags()
    assert {"train/samples", "filters/conv1 (features.0)", "test/confusion_matrix"} <= set(
        tags["images"]
    )
    # The first conv layer's filters after each of the 2 epochs; the sample batch once, at step 0.
    assert len(events.Images("filters/conv1 (features.0)")) == 2
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


def test_histograms_are_off_by_default_and_pictures_on(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    defaults = [o for o in tiny_mnist_overrides(mnist_root) if not o.startswith("trainer.log_")]
    assert (
        convbench(
            "train",
            *defaults,
            "trainer.epochs=1",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        ).code
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
    run_dir = rich_run
    (image,) = _events(run_dir).Images("test/confusion_matrix")
    # Ten classes with their names and counts (which the tests above read from the
    # figure's own objects) need room: a bare 10x10 heat map would be 160 px.
    assert image.width >= 400 and image.height >= 400


def test_filter_grid_has_a_cell_per_filter_at_the_chosen_scale(rich_run):
    run_dir = rich_run
    images = _events(run_dir).Images("filters/conv1 (features.0)")
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
    run_dir = rich_run
    events = _events(run_dir)
    epoch_ends = [point.step for point in events.Scalars("val/acc")]
    feature_tags = sorted(tag for tag in events.Tags()["images"] if tag.startswith("features/"))
    assert feature_tags == [
        "features/conv1 (features.0)",
        "features/conv2 (features.3)",
    ]  # LeNet's two convs
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
    first, last = (_pixels(image) for image in events.Images("features/conv1 (features.0)"))
    column = np.s_[top : top + 4 * cell, left : left + cell]
    assert np.array_equal(first[column], last[column]) and first[column].std() > 0
    assert not np.array_equal(first, last)  # while the maps change with the weights


# --- `convbench tb` refuses what it cannot serve ------------------------------------------------

LOOPBACK = "127.0.0.1"


def test_tb_refuses_a_port_in_use(tmp_path):
    (tmp_path / "outputs").mkdir()
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = convbench("tb", str(tmp_path / "outputs"), "--port", str(port), cwd=tmp_path)
    assert result.code == 2
    assert f"{port}" in result.stderr and "--port 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_tb_on_a_missing_folder_exits_2(tmp_path):
    result = convbench("tb", cwd=tmp_path)  # default: ./outputs, absent here
    assert result.code == 2
    assert "outputs is not a folder" in result.stderr and "Traceback" not in result.stderr


def test_hparams_show_a_typed_config_group_by_its_option():
    """`augment=confounders` swept: HParams shows the option, not "none" for the group."""
    from omegaconf import OmegaConf

    from convbench.config.compose import compose
    from convbench.run.build import hparams, plain_config
    from convbench.run.checkpoint import Settled

    cfg = plain_config(compose(["augment=confounders", "dataset.augment.crop_padding=0"]))
    settled = Settled("fp32", False, [0.5], [0.5], {}, {"precision": "", "channels_last": ""})
    typed = ["augment", "dataset.augment.crop_padding", "optimizer"]
    choices = {"augment": "confounders", "optimizer": "sgd", "model": "lenet"}
    shown = hparams(cfg, settled, name="lenet", typed=typed, choices=choices)
    assert shown["augment"] == "confounders"
    assert shown["dataset.augment.crop_padding"] == 0 and shown["dataset.augment.occlude"] == 16
    assert list(shown)[:2] == ["augment", "dataset.augment.crop_padding"], "typed keys lead"
    assert OmegaConf.select(cfg, "augment") is None, "the option is not a key of the config"
