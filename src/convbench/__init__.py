"""convbench: a command-line experiment runner for convolutional networks.

Importing this package is cheap and has no side effects: torch, Hydra and TensorBoard are imported
only by the commands that need them, so `convbench --help` starts in a fraction of a second.
"""

__version__ = "0.1.0"
