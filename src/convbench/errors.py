"""User-facing errors.

A `ConvbenchError` is a mistake the user can fix (a bad override, a missing dataset file, a
checkpoint from another model). The CLI prints its message as one paragraph, without a
traceback, and exits with `EXIT_USER_ERROR`. Anything else is a bug and keeps its traceback.
"""

EXIT_USER_ERROR = 2


class ConvbenchError(Exception):
    """A mistake in the user's input: the message says what is wrong, where, and how to fix it."""


class DatasetError(ConvbenchError):
    """A dataset that cannot be found, or a dataset file that is missing, truncated or corrupt."""


class CheckpointError(ConvbenchError):
    """A checkpoint that is missing, corrupt, foreign, or built for another model."""
