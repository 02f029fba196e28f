"""The error policy of convbench, and the exit codes of its CLI.

Two kinds of error, never mixed:

- A user mistake is a `ConvbenchError`: a config value (a typo, a wrong type, a value out of
  range), a file (a missing or corrupt dataset or checkpoint, a checkpoint of another model), an
  argument a model's constructor rejects with `TypeError` or `ValueError`. The CLI prints its
  message as one paragraph (what is wrong, the valid choices, how to fix it), without a
  traceback, and exits with its `exit_code` (2 unless the class says otherwise).
- Anything else is a bug, in convbench or in the user's own code (a model class, say). It keeps
  its traceback, the CLI adds BUG_REPORT and exits 1.

Library code raises what fits where it is: the models raise `ValueError`, as torchvision's do;
the data and checkpoint readers raise `DatasetError`/`CheckpointError`, which carry the file's
name. Only the layer that knows what the user typed (convbench.run.build for constructors, the
commands for their arguments) turns a `ValueError` into a `ConvbenchError`.

Exit codes: 0 success; 1 a sweep with failed jobs, or a bug; 2 bad input; 3 interrupted by a
signal after saving last.pt (resume it); 4 the training diverged (a loss became NaN or
infinite, or grew beyond any sane scale); 5 the operating system
refused a write (a full disk, a file-size limit, a read-only folder, an I/O error): the previous
checkpoints are intact, resume once the disk is fixed; 6 a trial of a study stopped by its
pruner (`convbench tune`): a result, the trial's folder kept.
"""

EXIT_FAILED_JOBS = 1
EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 3
EXIT_DIVERGED = 4
EXIT_WRITE_FAILED = 5
EXIT_PRUNED = 6

BUG_REPORT = (
    "This is a bug, in convbench or in code it ran for you (your own model class, say), not a "
    "mistake in your input. If the traceback above points into convbench, please report it "
    "with the command you ran and that traceback."
)


class ConvbenchError(Exception):
    """A mistake in the user's input: the message says what is wrong, where, and how to fix it."""

    exit_code = EXIT_USER_ERROR


class DatasetError(ConvbenchError):
    """A dataset that cannot be found, or a dataset file that is missing, truncated or corrupt."""


class CheckpointError(ConvbenchError):
    """A checkpoint that is missing, corrupt, foreign, or built for another model."""


class Diverged(ConvbenchError):
    """The training diverged: a loss became NaN or infinite, or grew beyond any sane scale; the
    run stopped without saving the diverged weights and without calling itself finished."""

    exit_code = EXIT_DIVERGED


class WriteFailed(ConvbenchError):
    """The operating system refused a write of the run's files; what was written before is
    intact."""

    exit_code = EXIT_WRITE_FAILED


class RunInUse(ConvbenchError):
    """Another process holds the run folder's lock: it is training or resuming that run."""

    @classmethod
    def held_by(cls, run_dir, pid: str, host: str) -> "RunInUse":
        return cls(
            f"{run_dir} is in use: process {pid} on host {host} is training it. Two processes "
            "on one run would write the same checkpoints and TensorBoard curves, so this one "
            f"stops. Wait for it to end, or stop it (kill {pid} on {host}: it saves last.pt and "
            "exits 3), then run `convbench resume` again."
        )


class RunInterrupted(BaseException):
    """A stop signal was honoured: the current step finished and last.pt was written.

    A BaseException, so that Hydra's multirun stops instead of counting one failed job.
    """

    exit_code = EXIT_INTERRUPTED

    def __init__(self, signal_name: str, run_dir: str = "", saved: bool = True):
        super().__init__(signal_name)
        self.signal_name, self.run_dir = signal_name, run_dir
        self.saved = saved  # False: stopped before the first checkpoint, nothing to resume


class TrialPruned(Exception):
    """A study's pruner stopped this trial's run after an epoch (convbench.run.pruning): not an
    error and not an interruption, a result: the trial was worse than its peers at that epoch."""

    exit_code = EXIT_PRUNED

    def __init__(self, epoch: int, value: float, metric: str):
        super().__init__(f"pruned after epoch {epoch}: {metric} {value:.4f}")
        self.epoch, self.value, self.metric = epoch, value, metric
