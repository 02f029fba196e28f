"""ResNet and its plain twin (He, Zhang, Ren, Sun 2016, "Deep Residual Learning for Image
Recognition", CVPR).

`depth` picks a row of `VARIANTS`, and the row picks the family:

- 18, 34, 50, 101, 152: the ImageNet nets of Table 1. Four stages of 64/128/256/512 channels,
  basic blocks (two 3x3 convs) or bottleneck blocks (1x1, 3x3, 1x1 with 4x wider output).
  Shortcuts that change shape are 1x1 projections (option B, section 3.3), as torchvision has
  them; on a 3x224x224, 1000-class input the parameter counts equal torchvision's resnetNN.
  Bottlenecks stride in the 3x3 conv, not the first 1x1 ("ResNet v1.5", as torchvision): the
  same parameters, slightly better accuracy.
- 20, 32, 44, 56, 110, 1202: the CIFAR nets of section 4.2. A 3x3 conv, then 3 stages of n basic
  blocks on 16/32/64 channels (6n+2 layers), global average pooling, one dense layer. Shortcuts
  are identities; where the shape changes they subsample by 2 and pad the new channels with
  zeros (option A, as the paper used on CIFAR), so they have no parameters.

`residual=False` removes every shortcut: the "plain" nets the paper compares against (Fig. 4 and
Fig. 6). Plain nets have exactly the parameters of option-A ResNets; against option B they lack
only the 1x1 projections.

`zero_init_residual=True` starts the scale of each residual body's last batch norm at zero
(Goyal et al. 2017, "Accurate, Large Minibatch SGD", section 5.1; torchvision's option of the
same name): every block then begins as its shortcut, and a deep ResNet starts training as a
shallow one instead of adding up the output of every block at initialization.

Input geometry (`stem`): `imagenet` is the paper's 7x7/2 conv and 3x3/2 max pool (a 4x smaller
map before stage 1); `small` is one 3x3/1 conv with no pool, as the CIFAR nets have it. `auto`
takes `small` below 64x64 pixels, so every depth runs on 28x28, 32x32 and 224x224 inputs; the
CIFAR depths on 224x224 inputs get the ImageNet stem with their 16 channels.
"""

from typing import NamedTuple

import torch.nn.functional as F
from torch import nn

from convbench.models.layers import activation as make_activation
from convbench.models.layers import conv_bn, init_he, resolve_stem, scale_width


class Variant(NamedTuple):
    block: str  # "basic" or "bottleneck"
    blocks_per_stage: tuple[int, ...]
    widths: tuple[int, ...]  # the 3x3 convs' width per stage (bottlenecks output 4x this)
    shortcut: str  # the paper's choice for this family: "A" (zero padding) or "B" (projection)


IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)
VARIANTS: dict[int, Variant] = {
    18: Variant("basic", (2, 2, 2, 2), IMAGENET_WIDTHS, "B"),
    34: Variant("basic", (3, 4, 6, 3), IMAGENET_WIDTHS, "B"),
    50: Variant("bottleneck", (3, 4, 6, 3), IMAGENET_WIDTHS, "B"),
    101: Variant("bottleneck", (3, 4, 23, 3), IMAGENET_WIDTHS, "B"),
    152: Variant("bottleneck", (3, 8, 36, 3), IMAGENET_WIDTHS, "B"),
    # Section 4.2: depth 6n + 2 with n blocks per stage.
    **{6 * n + 2: Variant("basic", (n, n, n), CIFAR_WIDTHS, "A") for n in (3, 5, 7, 9, 18, 200)},
}
EXPANSION = {"basic": 1, "bottleneck": 4}
SHORTCUTS = ("auto", "A", "B")


class ZeroPadShortcut(nn.Module):
    """Option A: the identity read on every `stride`-th pixel, the new channels zero."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # [B, C + extra, H', W']


class Block(nn.Module):
    """activation(body(x) + shortcut(x)) (Fig. 2); a plain block has no shortcut (Fig. 3 middle)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None, activation: str):
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.activation = make_activation(activation)

    def forward(self, x):
        out = self.body(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.activation(out)


def block_body(kind: str, in_channels: int, width: int, *, stride: int, activation: str):
    """Fig. 5: basic = 3x3, 3x3; bottleneck = 1x1 reduce, 3x3, 1x1 expand. No final activation."""
    if kind == "basic":
        layers = [
            *conv_bn(in_channels, width, 3, stride=stride),
            make_activation(activation),
            *conv_bn(width, width, 3),
        ]
    else:
        layers = [
            *conv_bn(in_channels, width, 1),
            make_activation(activation),
            *conv_bn(width, width, 3, stride=stride),
            make_activation(activation),
            *conv_bn(width, width * EXPANSION[kind], 1),
        ]
    return nn.Sequential(*layers)


def make_shortcut(option: str, in_channels: int, out_channels: int, *, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if option == "A":
        return ZeroPadShortcut(stride, out_channels - in_channels)
    return nn.Sequential(*conv_bn(in_channels, out_channels, 1, stride=stride))


def make_stem(kind: str, in_channels: int, *, width: int, activation: str) -> nn.Sequential:
    if kind == "imagenet":
        return nn.Sequential(
            *conv_bn(in_channels, width, 7, stride=2),
            make_activation(activation),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
    return nn.Sequential(*conv_bn(in_channels, width, 3), make_activation(activation))


def lookup(depth: int, shortcut: str) -> tuple[Variant, str]:
    if depth not in VARIANTS:
        raise ValueError(
            f"model.depth={depth} is not a ResNet; choose one of {', '.join(map(str, VARIANTS))} "
            "(18-152: ImageNet nets, 20-1202: CIFAR nets)."
        )
    if shortcut not in SHORTCUTS:
        raise ValueError(
            f"model.shortcut={shortcut!r} is not known; choose one of {', '.join(SHORTCUTS)}."
        )
    variant = VARIANTS[depth]
    return variant, variant.shortcut if shortcut == "auto" else shortcut


class ResNet(nn.Module):
    """stem -> stages of blocks (stride 2 in the first block of every stage but the first)
    -> global average pool -> dense layer. See the module docstring for the variants and knobs.

    `residual`: False builds the plain net. `shortcut`: auto (the family's choice: A for CIFAR
    depths, B for ImageNet depths), A or B. `width_multiplier` scales every stage's width.
    `zero_init_residual`: each block's body starts at zero output (module docstring); it needs
    the shortcuts, as a plain net's blocks would start at zero with nothing beside them.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        *,
        depth: int = 20,
        residual: bool = True,
        shortcut: str = "auto",
        stem: str = "auto",
        activation: str = "relu",
        width_multiplier: float = 1.0,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if zero_init_residual and not residual:
            raise ValueError(
                "model.zero_init_residual=true needs model.residual=true: it zeroes each block's "
                "body so that the block starts as its shortcut, and a plain net has none."
            )
        variant, shortcut = lookup(depth, shortcut)
        widths = [scale_width(width, width_multiplier) for width in variant.widths]
        self.stem = make_stem(
            resolve_stem(stem, image_size), in_channels, width=widths[0], activation=activation
        )
        blocks: list[nn.Module] = []
        channels = widths[0]
        for stage, (width, count) in enumerate(zip(widths, variant.blocks_per_stage, strict=True)):
            out_channels = width * EXPANSION[variant.block]
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                body = block_body(
                    variant.block, channels, width, stride=stride, activation=activation
                )
                skip = (
                    make_shortcut(shortcut, channels, out_channels, stride=stride)
                    if residual
                    else None
                )
                blocks.append(Block(body, skip, activation))
                channels = out_channels
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
        )
        init_he(self)
        if zero_init_residual:
            for block in blocks:
                last_norm = [m for m in block.body if isinstance(m, nn.BatchNorm2d)][-1]
                nn.init.zeros_(last_norm.weight)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))
