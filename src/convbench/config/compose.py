"""Composing configs outside a run, and turning Hydra's config errors into one paragraph.

`compose(overrides)` gives the config that `convbench train OVERRIDES` would run, through Hydra's
compose API over the same conf/ folder and schema; `summary`, the tests and the benchmarks use it.
`describe_config_error` words a Hydra or OmegaConf error as one paragraph: what is wrong, the
valid choices or keys, a close match for a typo.
"""

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

from convbench.config import schema
from convbench.errors import ConvbenchError

HINT = " Run `convbench train --help` to see every group, option and key."


def config_dir() -> Path:
    """The folder holding `config.yaml` and the config groups.

    An installed wheel carries the configs inside the package (`convbench/conf`, see
    pyproject.toml); a source checkout or editable install keeps them at the repository root.
    """
    package = Path(__file__).resolve().parents[1]  # src/convbench, or site-packages/convbench
    packaged = package / "conf"
    if (packaged / "config.yaml").is_file():
        return packaged
    return package.parents[1] / "conf"


def quoted(value: str) -> str:
    """A value for Hydra's override grammar, single-quoted: a path may hold , = or spaces."""
    return "'" + value.replace("'", "\\'") + "'"


def search_path_override(extra_config_dir: str | Path, overrides: Sequence[str]) -> str:
    """`--config-dir DIR` for the compose API, which has no such flag: Hydra's search path.

    Raises ValueError when DIR is no folder or the overrides also set hydra.searchpath.
    """
    if any(override.startswith("hydra.searchpath=") for override in overrides):
        raise ValueError(
            "--config-dir DIR and hydra.searchpath=[...] both set the extra config folders; use "
            "one: hydra.searchpath=[file://DIR,...] takes several."
        )
    folder = Path(extra_config_dir).resolve()
    if not folder.is_dir():
        raise ValueError(f"--config-dir {extra_config_dir}: {folder} is not a folder.")
    return f"hydra.searchpath=[{quoted('file://' + str(folder))}]"


def compose(
    overrides: Sequence[str] = (),
    extra_config_dir: str | Path | None = None,
    *,
    with_hydra: bool = False,
):
    """The config `convbench train [--config-dir DIR] OVERRIDES` would run, without a run;
    `with_hydra` keeps Hydra's own node (`hydra.sweeper.params`, `hydra.run.dir`, ...).

    Hydra's and OmegaConf's exceptions propagate; `describe_config_error` words them.
    """

    schema.register()
    overrides = list(overrides)
    if extra_config_dir is not None:
        overrides = [search_path_override(extra_config_dir, overrides), *overrides]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=overrides, return_hydra_config=with_hydra)


def user_error_inside(exc: BaseException):
    """The ConvbenchError a config error wraps (a resolver reading a folder dataset raised it),
    or None."""

    seen = exc
    while seen is not None:
        if isinstance(seen, ConvbenchError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def describe_config_error(exc: BaseException, overrides: Sequence[str] = ()) -> str:
    """One paragraph from a Hydra/OmegaConf error: what is wrong, the valid choices, a fix."""

    inner = user_error_inside(exc)
    if inner is not None:
        return str(inner)

    if isinstance(exc, MissingConfigException) and exc.options is not None:
        return _unknown_option(exc) + HINT
    cause = exc.__cause__ or exc  # Hydra wraps OmegaConf's error; OmegaConf's own is bare
    full_key = getattr(cause, "full_key", None)
    if full_key and "not in" in str(cause):  # an unknown key (struct mode)
        return _unknown_key(full_key, overrides) + HINT
    if full_key:  # a wrong type or value, checked by the schema
        return f"{full_key}: {_first_lines(cause)}." + HINT
    return _first_lines(exc) + HINT


def _first_lines(exc: BaseException) -> str:
    """The message without OmegaConf's trailing full_key/object_type lines."""
    lines = [line.strip() for line in str(exc).splitlines()]
    keep = [
        line
        for line in lines
        if line and not re.match(r"(full_key|reference_type|object_type)", line)
    ]
    return " ".join(keep).rstrip(".")


def _unknown_option(exc) -> str:
    group, _, name = (exc.missing_cfg_file or "").rpartition("/")
    options = sorted(exc.options)
    close = difflib.get_close_matches(name, options, n=1)
    guess = f" Did you mean {group}={close[0]}?" if close else ""
    family, depth = (
        re.fullmatch(r"([a-z_]+?)-?(\d+)", name).groups()
        if re.fullmatch(r"[a-z_]+?-?\d+", name)
        else (None, None)
    )
    if family in options and _has_key(f"{group}={family}", f"{group}.depth"):
        guess = f" Did you mean {group}={family} {group}.depth={depth}?"  # model=resnet18
    return f"{group}={name} is not a known {group}: choose one of {', '.join(options)}.{guess}"


def _has_key(choice: str, key: str) -> bool:
    try:
        return OmegaConf.select(compose([choice]), key) is not None
    except Exception:  # a hint only
        return False


def _unknown_key(full_key: str, overrides: Sequence[str]) -> str:
    parent, _, name = full_key.rpartition(".")
    others = [o for o in overrides if not o.split("=")[0].endswith(full_key)]
    siblings = _keys_under(parent, others)
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
    where = parent or "the top level"
    message = f"{full_key} is not a config key: {where} has no key '{name}'."
    elsewhere = _keys_named(name) if not parent else []
    if close:
        message += f" Did you mean {parent + '.' if parent else ''}{close[0]}?"
    elif elsewhere:  # `epochs=3`: a key typed without its group
        message += f" Did you mean {' or '.join(elsewhere)}?"
    if siblings:
        message += f" Keys of {where}: {', '.join(siblings)}."
    return message


def _keys_named(name: str) -> list[str]:
    """The dotted keys of the default config whose last part is `name` (or close to it)."""
    try:
        flat = _leaves(OmegaConf.to_container(compose([]), resolve=False))
    except Exception:  # a hint only
        return []
    exact = [key for key in flat if key.rsplit(".", 1)[-1] == name]
    if exact:
        return exact
    last = {key.rsplit(".", 1)[-1]: key for key in flat}
    return [last[close] for close in difflib.get_close_matches(name, list(last), n=1, cutoff=0.8)]


def _leaves(node, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def _keys_under(parent: str, overrides: Sequence[str]) -> list[str]:
    """The keys at `parent` in the config composed with the other overrides (best effort: the
    overrides may hold the very mistake being described)."""

    group_choices = [o for o in overrides if "." not in o.split("=")[0]]
    for attempt in (overrides, group_choices, []):
        try:
            node = compose(attempt)
        except Exception:  # any failure only means fewer hints; the error itself is reported
            continue
        node = OmegaConf.select(node, parent) if parent else node
        return sorted(str(k) for k in node) if isinstance(node, DictConfig) else []
    return []
