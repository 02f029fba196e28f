"""Composed configs for tests that compose the same overrides many times.

Hydra composes a config in about 0.2 s, mostly in OmegaConf's merges, and the in-process tier
composes hundreds. `composed` composes each distinct list of overrides once and hands every
caller its own deep copy, so a test may change what it gets. Not for configs whose composition
reads files that a test writes (dataset=imagefolder reads its folder).
"""

import copy
import functools

from omegaconf import DictConfig

from convbench.config.compose import compose

# The model families, one shipped option each (conf/model/ also holds LeNet's variants).
FAMILIES = ["mlp", "lenet", "alexnet", "vgg", "googlenet", "resnet", "plainnet"]

# Overrides that keep every layer of a family and cut its widths: a model as the family builds
# it, at a fraction of the compute (for checks of structure, not of what the widths learn).
NARROW = {
    "alexnet": ["model.hidden=256"],
    "googlenet": ["model.width_multiplier=0.25"],
    "mlp": ["model.hidden=[128]"],
    "vgg": ["model.depth=11", "model.width_multiplier=0.25", "model.hidden=256"],
}


@functools.cache
def _composed(overrides: tuple[str, ...]) -> DictConfig:
    return compose(overrides)


def composed(overrides) -> DictConfig:
    """compose(overrides), a fresh copy each call."""
    return copy.deepcopy(_composed(tuple(overrides)))
