"""`dataset=imagefolder`: your own images, tested with real PNG and JPEG files written by Pillow
(tests/helpers/imagefolders.py): classes and channels read from the folder, the decoding policy
pixel by pixel, the splits of both layouts, the decoded cache, mean/std, bad input through the
CLI, and training, eval, compare and a ResNet on such a folder. Every run is `convbench` in this
process (helpers.inprocess); a run on a folder stopped by SIGTERM and resumed is in
tests/process/test_resume.py."""

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from typer.testing import CliRunner

from convbench.cli import app
from convbench.config.compose import compose
from convbench.data import folder
from convbench.data.batches import SPLIT_NAMES
from convbench.data.loader import load_splits
from convbench.errors import DatasetError
from convbench.run.checkpoint import load_checkpoint
from helpers.cli import ONE_THREAD
from helpers.imagefolders import (
    class_image,
    gradient,
    save,
    truncate,
    write_class_folders,
    write_split_folders,
)
from helpers.inprocess import convbench

NATIVE = 16  # the side images are stored at in the CLI runs: small, and LeNet pads it to 32
CACHE = ".convbench-cache"
SPLIT_SIZES = re.compile(r"(\d+) train / (\d+) val / (\d+) test images")


def cli_overrides(root: Path, run_dir: Path, *extra: str, epochs: int = 2) -> list[str]:
    """A seconds-long CPU run on an image folder."""
    return [
        "dataset=imagefolder",
        f"dataset.root={root}",
        f"dataset.native_size={NATIVE}",
        f"trainer.epochs={epochs}",
        "trainer.batch_size=8",
        "trainer.eval_batch_size=64",
        "trainer.device=cpu",
        ONE_THREAD,
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def train(root: Path, run_dir: Path, *extra: str, epochs: int = 2) -> Path:
    result = convbench(
        "train", *cli_overrides(root, run_dir, *extra, epochs=epochs), cwd=run_dir.parent
    )
    assert result.code == 0, result.stdout + result.stderr
    return run_dir


def dataset_cfg(root: Path, *overrides: str):
    """The dataset node `convbench train dataset=imagefolder dataset.root=ROOT ...` would use.
    (The classes and channels resolvers cache per root in a process, so every test here that
    composes in-process uses folders of its own.)"""
    return compose(["dataset=imagefolder", f"dataset.root={root}", *overrides]).dataset


def eval_json(run_dir: Path) -> dict:
    # In-process: torch is already imported here, so this costs a fraction of a subprocess.
    result = CliRunner().invoke(app, ["eval", str(run_dir), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def cache_files(root: Path) -> list[Path]:
    return sorted((root / CACHE).glob("*.pt"))


def one_paragraph(stderr: str) -> bool:
    return "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


def fingerprints(images: torch.Tensor) -> list[bytes]:
    return [image.numpy().tobytes() for image in images]


# --- folders and runs shared by several tests -------------------------------------------------


@pytest.fixture(scope="module")
def grey_root(tmp_path_factory) -> Path:
    """Three classes of 12 grey images (PNG and JPEG, mixed non-square sizes), written in an
    order that is not the sorted one."""
    root = tmp_path_factory.mktemp("grey") / "images"
    write_class_folders(root, classes=("zebra", "ant", "moth"), per_class=12)
    return root


@pytest.fixture(scope="module")
def colour_root(tmp_path_factory) -> Path:
    """Two classes of 10 images, grey and RGB alternating, PNG and JPEG."""
    root = tmp_path_factory.mktemp("colour") / "images"
    write_class_folders(root, classes=("red", "blue"), per_class=10, modes=("L", "RGB"))
    return root


@pytest.fixture(scope="module")
def lenet_run(grey_root, tmp_path_factory) -> Path:
    """LeNet, 2 epochs on grey_root: the first run on that folder (it writes the cache)."""
    return train(grey_root, tmp_path_factory.mktemp("lenet") / "run")


@pytest.fixture(scope="module")
def second_run(lenet_run, grey_root, tmp_path_factory) -> Path:
    """A second run on the same folder, same side and channels: it reads lenet_run's cache."""
    return train(grey_root, tmp_path_factory.mktemp("second") / "run", "seed=1", epochs=1)


# --- 1. layout and classes ---------------------------------------------------------------------


def test_classes_channels_and_names_are_recorded_in_the_run(lenet_run):
    saved = load_checkpoint(lenet_run / "checkpoints" / "best.pt")["config"]["dataset"]
    assert saved["classes"] == ["ant", "moth", "zebra"], "the folder names, sorted"
    assert (saved["num_classes"], saved["in_channels"]) == (3, 1), "a grey-only folder: 1 channel"
    model = load_checkpoint(lenet_run / "checkpoints" / "best.pt")["model"]
    assert model["features.0.weight"].shape[1] == 1 and model["classifier.5.weight"].shape[0] == 3
    report = eval_json(lenet_run)
    assert [row["class"] for row in report["per_class"]] == ["ant", "moth", "zebra"]
    assert sum(row["images"] for row in report["per_class"]) == report["images"]


def test_any_colour_image_makes_three_channels(colour_root, tmp_path):
    assert dataset_cfg(colour_root).in_channels == 3
    assert list(dataset_cfg(colour_root).classes) == ["blue", "red"]
    # One RGB file among grey ones is enough.
    root = tmp_path / "images"
    write_class_folders(root, per_class=4)
    save(class_image(0, 2, (16, 12), "RGB", seed=7), root / "dog" / "colour.png")
    cfg = dataset_cfg(root)
    assert (cfg.in_channels, cfg.num_classes) == (3, 2)


@pytest.mark.parametrize(
    ("root_name", "channels", "classes"), [("grey_root", 1, 3), ("colour_root", 3, 2)]
)
def test_summary_shows_the_folders_input_shape_and_classes(
    request, root_name, channels, classes, tmp_path
):
    root = request.getfixturevalue(root_name)
    result = convbench(
        "summary",
        "dataset=imagefolder",
        f"dataset.root={root}",
        f"dataset.native_size={NATIVE}",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    assert f"Input shape:       [1, {channels}, {NATIVE}, {NATIVE}]" in result.stdout
    last = [line for line in result.stdout.splitlines() if line.startswith("classifier.")][-1]
    assert last.split()[1:4] == ["Linear", "[1,", f"{classes}]"], last


# --- 2. decoding, pixel by pixel -------------------------------------------------------------

# Known images: a ramp along the longer side, flat along the shorter one, 20 grey levels a pixel.
WIDE = (12, 4, 20, 0)  # width, height, dx, dy
TALL = (4, 12, 0, 20)


def known_folder(root: Path, suffix: str, colour: bool) -> Path:
    """ROOT/train/<a,b>/ two noise images each; ROOT/test/a/wide, ROOT/test/b/tall: the test
    split is exactly [wide, tall]. In the colour folder the training images and `tall` are RGB
    and `wide` stays grey (so it must be converted)."""
    mode = "RGB" if colour else "L"
    for label, name in enumerate(("a", "b")):
        for n in range(2):
            save(class_image(label, 2, (10, 8), mode, seed=n), root / "train" / name / f"{n}.png")
    save(gradient(*WIDE, mode="L"), root / "test" / "a" / f"wide{suffix}")
    save(gradient(*TALL, mode=mode), root / "test" / "b" / f"tall{suffix}")
    return root


def test_shorter_side_resized_then_centre_cropped(tmp_path):
    """native_size=2: 12x4 -> 6x2 (bilinear with antialiasing), then the middle 2 columns
    (2 and 3). Halving a linear ramp with Pillow's triangle filter gives the ramp's value at the
    output pixel's centre, x = 2i + 0.5 input pixels: columns 2 and 3 -> x = 4.5 and 6.5 ->
    20 * 4.5 = 90 and 130. The tall image is the same, transposed."""
    root = known_folder(tmp_path / "png", ".png", colour=False)
    test = load_splits(dataset_cfg(root, "dataset.native_size=2", "dataset.val_size=1")).test
    assert test.images.dtype == torch.uint8 and tuple(test.images.shape) == (2, 1, 2, 2)
    assert test.labels.tolist() == [0, 1]
    assert test.images[0, 0].tolist() == [[90, 130], [90, 130]]
    assert test.images[1, 0].tolist() == [[90, 90], [130, 130]]


def test_without_resizing_the_crop_is_the_middle_square(tmp_path):
    """native_size equal to the shorter side: no resampling, the middle square exactly."""
    root = known_folder(tmp_path / "png", ".png", colour=False)
    test = load_splits(dataset_cfg(root, "dataset.native_size=4", "dataset.val_size=1")).test
    wide = np.asarray(gradient(*WIDE))
    tall = np.asarray(gradient(*TALL))
    assert test.images[0, 0].numpy().tolist() == wide[:, 4:8].tolist()
    assert test.images[1, 0].numpy().tolist() == tall[4:8, :].tolist()


def test_jpeg_goes_through_the_same_policy(tmp_path):
    root = known_folder(tmp_path / "jpg", ".jpg", colour=False)
    test = load_splits(dataset_cfg(root, "dataset.native_size=2", "dataset.val_size=1")).test
    expected = torch.tensor([[[[90, 130], [90, 130]]], [[[90, 90], [130, 130]]]])
    # JPEG is lossy: quality 95 moves these smooth ramps by a level or two, no more.
    assert (test.images.int() - expected).abs().max() <= 3, test.images.tolist()


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_grey_images_become_rgb_in_a_colour_folder(tmp_path, suffix):
    root = known_folder(tmp_path / "colour", suffix, colour=True)
    cfg = dataset_cfg(root, "dataset.native_size=2", "dataset.val_size=1")
    assert cfg.in_channels == 3
    test = load_splits(cfg).test
    assert tuple(test.images.shape) == (2, 3, 2, 2)
    wide = test.images[0].int()
    assert all(torch.equal(wide[c], wide[0]) for c in range(3)), "grey copied to R, G and B"
    # The RGB ramp holds g, g // 2 and 255 - g in its channels (helpers.imagefolders.gradient).
    expected_wide = torch.tensor([[90, 130], [90, 130]])
    expected_tall = torch.stack([expected_wide.T, expected_wide.T // 2, 255 - expected_wide.T])
    tolerance = 0 if suffix == ".png" else 3
    assert (wide[0] - expected_wide).abs().max() <= tolerance
    assert (test.images[1].int() - expected_tall).abs().max() <= tolerance, test.images[1]


# --- 3. splits -------------------------------------------------------------------------------


@pytest.fixture
def forty(tmp_path) -> Path:
    """One folder of 2 x 20 distinct grey images (the one-folder layout)."""
    write_class_folders(tmp_path / "forty", per_class=20)
    return tmp_path / "forty"


def by_name(splits) -> dict:
    """A `Splits`' three splits by name: {"train": ..., "val": ..., "test": ...}."""
    return {name: getattr(splits, name) for name in SPLIT_NAMES}


def split_of(root: Path, *overrides: str) -> dict:
    return by_name(load_splits(dataset_cfg(root, "dataset.native_size=8", *overrides)))


def test_one_folder_is_carved_by_counts_disjoint_and_complete(forty):
    splits = split_of(forty, "dataset.val_size=5", "dataset.test_size=7")
    assert {name: len(split) for name, split in splits.items()} == {
        "train": 28,
        "val": 5,
        "test": 7,
    }
    everything = [fp for split in splits.values() for fp in fingerprints(split.images)]
    assert len(set(everything)) == 40, "every image in exactly one split"
    assert sorted(torch.cat([s.labels for s in splits.values()]).tolist()) == [0] * 20 + [1] * 20


def test_a_fraction_is_a_share_of_the_images(forty):
    splits = split_of(forty, "dataset.val_size=5", "dataset.test_size=0.25")
    assert (len(splits["test"]), len(splits["val"]), len(splits["train"])) == (10, 5, 25)


def test_both_fractions_are_shares_of_the_whole_folder(forty):
    splits = split_of(forty, "dataset.val_size=0.25", "dataset.test_size=0.25")
    assert (len(splits["test"]), len(splits["val"]), len(splits["train"])) == (10, 10, 20)


def test_the_split_seed_decides_the_split(forty):
    first = split_of(forty, "dataset.val_size=5", "dataset.test_size=5")
    again = split_of(forty, "dataset.val_size=5", "dataset.test_size=5")
    other = split_of(forty, "dataset.val_size=5", "dataset.test_size=5", "dataset.split_seed=1")
    for name in ("train", "val", "test"):
        assert torch.equal(first[name].images, again[name].images)
        assert torch.equal(first[name].labels, again[name].labels)
    assert set(fingerprints(first["test"].images)) != set(fingerprints(other["test"].images))
    assert set(fingerprints(first["val"].images)) != set(fingerprints(other["val"].images))


def test_train_val_test_folders_are_used_as_they_are(tmp_path):
    root = write_split_folders(tmp_path / "split", {"train": 8, "val": 3, "test": 4})
    # val_size and test_size would carve other sizes: they must not apply here.
    splits = split_of(root, "dataset.val_size=2", "dataset.test_size=0.5")
    assert {name: len(split) for name, split in splits.items()} == {
        "train": 16,
        "val": 6,
        "test": 8,
    }
    assert splits["val"].labels.tolist() == [0, 0, 0, 1, 1, 1], "in folder order, not carved"
    val_files = write_class_folders(tmp_path / "again", per_class=3, seed=1)  # what val/ holds
    direct = split_of(tmp_path / "again", "dataset.val_size=1", "dataset.test_size=1")
    assert len(val_files) == 6
    decoded_again = {fp for split in direct.values() for fp in fingerprints(split.images)}
    assert set(fingerprints(splits["val"].images)) == decoded_again, "val/ decoded as it is"


def test_a_missing_test_folder_is_carved_from_train(tmp_path):
    root = write_split_folders(tmp_path / "split", {"train": 10, "val": 3})
    splits = split_of(root, "dataset.test_size=4", "dataset.val_size=0.5")
    assert {name: len(split) for name, split in splits.items()} == {
        "train": 16,
        "val": 6,
        "test": 4,
    }
    assert not set(fingerprints(splits["test"].images)) & set(fingerprints(splits["val"].images))
    assert not set(fingerprints(splits["test"].images)) & set(fingerprints(splits["train"].images))


# --- 4. the cache ----------------------------------------------------------------------------


def test_the_first_run_writes_one_cache_file_the_second_reads_it(lenet_run, second_run, grey_root):
    assert len(cache_files(grey_root)) == 1
    assert "decoding 36 images to 1x16x16" in (lenet_run / "train.log").read_text()
    log = (second_run / "train.log").read_text()
    assert "36 images from the cache" in log and str(cache_files(grey_root)[0]) in log
    assert "decoding" not in log
    assert json.loads((second_run / "status.json").read_text())["status"] == "finished"


def load_as_a_new_run(root: Path, caplog, *overrides: str) -> tuple[dict, str]:
    """load_splits as a new run does it, nothing read earlier in this process remembered (a
    process reads a folder's index once): ({split: (images, labels)}, what it logged)."""
    folder.index_cache_clear()
    caplog.clear()
    splits = load_splits(dataset_cfg(root, *overrides))
    return {name: (s.images, s.labels) for name, s in by_name(splits).items()}, caplog.text


def test_cached_tensors_equal_decoded_ones_and_a_change_makes_a_new_cache(tmp_path, caplog):
    root = tmp_path / "images"
    files = write_class_folders(root, per_class=6)
    caplog.set_level(logging.INFO, logger="convbench")
    decoded = split_of(root)
    assert len(cache_files(root)) == 1 and "decoding 12 images" in caplog.text
    caplog.clear()
    cached = split_of(root)
    assert "12 images from the cache" in caplog.text and "decoding" not in caplog.text
    for name in ("train", "val", "test"):
        assert torch.equal(decoded[name].images, cached[name].images)
        assert torch.equal(decoded[name].labels, cached[name].labels)

    stat = files[0].stat()
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touched
    touched, log = load_as_a_new_run(root, caplog, "dataset.native_size=8")
    assert len(cache_files(root)) == 2 and "decoding 12 images" in log, log
    for name in ("train", "val", "test"):
        assert torch.equal(touched[name][0], decoded[name].images), "the same pixels again"

    save(class_image(0, 2, (12, 12), "L", seed=99), root / "cat" / "new.png")  # added
    added, log = load_as_a_new_run(root, caplog, "dataset.native_size=8")
    assert len(cache_files(root)) == 3 and "decoding 13 images" in log, log
    assert sum(len(labels) for _, labels in added.values()) == 13


def test_an_unreadable_cache_file_is_decoded_again(tmp_path, caplog):
    root = tmp_path / "images"
    write_class_folders(root, per_class=5)
    decoded = split_of(root)
    (cache,) = cache_files(root)
    cache.write_bytes(b"not a torch file")
    caplog.set_level(logging.INFO, logger="convbench")
    again = split_of(root)
    assert "ignoring the unreadable cache" in caplog.text and "decoding 10 images" in caplog.text
    assert torch.equal(again["train"].images, decoded["train"].images)
    assert torch.load(cache, weights_only=True)["labels"].shape == (10,), "written anew"


def test_a_cache_folder_that_cannot_be_made_is_only_a_warning(tmp_path, caplog):
    """A folder under a regular file: a real OS error, even as root (who may write anywhere)."""
    root = tmp_path / "images"
    write_class_folders(root, per_class=5)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    caplog.set_level(logging.INFO, logger="convbench")
    splits = split_of(root, f"dataset.cache_dir={blocker / 'cache'}")
    assert sum(len(split) for split in splits.values()) == 10
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "could not write the cache" in warnings[0].getMessage()
    assert str(blocker / "cache") in warnings[0].getMessage()
    assert not (root / CACHE).exists(), "dataset.cache_dir replaces ROOT/.convbench-cache"


# --- 5. mean and std ---------------------------------------------------------------------------


def direct_statistics(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    values = images.numpy().astype(np.float64) / 255.0  # [N, C, H, W]
    return values.mean(axis=(0, 2, 3)), np.array(
        [values[:, c].std(ddof=1) for c in range(values.shape[1])]
    )


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "rgb"])
def test_null_mean_and_std_come_from_the_training_split(tmp_path, colour):
    root = tmp_path / "images"
    write_class_folders(root, per_class=8, modes=("L", "RGB") if colour else ("L",))
    cfg = dataset_cfg(root, "dataset.native_size=8")
    assert cfg.mean is None and cfg.std is None
    splits = load_splits(cfg)
    mean, std = direct_statistics(splits.train.images)
    assert len(splits.mean) == len(splits.std) == (3 if colour else 1)
    assert np.allclose(splits.mean, mean, atol=1e-6) and np.allclose(splits.std, std, atol=1e-6)
    assert cfg.mean is None and cfg.std is None, "the config itself is never changed"
    everything = torch.cat([s.images for s in by_name(splits).values()])
    assert not np.allclose(splits.mean, direct_statistics(everything)[0], atol=1e-4), (
        "the training split's, not the whole folder's"
    )


def test_the_run_records_the_training_splits_statistics(lenet_run):
    payload = load_checkpoint(lenet_run / "checkpoints" / "best.pt")
    dataset, settled = payload["config"]["dataset"], payload["settled"]
    fresh = OmegaConf.create({**dataset, "mean": None, "std": None})
    train_images = load_splits(fresh).train.images
    mean, std = direct_statistics(train_images)
    assert np.allclose(settled["mean"], mean, atol=1e-6)
    assert np.allclose(settled["std"], std, atol=1e-6)


def test_given_mean_and_std_are_kept(tmp_path):
    root = tmp_path / "images"
    write_class_folders(root, per_class=5)
    cfg = dataset_cfg(root, "dataset.native_size=8", "dataset.mean=[0.5]", "dataset.std=[0.25]")
    splits = load_splits(cfg)
    assert (splits.mean, splits.std) == ([0.5], [0.25])
    assert (list(cfg.mean), list(cfg.std)) == ([0.5], [0.25])


def test_a_given_mean_is_kept_when_only_std_is_computed(tmp_path):
    root = tmp_path / "images"
    write_class_folders(root, per_class=5)
    cfg = dataset_cfg(root, "dataset.native_size=8", "dataset.mean=[0.5]")
    splits = load_splits(cfg)
    assert splits.mean == [0.5]
    assert np.allclose(splits.std, direct_statistics(splits.train.images)[1], atol=1e-6)
    assert list(cfg.mean) == [0.5] and cfg.std is None, "the config itself is never changed"


# --- 6. bad input through the CLI --------------------------------------------------------------


def corrupt_folder(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """A good folder with one truncated file of each suffix; returns the truncated files."""
    files = write_class_folders(root, per_class=8)
    bad = [next(f for f in files if f.suffix == suffix and "dog" in f.parts) for suffix in suffixes]
    return [truncate(path) for path in bad]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_corrupt_image_is_named_and_stops_the_run(tmp_path, suffix):
    (bad,) = corrupt_folder(tmp_path / "images", (suffix,))
    run_dir = tmp_path / "run"
    result = convbench("train", *cli_overrides(tmp_path / "images", run_dir), cwd=tmp_path)
    assert result.code == 2, result.stderr
    assert one_paragraph(result.stderr) and result.stderr.startswith("Error: "), result.stderr
    assert str(bad) in result.stderr and "dataset.skip_bad_images=true" in result.stderr
    # Decoding happens inside the run: its folder says why it failed, and no cache is left.
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and str(bad) in status["error"]
    assert not cache_files(tmp_path / "images")


@pytest.fixture(scope="module")
def skipping_run(tmp_path_factory) -> tuple[Path, list[Path], Path]:
    """A folder of 16 images, a PNG and a JPEG of them truncated, trained with
    dataset.skip_bad_images=true; returns (root, the bad files, run_dir)."""
    work = tmp_path_factory.mktemp("skip")
    bad = corrupt_folder(work / "images", (".png", ".jpg"))
    run_dir = train(work / "images", work / "run", "dataset.skip_bad_images=true", epochs=1)
    return work / "images", bad, run_dir


def test_skip_bad_images_leaves_them_out_and_counts_them(skipping_run):
    _, bad, run_dir = skipping_run
    log = (run_dir / "train.log").read_text()
    warning = next(line for line in log.splitlines() if "unreadable image" in line)
    assert "[WARNING]" in warning and "skipped 2 unreadable image(s)" in warning
    assert all(str(path) in warning for path in bad), warning
    assert sum(int(n) for n in SPLIT_SIZES.search(log).groups()) == 14
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"


def test_a_cache_made_while_skipping_does_not_hide_bad_images(skipping_run, tmp_path):
    root, bad, _ = skipping_run
    result = convbench("train", *cli_overrides(root, tmp_path / "run", epochs=1), cwd=tmp_path)
    assert result.code == 2 and str(bad[0]) in result.stderr, result.stderr


def test_a_skipping_run_from_the_cache_still_counts_the_skipped(skipping_run, tmp_path):
    root, _, _ = skipping_run
    run_dir = train(root, tmp_path / "run", "dataset.skip_bad_images=true", epochs=1)
    assert "skipped 2 unreadable image(s)" in (run_dir / "train.log").read_text()


def empty_class(root: Path) -> str:
    write_class_folders(root, per_class=3)
    (root / "emu").mkdir()
    return f"{root / 'emu'} holds no images"


def single_class(root: Path) -> str:
    write_class_folders(root, classes=("cat",), per_class=3)
    return f"{root} holds 1 class folder(s); a classifier needs at least two"


def only_other_files(root: Path) -> str:
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        (root / name / "notes.txt").write_text("no pictures here")
    return f"{root / 'cat'} holds no images"


def nothing_at_all(root: Path) -> str:
    root.mkdir()
    return f"{root} holds 0 class folder(s)"


def missing_root(root: Path) -> str:
    return f"dataset.root={root} is not a folder"


@pytest.mark.parametrize(
    "make", [empty_class, single_class, only_other_files, nothing_at_all, missing_root]
)
def test_a_bad_folder_is_one_paragraph_before_the_run(tmp_path, make):
    root = tmp_path / "images"
    expected = make(root)
    result = convbench("train", *cli_overrides(root, tmp_path / "run"), cwd=tmp_path)
    assert result.code == 2, result.stderr
    assert one_paragraph(result.stderr) and result.stderr.startswith("Error: "), result.stderr
    assert expected in result.stderr, result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()


def test_dataset_root_not_set_is_one_paragraph(tmp_path):
    result = convbench(
        "train", "dataset=imagefolder", ONE_THREAD, "trainer.device=cpu", cwd=tmp_path
    )
    assert result.code == 2, result.stderr
    assert one_paragraph(result.stderr), result.stderr
    assert "dataset.root is not set" in result.stderr and "dataset.root=/path" in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.fixture(scope="module")
def memory_root(tmp_path_factory) -> Path:
    """A folder of its own: a cache (another test's run) would skip the memory check."""
    root = tmp_path_factory.mktemp("memory") / "images"
    write_class_folders(root, per_class=10, modes=("L", "RGB"))
    return root


@pytest.fixture(scope="module")
def memory_refusal(memory_root, tmp_path_factory):
    """Training on 20 RGB images under a limit of a kilobyte."""
    work = tmp_path_factory.mktemp("refused")
    result = convbench(
        "train",
        *cli_overrides(memory_root, work / "run"),
        "dataset.max_memory_gb=0.000001",
        cwd=work,
    )
    return result, work / "run"


def test_a_tiny_memory_limit_refuses_with_the_options(memory_refusal):
    result, run_dir = memory_refusal
    assert result.code == 2, result.stderr
    assert one_paragraph(result.stderr), result.stderr
    message = result.stderr
    assert f"20 images of 3x{NATIVE}x{NATIVE}" in message
    for option in ("dataset.max_memory_gb", "dataset.native_size", "dataset.stream=true"):
        assert option in message, option
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"


def test_the_memory_message_names_the_limit_given(memory_refusal):
    message = memory_refusal[0].stderr
    assert "1e-06" in message or "0.000001" in message, message
    assert "need 0.0 GB" not in message, message


def test_the_memory_limit_counts_every_split_folder_together(tmp_path):
    # train/ alone (16 grey 8x8 images, 1,024 bytes) fits under 1,500 bytes; with val/ and
    # test/ (12 more) it does not: the check is on what the run will hold, not one folder.
    root = write_split_folders(tmp_path / "split", {"train": 8, "val": 3, "test": 3})
    with pytest.raises(DatasetError, match="28 images of 1x8x8"):
        split_of(root, "dataset.max_memory_gb=0.0000015")
    assert not (root / ".convbench-cache").exists(), "refused before decoding anything"
    assert {name: len(split) for name, split in split_of(root).items()} == {
        "train": 16,
        "val": 6,
        "test": 6,
    }


# --- 7. with the rest of convbench -------------------------------------------------------------


def test_a_lenet_run_trains_and_eval_reproduces_its_test_accuracy(lenet_run):
    metrics = json.loads((lenet_run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and len(metrics["history"]) == 2
    sizes = [int(n) for n in SPLIT_SIZES.search((lenet_run / "train.log").read_text()).groups()]
    assert sizes == [28, 4, 4], "36 images: test and val round(0.1 * 36) = 4 each"
    report = eval_json(lenet_run)
    assert report["test_acc"] == metrics["test_acc"]
    assert report["images"] == 4 and report["epoch"] == metrics["best_epoch"]


@pytest.fixture(scope="module")
def twin_run(lenet_run, grey_root, tmp_path_factory) -> Path:
    """lenet_run again, the same command line in a folder of its own (from the cache)."""
    return train(grey_root, tmp_path_factory.mktemp("twin") / "run")


def test_compare_groups_runs_on_an_image_folder(lenet_run, twin_run, tmp_path):
    result = convbench("compare", str(lenet_run), str(twin_run), "--format", "json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    # The same config and seed twice is one sample, the repeat named, not a second seed.
    (group,) = report["groups"]
    assert group["n"] == 1 and len(group["repeats"]) == 1, report
    test_acc = json.loads((lenet_run / "metrics.json").read_text())["test_acc"]
    assert group["measures"]["test_acc"]["mean"] == pytest.approx(test_acc)
    assert not report["unfinished"]


def test_an_rgb_folder_trains_a_resnet(colour_root, tmp_path):
    run_dir = train(colour_root, tmp_path / "run", "model=resnet", "model.depth=20")
    payload = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert payload["config"]["model"]["_target_"] == "convbench.models.resnet.ResNet"
    assert payload["config"]["dataset"]["in_channels"] == 3
    first_conv = next(t for k, t in payload["model"].items() if t.dim() == 4)
    assert tuple(first_conv.shape[1:]) == (3, 3, 3), "a 3x3 stem over 3 channels"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and len(metrics["history"]) == 2
    assert eval_json(run_dir)["test_acc"] == metrics["test_acc"]


def test_the_fixture_images_are_what_they_say(grey_root, colour_root):
    """Guards the helpers: mixed sizes and formats, grey only, or grey and colour."""
    grey = sorted(grey_root.rglob("*.*"))
    grey = [p for p in grey if CACHE not in p.parts]
    assert {p.suffix for p in grey} == {".png", ".jpg"}
    with Image.open(grey[0]) as a, Image.open(grey[1]) as b:
        assert a.size != b.size and a.size[0] != a.size[1]
    modes = set()
    for path in colour_root.rglob("*.*"):
        if CACHE not in path.parts:
            with Image.open(path) as image:
                modes.add(image.mode)
    assert modes == {"L", "RGB"}
