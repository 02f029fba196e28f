"""AlexNet (Krizhevsky, Sutskever, Hinton 2012, "ImageNet Classification with Deep Convolutional
Neural Networks", NeurIPS), in the single-tower form torchvision builds.

The paper split its 96/256/384/384/256 filters over two GPUs; torchvision (and this file) follow
Krizhevsky's "One weird trick" (2014) single-GPU widths 64/192/384/256/256. Five convs with
ReLU, overlapping 3x3/2 max pools after convs 1, 2 and 5 (section 3.4), an adaptive average
pool to 6x6, then three dense layers with dropout 0.5 in front of the first two (section 4.2).
The paper's local response normalization is left out, as in torchvision. On a 3x224x224,
1000-class input the parameter count equals torchvision's alexnet (61,100,840).

Input geometry (`stem`): `imagenet` is the paper's 11x11/4 first conv; `small` is a 3x3/1 conv
(same width), as CIFAR ports do, since an 11x11/4 conv and three 3x3/2 pools leave nothing of a
32x32 image. `auto` takes `small` below 64x64 pixels: 32x32 ends in a 3x3 map, 28x28 in 2x2.
`pool_size: auto` is torchvision's 6 capped at that side, so small images get a 2,304- (32x32) or
1,024-wide (28x28) first dense layer instead of 6x6 copies of a few pixels; `pool_size: 6` is
torchvision on every input.
"""

import math
from typing import NamedTuple

from torch import nn

from convbench.models.layers import activation as make_activation
from convbench.models.layers import (
    check_range,
    flat_features,
    head_pool_size,
    resolve_stem,
    scale_width,
)


class ConvSpec(NamedTuple):
    width: int
    kernel: int
    stride: int
    padding: int
    pool: bool  # followed by an overlapping 3x3/2 max pool


CONVS = (
    ConvSpec(64, 11, 4, 2, True),
    ConvSpec(192, 5, 1, 2, True),
    ConvSpec(384, 3, 1, 1, False),
    ConvSpec(256, 3, 1, 1, False),
    ConvSpec(256, 3, 1, 1, True),
)
SMALL_STEM = ConvSpec(64, 3, 1, 1, True)
TORCHVISION_POOL_SIZE = 6


class AlexNet(nn.Module):
    """5 convs -> adaptive average pool -> dropout, dense(hidden) -> dropout, dense(hidden) ->
    logits. `hidden` is the dense width (4096 in the paper); `width_multiplier` scales the convs.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        *,
        stem: str = "auto",
        activation: str = "relu",
        hidden: int = 4096,
        dropout: float = 0.5,
        pool_size: int | str = "auto",
        width_multiplier: float = 1.0,
    ):
        super().__init__()
        check_range("model.hidden", hidden, low=1)
        check_range("model.dropout", dropout, low=0, high=1)
        specs = CONVS if resolve_stem(stem, image_size) == "imagenet" else (SMALL_STEM, *CONVS[1:])
        layers: list[nn.Module] = []
        channels = in_channels
        for spec in specs:
            width = scale_width(spec.width, width_multiplier)
            layers.append(nn.Conv2d(channels, width, spec.kernel, spec.stride, spec.padding))
            layers.append(make_activation(activation))
            if spec.pool:
                layers.append(nn.MaxPool2d(3, stride=2))
            channels = width
        self.features = nn.Sequential(*layers)
        # The dry run gives channels * side * side numbers for one image.
        feature_side = math.isqrt(flat_features(self.features, in_channels, image_size) // channels)
        pool_side = head_pool_size(pool_size, TORCHVISION_POOL_SIZE, feature_side)
        self.pool = nn.AdaptiveAvgPool2d(pool_side)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * pool_side * pool_side, hidden),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            make_activation(activation),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))
