"""User-style models (reached by `model._target_`, vouched for by tests/helpers/conf) for tests
of stopping and resuming: one slow on purpose, so a test can send signals, SIGKILL or change the
process's limits while training (or testing) is surely in progress (sleeping changes no
numbers), one that stops itself at a chosen step."""

import os
import signal
import time
from pathlib import Path

from convbench.models.lenet import LeNet
from convbench.models.mlp import MLP


class SlowLeNet(LeNet):
    def __init__(self, *args, seconds_per_step: float = 0.03, seconds_per_eval_batch=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds_per_step = seconds_per_step
        self.seconds_per_eval_batch = seconds_per_eval_batch

    def forward(self, x):
        time.sleep(self.seconds_per_step if self.training else self.seconds_per_eval_batch)
        return super().forward(x)


class StopsItself(MLP):
    """An MLP with dropout (so the random state matters) that sends its own process SIGTERM
    during training step `stop_at_step`, once: the first process to get there leaves the file
    `stop_file`, and a process that finds it trains on. Stands for a stop signal from outside
    at a step of the test's choosing."""

    def __init__(self, *args, stop_at_step: int = 0, stop_file: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_at_step, self.stop_file, self.steps = stop_at_step, Path(stop_file), 0

    def forward(self, x):
        if self.training:
            self.steps += 1
            if self.steps == self.stop_at_step and not self.stop_file.exists():
                self.stop_file.write_text("stopped\n")
                os.kill(os.getpid(), signal.SIGTERM)
        return super().forward(x)
