"""Where convbench finds its YAML configs."""

from pathlib import Path


def config_dir() -> Path:
    """The folder holding `config.yaml` and the config groups.

    An installed wheel carries the configs inside the package (`convbench/conf`, see
    pyproject.toml); a source checkout or editable install keeps them at the repository root.
    """
    packaged = Path(__file__).parent / "conf"
    if (packaged / "config.yaml").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"
