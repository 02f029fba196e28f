"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), with the lecture's conv options exposed."""

from collections.abc import Sequence

import torch.nn.functional as F
from torch import nn

from convbench.models.layers import activation as make_activation
from convbench.models.layers import check_range, flat_features
from convbench.models.layers import pooling as make_pooling

HEADS = ("fc", "gap")


class LeNet(nn.Module):
    """conv(channels[0]) - pool - conv(channels[1]) - pool - fc(fc[0]) - fc(fc[1]) - fc(classes).

    `padding`, `stride`, `pooling` (max | avg | none) and `activation` apply to every conv stage;
    the classifier's input size follows from them. `pad_input_to=32` zero-pads smaller inputs to
    32x32 as the paper did for MNIST, so 28x28 and 32x32 inputs give the same 61,706-parameter
    network; None feeds images as they are.

    `head="gap"` replaces the dense classifier by global average pooling over the last conv
    stage and one linear layer to the classes (Lin, Chen, Yan 2013, "Network in Network"): the
    head then sees no position at all, which is what the shift experiment compares. `fc` is
    ignored with it.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        *,
        channels: Sequence[int] = (6, 16),
        fc: Sequence[int] = (120, 84),
        kernel_size: int = 5,
        padding: int = 0,
        stride: int = 1,
        pooling: str = "max",
        pool_size: int = 2,
        activation: str = "relu",
        pad_input_to: int | None = 32,
        head: str = "fc",
    ):
        super().__init__()
        for name, values, low in (
            ("channels", channels, 1),
            ("fc", fc, 1),
            ("kernel_size", kernel_size, 1),
            ("padding", padding, 0),
            ("stride", stride, 1),
            ("pool_size", pool_size, 1),
            ("pad_input_to", 32 if pad_input_to is None else pad_input_to, 1),
        ):
            check_range(f"model.{name}", values, low=low)
        if head not in HEADS:
            raise ValueError(f"model.head={head!r} is not known; choose one of {', '.join(HEADS)}.")
        self.input_padding = max(0, (pad_input_to or 0) - image_size) // 2
        stages: list[nn.Module] = []
        width = in_channels
        for out_channels in channels:
            stages += [
                nn.Conv2d(width, out_channels, kernel_size, stride=stride, padding=padding),
                make_activation(activation),
                make_pooling(pooling, pool_size),
            ]
            width = out_channels
        self.features = nn.Sequential(*stages)
        padded_size = image_size + 2 * self.input_padding
        features = flat_features(self.features, in_channels, padded_size)  # fails when too small
        if head == "gap":
            self.classifier = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)
            )
            return
        classifier: list[nn.Module] = [nn.Flatten()]
        width = features
        for size in fc:
            classifier += [nn.Linear(width, size), make_activation(activation)]
            width = size
        classifier.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*classifier)

    def forward(self, x):
        if self.input_padding:
            x = F.pad(x, (self.input_padding,) * 4)
        return self.classifier(self.features(x))
