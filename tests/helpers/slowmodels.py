"""A user-style model (reached by `model._target_`) that is slow on purpose, so a test can send
signals, SIGKILL or change the process's limits while training (or testing) is surely in
progress. Sleeping changes no numbers."""

import time

from convbench.models.lenet import LeNet


class SlowLeNet(LeNet):
    def __init__(self, *args, seconds_per_step: float = 0.03, seconds_per_eval_batch=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds_per_step = seconds_per_step
        self.seconds_per_eval_batch = seconds_per_eval_batch

    def forward(self, x):
        time.sleep(self.seconds_per_step if self.training else self.seconds_per_eval_batch)
        return super().forward(x)
