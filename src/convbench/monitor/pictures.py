"""TensorBoard beyond scalars: a grid of training samples (after augmentation), the first conv
layer's filters, every conv layer's feature maps, the test confusion matrix, weight/gradient
histograms and the model graph.

The pictures a person reads (confusion matrix, filters, feature maps) are matplotlib figures with
titles and labels, rendered to RGB arrays and logged as images. matplotlib is imported inside the
functions that draw, so `convbench --help` and a run's start-up never pay for its import, and
only its `Figure` with the Agg canvas is used: pyplot keeps a global registry of figures and
picks a window backend, state a library must not touch. That is also why figures are not logged
with SummaryWriter.add_figure, which imports pyplot.

Filter and feature-map pictures are grids of equal cells laid out in whole pixels (`Panel`): a
title band, then rows of cells, each row under a band of labels when it has any. The sizes below
are those pixels, so a picture's size follows from its grid alone.
"""

import io
import logging
import math
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convbench.files import atomic_write

log = logging.getLogger("convbench")

GRID_DPI = 128  # a power of two: pixels / GRID_DPI * GRID_DPI is exact, so the grid is too
PAD = 10  # pixels around the whole picture
GAP = 4  # between two cells
TITLE_H = 24  # a panel's title band
LABEL_H = 16  # the band of labels over a row of cells
PANEL_GAP = 16  # between two panels of one picture
MIN_WIDTH = 400  # room for a title over a narrow grid
FILTER_CELL = 48  # kernels are upscaled by a whole factor to at least this many pixels a side
MAP_CELL = 64  # feature maps are upscaled (nearest) by a whole factor to at least this
MAP_MAX = 128  # and larger ones shrunk (area) to at most this
FEATURE_IMAGES = 4  # validation images whose feature maps are logged every epoch
FEATURE_CHANNELS = 16  # channels shown per conv layer (the first ones)
# Conv layers shown at most, evenly spaced from the first to the last: a deep net's every layer
# would cost ~0.1 s each per epoch (ResNet-56: 55 convs) and make a picture nobody reads.
FEATURE_LAYERS = 6
SAVE_SUFFIXES = (".png", ".svg")


def _plain(model: nn.Module) -> nn.Module:
    """The module itself when `model` is torch.compile's wrapper: its layer names without the
    `_orig_mod.` prefix, and an eager forward pass that triggers no recompilation."""
    return getattr(model, "_orig_mod", model)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(
        ((n, m) for n, m in _plain(model).named_modules() if isinstance(m, nn.Conv2d)), None
    )


# Figures: matplotlib, imported lazily, on the Agg canvas.


def _figure(width_px: int, height_px: int, dpi: int = GRID_DPI, **options):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(
        figsize=(width_px / dpi, height_px / dpi), dpi=dpi, facecolor="white", **options
    )
    FigureCanvasAgg(figure)
    return figure


def figure_to_rgb(figure):
    """The figure drawn by Agg: a uint8 numpy array [H, W, 3]."""

    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def _log_figure(writer, tag: str, figure, *, step: int) -> None:
    writer.add_image(tag, figure_to_rgb(figure), step, dataformats="HWC")


def _save_figure(figure, path: Path) -> Path:
    """Write `figure` as PNG or SVG (by the suffix), atomically."""

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAVE_SUFFIXES:
        raise ValueError(f"{path}: a picture is saved as .png or .svg, not {suffix or 'no suffix'}")
    encoded = io.BytesIO()  # matplotlib wants a seekable file; atomic_write's handle is not
    figure.savefig(encoded, format=suffix[1:], dpi=figure.dpi)
    atomic_write(path, lambda handle: handle.write(encoded.getvalue()))
    return path


# The confusion matrix.


def _text_colour(rgba) -> str:
    """Black on light cells, white on dark ones (by the colour's luminance)."""
    luminance = 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]
    return "black" if luminance > 0.5 else "white"


def confusion_figure(confusion: torch.Tensor, classes: list[str], split: str = "test"):
    """The confusion matrix as a labelled matplotlib Figure: true classes as rows, predicted as
    columns, each cell's count written in it, its colour the share of its row (so a rare class
    reads as clearly as a common one), a colour bar, the overall accuracy in the title."""
    import matplotlib

    counts = confusion.long().cpu()
    size = len(counts)
    names = list(classes) if classes else [str(i) for i in range(size)]
    share = (counts / counts.sum(dim=1, keepdim=True).clamp_min(1)).numpy()  # rows sum to 1
    total, correct = int(counts.sum()), int(counts.diagonal().sum())
    cell = min(0.55, 16 / size)  # inches; 100 classes still fit a 20-inch figure
    figure = _figure(100 * (cell * size + 3), 100 * (cell * size + 2.2), 100, layout="constrained")
    axes = figure.add_subplot()
    colours = matplotlib.colormaps["Blues"]
    image = axes.imshow(share, cmap=colours, vmin=0, vmax=1, interpolation="none")
    font = min(10, max(4, 18 * cell))
    for row, values in enumerate(counts.tolist()):
        for column, value in enumerate(values):
            colour = _text_colour(colours(share[row, column])) if value else "0.6"  # 0: quiet
            style = {"ha": "center", "va": "center", "color": colour, "fontsize": font}
            axes.text(column, row, str(value), **style)
    slanted = max(map(len, names)) > 2  # long names would overlap side by side
    axes.set_xticks(
        range(size),
        labels=names,
        rotation=45 if slanted else 0,
        ha="right" if slanted else "center",
        rotation_mode="anchor",
    )
    axes.set_yticks(range(size), labels=names)
    axes.set_xticks([i - 0.5 for i in range(size + 1)], minor=True)
    axes.set_yticks([i - 0.5 for i in range(size + 1)], minor=True)
    axes.grid(which="minor", color="white", linewidth=1)
    axes.tick_params(which="minor", length=0)
    axes.set(xlabel="predicted class", ylabel="true class")
    accuracy = correct / max(total, 1)
    axes.set_title(f"{split} confusion matrix: accuracy {accuracy:.2%} ({correct:,} of {total:,})")
    figure.colorbar(image, ax=axes, label="share of the true class (row)", shrink=0.8)
    return figure


def confusion_markdown(confusion: torch.Tensor, classes: list[str]) -> str:
    names = classes or [str(i) for i in range(len(confusion))]
    header = "| true \\ predicted | " + " | ".join(names) + " |"
    rule = "|" + "---|" * (len(names) + 1)
    rows = [
        f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |"
        for name, row in zip(names, confusion, strict=True)
    ]
    return "\n".join([header, rule, *rows])


def log_confusion(writer, confusion: torch.Tensor, *, classes: list[str], step: int) -> None:
    """The test confusion matrix as a figure and as a markdown table (TensorBoard's Text tab)."""
    _log_figure(writer, "test/confusion_matrix", confusion_figure(confusion, classes), step=step)
    writer.add_text("test/confusion_matrix", confusion_markdown(confusion, classes), step)


# Grids of cells: filters and feature maps.


@dataclass
class Panel:
    """A titled grid of equal cells, laid out in whole pixels."""

    title: str
    cells: torch.Tensor  # float [rows, columns, 3, h, w] in [0, 1], at display size
    labels: list[list[str]]  # the text over each cell; a row without any gets no label band

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels: the title band, label bands, cells and the gaps between."""
        rows, columns, _, height, width = self.cells.shape
        bands = sum(LABEL_H for row in self.labels if any(row))
        return columns * width + (columns - 1) * GAP, TITLE_H + bands + rows * (height + GAP) - GAP


def _draw_panels(panels: list[Panel]):
    """One figure holding `panels` one under the other; its size in pixels is
    (max(MIN_WIDTH, widest panel + 2 PAD), panel heights + gaps between them + 2 PAD)."""
    width = max(MIN_WIDTH, 2 * PAD + max(panel.size[0] for panel in panels))
    height = 2 * PAD + sum(panel.size[1] for panel in panels) + PANEL_GAP * (len(panels) - 1)
    figure = _figure(width, height)
    top = PAD
    for panel in panels:
        _draw_panel(figure, panel, top=top, figure_size=(width, height))
        top += panel.size[1] + PANEL_GAP
    return figure


def _draw_panel(figure, panel: Panel, *, top: int, figure_size: tuple[int, int]) -> None:
    """`panel` with its top edge `top` pixels below the figure's: the cells as one image, the
    title and labels as figure texts over it."""
    width, height = figure_size
    _, columns, _, cell_h, cell_w = panel.cells.shape
    grid_w, grid_h = panel.size[0], panel.size[1] - TITLE_H

    def text(x: float, y: float, words: str, **style) -> None:  # x, y: pixels from top left
        figure.text(x / width, 1 - y / height, words, va="center", **style)

    text(PAD, top + TITLE_H / 2, panel.title, ha="left", fontsize=8)
    mosaic = torch.ones(grid_h, grid_w, 3)  # white between the cells
    y = 0
    for row, labels in enumerate(panel.labels):
        if any(labels):
            for column, label in enumerate(labels):
                x = PAD + column * (cell_w + GAP) + cell_w / 2
                text(x, top + TITLE_H + y + LABEL_H / 2, label, ha="center", fontsize=6)
            y += LABEL_H
        for column in range(columns):
            x = column * (cell_w + GAP)
            mosaic[y : y + cell_h, x : x + cell_w] = panel.cells[row, column].permute(1, 2, 0)
        y += cell_h + GAP
    bottom = top + TITLE_H + grid_h
    axes = figure.add_axes((PAD / width, 1 - bottom / height, grid_w / width, grid_h / height))
    axes.set_axis_off()
    axes.imshow(mosaic.numpy(), interpolation="none", aspect="auto")  # one data pixel per pixel


def _stretch(values: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """`values` mapped to [0, 1] by their minimum and maximum over `dims`."""
    low, high = values.amin(dim=dims, keepdim=True), values.amax(dim=dims, keepdim=True)
    return (values - low) / (high - low).clamp_min(1e-12)


def _as_rgb(images: torch.Tensor) -> torch.Tensor:
    """[N, C, h, w] -> [N, 3, h, w]: RGB kept, anything else shown as its first channel in grey."""
    return images if images.shape[1] == 3 else images[:, :1].expand(-1, 3, -1, -1)


SAMPLE_CELL = 64  # training samples are upscaled (nearest) by a whole factor to at least this
SAMPLE_COLUMNS = 8


def sample_panel(images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> Panel:
    """Training images as the model sees them (pixels in [0, 1]), eight to a row, each under its
    class name, upscaled by a whole factor (nearest) to at least SAMPLE_CELL pixels."""
    count, _, height, width = images.shape
    scale = max(1, math.ceil(SAMPLE_CELL / max(height, width)))
    shown = _as_rgb(images).repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    columns = min(count, SAMPLE_COLUMNS)
    rows = math.ceil(count / columns)
    cells = torch.ones(rows * columns, *shown.shape[1:])
    cells[:count] = shown
    names = [classes[i] if i < len(classes) else str(i) for i in labels.tolist()]
    names += [""] * (rows * columns - count)
    grid = [names[r * columns : (r + 1) * columns] for r in range(rows)]
    title = f"training samples after augmentation, {height}x{width} px"
    return Panel(title, cells.view(rows, columns, *cells.shape[1:]), grid)


def log_sample_batch(
    writer, batches, step: int, *, classes: list[str] = (), count: int = 32
) -> None:
    """The first `count` images of the first training batch as the model sees them,
    un-normalized back to [0, 1], each labelled with its class name (`sample_panel`)."""
    images, labels = next(batches.epoch(0))
    images = images[:count].float()
    pixels = ((images + batches.shift) / (batches.scale * 255.0)).clamp(0, 1).cpu()
    panel = sample_panel(pixels, labels[:count].cpu(), list(classes))
    _log_figure(writer, "train/samples", _draw_panels([panel]), step=step)


def filter_panel(name: str, conv: nn.Conv2d, epoch: int | None = None) -> Panel:
    """`conv`'s kernels, one cell each (index over it): each stretched to [0, 1] by its own
    minimum and maximum, grey for one input channel, RGB for three, the first input channel for
    any other count; upscaled by a whole factor (nearest) to at least FILTER_CELL pixels."""
    weights = conv.weight.detach().float().cpu()  # [out, in, kh, kw]
    kernels = _as_rgb(_stretch(weights if weights.shape[1] == 3 else weights[:, :1], (1, 2, 3)))
    scale = math.ceil(FILTER_CELL / max(kernels.shape[-2:]))
    kernels = kernels.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    count = len(kernels)
    columns = min(count, max(8, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / columns)
    cells = torch.ones(rows * columns, *kernels.shape[1:])  # blank cells complete the last row
    cells[:count] = kernels
    indices = [
        [str(i) if i < count else "" for i in range(r * columns, (r + 1) * columns)]
        for r in range(rows)
    ]
    shown = "" if weights.shape[1] in (1, 3) else ", input channel 0"
    when = "" if epoch is None else f", epoch {epoch}"
    title = f"{name}: {count} filters {'x'.join(map(str, weights.shape[1:]))}{shown}{when}"
    return Panel(title, cells.view(rows, columns, *cells.shape[1:]), indices)


def log_filters(writer, model: nn.Module, *, step: int, epoch: int | None = None) -> None:
    """The first conv layer's kernels as a labelled grid (`filter_panel`), one image per call."""
    found = first_conv(model)
    if found is None:
        return
    name, conv = found
    figure = _draw_panels([filter_panel(name, conv, epoch)])
    _log_figure(writer, f"filters/{layer_label(model, name)}", figure, step=step)


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The model's nn.Conv2d layers, (name, layer), in the order of its modules."""
    return [(n, m) for n, m in _plain(model).named_modules() if isinstance(m, nn.Conv2d)]


def layer_label(model: nn.Module, name: str) -> str:
    """A conv layer as a person finds it: its rank among the model's convs and its module name,
    the one `convbench summary` lists ("conv2 (features.3)")."""
    rank = next(i for i, (n, _) in enumerate(conv_layers(model), 1) if n == name)
    return f"conv{rank} ({name or 'model'})"


def conv_outputs(
    model: nn.Module, images: torch.Tensor, channels: int = FEATURE_CHANNELS
) -> list[tuple[str, nn.Conv2d, torch.Tensor]]:
    """What the nn.Conv2d layers of `model` compute for `images` (all of them, or FEATURE_LAYERS
    evenly spaced ones in a deeper net), in the order the forward pass runs them: (name, layer,
    its output's first `channels` channels as float [N, c, h, w] on the CPU).

    The output of the convolution itself, before any norm or activation that follows: every
    family has that point (ResNet's convs feed a batch norm, LeNet's an activation module,
    others a functional relu), and its sign shows what a ReLU would keep. Captured with forward
    hooks, in eval mode and under torch.no_grad; the hooks are removed and every module's
    train/eval flag is restored afterwards, so training continues exactly as it would have.
    """
    model = _plain(model)
    captured: dict[str, tuple[str, nn.Conv2d, torch.Tensor]] = {}

    def record(name: str, module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        if name not in captured:  # a layer run twice shows its first use
            captured[name] = (name, module, output[:, :channels].detach().float().cpu())

    convs = _evenly_spaced(conv_layers(model))
    handles = [m.register_forward_hook(partial(record, n)) for n, m in convs]
    flags = [(module, module.training) for module in model.modules()]
    device = next(model.parameters(), images).device
    try:
        model.eval()
        with torch.no_grad():
            model(images.to(device))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in flags:
            module.training = training
    return list(captured.values())


def _evenly_spaced(layers: list, most: int = FEATURE_LAYERS) -> list:
    """At most `most` of `layers`, the first and the last among them, evenly spaced."""
    if len(layers) <= most:
        return layers
    return [layers[round(i * (len(layers) - 1) / (most - 1))] for i in range(most)]


def _map_cell(height: int, width: int) -> tuple[int, int]:
    """A feature map's size on screen: upscaled by a whole factor to at least MAP_CELL pixels a
    side, or shrunk to at most MAP_MAX."""
    side = max(height, width)
    if side > MAP_MAX:
        return max(1, height * MAP_MAX // side), max(1, width * MAP_MAX // side)
    scale = math.ceil(MAP_CELL / side)
    return height * scale, width * scale


def _diverging(maps: torch.Tensor) -> torch.Tensor:
    """[N, c, h, w] -> [N, c, 3, h, w]: red above zero, blue below, white at zero, each map
    scaled by its own largest magnitude."""
    import matplotlib

    peak = maps.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    colours = matplotlib.colormaps["RdBu_r"]((maps / peak * 0.5 + 0.5).numpy())  # [..., 4]
    return torch.from_numpy(colours[..., :3]).float().permute(0, 1, 4, 2, 3)


def feature_panel(
    name: str, conv: nn.Conv2d, maps: torch.Tensor, *, images: torch.Tensor, epoch=None
) -> Panel:
    """One row per image: the input image (stretched to [0, 1]) then `maps`' channels."""
    count, channels, height, width = maps.shape
    cell = _map_cell(height, width)
    mode = "nearest" if cell[0] >= height else "area"
    coloured = _diverging(maps).flatten(0, 1)  # coloured small, then resized: [N * c, 3, h, w]
    shown = F.interpolate(coloured, size=cell, mode=mode).view(count, channels, 3, *cell)
    inputs = _as_rgb(_stretch(images.detach().float().cpu(), (1, 2, 3)))
    inputs = F.interpolate(inputs, size=cell, mode="bilinear", antialias=True).clamp(0, 1)
    cells = torch.cat([inputs[:, None], shown], dim=1)  # [N, 1 + c, 3, *cell]
    header = ["input", *(f"ch {i}" for i in range(channels))]
    labels = [header] + [[""] * len(header) for _ in range(count - 1)]
    when = "" if epoch is None else f", epoch {epoch}"
    title = (
        f"{name}: conv output, {height}x{width}, channels 0-{channels - 1} of "
        f"{conv.out_channels}{when}; red > 0 > blue"
    )
    return Panel(title, cells, labels)


def feature_panels(model: nn.Module, images: torch.Tensor, epoch=None) -> list[tuple[str, Panel]]:
    """(layer name, panel) for each conv layer of `model` (see `conv_outputs` for what is shown)."""
    return [
        (name, feature_panel(name, conv, maps, images=images, epoch=epoch))
        for name, conv, maps in conv_outputs(model, images)
    ]


def log_feature_maps(writer, model: nn.Module, val_batches, *, step: int, epoch: int) -> None:
    """The feature maps of the validation split's first FEATURE_IMAGES images (always the same
    ones: that split is neither shuffled nor augmented), one image per conv layer, tagged
    `features/conv<rank> (<module name>)` (`layer_label`)."""
    if first_conv(model) is None:
        return
    first = next(val_batches.epoch(0), None)
    if first is None:  # dataset.val_size=0
        return
    for name, panel in feature_panels(model, first[0][:FEATURE_IMAGES], epoch):
        tag = f"features/{layer_label(model, name)}"
        _log_figure(writer, tag, _draw_panels([panel]), step=step)


def save_feature_maps(model: nn.Module, images: torch.Tensor, path: Path) -> Path:
    """Write the feature maps of `images` as one picture, a grid per conv layer one under the
    other (what TensorBoard shows under `features/`, see `conv_outputs`), as PNG or SVG by the
    suffix of `path`; returns `path`.

    `images`: a float batch [N, C, H, W] already normalized as the model sees it (a batch of
    `Batches`, say), on any device; a row per image, so a few (4) read best. The model is put in
    eval mode for the pass and back afterwards. Raises ValueError for another suffix, OSError when
    the file cannot be written (the target is then untouched).
    """
    panels = [panel for _, panel in feature_panels(model, images)]
    if not panels:
        raise ValueError(f"{type(_plain(model)).__name__} has no Conv2d layer: no feature maps")
    return _save_figure(_draw_panels(panels), path)


# Histograms and the graph.


def log_histograms(writer, model: nn.Module, step: int) -> None:
    """Weights and (when present) gradients of every parameter."""
    for name, parameter in model.named_parameters():
        writer.add_histogram(f"weights/{name}", parameter.detach().float().cpu(), step)
        if parameter.grad is not None:
            writer.add_histogram(f"grads/{name}", parameter.grad.detach().float().cpu(), step)


def log_graph(writer, model: nn.Module, batches) -> None:
    """The model graph (traced with two images); a model that cannot be traced only warns."""
    images, _ = next(batches.epoch(0))
    was_training = model.training
    model.eval()  # no batch-norm statistics or dropout draws change because of the trace
    try:
        with warnings.catch_warnings():  # torch.jit.trace's deprecation notice is not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            writer.add_graph(model, images[:2])
    except Exception as exc:  # tracing fails for some data-dependent control flow
        log.warning("could not trace the model graph for TensorBoard (%s)", exc)
    finally:
        model.train(was_training)
