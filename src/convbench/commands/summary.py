"""`convbench summary OVERRIDES...`: each layer's output shape, parameters, MACs and receptive
field for the model and dataset the overrides compose, then the totals (convbench.models.anatomy does
the analysis; the model is built on the meta device, without weights)."""

import json
from collections.abc import Sequence
from pathlib import Path

import typer

from convbench.analysis.tables import fitted_table
from convbench.errors import ConvbenchError


def summary(
    overrides: list[str] = typer.Argument(
        None,
        metavar="[RUN_DIR | OVERRIDES...]",
        help="A run folder (its model), or Hydra overrides as for train: model=mlp "
        "dataset=cifar10 dataset.image_size=64",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    config_dir: Path | None = typer.Option(
        None, help="An extra config folder, as for train (e.g. your own model/*.yaml)."
    ),
) -> None:
    """Print each layer's output shape, parameters, MACs and receptive field, then the totals,
    for the model the overrides compose or a run folder's model. The model is built on the meta
    device: no weights are allocated, whatever its size."""
    overrides = overrides or []
    if len(overrides) == 1 and Path(overrides[0]).is_dir():
        result = summarize_run(Path(overrides[0]), [config_dir] if config_dir else [])
    else:
        result = summarize_config(overrides, config_dir)
    typer.echo(json.dumps(result, indent=2) if as_json else format_summary(result))


def compose_config(overrides: Sequence[str], extra_config_dir: str | Path | None = None):
    """The config `convbench train [--config-dir DIR] OVERRIDES` would run, and the input shape
    of one image; a config mistake is a `ConvbenchError`."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from convbench.config.compose import compose, describe_config_error
    from convbench.run.build import input_shape

    try:
        cfg = compose(overrides, extra_config_dir, with_hydra=True)
        return cfg, input_shape(cfg)  # resolves the geometry: a bad interpolation fails here
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConvbenchError(describe_config_error(exc)) from None
    except ValueError as exc:  # --config-dir
        raise ConvbenchError(str(exc)) from None


def summarize_config(overrides: Sequence[str], extra_config_dir: str | Path | None = None) -> dict:
    """`summarize` of the model and dataset that `overrides` compose, built on the meta device."""
    import torch
    from omegaconf import OmegaConf

    from convbench.models.anatomy import summarize
    from convbench.run.build import build_model
    from convbench.run.folder import model_name

    cfg, shape = compose_config(overrides, extra_config_dir)
    model = build_model(cfg, torch.device("meta"))
    choice = cfg.hydra.runtime.choices.get("model")
    header = {
        "model": model_name(choice, OmegaConf.to_container(cfg.model, resolve=True)),
        "target": cfg.model._target_,
        "dataset": cfg.dataset.name,
        "overrides": list(overrides),
    }
    try:
        return summarize(model, shape) | header
    except ValueError as exc:
        raise ConvbenchError(str(exc)) from None


def summarize_run(run_dir: Path, config_dirs: list[Path]) -> dict:
    """`summarize` of a run folder's model: the config of its checkpoint (best.pt, else
    last.pt), or of .hydra/config.yaml before the first checkpoint, checked against the code
    the user vouches for (convbench.config.trust) before anything is built."""
    import torch
    from omegaconf import OmegaConf

    from convbench.commands.eval import user_trust
    from convbench.config.trust import check_config
    from convbench.models.anatomy import summarize
    from convbench.run.build import build_model, input_shape
    from convbench.run.folder import RunFolder

    trust, run = user_trust(config_dirs), RunFolder(run_dir)
    config, source = run_config(run, trust)
    check_config(config, trust, source)
    cfg = OmegaConf.create(config)
    model = build_model(cfg, torch.device("meta"))
    header = {
        "model": run.model_name(config.get("model")),
        "target": cfg.model._target_,
        "dataset": cfg.dataset.name,
        "run": str(run_dir),
    }
    return summarize(model, input_shape(cfg)) | header


def run_config(run, trust) -> tuple[dict, str]:
    """(the run's resolved config, the file it came from): its best or last checkpoint's
    (checked), else .hydra/config.yaml's."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from convbench.config import schema
    from convbench.run.lifecycle import read_checkpoint

    for which, path in (("best", run.best), ("last", run.last)):
        if path.is_file():
            return read_checkpoint(run, which, trust).get("config"), str(path)
    if not run.config_file.is_file():
        raise ConvbenchError(
            f"{run.path} is not a run folder: it has neither checkpoints/ nor .hydra/config.yaml."
            " Pass a folder that `convbench runs` lists, or overrides (model=lenet ...)."
        )
    schema.register()
    try:
        return OmegaConf.to_container(OmegaConf.load(run.config_file), resolve=True), str(
            run.config_file
        )
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as exc:
        reason = " ".join(str(exc).split())
        raise ConvbenchError(f"{run.config_file} cannot be read as a config ({reason}).") from None


def _count(number: int) -> str:
    """480011010 -> '480,011,010 (480.0 M)'."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if number >= scale:
            return f"{number:,} ({number / scale:.1f} {unit})"
    return f"{number:,}"


def _bytes(number: int) -> str:
    """1920044040 -> '1.92 GB' (decimal units, as disks and download pages count)."""
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if number >= scale:
            return f"{number / scale:.3g} {unit}"
    return f"{number} B"


def _pixels(pair: list[int] | None) -> str:
    if pair is None:
        return "-"
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _table_lines(rows: list[dict]) -> list[str]:
    header = ("Layer", "Type", "Output shape", "Params", "MACs", "RF", "Jump")
    cells = [
        (
            row["name"],
            row["type"],
            str(row["output_shape"] or "-"),
            f"{row['params']:,}",
            f"{row['macs']:,}",
            _pixels(row["receptive_field"]),
            _pixels(row["jump"]),
        )
        for row in rows
    ]
    return fitted_table(header, cells, right=header[3:], drop=("Jump", "RF"))


def format_summary(summary: dict) -> str:
    """The human-readable table and totals of a `summarize` / `summarize_config` result."""
    title = summary["model"]
    if "target" in summary:
        title += f" ({summary['target']}) on {summary['dataset']}"
    lines = [
        title,
        "",
        *_table_lines(summary["layers"]),
        "",
        f"Total params:      {_count(summary['params'])} = {_bytes(summary['param_bytes'])}",
        f"Trainable params:  {_count(summary['trainable_params'])}",
        f"MACs:              {_count(summary['macs'])}",
        f"Input shape:       {summary['input_shape']}",
        "",
        *_paragraph(summary["mac_convention"]),
        *_paragraph(summary["receptive_field_note"]),
    ]
    return "\n".join(lines)


def _paragraph(text: str) -> list[str]:
    """A note wrapped to the terminal's width (100 columns in a pipe or a file)."""
    import textwrap

    from convbench.analysis.tables import terminal_width

    return textwrap.wrap(text, width=min(terminal_width() or 100, 100))
