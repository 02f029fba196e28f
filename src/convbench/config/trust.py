"""Which code a config read back from disk may name.

A config typed on the command line, or composed from config folders given on it, is the user's
own: its `_target_`s are what the user asked to run. A config read back from a run folder, a
checkpoint or a sweep's record is not: a folder shared by someone else is as untrusted as a
pickle, and a `_target_` in it is a function call waiting to happen (`builtins.open`,
`shutil.copyfile`, ...). So before such a config builds anything, every `_target_` in its model,
optimizer and scheduler (nested ones included) must be

- one of convbench's models (a `torch.nn.Module` subclass under `convbench.models`), or one of
  torch's optimizers or learning-rate schedulers (subclasses of their base classes under
  `torch.optim`), or
- named as a `_target_` by a YAML file in a config folder the user passed on this command line
  (`--config-dir DIR`): the user vouches for their own classes that way.

Only names that pass the first rule's prefix test are imported to check their class; a name
from the user's folders is imported when it is built, as in `train`. Anything else is refused
by name before any import or call (`UntrustedTarget`, exit 2).
"""

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from convbench.errors import ConvbenchError

# group -> (the modules its built-in targets live under, the dotted name of their base classes)
# (a class's __module__ must start with the prefix too: torch.nn.Linear reached as
# convbench.models.layers.nn.Linear is not one of convbench's models)
BUILT_IN = {
    "model": ("convbench.models.", ("torch.nn.Module",)),
    "optimizer": ("torch.optim.", ("torch.optim.Optimizer",)),
    "scheduler": (
        "torch.optim.lr_scheduler.",
        ("torch.optim.lr_scheduler.LRScheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau"),
    ),
}
BUILT_GROUPS = tuple(BUILT_IN)


class UntrustedTarget(ConvbenchError):
    """A config read from disk names code that neither convbench nor the user vouched for."""


@dataclass(frozen=True)
class Trust:
    """The `_target_` names the user vouched for on this command line, beyond the built-ins."""

    targets: frozenset[str] = frozenset()
    folders: tuple[str, ...] = ()  # the config folders they came from, for the message

    @classmethod
    def of_folders(cls, folders: Iterable[str | Path]) -> "Trust":
        """Every `_target_` named by a YAML file under `folders` (the user's --config-dir)."""

        folders = tuple(str(Path(folder).resolve()) for folder in folders)
        found: set[str] = set()
        for folder in folders:
            for path in sorted(Path(folder).rglob("*.yaml")):
                try:
                    found |= set(targets_in(yaml.safe_load(path.read_text())))
                except (OSError, yaml.YAMLError):
                    continue  # a file Hydra would refuse anyway; it vouches for nothing
        return cls(frozenset(found), folders)

    @classmethod
    def of_config(cls, config) -> "Trust":
        """Every `_target_` of a config the user composed on this command line (a sweep job's
        own config, say), so that a checkpoint found in its folder may name the same."""

        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=False)
        return cls(frozenset(targets_in(config)))

    def __or__(self, other: "Trust") -> "Trust":
        return Trust(self.targets | other.targets, self.folders + other.folders)


def targets_in(node) -> Iterator[str]:
    """Every `_target_` string anywhere in a plain config (dicts and lists, any depth)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                yield str(value)
            else:
                yield from targets_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from targets_in(item)


def check_config(config: dict, trust: Trust, source: str) -> None:
    """Refuse `config` (read from `source`, a file) when its model, optimizer or scheduler names
    code that is neither built in nor vouched for by `trust`."""
    if not isinstance(config, dict):
        raise UntrustedTarget(f"{source} holds no config (found {type(config).__name__}).")
    for group in BUILT_GROUPS:
        for target in targets_in(config.get(group)):
            if target not in trust.targets and not is_built_in(group, target):
                raise _refused(group, target, trust=trust, source=source)


def check_target(group: str, target: str, *, trust: Trust, source: str) -> None:
    """`check_config` for one target of `group` (a sweep's recorded override, say)."""
    if target not in trust.targets and not is_built_in(group, target):
        raise _refused(group, target, trust=trust, source=source)


def is_built_in(group: str, target: str) -> bool:
    """Whether `target` is a class of `group`'s own modules with the right base class. Nothing
    outside those modules is imported to find out."""
    prefix, bases = BUILT_IN[group]
    if not target.startswith(prefix) or not target.replace(".", "").replace("_", "").isalnum():
        return False
    found = _locate(target)
    wanted = tuple(filter(None, map(_locate, bases)))
    return (
        isinstance(found, type)
        and f"{found.__module__}.".startswith(prefix)  # defined there, not imported into it
        and bool(wanted)
        and issubclass(found, wanted)
    )


def _locate(dotted: str):
    """The object a dotted name ends at (importing the longest module prefix), or None."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name, None)
            if found is None:
                return None
        return found
    return None


def _refused(group: str, target: str, *, trust: Trust, source: str) -> UntrustedTarget:
    vouched = f" (the config folders given, {', '.join(trust.folders)}, do not name it)"
    return UntrustedTarget(
        f"{source} names {group}._target_={target}, which convbench will not run from a file: "
        f"a config read back from a run folder, checkpoint or sweep may name only convbench's "
        f"own models (convbench.models.*) and torch's optimizers and schedulers, since a shared "
        f"folder is as untrusted as a pickle{vouched if trust.folders else ''}. Nothing was "
        f"run or written. If {target} is your own class and you trust this folder, pass the "
        "config folder whose YAML names it: --config-dir DIR."
    )
