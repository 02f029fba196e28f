"""`convbench predict RUN INPUT...`: the classes a run's weights give new images.

An image goes through what the run's own images went through: decoded by
`convbench.data.folder.decode` at the run's `dataset.native_size` and channels (the shorter side
resized to it, the centre cropped, grey or RGB as the run's images), then batched by the run's
evaluation batches (resized to `dataset.image_size`, normalised by the statistics the run
settled, in its memory layout) and classified in its precision. A grey image for an RGB run (or
the reverse) is converted, and the count of those is said.
"""

import logging
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from convbench.config.trust import Trust
from convbench.data.batches import Split
from convbench.data.folder import SUFFIXES, decode_or_problem
from convbench.errors import ConvbenchError, DatasetError
from convbench.monitor.console import NoProgress
from convbench.run.build import AUTOCAST_DTYPES, eval_batches
from convbench.run.checkpoint import Settled
from convbench.run.folder import RunFolder
from convbench.run.lifecycle import load_trained

log = logging.getLogger("convbench")

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass
class Predictor:
    """A run's model with its best (or last) weights, and how its images were prepared."""

    cfg: object
    settled: Settled
    model: torch.nn.Module
    device: torch.device
    classes: list[str]
    checkpoint: Path


@dataclass
class Predictions:
    """Each readable image's top classes, and the images left out."""

    rows: list[dict] = field(default_factory=list)  # {image, top: [(class, probability)]}
    skipped: list[str] = field(default_factory=list)  # what was wrong with each
    converted: int = 0  # images whose channels were converted to the run's


def load(run_dir: Path, *, which: str, device_name: str, trust: Trust) -> Predictor:
    """The run's model from checkpoint `which`, checked as `eval` checks it, on `device_name`
    (`run`: the device the run trained on, when this machine has it; else the best here)."""
    trained = load_trained(RunFolder(run_dir), which, trust, device_name=device_name)
    classes = [str(name) for name in trained.cfg.dataset.classes]
    return Predictor(
        trained.cfg, trained.settled, trained.model, trained.device, classes, trained.path
    )


def image_files(inputs: list[str], stdin=None) -> list[Path]:
    """The image files that INPUT names: files as given, folders searched recursively for
    image suffixes (sorted), `-` for one path a line on standard input. A path that does not
    exist is a `ConvbenchError`."""
    found: list[Path] = []
    for item in inputs:
        if item == "-":
            lines = (stdin or sys.stdin).read().splitlines()
            found += [Path(line.strip()) for line in lines if line.strip()]
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise ConvbenchError(f"{item} is neither an image file nor a folder.")
    for path in found:
        if not path.is_file():
            raise ConvbenchError(f"{path} (from standard input) is not a file.")
    if not found:
        raise ConvbenchError(
            f"no images in {' '.join(inputs)} (image files end in {', '.join(sorted(SUFFIXES))})."
        )
    return found


def predict(
    predictor: Predictor, files: list[Path], *, top_k: int, skip_bad: bool, progress=None
) -> Predictions:
    """Every file's `top_k` classes with their probabilities, in the order given. A file that
    cannot be decoded is refused as `train` refuses it, or with `skip_bad` left out and named.

    Files are decoded and classified a batch (trainer.eval_batch_size) at a time, so memory
    holds one batch of images whatever the number of files; `progress` (a console bar, see
    convbench.monitor.console) advances by each batch's files."""
    progress = progress or NoProgress()
    size = max(int(predictor.cfg.trainer.eval_batch_size), 1)
    result = Predictions()
    progress.start("predicting", len(files))
    try:
        for first in range(0, len(files), size):
            chunk = files[first : first + size]
            _classify(predictor, chunk, result, top_k=top_k, skip_bad=skip_bad)
            progress.advance(len(chunk))
    finally:
        progress.stop()
    return result


def _classify(
    predictor: Predictor, files: list[Path], result: Predictions, *, top_k: int, skip_bad: bool
) -> None:
    """Decode `files`, classify those that decode, and add their rows to `result`."""
    data = predictor.cfg.dataset
    channels, side = int(data.in_channels), int(data.native_size)
    images, kept = [], []
    for path in files:
        tensor, problem = decode_or_problem(path, side, channels)
        if tensor is None:
            if not skip_bad:
                raise DatasetError(
                    f"{problem} cannot be decoded: the image is truncated, corrupt, too large "
                    "to decode safely, or holds pixels that mean no grey level. Replace it, or "
                    "pass --skip-bad-images to leave such files out (they are named)."
                )
            result.skipped.append(problem)
            continue
        result.converted += _converted(path, channels)
        images.append(tensor)
        kept.append(path)
    if not images:
        return
    split = Split(torch.stack(images), torch.zeros(len(images), dtype=torch.long))
    batches = eval_batches(predictor.cfg, split, device=predictor.device, settled=predictor.settled)
    dtype = AUTOCAST_DTYPES[predictor.settled.precision]
    probabilities = []
    with torch.inference_mode():
        for batch, _ in batches.epoch(0):
            with _autocast(predictor.device, dtype):
                logits = predictor.model(batch)
            probabilities.append(torch.softmax(logits.float(), dim=1).cpu())
    every = torch.cat(probabilities)
    k = min(top_k, len(predictor.classes))
    values, indices = every.topk(k, dim=1)
    for path, row_values, row_indices in zip(kept, values, indices, strict=True):
        top = [
            (predictor.classes[int(i)], float(v))
            for v, i in zip(row_values, row_indices, strict=True)
        ]
        result.rows.append({"image": str(path), "top": top})


def _converted(path: Path, channels: int) -> int:
    """1 where the file's channels are not the run's (grey for RGB, or colour for grey)."""
    with Image.open(path) as image:
        grey = image.mode in GREY_MODES
    return int(grey != (channels == 1))


def _autocast(device: torch.device, dtype):
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
