"""Models of a user's own that go wrong, reached by `model._target_=helpers.faultymodels.X`."""

from convbench.models.lenet import LeNet


class BrokenInit(LeNet):
    """A bug in the user's constructor (not a rejected argument): a ZeroDivisionError."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = 1 / 0


class PickyWidth(LeNet):
    """Rejects a bad argument the way torch and torchvision do: ValueError."""

    def __init__(self, *args, width: int = 1, **kwargs):
        if width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        super().__init__(*args, **kwargs)


class BrokenForward(LeNet):
    """A bug in the user's forward pass (an AttributeError), met by the first image through it."""

    def forward(self, x):
        return super().forward(x) * self.temperature
