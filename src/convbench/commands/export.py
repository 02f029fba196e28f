"""`convbench export RUN_DIR --format onnx|torchscript`: a run's model as a file (convbench.infer)."""

from pathlib import Path
from typing import Literal

import typer

from convbench.commands.eval import user_trust


def export(
    run_dir: Path = typer.Argument(
        ..., metavar="RUN_DIR", help="A run folder (see `convbench runs`)."
    ),
    output_format: Literal["onnx", "torchscript"] = typer.Option(
        "onnx", "--format", help="onnx (onnxruntime and others) or torchscript (torch.jit.load)."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        metavar="FILE",
        help="Where to write it (default RUN_DIR/export/model.onnx or model.pt); its "
        "description goes beside it as FILE.json.",
    ),
    checkpoint: Literal["best", "last"] = typer.Option(
        "best", help="best.pt (best validation accuracy) or last.pt (latest epoch)."
    ),
    config_dirs: list[Path] = typer.Option(
        [],
        "--config-dir",
        metavar="DIR",
        help="A config folder whose YAML names your own model class (repeatable).",
    ),
) -> None:
    """Export a run's model for use outside convbench: ONNX or TorchScript, any batch size,
    with the class names, input size, channels, mean and std inside it and in a JSON file
    beside it. Then runs the exported file on the run's test images (up to 1,000) and prints
    its largest difference from the PyTorch model and how many top-1 classes agree."""
    from convbench.infer.export import SUFFIXES
    from convbench.infer.export import export as write
    from convbench.infer.predict import load
    from convbench.monitor.console import log_to_console

    trust = user_trust(config_dirs)
    path = output or run_dir / "export" / f"model{SUFFIXES[output_format]}"
    with log_to_console():
        predictor = load(run_dir, which=checkpoint, device_name="cpu", trust=trust)
        done = write(predictor, fmt=output_format, output=path)
    what = "test images" if done.real else "random inputs (the run's test images are not here)"
    typer.echo(f"{output_format}: {done.path}")
    typer.echo(f"description: {done.sidecar}")
    typer.echo(
        f"checked on {done.images} {what}: largest logit difference {done.max_difference:.2e}, "
        f"top-1 agrees on {done.agree} of {done.images}"
    )
