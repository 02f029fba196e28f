"""`convbench train` as a real Hydra application.

`run_train` runs the `@hydra.main` entry point with the user's arguments, so multirun goes through
Hydra's own launcher and sweeper and every Hydra flag works. Hydra is told to raise instead of
printing (HYDRA_FULL_ERROR), and configuration errors become one-paragraph `ConvbenchError`s
here, with the valid choices and a close match for a typo.

In a sweep, a job that fails is recorded in its folder (status.json) and the sweep goes on
(Hydra's basic sweeper runs every job); at the end the failed jobs are listed and the exit code
is EXIT_FAILED_JOBS.
"""

import difflib
import logging
import os
import re
import sys

from convbench.errors import EXIT_FAILED_JOBS, ConvbenchError
from convbench.paths import config_dir

log = logging.getLogger("convbench")

_failed_jobs: list[str] = []  # "job N (run dir): message" for the sweep summary


def _task(cfg) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from convbench.run import train

    hydra_cfg = HydraConfig.get()
    try:
        return train(cfg)
    except Exception as exc:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            message = " ".join(str(exc).split()) or type(exc).__name__
            _failed_jobs.append(
                f"job {hydra_cfg.job.num} ({hydra_cfg.runtime.output_dir}): {message}"
            )
            log.error("job %s failed: %s", hydra_cfg.job.num, message)
        raise


def run_train(overrides: list[str]) -> int:
    """Run `convbench train OVERRIDES...`; returns the process exit code."""
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from convbench import config

    config.register()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # we print errors ourselves, without Hydra's wording
    sys.argv = ["convbench train", *overrides]
    entry = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    _failed_jobs.clear()
    try:
        entry(_task)()
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConvbenchError(describe_config_error(exc, overrides)) from None
    except Exception:
        if not _failed_jobs:
            raise
    if _failed_jobs:
        print(f"{len(_failed_jobs)} job(s) of the sweep failed:", file=sys.stderr)
        for line in _failed_jobs:
            print(f"  {line}", file=sys.stderr)
        return EXIT_FAILED_JOBS
    return 0


_HINT = " Run `convbench train --help` to see every group, option and key."


def describe_config_error(exc: BaseException, overrides: list[str] | None = None) -> str:
    """One paragraph from a Hydra/OmegaConf error: what is wrong, the valid choices, a fix."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.options is not None:
        return _unknown_option(exc) + _HINT
    cause = exc.__cause__
    full_key = getattr(cause, "full_key", None)
    if full_key and "not in" in str(cause):  # an unknown key (struct mode)
        return _unknown_key(full_key, overrides or []) + _HINT
    if full_key:  # a wrong type or value, checked by the schema
        return f"{full_key}: {_first_lines(cause)}." + _HINT
    return _first_lines(exc) + _HINT


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
    return f"{group}={name} is not a known {group}: choose one of {', '.join(options)}.{guess}"


def _unknown_key(full_key: str, overrides: list[str]) -> str:
    parent, _, name = full_key.rpartition(".")
    siblings = _keys_under(parent, [o for o in overrides if not o.split("=")[0].endswith(full_key)])
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
    where = parent or "the top level"
    message = f"{full_key} is not a config key: {where} has no key '{name}'."
    if close:
        message += f" Did you mean {parent + '.' if parent else ''}{close[0]}?"
    if siblings:
        message += f" Keys of {where}: {', '.join(siblings)}."
    return message


def _keys_under(parent: str, overrides: list[str]) -> list[str]:
    """The keys at `parent` in the config composed with the other overrides (best effort)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig, OmegaConf

    for attempt in (overrides, [o for o in overrides if "." not in o.split("=")[0]], []):
        try:
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                node = compose("config", overrides=attempt)
            node = OmegaConf.select(node, parent) if parent else node
            return sorted(str(k) for k in node) if isinstance(node, DictConfig) else []
        except Exception:
            continue
    return []
