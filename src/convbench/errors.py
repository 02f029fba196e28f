"""User-facing errors and the exit codes of the CLI.

A `ConvbenchError` is a mistake the user can fix (a bad override, a missing dataset file, a
checkpoint from another model). The CLI prints its message as one paragraph, without a
traceback, and exits with its `exit_code`. Anything else is a bug and keeps its traceback.

Exit codes: 0 success; 1 a sweep with failed jobs (or a bug); 2 bad input; 3 interrupted by a
signal after saving last.pt (resume it); 4 the loss became NaN/inf.
"""

EXIT_FAILED_JOBS = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 3
EXIT_NONFINITE = 4


class ConvbenchError(Exception):
    """A mistake in the user's input: the message says what is wrong, where, and how to fix it."""

    exit_code = EXIT_USER_ERROR


class DatasetError(ConvbenchError):
    """A dataset that cannot be found, or a dataset file that is missing, truncated or corrupt."""


class CheckpointError(ConvbenchError):
    """A checkpoint that is missing, corrupt, foreign, or built for another model."""


class NonFiniteLoss(ConvbenchError):
    """The loss became NaN or infinite; the run stopped without saving the diverged weights."""

    exit_code = EXIT_NONFINITE


class RunInterrupted(BaseException):
    """A stop signal was honoured: the current step finished and last.pt was written.

    A BaseException, so that Hydra's multirun stops instead of counting one failed job.
    """

    exit_code = EXIT_INTERRUPTED

    def __init__(self, signal_name: str, run_dir: str = ""):
        super().__init__(signal_name)
        self.signal_name, self.run_dir = signal_name, run_dir
