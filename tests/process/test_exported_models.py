"""Exported models as their users run them, on 1,000 real Fashion-MNIST test images: ONNX in
onnxruntime (the export's own check) and TorchScript in a fresh Python process where convbench
cannot be imported, fed images prepared from the JSON description alone. Both agree with the
PyTorch model to 1e-4 on the logits and on every top-1 class, for LeNet and ResNet-20."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convbench.config.trust import Trust
from convbench.data.loader import load_splits
from convbench.infer.predict import load
from helpers.cli import ONE_THREAD, run_cli

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

FRESH = """
import sys
sys.modules["convbench"] = None  # a user's process: convbench is not there to import
import torch
model = torch.jit.load(sys.argv[1])
images = torch.load(sys.argv[2])
with torch.inference_mode():
    torch.save(model(images), sys.argv[3])
"""


@pytest.mark.parametrize("model", [["model=lenet"], ["model=resnet", "model.depth=20"]])
def test_exports_agree_with_pytorch_on_a_thousand_test_images(model, tmp_path):
    if not FASHION_DIR.is_dir():
        pytest.fail(f"{FASHION_DIR} is missing: apt-get install dataset-fashion-mnist")
    run_dir = tmp_path / "run"
    trained = run_cli(
        "train",
        *model,
        "dataset=fashionmnist",
        "dataset.train_limit=2000",
        "trainer.epochs=1",
        "trainer.log_images=false",
        ONE_THREAD,
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    onnx = run_cli("export", str(run_dir), cwd=tmp_path)
    assert onnx.returncode == 0, onnx.stderr
    found = re.search(
        r"checked on 1000 test images: largest logit difference (\S+), top-1 agrees "
        r"on (\d+) of 1000",
        onnx.stdout,
    )
    assert found, onnx.stdout
    assert float(found[1]) < 1e-4 and int(found[2]) == 1000, "onnxruntime agrees"

    script = tmp_path / "model.pt"
    exported = run_cli(
        "export", str(run_dir), "--format", "torchscript", "--output", str(script), cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr
    about = json.loads((tmp_path / "model.pt.json").read_text())["input"]
    test = load_splits(load(run_dir, which="best", device_name="cpu", trust=Trust()).cfg.dataset)
    pixels = test.test.images[:1000].float() / 255
    mean = torch.tensor(about["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(about["std"]).view(1, -1, 1, 1)
    images = (pixels - mean) / std  # what the description says, nothing else
    assert list(images.shape[1:]) == about["shape"][1:]
    torch.save(images, tmp_path / "images.pt")
    subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH,
            str(script),
            str(tmp_path / "images.pt"),
            str(tmp_path / "logits.pt"),
        ],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )
    got = torch.load(tmp_path / "logits.pt")
    reference = load(run_dir, which="best", device_name="cpu", trust=Trust())
    network = reference.model.float().to(memory_format=torch.contiguous_format).eval()
    with torch.inference_mode():
        expected = network(images)
    assert float((got - expected).abs().max()) < 1e-4
    assert torch.equal(got.argmax(1), expected.argmax(1)), "every top-1 class"
