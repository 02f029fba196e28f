"""Small building blocks shared by the model families."""

import math
from collections.abc import Sequence

import torch
from torch import nn


def check_range(name: str, values, *, low: float, high: float | None = None) -> None:
    """Raise ValueError unless `values` (a number or a list of them) lie in [low, high]."""
    for value in values if isinstance(values, Sequence) else [values]:
        if isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{name}={values} is not a finite number.")
        if value < low or (high is not None and value > high):
            allowed = f">= {low}" + (f" and <= {high}" if high is not None else "")
            raise ValueError(f"{name}={values} is out of range: it must be {allowed}.")


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
POOLINGS = ("max", "avg", "none")


def activation(name: str) -> nn.Module:
    """An activation layer by name (relu | tanh | sigmoid | gelu)."""
    if name not in ACTIVATIONS:
        raise ValueError(
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
    raise ValueError(f"model.pooling={kind!r} is not known; choose one of {', '.join(POOLINGS)}.")


@torch.no_grad()
def flat_features(features: nn.Module, in_channels: int, image_size: int) -> int:
    """How many numbers `features` produces for one image (a dry run; works on the meta device)."""
    probe = torch.zeros(1, in_channels, image_size, image_size)
    try:
        return features(probe).numel()
    except RuntimeError as exc:
        raise ValueError(
            f"the model's layers do not fit a {in_channels}x{image_size}x{image_size} input "
            f"({exc}). Use less stride/pooling, more padding, or a larger dataset.image_size."
        ) from None


# Below this side the ImageNet stems (AlexNet's 11x11/4 conv, ResNet's and GoogLeNet's 7x7/2 conv
# plus max pool) would shrink the image to a few pixels before the first real stage.
SMALL_IMAGE_LIMIT = 64
STEMS = ("auto", "imagenet", "small")


def resolve_stem(stem: str, image_size: int) -> str:
    """`imagenet` or `small`; `auto` takes `small` below 64x64 pixels and `imagenet` from there."""
    if stem not in STEMS:
        raise ValueError(f"model.stem={stem!r} is not known; choose one of {', '.join(STEMS)}.")
    if stem == "auto":
        return "small" if image_size < SMALL_IMAGE_LIMIT else "imagenet"
    return stem


def scale_width(width: int, multiplier: float) -> int:
    """A layer width times `model.width_multiplier`, rounded, at least 1."""
    if not math.isfinite(multiplier) or multiplier <= 0:
        raise ValueError(f"model.width_multiplier={multiplier} must be a positive number.")
    return max(1, round(width * multiplier))


def head_pool_size(pool_size: int | str, reference: int, feature_side: int) -> int:
    """The side of the adaptive average pool in front of a dense classifier (AlexNet, VGG).

    An integer is used as given. `auto` is `reference` (torchvision's 6 or 7) capped at the side of
    the feature map: the ImageNet-shaped net is unchanged, and on small images the pool never
    copies one pixel into many (which would only widen the first dense layer).
    """
    if pool_size == "auto":
        return min(reference, feature_side)
    if isinstance(pool_size, int) and not isinstance(pool_size, bool) and pool_size >= 1:
        return pool_size
    raise ValueError(f"model.pool_size={pool_size!r} must be a positive integer or 'auto'.")


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    batch_norm: bool = True,
) -> list[nn.Module]:
    """A 'same'-padded conv and its batch norm (Ioffe & Szegedy 2015); the conv drops its bias
    when a batch norm follows (the norm's shift replaces it). No batch norm: a conv with bias."""
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=not batch_norm,
    )
    return [conv, nn.BatchNorm2d(out_channels)] if batch_norm else [conv]


def init_he(model: nn.Module) -> None:
    """He et al. 2015 ("Delving Deep into Rectifiers") normal init for every conv, zero conv
    biases, batch norms as identity. Deep nets without it (VGG-19, plain ResNets) barely train."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
