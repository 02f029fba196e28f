"""Folder datasets: the first load (decoding every image) against the second (the cache), and
optionally the same training on the folder and on the IDX files it was written from.

Fashion-MNIST (Debian's dataset-fashion-mnist when installed, else generated images in its
format) is written out as PNG files in the ImageFolder layout, ROOT/train/<class>/<n>.png and
ROOT/test/<class>/<n>.png. Each load runs in a fresh interpreter (`convbench.data.load_splits`
on `dataset=imagefolder`), so nothing is reused in memory: the first decodes and writes the
cache, the second reads it; their ratio is the speed-up a second run gets (target: >= 10x).
With --train, LeNet-5 trains on the folder and on the IDX files with the same seed, epochs and
batch size; their test accuracies agree within seed noise (the splits differ: the folder's files
are ordered by class, so the seeded validation split draws other images).

    python benchmarks/imagefolder.py                   # 70,000 images: write, load twice
    python benchmarks/imagefolder.py --train --epochs 15
    python benchmarks/imagefolder.py --smoke           # seconds; used by the tests
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import fashion_mnist_dir

FASHION_MNIST = fashion_mnist_dir()
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = [
    "T-shirt_top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle_boot",
]
LOAD = (
    "import json, sys, time; from convbench.config.compose import compose; "
    "from convbench.data.loader import load_splits; "
    "cfg = compose(['dataset=imagefolder', 'dataset.root=' + sys.argv[1], 'dataset.native_size=28']); "
    "cfg.dataset.num_classes; started = time.perf_counter(); "
    "splits = load_splits(cfg.dataset); "
    "print(json.dumps({'seconds': time.perf_counter() - started, "
    "'images': sum(splits.sizes().values())}))"
)


def idx_arrays(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from convbench.data.formats import read_idx

    images, labels = (read_idx(folder / f"{name}.gz").numpy() for name in FILES[split])
    return images, labels


def source_idx(tmp: Path, generated: bool) -> tuple[Path, str]:
    """The IDX files to write out: Debian's Fashion-MNIST, or generated ones."""
    if not generated and FASHION_MNIST.is_dir():
        return FASHION_MNIST, f"real Fashion-MNIST ({FASHION_MNIST})"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.fakedata import write_idx_dataset

    return write_idx_dataset(tmp / "idx", train=6000, test=1000), "generated images, IDX format"


def write_png_folder(idx: Path, root: Path, limit: int | None) -> int:
    """ROOT/{train,test}/<class>/<n>.png from the IDX files; returns the number of images."""
    from PIL import Image

    written = 0
    for split in ("train", "test"):
        images, labels = idx_arrays(idx, split)
        count = len(labels) if limit is None else min(len(labels), limit)
        for name in CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for number in range(count):
            path = root / split / CLASSES[labels[number]] / f"{number:05d}.png"
            Image.fromarray(images[number]).save(path)
        written += count
    return written


def timed_load(root: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(root)], check=True, capture_output=True, text=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def train_accuracy(overrides: list[str], run_dir: Path) -> dict:
    subprocess.run(
        [sys.executable, "-m", "convbench", "train", *overrides, f"hydra.run.dir={run_dir}", "-q"],
        check=True,
    )
    return json.loads((run_dir / "metrics.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, help="images per split (default: all)")
    parser.add_argument("--generated-data", action="store_true")
    parser.add_argument("--train", action="store_true", help="also train on folder and IDX")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--smoke", action="store_true", help="300 images per split, no training")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.train = 300, False
    with tempfile.TemporaryDirectory(prefix="convbench-folder-") as name:
        tmp = Path(name)
        idx, source = source_idx(tmp, args.generated_data)
        started = time.perf_counter()
        count = write_png_folder(idx, tmp / "png", args.images)
        print(
            f"data: {source}; {count:,} PNG files written in {time.perf_counter() - started:.1f} s"
        )
        first, second = timed_load(tmp / "png"), timed_load(tmp / "png")
        ratio = first["seconds"] / second["seconds"]
        print(
            f"first load (decode + cache) {first['seconds']:.3f} s, second load (cache) "
            f"{second['seconds']:.3f} s: {ratio:.1f}x faster, {first['images']:,} images"
        )
        print(
            f"{'PASS' if ratio >= 10 else 'FAIL'}  the cached load is >= 10x faster ({ratio:.1f}x)"
        )
        if args.train:
            common = ["model=lenet", f"trainer.epochs={args.epochs}", "seed=0"]
            folder = train_accuracy(
                [
                    "dataset=imagefolder",
                    f"dataset.root={tmp / 'png'}",
                    "dataset.native_size=28",
                    "dataset.val_size=5000",
                    *common,
                ],
                tmp / "run-folder",
            )
            files = train_accuracy(
                ["dataset=fashionmnist", f"dataset.root={idx}", *common], tmp / "run-idx"
            )
            print(
                f"test accuracy: PNG folder {folder['test_acc']:.4f}, IDX files "
                f"{files['test_acc']:.4f} (LeNet-5, {args.epochs} epochs, seed 0)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
