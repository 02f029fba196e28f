"""Tiny image folders in torchvision's ImageFolder layout, written as real PNG and JPEG files with
Pillow, so the real decoding code (convbench.data.folder) runs in tests.

Images are learnable: class k draws a bright horizontal bar at a class-specific height on a
dark noisy background, whatever the image's own size, so a tiny LeNet learns them in two epochs.
"""

from pathlib import Path

import numpy as np
from PIL import Image

# Mixed sizes, most of them not square: (width, height).
SIZES = ((20, 12), (12, 20), (16, 16), (24, 18), (14, 22))


def class_image(label: int, num_classes: int, size: tuple[int, int], mode: str, seed: int):
    """A PIL image of `mode` ("L" or "RGB") and `size` (width, height): noise plus class
    `label`'s bar."""
    width, height = size
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, size=(height, width, 3)).astype(np.uint8)
    band = max(1, height // (2 * num_classes))
    start = (2 * label * height) // (2 * num_classes)
    pixels[start : start + band, :, :] = 230  # the class's bar, the same in every channel
    if mode == "RGB":
        pixels[..., label % 3] //= 2  # a tint, so the colour channels are not all equal
        return Image.fromarray(pixels, "RGB")
    return Image.fromarray(pixels[..., 0], "L")


def save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=95)
    else:
        image.save(path)
    return path


def write_class_folders(
    folder: Path,
    classes: tuple[str, ...] = ("cat", "dog"),
    per_class: int = 10,
    modes: tuple[str, ...] = ("L",),
    suffixes: tuple[str, ...] = (".png", ".jpg"),
    seed: int = 0,
) -> list[Path]:
    """FOLDER/<class>/<n>.<suffix> for each class: `per_class` images cycling through SIZES,
    `modes` and `suffixes`. Returns the files written, in order."""
    written = []
    for label, name in enumerate(classes):
        for n in range(per_class):
            mode = modes[n % len(modes)]
            size = SIZES[n % len(SIZES)]
            image = class_image(
                label, len(classes), size, mode, seed=seed * 10_000 + label * 100 + n
            )
            suffix = suffixes[n % len(suffixes)]
            written.append(save(image, folder / name / f"{n:03d}{suffix}"))
    return written


def write_split_folders(root: Path, counts: dict[str, int], **kwargs) -> Path:
    """ROOT/<split>/<class>/... with counts[split] images per class (e.g. train, val, test)."""
    for seed, (split, per_class) in enumerate(counts.items()):
        write_class_folders(root / split, per_class=per_class, seed=seed, **kwargs)
    return root


def gradient(width: int, height: int, dx: int, dy: int, mode: str = "L") -> Image.Image:
    """A known linear image: value dx * x + dy * y at column x, row y (in RGB, the channels
    hold that value, half of it and 255 minus it)."""
    y, x = np.mgrid[0:height, 0:width]
    grey = dx * x + dy * y
    assert grey.max() <= 255, "the gradient must fit in uint8"
    grey = grey.astype(np.uint8)
    if mode == "L":
        return Image.fromarray(grey, "L")
    return Image.fromarray(np.stack([grey, grey // 2, 255 - grey], axis=-1), "RGB")


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a real image file short, as a copy interrupted mid-way leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# Folders of drawn shapes (the streaming tests): three classes, a bright disc, a square or
# stripes over noise, in sizes square and not, larger and smaller than a side of 16, so the
# shorter-side resize and the centre crop both do something.
SHAPE_CLASSES = ("circle", "square", "stripes")
SHAPE_SIZES = ((24, 24), (30, 22), (17, 40), (12, 12))


def _drawing(kind: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB picture of class `kind` over noise: a bright disc, a square, or stripes."""
    pixels = rng.integers(0, 90, size=(height, width, 3), dtype=np.uint8)
    rows, cols = np.mgrid[0:height, 0:width]
    if kind == 0:
        shape = (rows - height / 2) ** 2 + (cols - width / 2) ** 2 < (min(width, height) / 3) ** 2
    elif kind == 1:
        shape = (abs(rows - height / 2) < height / 4) & (abs(cols - width / 2) < width / 4)
    else:
        shape = (cols // 3) % 2 == 0
    pixels[shape] = rng.integers(160, 255, size=3, dtype=np.uint8)
    return pixels


def write_shape_folders(root: Path, per_class: int, seed: int = 0) -> Path:
    """ROOT/<class>/<n>.png and .jpg (alternately; every third one grey), real files."""
    rng = np.random.default_rng(seed)
    for kind, name in enumerate(SHAPE_CLASSES):
        (root / name).mkdir(parents=True)
        for n in range(per_class):
            width, height = SHAPE_SIZES[n % len(SHAPE_SIZES)]
            image = Image.fromarray(_drawing(kind, width, height, rng))
            if n % 3 == 2:
                image = image.convert("L")
            suffix = ".jpg" if n % 2 else ".png"
            image.save(root / name / f"{n:03d}{suffix}", quality=90)
    return root
