"""What the benchmark scripts share (each runs as `python benchmarks/NAME.py`, so this folder is
on its import path)."""

from pathlib import Path

from convbench.config.compose import compose


def fashion_mnist_dir() -> Path:
    """Where an OS package puts Fashion-MNIST's files (Debian's dataset-fashion-mnist): the
    dataset config's `system_dirs`, the one place that names it."""
    return Path(compose(["dataset=fashionmnist"]).dataset.system_dirs[0])
