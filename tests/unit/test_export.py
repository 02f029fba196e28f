"""`convbench export` in this process: every model family exports to ONNX and TorchScript and
agrees with PyTorch; a run's export carries what its users need; a missing extra and a folder
that is not a run are one paragraph each."""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from convbench.infer.export import export
from convbench.infer.predict import Predictor
from convbench.run.build import build_model
from convbench.run.checkpoint import Settled
from helpers.cli import ONE_THREAD, tiny_mnist_overrides
from helpers.configs import FAMILIES, NARROW, composed
from helpers.inprocess import convbench


def predictor_of(model: str) -> Predictor:
    """A freshly initialised model of the option, every layer of the family at narrower widths
    (helpers.configs.NARROW), as a run's Predictor (no run needed)."""
    cfg = composed([f"model={model}", "dataset=fashionmnist", *NARROW.get(model, [])])
    torch.manual_seed(0)
    settled = Settled(
        precision="fp32",
        channels_last=False,
        mean=list(cfg.dataset.mean),
        std=list(cfg.dataset.std),
        fingerprint={},
        reasons={},
    )
    network = build_model(cfg, torch.device("cpu")).eval()
    return Predictor(cfg, settled, network, torch.device("cpu"), list(cfg.dataset.classes), Path())


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("model", FAMILIES)
def test_every_family_exports_and_agrees_with_pytorch(model, fmt, tmp_path):
    done = export(predictor_of(model), fmt=fmt, output=tmp_path / f"m.{fmt}", check_images=8)
    assert done.images == 8 and done.agree == 8, "the same top-1 class on every image"
    assert done.max_difference < 1e-4, done.max_difference


@pytest.fixture(scope="module")
def run_dir(mnist_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "run"
    overrides = [*tiny_mnist_overrides(mnist_root), ONE_THREAD]
    result = convbench("train", *overrides, "trainer.epochs=1", f"hydra.run.dir={folder}")
    assert result.code == 0, result.stderr
    return folder


def test_an_onnx_export_carries_its_description_and_takes_any_batch(run_dir):
    result = convbench("export", str(run_dir))
    assert result.code == 0, result.stderr
    path = run_dir / "export" / "model.onnx"
    lines = result.stdout.splitlines()
    assert lines[0] == f"onnx: {path}"
    checked = lines[-1]
    images = int(checked.split("checked on ")[1].split()[0])
    assert f"top-1 agrees on {images} of {images}" in checked and "test images" in checked
    assert float(checked.split("largest logit difference ")[1].split(",")[0]) < 1e-4
    about = json.loads((run_dir / "export" / "model.onnx.json").read_text())
    assert about["input"]["shape"] == ["batch", 1, 28, 28]
    assert about["classes"] == [str(n) for n in range(10)]
    assert len(about["input"]["mean"]) == 1 and len(about["input"]["std"]) == 1
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(metadata["classes"]) == about["classes"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # a dynamic batch dimension
        (logits,) = session.run(None, {"images": np.zeros((batch, 1, 28, 28), np.float32)})
        assert logits.shape == (batch, 10)


def test_a_torchscript_export_carries_its_description(run_dir, tmp_path):
    target = tmp_path / "lenet.pt"
    result = convbench("export", str(run_dir), "--format", "torchscript", "--output", str(target))
    assert result.code == 0, result.stderr
    extra = {"convbench.json": ""}
    loaded = torch.jit.load(str(target), _extra_files=extra)
    assert json.loads(extra["convbench.json"])["classes"] == [str(n) for n in range(10)]
    assert loaded(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert json.loads((tmp_path / "lenet.pt.json").read_text())["format"] == "torchscript"


def test_without_the_export_extra_says_how_to_install_it(run_dir, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    target = tmp_path / "m.onnx"
    result = convbench("export", str(run_dir), "--output", str(target))
    assert result.code == 2 and "pip install 'convbench[export]'" in result.stderr
    assert "onnxruntime" in result.stderr and not target.exists(), "nothing written"


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    result = convbench("export", str(tmp_path))
    assert result.code == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
