"""VGG (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR).

`depth` picks a column of the paper's Table 1 (11 = A, 13 = B, 16 = D, 19 = E): stacks of 3x3
convs (stride 1, padding 1) between 2x2 max pools, then three dense layers. `batch_norm=True`
puts a batch norm after every conv (not in the paper; torchvision's vggNN_bn). On a 3x224x224,
1000-class input the parameter counts equal torchvision's vggNN and vggNN_bn.

Input geometry. The five pools divide the side by 32: 224 -> 7, 32 -> 1. The pools round odd
sides up (ceil mode) so that 28x28 inputs fit too (28 -> 14 -> 7 -> 4 -> 2 -> 1); on any side that
is a multiple of 32 that changes nothing. Before the classifier sits torchvision's adaptive
average pool to 7x7. With `pool_size: auto` its side is 7 capped at the feature map's side: a
224x224 input gives torchvision's net (a 25,088-wide first dense layer), a 32x32 input a 1x1 map
and a 512-wide first dense layer. `pool_size: 7` is torchvision on every input: on a 1x1 map it
copies each value 49 times and the first dense layer grows by 100M parameters that learn nothing
new.
"""

from torch import nn

from convbench.models.layers import activation as make_activation
from convbench.models.layers import check_range, head_pool_size, init_he, scale_width

M = "M"  # a 2x2/2 max pool; every other entry is the width of a 3x3 conv
STAGE_WIDTHS = (64, 128, 256, 512, 512)
# The paper's table 1 (configurations A, B, D, E): 3x3 convs per stage, each stage ending in a
# max pool.
CONVS_PER_STAGE = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}
VARIANTS: dict[int, tuple[int | str, ...]] = {
    depth: tuple(
        entry
        for width, convs in zip(STAGE_WIDTHS, stages, strict=True)
        for entry in (*[width] * convs, M)
    )
    for depth, stages in CONVS_PER_STAGE.items()
}
TORCHVISION_POOL_SIZE = 7


def make_features(
    layout, in_channels: int, *, batch_norm: bool, activation: str, multiplier: float
):
    """The conv/pool stack of one Table 1 column; returns (layers, output channels)."""
    layers: list[nn.Module] = []
    channels = in_channels
    for entry in layout:
        if entry == M:
            layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
            continue
        width = scale_width(entry, multiplier)
        # torchvision's _bn nets keep the conv bias before the norm; so do we, for equal counts.
        layers.append(nn.Conv2d(channels, width, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(make_activation(activation))
        channels = width
    return nn.Sequential(*layers), channels


class VGG(nn.Module):
    """Table 1 column `depth` -> adaptive average pool -> dense(hidden) -> dense(hidden) -> logits.

    The dense layers are followed by the activation and dropout (section 3.1: dropout 0.5 on the
    first two). `hidden` is their width (4096 in the paper), `width_multiplier` scales the conv
    widths, `pool_size` is explained in the module docstring.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        *,
        depth: int = 16,
        batch_norm: bool = False,
        activation: str = "relu",
        hidden: int = 4096,
        dropout: float = 0.5,
        pool_size: int | str = "auto",
        width_multiplier: float = 1.0,
    ):
        super().__init__()
        check_range("model.hidden", hidden, low=1)
        check_range("model.dropout", dropout, low=0, high=1)
        if depth not in VARIANTS:
            raise ValueError(
                f"model.depth={depth} is not a VGG; choose one of {', '.join(map(str, VARIANTS))}."
            )
        layout = VARIANTS[depth]
        self.features, channels = make_features(
            layout,
            in_channels,
            batch_norm=batch_norm,
            activation=activation,
            multiplier=width_multiplier,
        )
        feature_side = image_size
        for _ in range(layout.count(M)):
            feature_side = -(-feature_side // 2)  # ceil mode pools
        pool_side = head_pool_size(pool_size, TORCHVISION_POOL_SIZE, feature_side)
        self.pool = nn.AdaptiveAvgPool2d(pool_side)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * pool_side * pool_side, hidden),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        # Section 3.1 trained A first and copied its layers into deeper nets; He et al. 2015
        # showed that their initialization trains the deep columns from scratch.
        init_he(self.features)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))
