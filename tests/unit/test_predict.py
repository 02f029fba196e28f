"""`convbench predict` in this process: on an image-folder run, the test images classified one
file at a time agree with `eval`, image by image; the formats; every bad input one paragraph."""

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from convbench.data.folder import folder_files
from convbench.data.loader import load_splits
from convbench.run.build import AUTOCAST_DTYPES, build_model, eval_batches
from convbench.run.checkpoint import Settled, load_checkpoint
from helpers.cli import ONE_THREAD
from helpers.imagefolders import truncate, write_class_folders
from helpers.inprocess import convbench

CLASSES = ("zebra", "ant", "moth")


def train(root: Path, run_dir: Path) -> Path:
    result = convbench(
        "train",
        "dataset=imagefolder",
        f"dataset.root={root}",
        "dataset.native_size=16",
        "trainer.epochs=2",
        "trainer.batch_size=8",
        "trainer.device=cpu",
        "trainer.log_images=false",
        ONE_THREAD,
        f"hydra.run.dir={run_dir}",
        cwd=run_dir.parent,
    )
    assert result.code == 0, result.stdout + result.stderr
    return run_dir


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory) -> tuple[Path, Path]:
    """(a LeNet run on three classes of grey images, its image folder)."""
    root = tmp_path_factory.mktemp("predict") / "images"
    write_class_folders(root, classes=CLASSES, per_class=14)
    return train(root, root.parent / "run"), root


def test_predict_over_the_test_images_agrees_with_eval_image_by_image(grey_run, tmp_path):
    run_dir, _ = grey_run
    payload = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    cfg = OmegaConf.create(payload["config"])
    tests = folder_files(cfg.dataset)["test"]
    files = [str(path) for path, _ in tests]
    predicted = convbench("predict", str(run_dir), *files, "--format", "json", cwd=tmp_path)
    assert predicted.code == 0, predicted.stderr
    rows = json.loads(predicted.stdout)
    assert [row["image"] for row in rows] == files, "in the order given"
    top1 = [row["top"][0]["class"] for row in rows]
    # What the run's own test split (decoded, cached, batched by the run) gives, image by image.
    settled = Settled.from_dict(payload["settled"], run_dir)
    model = build_model(cfg, torch.device("cpu"), settled.channels_last)
    model.load_state_dict(payload["model"])
    model.eval()
    split = load_splits(cfg.dataset).test
    batches = eval_batches(cfg, split, device=torch.device("cpu"), settled=settled)
    expected = []
    with torch.inference_mode():
        for images, _ in batches.epoch(0):
            dtype = AUTOCAST_DTYPES[settled.precision]
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                expected += model(images).argmax(1).tolist()
    assert top1 == [cfg.dataset.classes[i] for i in expected]
    labels = [cfg.dataset.classes[label] for _, label in tests]
    accuracy = sum(a == b for a, b in zip(top1, labels, strict=True)) / len(labels)
    report = json.loads(convbench("eval", str(run_dir), "--json", cwd=tmp_path).stdout)
    assert accuracy == pytest.approx(report["test_acc"]), "the same accuracy as eval"
    for row in rows:  # probabilities, best first
        probabilities = [entry["probability"] for entry in row["top"]]
        assert (
            probabilities == sorted(probabilities, reverse=True)
            and 0 < sum(probabilities) <= 1 + 1e-6
        )


def test_the_formats_hold_the_same_answer(grey_run, tmp_path):
    run_dir, root = grey_run
    folder = root / "ant"
    as_json = json.loads(convbench("predict", str(run_dir), str(folder), "--format", "json").stdout)
    assert len(as_json) == 14 and all(len(row["top"]) == 3 for row in as_json), "folder, top 3"
    out = tmp_path / "p.csv"
    result = convbench(
        "predict",
        str(run_dir),
        str(folder),
        "--format",
        "csv",
        "--top-k",
        "2",
        "--output",
        str(out),
    )
    assert result.code == 0 and result.stdout == "" and "14 image(s)" in result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 28 and {row["rank"] for row in rows} == {"1", "2"}
    first = [row for row in rows if row["rank"] == "1"]
    assert [r["class"] for r in first] == [row["top"][0]["class"] for row in as_json]
    table = convbench("predict", str(run_dir), str(folder)).stdout.splitlines()
    assert table[0].split()[:3] == ["image", "class", "probability"] and len(table) == 15


def test_standard_input_names_one_image_a_line(grey_run):
    from convbench.infer.predict import image_files

    _, root = grey_run
    files = sorted((root / "moth").iterdir())[:3]
    listed = image_files(["-"], stdin=io.StringIO("".join(f"{f}\n" for f in files) + "\n"))
    assert listed == files


def test_a_colour_image_for_a_grey_run_is_converted_and_said(grey_run, tmp_path):
    run_dir, _ = grey_run
    colour = tmp_path / "colour.png"
    Image.new("RGB", (20, 24), (200, 30, 30)).save(colour)
    result = convbench("predict", str(run_dir), str(colour), "--format", "json")
    assert result.code == 0, result.stderr
    assert "1 image(s) converted to grey, as the run's images are" in result.stderr
    assert len(json.loads(result.stdout)) == 1


@pytest.mark.parametrize("skip", [False, True])
def test_an_image_that_cannot_be_decoded(grey_run, tmp_path, skip):
    run_dir, root = grey_run
    bad = truncate(Path(__import__("shutil").copy(root / "ant" / "000.png", tmp_path / "bad.png")))
    good = root / "ant" / "001.jpg"
    args = ["predict", str(run_dir), str(bad), str(good), "--format", "json"]
    result = convbench(*args, *(["--skip-bad-images"] if skip else []))
    if skip:
        assert result.code == 0 and [r["image"] for r in json.loads(result.stdout)] == [str(good)]
        assert "1 image(s) left out" in result.stderr and str(bad) in result.stderr
    else:
        assert result.code == 2 and result.stdout == ""
        assert str(bad) in result.stderr and "--skip-bad-images" in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_bad_runs_and_inputs_are_one_paragraph(grey_run, tmp_path):
    run_dir, root = grey_run
    image = str(root / "ant" / "000.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_weights = tmp_path / "copy"
    __import__("shutil").copytree(run_dir, no_weights, ignore=lambda *_: ["checkpoints"])
    cases = [
        (["predict", str(tmp_path / "nowhere"), image], "is not a folder"),
        (["predict", str(no_weights), image], "best.pt"),
        (["predict", str(run_dir), str(tmp_path / "missing.png")], "is neither an image file"),
        (["predict", str(run_dir), str(empty)], "no images in"),
    ]
    for args, expected in cases:
        result = convbench(*args)
        assert result.code == 2, (args, result)
        assert expected in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


class CountingProgress:
    def __init__(self):
        self.started, self.advanced, self.stopped = None, [], False

    def start(self, label, total):
        self.started = (label, total)

    def advance(self, images):
        self.advanced.append(images)

    def stop(self):
        self.stopped = True


def test_many_images_go_a_batch_at_a_time_with_the_same_answers(grey_run, tmp_path):
    """Files are decoded and classified eval_batch_size at a time; the answers do not depend
    on the batch, a bad file in a later batch is still named, and the bar counts every file."""
    from convbench.commands.eval import user_trust
    from convbench.infer.predict import load, predict

    run_dir, root = grey_run
    bad = tmp_path / "bad.png"
    bad.write_bytes(next(root.rglob("*.png")).read_bytes())
    truncate(bad)
    files = [*sorted(root.rglob("*.png"))[:20], bad]
    predictor = load(run_dir, which="best", device_name="cpu", trust=user_trust([]))
    whole = predict(predictor, files, top_k=2, skip_bad=True)
    predictor.cfg.trainer.eval_batch_size = 6
    progress = CountingProgress()
    batched = predict(predictor, files, top_k=2, skip_bad=True, progress=progress)
    assert [row["image"] for row in batched.rows] == [str(f) for f in files[:20]]
    for one, other in zip(whole.rows, batched.rows, strict=True):
        assert [c for c, _ in one["top"]] == [c for c, _ in other["top"]]
        assert [p for _, p in one["top"]] == pytest.approx([p for _, p in other["top"]], abs=1e-5)
    assert len(batched.skipped) == 1 and "bad.png" in batched.skipped[0]
    assert progress.started == ("predicting", 21) and progress.advanced == [6, 6, 6, 3]
    assert progress.stopped
