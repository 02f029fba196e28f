"""Your own images: a folder in torchvision's ImageFolder layout, decoded once into the same
uint8 tensors as the built-in datasets, so training runs the same in-memory path.

Layout: ROOT/<class>/<image> (then the training, validation and test splits are carved from it
with dataset.split_seed: dataset.val_size and dataset.test_size, counts or fractions), or
ROOT/train/<class>/..., with ROOT/val/ and ROOT/test/ used when present (a missing one is carved
from train/). Classes are the folder names, sorted; they are recorded in the run.

Decoding: every image is opened with Pillow, converted to grey (`L`) or RGB (`in_channels`, 3
when any of up to 200 files sampled evenly is in colour, unless given), its shorter side resized
to dataset.native_size (bilinear, with antialiasing) and its centre cropped to a square of that
side: the whole image when it is square, the middle of it otherwise (RESIZE_POLICY).

Cache: the decoded tensors are saved next to the data (ROOT/.convbench-cache/, or
dataset.cache_dir), named by a hash of every file's path, size and modification time, the side,
the channels and the resize policy: a second run with the same files starts at once; a file
added, removed or changed makes a new one. A cache that cannot be written is only a warning.

Streaming (dataset.stream=true): nothing is decoded or cached up front; `folder_files` gives the
same splits as lists of files, which convbench.data.stream reads batch by batch with `decode`.
"""

import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from convbench.errors import DatasetError
from convbench.files import atomic_write
from convbench.monitor.console import make_progress

log = logging.getLogger("convbench")

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SPLITS = ("train", "val", "test")
RESIZE_POLICY = "shorter-side-bilinear-antialias+centre-crop/v1"
CACHE_FOLDER = ".convbench-cache"
CHANNEL_SAMPLE = 200  # files looked at to tell grey from colour


@dataclass
class FolderIndex:
    """The files of a folder dataset, before decoding."""

    root: Path
    classes: list[str]
    files: dict[str, list[tuple[str, int]]]  # "train"/"val"/"test" or "all" -> (path, label)


def _images_in(folder: Path) -> list[str]:
    """The image files under `folder` (any depth), sorted; hidden files and folders left out.
    One directory read per folder, no stat per file (the entries' types come with the read)."""
    found, pending = [], [str(folder)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    pending.append(entry.path)
                elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in SUFFIXES:
                    found.append(entry.path)
    return sorted(found)


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def index_folder(root: Path | str) -> FolderIndex:
    """Classes and files of ROOT (see the module docstring); a DatasetError for a folder that
    is missing, holds no images, a single class or an empty class folder. Read once per
    process (the config's resolvers and the loading share it)."""
    return _index(str(root))


def index_cache_clear() -> None:
    """Forget the folders read so far: the next `index_folder` reads them again."""
    _index.cache_clear()


@lru_cache(maxsize=8)
def _index(root: str) -> FolderIndex:
    if root in (None, "None", "???", ""):
        raise DatasetError(
            "dataset.root is not set: dataset=imagefolder trains on your images, so it needs "
            "dataset.root=/path/to/images (a folder of class folders)."
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"dataset.root={root} is not a folder. Point it at a folder of class folders "
            "(ROOT/<class>/<image>), or of train/ (and val/, test/) folders of class folders."
        )
    split_folders = [root / name for name in SPLITS if (root / name).is_dir()]
    layouts = split_folders if (root / "train").is_dir() else [root]
    classes = [folder.name for folder in _class_folders(layouts[0])]
    if len(classes) < 2:
        raise DatasetError(
            f"{layouts[0]} holds {len(classes)} class folder(s); a classifier needs at least two "
            f"(one folder per class: {layouts[0]}/<class>/<image>)."
        )
    files = {}
    for folder in layouts:
        split = folder.name if folder != root else "all"
        files[split] = _labelled_files(folder, classes)
    return FolderIndex(root, classes, files)


def _labelled_files(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    found = {folder_.name for folder_ in _class_folders(folder)}
    unknown = sorted(found - set(classes))
    if unknown:
        raise DatasetError(
            f"{folder} has class folders the training split does not: {', '.join(unknown)}. "
            "Every split must use the training split's classes."
        )
    labelled = []
    for label, name in enumerate(classes):
        images = _images_in(folder / name) if (folder / name).is_dir() else []
        if not images and (folder / name).is_dir():
            raise DatasetError(
                f"{folder / name} holds no images ({', '.join(sorted(SUFFIXES))}). Remove the "
                "empty class folder or put its images in it."
            )
        labelled += [(path, label) for path in images]
    if not labelled:
        raise DatasetError(f"{folder} holds no images ({', '.join(sorted(SUFFIXES))}).")
    return labelled


@lru_cache(maxsize=32)
def folder_classes(root: str) -> list[str]:
    """The class names of ROOT (the `folder_classes` resolver of the imagefolder config)."""
    return index_folder(root).classes


@lru_cache(maxsize=32)
def folder_channels(root: str) -> int:
    """3 when any of up to CHANNEL_SAMPLE files (spread evenly) is in colour, else 1."""

    files = [path for split in index_folder(root).files.values() for path, _ in split]
    step = max(1, len(files) // CHANNEL_SAMPLE)
    for path in files[::step]:
        try:
            with Image.open(path) as image:
                if image.mode not in ("1", "L", "I", "I;16", "F", "LA"):
                    return 3
        except (OSError, Image.DecompressionBombError):
            continue  # a bad file is named when the images are decoded
    return 1


def cache_key(files: list[str], root: Path, *, side: int, channels: int) -> str:
    """A hash of every file's path (relative to ROOT), size and modification time, the side,
    the channels and the resize policy."""
    digest = hashlib.sha256(f"{RESIZE_POLICY}|{side}|{channels}\n".encode())
    start = len(str(root)) + 1
    lines = []
    for path in files:
        stat = os.stat(path)
        lines.append(f"{path[start:]}\t{stat.st_size}\t{stat.st_mtime_ns}")
    digest.update("\n".join(lines).encode())
    return digest.hexdigest()[:24]


def eight_bit(image: Image.Image) -> Image.Image:
    """A grey image of 16-bit, 32-bit integer or floating-point pixels as 8-bit ("L"), scaled
    by the range its mode implies; Pillow's own convert("L") would clip them to white or black.
    16-bit: 0-65535 -> 0-255. 32-bit integers: 0-255 kept, 0-65535 scaled as 16-bit. Floats:
    [0, 1] -> 0-255, [0, 255] kept. Any other range has no meaning we can know: ValueError."""
    mode = image.mode
    if not (mode.startswith("I") or mode == "F"):
        return image
    pixels = np.asarray(image, dtype=np.float64)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    finite = bool(np.isfinite(pixels).all())
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high > 255 and high <= 65535):
        scaled = pixels / 257
    elif finite and low >= 0 and high <= 1 and mode == "F":
        scaled = pixels * 255
    elif finite and low >= 0 and high <= 255:
        scaled = pixels
    else:
        kind = "floating-point" if mode == "F" else "32-bit integer"
        raise ValueError(
            f"{kind} pixels from {low:g} to {high:g}: outside the ranges an image's pixels mean "
            "(0-255, 0-65535, or [0, 1] for floats), so they cannot be turned into grey levels"
        )
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def decode(path: Path | str, side: int, channels: int) -> torch.Tensor:
    """One image as uint8 [channels, side, side] (see the module docstring's policy)."""

    with Image.open(path) as image:
        image = eight_bit(image).convert("L" if channels == 1 else "RGB")
        width, height = image.size
        scale = side / min(width, height)
        size = (max(side, round(width * scale)), max(side, round(height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
        left, top = (size[0] - side) // 2, (size[1] - side) // 2
        image = image.crop((left, top, left + side, top + side))
        pixels = np.asarray(image, dtype=np.uint8).reshape(side, side, -1)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)  # HWC -> CHW


def decode_or_problem(path: Path, side: int, channels: int) -> tuple[torch.Tensor | None, str]:
    """(`decode`'s image, "") or, for a file Pillow cannot read, (None, what is wrong)."""
    try:
        return decode(path, side, channels), ""
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # Pillow's errors for a bad file, and for one too large to decode safely
        return None, f"{path} ({type(exc).__name__}: {exc})"


def bad_image_error(problem: str) -> DatasetError:
    return DatasetError(
        f"{problem} cannot be decoded: the image is truncated, corrupt, too large to decode "
        "safely, or holds pixels that mean no grey level. Delete or replace it, "
        "or set dataset.skip_bad_images=true to leave such files out (they are counted and "
        "named in the log)."
    )


@dataclass
class Decoded:
    images: torch.Tensor  # uint8 [N, C, side, side]
    labels: torch.Tensor  # int64 [N]
    skipped: list[str]  # files that could not be read (dataset.skip_bad_images)


def _progress(total: int) -> Iterator[None]:
    """Advance once per image: a bar on a terminal, a log line per tenth otherwise."""

    progress = make_progress(None)
    progress.start_epoch(0, 0, total)
    started, step = time.perf_counter(), max(1, total // 10)
    try:
        for done in range(1, total + 1):
            yield
            progress.advance(1)
            if done % step == 0 and done < total and type(progress).__name__ == "NoProgress":
                log.info(
                    "decoding: %d of %d images (%.0f s)", done, total, time.perf_counter() - started
                )
    finally:
        progress.stop()


def decode_all(
    files: list[tuple[str, int]], *, side: int, channels: int, skip_bad: bool
) -> Decoded:
    """Every file decoded on a pool of threads (Pillow decodes outside the GIL)."""
    images = torch.empty((len(files), channels, side, side), dtype=torch.uint8)
    kept, skipped = [], []

    def one(index: int):
        image, problem = decode_or_problem(files[index][0], side, channels)
        if image is not None:
            images[index] = image
        return index, problem

    ticks = _progress(len(files))
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        for index, problem in pool.map(one, range(len(files))):
            next(ticks, None)
            if not problem:
                kept.append(index)
            elif skip_bad:
                skipped.append(problem)
            else:
                raise bad_image_error(problem)
    finally:  # on a bad file or a stop signal, the images not started yet are not decoded
        pool.shutdown(wait=True, cancel_futures=True)
    ticks.close()
    index = torch.tensor(kept, dtype=torch.long)
    labels = torch.tensor([files[i][1] for i in kept], dtype=torch.long)
    return Decoded(images[index] if skipped else images, labels, skipped)


def check_memory(count: int, *, channels: int, side: int, limit_gb: float | None) -> None:
    """Refuse to decode what would not fit: above `limit_gb` (default: half of this
    machine's memory), say so and what to do instead."""
    needed = count * channels * side * side
    if limit_gb is None:
        limit_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 / 1e9
    if needed <= limit_gb * 1e9:
        return
    fits = int(side * math.sqrt(limit_gb * 1e9 / needed))
    smaller = f"dataset.native_size={fits}" if fits >= 8 else "a smaller dataset.native_size"
    raise DatasetError(
        f"{count:,} images of {channels}x{side}x{side} need {_size(needed)} in memory, above the "
        f"limit of {limit_gb:g} GB (dataset.max_memory_gb). Use {smaller}, fewer "
        "images, dataset.stream=true (a DataLoader with workers reads them from disk every "
        "epoch; nothing is held in memory), or raise dataset.max_memory_gb if this machine "
        "has the memory."
    )


def _size(count: float) -> str:
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:.0f} bytes"


def _cache_file(cfg, index: FolderIndex, files: list[str], *, channels: int) -> Path:
    folder = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else index.root / CACHE_FOLDER
    return folder / f"{cache_key(files, index.root, side=cfg.native_size, channels=channels)}.pt"


def load_decoded(cfg, index: FolderIndex, files: list[tuple[str, int]]) -> Decoded:
    """The images of `files`, from the cache when it holds them, else decoded (and cached).
    The caller has checked that they fit in memory (`check_memory`), with the other splits."""

    channels = int(cfg.in_channels)
    skip_bad = bool(cfg.skip_bad_images)
    cache = _cache_file(cfg, index, [path for path, _ in files], channels=channels)
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
        except Exception as exc:  # a cache is only a shortcut: decode again
            log.warning("ignoring the unreadable cache %s (%s)", cache, exc)
        else:
            log.info("%s: %d images from the cache %s", cfg.name, len(saved["labels"]), cache)
            decoded = Decoded(saved["images"], saved["labels"], saved["skipped"])
            _report_skipped(decoded.skipped, skip_bad)  # the cache remembers the bad files
            return decoded
    log.info(
        "%s: decoding %d images to %dx%dx%d (%s in memory) ...",
        cfg.name,
        len(files),
        channels,
        cfg.native_size,
        cfg.native_size,
        _size(len(files) * channels * cfg.native_size**2),
    )
    decoded = decode_all(files, side=cfg.native_size, channels=channels, skip_bad=skip_bad)
    _report_skipped(decoded.skipped, skip_bad)
    payload = {"images": decoded.images, "labels": decoded.labels, "skipped": decoded.skipped}
    try:
        atomic_write(cache, lambda handle: torch.save(payload, handle))
    except OSError as exc:
        log.warning("could not write the cache %s (%s); the next run decodes again", cache, exc)
    return decoded


def _report_skipped(skipped: list[str], skip_bad: bool) -> None:
    """Bad files: a warning that counts and names them (dataset.skip_bad_images), or the
    error for the first (a cache written by a skipping run knows them too)."""
    if not skipped:
        return
    if not skip_bad:
        raise bad_image_error(skipped[0])
    names = "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
    log.warning("skipped %d unreadable image(s): %s", len(skipped), names)


def split_count(size: float, total: int, name: str) -> int:
    """dataset.val_size / test_size as a count (>= 1) or a fraction (< 1) of `total` images."""
    count = round(size * total) if size < 1 else int(size)
    if not 1 <= count < total:
        raise DatasetError(
            f"dataset.{name}={size:g} gives {count} of the {total} images; it must leave at least "
            "one on each side. Give a fraction below 1 or a smaller count."
        )
    return count


def folder_splits(cfg) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) of train, val and test for a folder dataset (module docstring)."""
    index = index_folder(cfg.root)
    source, carved = _carved_splits(index)
    own = [name for name in ("val", "test") if name not in carved and name in index.files]
    total = sum(len(index.files[name]) for name in (source, *own))
    limit = cfg.max_memory_gb
    check_memory(
        total, channels=int(cfg.in_channels), side=cfg.native_size, limit_gb=limit
    )  # every split together
    whole = load_decoded(cfg, index, index.files[source])
    parts = carve_indices(len(whole.labels), cfg, carved)
    splits = {name: (whole.images[part], whole.labels[part]) for name, part in parts.items()}
    for name in own:
        decoded = load_decoded(cfg, index, index.files[name])
        splits[name] = (decoded.images, decoded.labels)
    return splits


def folder_files(cfg) -> dict[str, list[tuple[Path, int]]]:
    """The (path, label) lists of train, val and test, without decoding anything (for
    dataset.stream=true): the files `folder_splits` decodes into each split, in the same order,
    as long as every file decodes (a file skipped by dataset.skip_bad_images changes the count
    that `folder_splits` carves)."""
    index = index_folder(cfg.root)
    source, carved = _carved_splits(index)
    whole = index.files[source]
    parts = carve_indices(len(whole), cfg, carved)
    splits = {name: [whole[i] for i in part.tolist()] for name, part in parts.items()}
    for name in ("val", "test"):
        splits.setdefault(name, index.files.get(name))
    return splits


def _carved_splits(index: FolderIndex) -> tuple[str, tuple[str, ...]]:
    """The files the splits are carved from ("all" or "train") and the splits carved there."""
    if "all" in index.files:
        return "all", ("test", "val")
    return "train", tuple(name for name in ("test", "val") if name not in index.files)


def carve_indices(count: int, cfg, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Indices of the `names` splits (test, then val) among `count` images, carved with
    dataset.split_seed, and of the rest, the training split ("train")."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(cfg.split_seed))
    parts, start = {}, 0
    for name in names:  # a fraction is of all `count` images, not of what is left
        size = split_count(cfg[f"{name}_size"] or 0, count, f"{name}_size")
        if start + size >= count:
            raise DatasetError(
                f"dataset.val_size and dataset.test_size take {start + size} of the {count} "
                "images and leave none to train on. Give smaller sizes."
            )
        parts[name], start = order[start : start + size], start + size
    parts["train"] = order[start:]
    return parts
