"""An example of a model that lives outside convbench: any importable nn.Module will do.

convbench builds models with Hydra's `instantiate`, so a model is the dotted path of a class
(`_target_: mynets.TinyNet`) plus its constructor arguments. The dataset's geometry arrives as
`num_classes`, `in_channels` and `image_size` (interpolated from the dataset config); forward
returns logits.
"""

from torch import nn


class TinyNet(nn.Module):
    """Two 3x3 conv blocks, global average pooling and a linear classifier."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int = 16):
        super().__init__()
        # image_size is unused: global pooling makes the network size-agnostic. It is accepted
        # so the model fits convbench's usual constructor arguments.
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),  # [B, 2*width, H/2, W/2] -> [B, 2*width, 1, 1]
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, images):
        return self.classifier(self.features(images).flatten(1))  # [B, num_classes] logits
