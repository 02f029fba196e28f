"""The dense baseline the lecture argues against: flatten the image, then fully connected layers."""

from collections.abc import Sequence

from torch import nn

from convbench.models.layers import activation as make_activation
from convbench.models.layers import check_range


class MLP(nn.Module):
    """Flatten -> [Linear -> activation -> dropout] x len(hidden) -> Linear(num_classes)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        *,
        hidden: Sequence[int] = (512, 256),
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        check_range("model.hidden", list(hidden), low=1)
        check_range("model.dropout", dropout, low=0, high=1)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for size in hidden:
            layers += [nn.Linear(width, size), make_activation(activation)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
