"""The pictures a person reads, checked through matplotlib's own objects and the files a viewer
opens: the confusion matrix's labels and counts, feature maps saved as PNG and SVG, and the model
left as it was. What TensorBoard receives is read back in tests/test_tensorboard.py."""

import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest
import torch
from PIL import Image

from convbench.models.lenet import LeNet
from convbench.monitor import pictures as visuals
from convbench.monitor.pictures import confusion_figure, figure_to_rgb, save_feature_maps
from helpers.cli import cli_env

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


def test_training_start_does_not_import_matplotlib():
    """The engine imports convbench.monitor.pictures; matplotlib waits until a picture is drawn."""
    code = "import sys, convbench.engine; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_deep_net_shows_a_few_evenly_spaced_conv_layers():
    from convbench.models.resnet import ResNet
    from convbench.monitor.pictures import FEATURE_LAYERS, conv_outputs

    model = ResNet(num_classes=10, in_channels=1, image_size=28, depth=20)
    convs = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    shown = [name for name, _, _ in conv_outputs(model, torch.zeros(2, 1, 28, 28))]
    assert len(convs) == 19 and len(shown) == FEATURE_LAYERS
    assert shown[0] == convs[0] and shown[-1] == convs[-1], "from the first to the last"
    assert shown == sorted(shown, key=convs.index), "in forward order"
