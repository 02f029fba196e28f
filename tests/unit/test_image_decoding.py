"""Images whose pixels are not 8-bit are decoded to the grey levels they mean, or refused by
name: 16-bit PNGs, 32-bit integer and floating-point TIFFs (Pillow's own convert("L") clips
them to white or black), and images too large to decode safely, which
dataset.skip_bad_images leaves out like any other bad file."""

import numpy as np
import pytest
from PIL import Image

from convbench.config.compose import compose
from convbench.data import folder
from convbench.data.loader import load_splits
from convbench.errors import DatasetError
from helpers.imagefolders import write_class_folders

RAMP = np.linspace(0, 1, 64 * 64).reshape(64, 64)  # dark at the top, light at the bottom


def decoded(path) -> np.ndarray:
    """The image as decoded at its own side, grey, as a run decodes it."""
    return folder.decode(path, 64, 1)[0].numpy()


@pytest.mark.parametrize(
    "pixels, mode, suffix",
    [
        ((RAMP * 65535).astype(np.uint16), None, ".png"),  # 16-bit grey PNG: mode I;16
        ((RAMP * 65535).astype(np.int32), "I", ".tiff"),  # 32-bit integers, 16-bit range
        (RAMP.astype(np.float32), "F", ".tiff"),  # floats in [0, 1]
        ((RAMP * 255).astype(np.float32), "F", ".tiff"),  # floats in [0, 255]
    ],
    ids=["png16", "int32", "float01", "float255"],
)
def test_wide_pixels_become_the_grey_levels_they_mean(tmp_path, pixels, mode, suffix):
    path = tmp_path / f"ramp{suffix}"
    Image.fromarray(pixels, mode).save(path)
    grey = decoded(path).astype(float)
    expected = np.rint(RAMP * 255)
    assert np.abs(grey - expected).max() <= 1.0  # not clipped to 0/255: the ramp survives
    assert grey[:8].mean() < 20 and grey[-8:].mean() > 235


def test_floating_point_pixels_of_no_known_range_are_refused_by_name(tmp_path):
    path = tmp_path / "odd.tiff"
    Image.fromarray((RAMP * 1000 - 500).astype(np.float32), "F").save(path)
    image, problem = folder.decode_or_problem(path, 16, 1)
    assert image is None and str(path) in problem and "-500 to 500" in problem


def folder_with(tmp_path, extra_name: str, extra: Image.Image):
    root = tmp_path / "images"
    write_class_folders(root, per_class=10)
    extra.save(root / "cat" / extra_name)
    return root


def splits_of(root, *overrides):
    folder.index_cache_clear()
    cfg = compose(
        ["dataset=imagefolder", f"dataset.root={root}", "dataset.native_size=8", *overrides]
    )
    return load_splits(cfg.dataset)


def test_an_image_too_large_to_decode_is_named_and_can_be_skipped(tmp_path, monkeypatch):
    """Pillow refuses an image of more than twice Image.MAX_IMAGE_PIXELS (a decompression
    bomb: 179 M pixels by default). The limit is lowered here so that a 200x200 image is one,
    instead of writing a 20000x20000 file."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    root = folder_with(tmp_path, "huge.png", Image.new("L", (200, 200)))
    with pytest.raises(DatasetError, match=r"huge\.png .*DecompressionBombError"):
        splits_of(root)
    splits = splits_of(root, "dataset.skip_bad_images=true")
    assert sum(splits.sizes().values()) == 20  # the 20 good images; huge.png left out
