"""`convbench predict RUN INPUT...`: the classes a run's weights give new images (convbench.infer)."""

import csv
import io
import json
from pathlib import Path
from typing import Literal

import typer

from convbench.commands.eval import user_trust
from convbench.errors import ConvbenchError


def predict(
    run_dir: Path = typer.Argument(
        ..., metavar="RUN_DIR", help="A run folder (see `convbench runs`)."
    ),
    inputs: list[str] = typer.Argument(
        ...,
        metavar="INPUT...",
        help="Image files, folders (searched recursively), or - for "
        "one path a line on standard input.",
    ),
    checkpoint: Literal["best", "last"] = typer.Option(
        "best", help="best.pt (best validation accuracy) or last.pt (latest epoch)."
    ),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Classes shown per image."),
    output_format: Literal["table", "csv", "json"] = typer.Option(
        "table", "--format", help="table (aligned text), csv (a row per image and rank) or json."
    ),
    output: Path | None = typer.Option(
        None, "--output", metavar="FILE", help="Write the result to FILE instead of the screen."
    ),
    device: Literal["run", "auto", "cpu", "cuda", "mps"] = typer.Option(
        "run", help="Where to run: the run's own device (when here), or another."
    ),
    skip_bad_images: bool = typer.Option(
        False, "--skip-bad-images", help="Leave out images that cannot be decoded (named)."
    ),
    config_dirs: list[Path] = typer.Option(
        [],
        "--config-dir",
        metavar="DIR",
        help="A config folder whose YAML names your own model class (repeatable).",
    ),
) -> None:
    """Classify new images with a run's weights, prepared exactly as the run's own images were
    (the resize-and-crop, channels, image size, normalisation, layout and precision the run
    recorded). Prints each image's top classes with their probabilities."""
    from convbench.infer.predict import image_files, load
    from convbench.infer.predict import predict as classify
    from convbench.monitor.console import log_to_console, make_progress

    trust = user_trust(config_dirs)
    files = image_files(inputs)
    with log_to_console():
        predictor = load(run_dir, which=checkpoint, device_name=device, trust=trust)
        found = classify(
            predictor, files, top_k=top_k, skip_bad=skip_bad_images, progress=make_progress()
        )
    text = render(found.rows, output_format)
    if output is None:
        typer.echo(text, nl=False)
    else:
        try:
            output.write_text(text)
        except OSError as exc:
            raise ConvbenchError(
                f"could not write {output}: {exc.strerror or exc}. Pick a folder that exists "
                "and can be written."
            ) from None
        typer.echo(f"{len(found.rows)} image(s): {output}", err=True)
    if found.converted:
        kind = "grey" if predictor.cfg.dataset.in_channels == 1 else "RGB"
        typer.echo(
            f"{found.converted} image(s) converted to {kind}, as the run's images are.", err=True
        )
    if found.skipped:
        typer.echo(f"{len(found.skipped)} image(s) left out, not decodable:", err=True)
        for problem in found.skipped:
            typer.echo(f"  {problem}", err=True)


def render(rows: list[dict], output_format: str) -> str:
    if output_format == "json":
        return (
            json.dumps(
                [
                    {
                        "image": r["image"],
                        "top": [{"class": c, "probability": p} for c, p in r["top"]],
                    }
                    for r in rows
                ],
                indent=2,
            )
            + "\n"
        )
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "rank", "class", "probability"])
        for row in rows:
            for rank, (name, probability) in enumerate(row["top"], start=1):
                writer.writerow([row["image"], rank, name, f"{probability:.6f}"])
        return buffer.getvalue()
    from convbench.analysis.tables import fitted_table

    header = ["image", "class", "probability", "then"]
    table_rows = [
        [
            row["image"],
            row["top"][0][0],
            f"{row['top'][0][1]:.4f}",
            ", ".join(f"{name} {p:.3f}" for name, p in row["top"][1:]),
        ]
        for row in rows
    ]
    return "\n".join(fitted_table(header, table_rows, right={"probability"})) + "\n"
