"""A user-style model (reached by `model._target_`) that is slow on purpose, so a test can send
signals or SIGKILL while training is surely in progress. Sleeping changes no numbers."""

import time

from convbench.models.lenet import LeNet


class SlowLeNet(LeNet):
    def __init__(self, *args, seconds_per_step: float = 0.03, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds_per_step = seconds_per_step

    def forward(self, x):
        if self.training:
            time.sleep(self.seconds_per_step)
        return super().forward(x)
