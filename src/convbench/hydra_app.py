"""`convbench train` as a real Hydra application.

`run_train` runs the `@hydra.main` entry point with the user's arguments, so multirun goes through
Hydra's own launcher and sweeper and every Hydra flag works. Hydra is told to raise instead of
printing (HYDRA_FULL_ERROR), and configuration errors are turned into one-paragraph
`ConvbenchError`s here.
"""

import os
import sys

from convbench.errors import ConvbenchError
from convbench.paths import config_dir


def _task(cfg) -> dict:
    from convbench.run import train

    return train(cfg)


def run_train(overrides: list[str]) -> int:
    """Run `convbench train OVERRIDES...`; returns the process exit code."""
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from convbench import config

    config.register()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # we print errors ourselves, without Hydra's wording
    sys.argv = ["convbench train", *overrides]
    entry = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(
        _task
    )
    try:
        entry()
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConvbenchError(describe_config_error(exc)) from None
    return 0


def describe_config_error(exc: BaseException) -> str:
    """One paragraph from a Hydra/OmegaConf error chain, without Hydra's stack-trace hint."""
    parts: list[str] = []
    while exc is not None:
        text = " ".join(str(exc).split())
        if text and text not in parts:
            parts.append(text)
        exc = exc.__cause__
    message = " ".join(parts) or "the configuration could not be composed"
    return message + " Run `convbench train --help` to see every group, option and key."
