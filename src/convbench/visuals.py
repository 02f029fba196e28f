"""TensorBoard beyond scalars: a grid of training samples (after augmentation), the first conv
layer's filters, the test confusion matrix, weight/gradient histograms and the model graph.

The confusion matrix is drawn as a heat map (rows: true class, columns: predicted; each row
normalized) and also written as a text table with the class names, since TensorBoard images
carry no labels and we keep matplotlib out of the dependencies.
"""

import logging
import warnings

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("convbench")


def log_sample_batch(writer, batches, step: int, count: int = 64) -> None:
    """The first training batch as the model sees it, un-normalized back to [0, 1]."""
    images, _ = next(batches.epoch(0))
    images = images[:count].float()
    pixels = (images + batches.shift) / (batches.scale * 255.0)  # undo x * scale - shift
    writer.add_images("train/samples", pixels.clamp(0, 1).cpu(), step)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def log_filters(writer, model: nn.Module, step: int, min_side: int = 32) -> None:
    """The first conv layer's kernels, one small image each (RGB when it reads 3 channels)."""
    found = first_conv(model)
    if found is None:
        return
    name, conv = found
    weights = conv.weight.detach().float().cpu()  # [out, in, kh, kw]
    kernels = weights if weights.shape[1] == 3 else weights[:, :1]
    low = kernels.amin(dim=(1, 2, 3), keepdim=True)
    high = kernels.amax(dim=(1, 2, 3), keepdim=True)
    kernels = (kernels - low) / (high - low).clamp_min(1e-12)
    scale = max(1, min_side // max(kernels.shape[-2:]))  # 5x5 kernels are unreadable at 1:1
    kernels = F.interpolate(kernels, scale_factor=scale, mode="nearest")
    writer.add_images(f"filters/{name or 'conv'}", kernels, step)


def confusion_image(confusion: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """A [3, H, W] heat map: white (0) to dark blue (a whole row), grey grid lines."""
    counts = confusion.float()
    share = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)  # each true class sums to 1
    blue = torch.tensor([0.03, 0.19, 0.42]).view(3, 1, 1)
    image = 1 - share.unsqueeze(0) * (1 - blue)  # [3, C, C]
    image = image.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)
    image[:, ::cell, :] = 0.6
    image[:, :, ::cell] = 0.6
    return image


def confusion_markdown(confusion: torch.Tensor, classes: list[str]) -> str:
    names = classes or [str(i) for i in range(len(confusion))]
    header = "| true \\ predicted | " + " | ".join(names) + " |"
    rule = "|" + "---|" * (len(names) + 1)
    rows = [
        f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |"
        for name, row in zip(names, confusion, strict=True)
    ]
    return "\n".join([header, rule, *rows])


def log_confusion(writer, confusion: torch.Tensor, classes: list[str], step: int) -> None:
    writer.add_image("test/confusion_matrix", confusion_image(confusion), step)
    writer.add_text("test/confusion_matrix", confusion_markdown(confusion, classes), step)


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
