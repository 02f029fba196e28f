"""GoogLeNet, Inception v1 (Szegedy et al. 2015, "Going Deeper with Convolutions", CVPR).

A stem, nine Inception modules with the branch widths of the paper's Table 1 (`INCEPTION_V1`),
3x3/2 max pools between the module groups 3, 4 and 5, global average pooling, dropout and one
dense layer. Two choices follow torchvision rather than the paper, so that a 3x224x224,
1000-class net has torchvision's parameter count (googlenet(aux_logits=False), 6,624,904):

- `batch_norm: true` puts a batch norm after every conv (Inception v1 predates it; the paper's
  local response normalization is left out). `false` gives the paper's convs with bias.
- `wide_kernel: 3`: torchvision builds the branch Table 1 calls "5x5" with a 3x3 conv (a slip
  kept for its pretrained weights). `wide_kernel: 5` is the paper's layer.

Auxiliary classifiers (section 5) sit on modules 4a and 4d when `aux_heads: true` (off by
default). The contract: `model(x)` always returns the main logits, [batch, num_classes]. In
training mode with aux heads on, the forward pass also stores the two auxiliary logits in
`model.aux_outputs` (an empty tuple otherwise), and `model.aux_loss(loss_fn, labels)` gives the
paper's extra loss term, 0.3 x the sum of their losses, to add to the main loss. A training loop
that ignores them trains the main net only; the aux heads' weights then get no gradient.

Input geometry (`stem`): `imagenet` is the paper's 7x7/2 conv, 3x3/2 pool, 1x1 and 3x3 convs and
another 3x3/2 pool (224 -> 28 before module 3a); `small` keeps the three convs (the first one
3x3/1) and drops both pools, so 32x32 and 28x28 inputs reach module 3a whole, as CIFAR ports do.
`auto` takes `small` below 64x64 pixels. Pools round up (ceil mode), so 28 -> 14 -> 7.
"""

from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from convbench.models.layers import activation as make_activation
from convbench.models.layers import check_range, conv_bn, init_he, resolve_stem, scale_width


class Branches(NamedTuple):
    """One row of Table 1: the widths of an Inception module's four branches."""

    b1x1: int
    reduce3x3: int
    b3x3: int
    reduce5x5: int
    b5x5: int
    pool_proj: int


INCEPTION_V1: dict[str, Branches] = {
    "3a": Branches(64, 96, 128, 16, 32, 32),
    "3b": Branches(128, 128, 192, 32, 96, 64),
    "4a": Branches(192, 96, 208, 16, 48, 64),
    "4b": Branches(160, 112, 224, 24, 64, 64),
    "4c": Branches(128, 128, 256, 24, 64, 64),
    "4d": Branches(112, 144, 288, 32, 64, 64),
    "4e": Branches(256, 160, 320, 32, 128, 128),
    "5a": Branches(256, 160, 320, 32, 128, 128),
    "5b": Branches(384, 192, 384, 48, 128, 128),
}
POOL_AFTER = ("3b", "4e")  # a 3x3/2 max pool follows these modules
AUX_AFTER = ("4a", "4d")
AUX_LOSS_WEIGHT = 0.3  # section 5


class Inception(nn.Module):
    """Four branches on the same input, concatenated along channels (Fig. 2b)."""

    def __init__(self, in_channels: int, widths: Branches, *, unit, wide_kernel: int):
        super().__init__()
        self.branches = nn.ModuleList(
            [
                unit(in_channels, widths.b1x1, 1),
                nn.Sequential(
                    unit(in_channels, widths.reduce3x3, 1), unit(widths.reduce3x3, widths.b3x3, 3)
                ),
                nn.Sequential(
                    unit(in_channels, widths.reduce5x5, 1),
                    unit(widths.reduce5x5, widths.b5x5, wide_kernel),
                ),
                nn.Sequential(
                    nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                    unit(in_channels, widths.pool_proj, 1),
                ),
            ]
        )
        self.out_channels = widths.b1x1 + widths.b3x3 + widths.b5x5 + widths.pool_proj

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], dim=1)  # [B, out_channels, H, W]


def make_unit(in_channels, out_channels, kernel_size, *, stride=1, batch_norm, activation):
    """conv (+ batch norm) + activation: every conv of GoogLeNet is followed by a ReLU."""
    layers = conv_bn(in_channels, out_channels, kernel_size, stride=stride, batch_norm=batch_norm)
    return nn.Sequential(*layers, make_activation(activation))


def make_stem(kind: str, in_channels: int, *, widths: tuple[int, int, int], unit) -> nn.Sequential:
    first, reduce, out = widths
    if kind == "imagenet":
        return nn.Sequential(
            unit(in_channels, first, 7, stride=2),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            unit(first, reduce, 1),
            unit(reduce, out, 3),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
    return nn.Sequential(unit(in_channels, first, 3), unit(first, reduce, 1), unit(reduce, out, 3))


def make_aux_head(in_channels: int, num_classes: int, *, unit, activation: str, multiplier: float):
    """Section 5: average pool to 4x4, 1x1 conv (128), dense (1024), dropout 0.7, logits.
    The paper pools 5x5/3 (4x4 from a 14x14 map); the adaptive pool gives 4x4 on any input."""
    conv_width, dense_width = scale_width(128, multiplier), scale_width(1024, multiplier)
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(4),
        unit(in_channels, conv_width, 1),
        nn.Flatten(),
        nn.Linear(conv_width * 16, dense_width),
        make_activation(activation),
        nn.Dropout(0.7),
        nn.Linear(dense_width, num_classes),
    )


class GoogLeNet(nn.Module):
    """stem -> Inception 3a-3b -> pool -> 4a-4e -> pool -> 5a-5b -> average pool -> dropout ->
    logits. See the module docstring for the knobs and the auxiliary-head contract.
    `width_multiplier` scales every conv width (Table 1 and the stem)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        *,
        stem: str = "auto",
        aux_heads: bool = False,
        batch_norm: bool = True,
        wide_kernel: int = 3,
        activation: str = "relu",
        dropout: float = 0.4,
        width_multiplier: float = 1.0,
    ):
        super().__init__()
        check_range("model.dropout", dropout, low=0, high=1)
        if wide_kernel not in (3, 5):
            raise ValueError(
                f"model.wide_kernel={wide_kernel} must be 3 (torchvision) or 5 (paper)."
            )
        unit = partial(make_unit, batch_norm=batch_norm, activation=activation)
        stem_widths = tuple(scale_width(width, width_multiplier) for width in (64, 64, 192))
        self.stem = make_stem(
            resolve_stem(stem, image_size), in_channels, widths=stem_widths, unit=unit
        )
        self.body = nn.ModuleDict()
        self.aux_heads = nn.ModuleDict()
        channels = stem_widths[-1]
        for name, widths in INCEPTION_V1.items():
            scaled = Branches(*(scale_width(width, width_multiplier) for width in widths))
            module = Inception(channels, scaled, unit=unit, wide_kernel=wide_kernel)
            self.body[name] = module
            channels = module.out_channels
            if aux_heads and name in AUX_AFTER:
                self.aux_heads[name] = make_aux_head(
                    channels,
                    num_classes,
                    unit=unit,
                    activation=activation,
                    multiplier=width_multiplier,
                )
            if name in POOL_AFTER:
                self.body[f"pool{name}"] = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels, num_classes),
        )
        self.aux_outputs: tuple[torch.Tensor, ...] = ()
        init_he(self)

    def forward(self, x):
        x = self.stem(x)
        aux_outputs = []
        for name, module in self.body.items():
            x = module(x)
            if self.training and name in self.aux_heads:
                aux_outputs.append(self.aux_heads[name](x))
        self.aux_outputs = tuple(aux_outputs)
        return self.head(x)

    def aux_loss(self, loss_fn, labels: torch.Tensor) -> torch.Tensor | float:
        """0.3 x the sum of the aux heads' losses in the last forward pass (0 without any)."""
        return AUX_LOSS_WEIGHT * sum(loss_fn(logits, labels) for logits in self.aux_outputs)
