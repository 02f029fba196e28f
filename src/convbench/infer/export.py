"""`convbench export RUN --format onnx|torchscript`: a run's model as a file other programs load.

The exported model takes what the run's model takes: float32 images [N, C, S, S] (any N),
already resized to `dataset.image_size` and normalised per channel, (pixel / 255 - mean) / std.
Everything a user needs to prepare them rides along: in a JSON file beside the model
(`<file>.json`, e.g. model.onnx.json) and inside it (ONNX metadata properties; a TorchScript extra file
`convbench.json`): the class names, channels, sizes, mean and std, and the resize policy.

At the end the exported file is loaded the way its users will load it (onnxruntime; a fresh
`torch.jit.load`) and run on the run's own test images (up to 1,000): the largest difference
of its logits from the PyTorch model's and how many top-1 classes agree are printed.
"""

import dataclasses
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from convbench.data.batches import Split
from convbench.errors import ConvbenchError
from convbench.files import atomic_write
from convbench.infer.predict import Predictor
from convbench.run.build import eval_batches

log = logging.getLogger("convbench")

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
INSTALL = "pip install 'convbench[export]'"
CHECK_IMAGES = 1000
RESIZE = (
    "decode as grey (1 channel) or RGB (3); resize the shorter side to native_size and crop the "
    "centre square; resize bilinearly to image_size; x = (pixel / 255 - mean) / std per channel"
)


@dataclass
class Exported:
    path: Path
    sidecar: Path
    images: int  # images the check ran on
    real: bool  # the run's own test images (else random inputs)
    max_difference: float
    agree: int  # top-1 classes that agree with the PyTorch model


def description(predictor: Predictor, *, fmt: str) -> dict:
    """What a user of the exported file needs to feed it and read it."""
    data = predictor.cfg.dataset
    side = int(data.image_size)
    return {
        "format": fmt,
        "model": str(predictor.cfg.model._target_),
        "checkpoint": str(predictor.checkpoint),
        "input": {
            "name": "images",
            "shape": ["batch", int(data.in_channels), side, side],
            "dtype": "float32",
            "mean": [float(v) for v in predictor.settled.mean],
            "std": [float(v) for v in predictor.settled.std],
            "native_size": int(data.native_size),
            "image_size": side,
            "preprocessing": RESIZE,
        },
        "output": {"name": "logits", "shape": ["batch", len(predictor.classes)]},
        "classes": predictor.classes,
    }


def export(
    predictor: Predictor, *, fmt: str, output: Path, check_images: int = CHECK_IMAGES
) -> Exported:
    """Write the model to `output` (and its description beside it), then check it on up to
    `check_images` of the run's test images."""
    _require(fmt)
    model = predictor.model.float().to(memory_format=torch.contiguous_format).eval()
    about = description(predictor, fmt=fmt)
    channels, side = about["input"]["shape"][1:3]
    example = torch.zeros(2, channels, side, side)
    if fmt == "onnx":
        data = _onnx_bytes(model, example, about)
    else:
        data = _torchscript_bytes(model, example, about)
    output.parent.mkdir(parents=True, exist_ok=True)
    sidecar = output.with_name(output.name + ".json")
    atomic_write(output, lambda handle: handle.write(data))
    atomic_write(sidecar, lambda handle: handle.write(json.dumps(about, indent=2).encode()))
    images, real = _check_images(predictor, check_images)
    run = _runner(fmt, output)
    with torch.inference_mode():
        expected = model(images)
    got = run(images)
    difference = float((got - expected).abs().max())
    agree = int((got.argmax(1) == expected.argmax(1)).sum())
    return Exported(output, sidecar, len(images), real, difference, agree)


def _require(fmt: str) -> None:
    if fmt != "onnx":
        return
    missing = []
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConvbenchError(
            f"exporting to ONNX needs {', '.join(missing)}, not installed here. Install them "
            f"with: {INSTALL}"
        )


def _onnx_bytes(model, example, about: dict) -> bytes:
    import onnx

    batch = torch.export.Dim("batch", min=1, max=65_536)
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(scratch) / "model.onnx"
        try:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                verbose=False,
            )
        except Exception as exc:  # the exporter's errors have no common base class
            raise ConvbenchError(
                f"{about['model']} cannot be exported to ONNX by torch {torch.__version__}: "
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}. Try --format "
                "torchscript."
            ) from None
        proto = onnx.load(str(path))
    for key, value in (("convbench", json.dumps(about)), ("classes", json.dumps(about["classes"]))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def _torchscript_bytes(model, example, about: dict) -> bytes:
    import io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        try:
            traced = torch.jit.trace(model, example)
        except Exception as exc:  # tracing errors have no common base class
            raise ConvbenchError(
                f"{about['model']} cannot be traced to TorchScript: {type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0]}. Try --format onnx."
            ) from None
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={"convbench.json": json.dumps(about)})
    return buffer.getvalue()


def _check_images(predictor: Predictor, count: int) -> tuple[torch.Tensor, bool]:
    """Up to `count` of the run's test images as the model takes them (fp32, NCHW), or
    random inputs of that shape where the run's data is not on this machine."""
    from convbench.data.loader import load_splits

    cfg = predictor.cfg
    plain = dataclasses.replace(predictor.settled, precision="fp32", channels_last=False)
    try:
        test = load_splits(cfg.dataset).test
    except ConvbenchError as exc:
        log.warning("the run's test images are not here (%s): checking on random inputs", exc)
        data = cfg.dataset
        side = int(data.image_size)
        return torch.randn(min(count, 64), int(data.in_channels), side, side), False
    count = min(count, len(test))
    split = Split(test.images[:count], test.labels[:count])
    batches = eval_batches(cfg, split, device=torch.device("cpu"), settled=plain)
    return torch.cat([images for images, _ in batches.epoch(0)]), True


def _runner(fmt: str, path: Path):
    """A function that runs the exported file as its users would, on float32 images."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda images: torch.from_numpy(session.run(None, {name: images.numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run(images):
        with torch.inference_mode():
            return loaded(images)

    return run
