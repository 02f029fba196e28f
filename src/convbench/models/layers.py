"""Small building blocks shared by the model families."""

import torch
from torch import nn

from convbench.errors import ConvbenchError

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
POOLINGS = ("max", "avg", "none")


def activation(name: str) -> nn.Module:
    """An activation layer by name (relu | tanh | sigmoid | gelu)."""
    if name not in ACTIVATIONS:
        raise ConvbenchError(
            f"model.activation={name!r} is not known; choose one of {', '.join(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]()


def pooling(kind: str, size: int) -> nn.Module:
    """A subsampling layer: max or average pooling with window = stride = `size`, or none."""
    if kind == "max":
        return nn.MaxPool2d(size)
    if kind == "avg":
        return nn.AvgPool2d(size)
    if kind == "none":
        return nn.Identity()
    raise ConvbenchError(
        f"model.pooling={kind!r} is not known; choose one of {', '.join(POOLINGS)}."
    )


@torch.no_grad()
def flat_features(features: nn.Module, in_channels: int, image_size: int) -> int:
    """How many numbers `features` produces for one image (a dry run; works on the meta device)."""
    probe = torch.zeros(1, in_channels, image_size, image_size)
    try:
        return features(probe).numel()
    except RuntimeError as exc:
        raise ConvbenchError(
            f"the model's layers do not fit a {in_channels}x{image_size}x{image_size} input "
            f"({exc}). Use less stride/pooling, more padding, or a larger dataset.image_size."
        ) from None
