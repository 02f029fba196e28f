"""Finding a dataset's files.

Search order (README, "Data"): an explicit `dataset.root` (and nothing else when it is set); the
torchvision layout under `dataset.data_dir` (`data/FashionMNIST/raw`, `data/cifar-10-batches-py`);
the folders of OS packages (`dataset.system_dirs`, e.g. Debian's dataset-fashion-mnist); then a
torchvision download into `dataset.data_dir`. When none works, one `DatasetError` lists where it
looked and how to fix it.
"""

import logging
from pathlib import Path

import torch

from convbench.data.formats import read_cifar_batch, read_idx
from convbench.errors import DatasetError

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")

log = logging.getLogger("convbench")

RawData = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # train x, y; test x, y


def _required(data_format: str) -> tuple[str, ...]:
    return IDX_FILES if data_format == "idx" else CIFAR_FILES


def _dataset_folders(base: Path, data_format: str, torchvision_name: str) -> list[Path]:
    """Where files can sit below `base`: flat, or in torchvision's layout."""
    nested = base / (CIFAR_FOLDER if data_format == "cifar" else f"{torchvision_name}/raw")
    return [base, nested]


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read(files: list[Path], data_format: str) -> RawData:
    if data_format == "idx":
        train_x, train_y, test_x, test_y = (read_idx(path) for path in files)
        # IDX images are [N, H, W]; add the channel axis.
        return train_x.unsqueeze(1), train_y.long(), test_x.unsqueeze(1), test_y.long()
    batches = [read_cifar_batch(path) for path in files]
    train_x = torch.cat([images for images, _ in batches[:-1]])
    train_y = torch.cat([labels for _, labels in batches[:-1]])
    return train_x, train_y, *batches[-1]


def _download(name: str, torchvision_name: str, data_dir: Path) -> str | None:
    """Fetch the dataset with torchvision; returns None on success, else why it failed."""
    try:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, torchvision_name)
        log.info("downloading %s into %s with torchvision ...", name, data_dir)
        for train in (True, False):
            dataset_class(root=str(data_dir), train=train, download=True)
    except Exception as exc:  # no network, a proxy, a full disk: all reported the same way
        return f"{type(exc).__name__}: {exc}"
    return None


def load_raw(dataset_cfg) -> RawData:
    """Find and read a dataset's train and test files (uint8 images, int64 labels)."""
    data_format = str(dataset_cfg.format)  # "idx" | "cifar" (a StrEnum prints its value)
    required = _required(data_format)
    tv_name = dataset_cfg.torchvision_name
    if dataset_cfg.root:
        bases = [Path(dataset_cfg.root).expanduser()]
    else:
        data_dir = Path(dataset_cfg.data_dir).expanduser()
        bases = [data_dir, *(Path(p) for p in dataset_cfg.system_dirs)]
    folders = [f for base in bases for f in _dataset_folders(base, data_format, tv_name)]

    def attempt() -> RawData | None:
        for folder in folders:
            files = [_find(folder, name) for name in required]
            if all(files):
                return _read(files, data_format)
            if any(files):  # a half-present dataset is an error worth naming, not a fallback
                missing = [n for n, f in zip(required, files, strict=True) if f is None]
                raise DatasetError(
                    f"{dataset_cfg.name}: {folder} holds only part of the dataset; missing "
                    f"{', '.join(missing)} (or .gz). Restore those files, or delete the folder "
                    "so convbench can fetch the dataset again."
                )
        return None

    found = attempt()
    if found is not None:
        return found
    if dataset_cfg.root:
        why = "dataset.root is set, so nothing else was searched and nothing was downloaded"
    elif not dataset_cfg.download:
        why = "downloads are off (dataset.download=false)"
    else:
        failure = _download(dataset_cfg.name, tv_name, data_dir) or "no files after it finished"
        why = f"the torchvision download failed ({failure})"
        found = attempt()
        if found is not None:
            return found
    looked = ", ".join(str(f) for f in folders)
    raise DatasetError(
        f"{dataset_cfg.name} was not found. convbench looked for {', '.join(required)} in: "
        f"{looked}; {why}. Fix: put the files in {folders[0] if dataset_cfg.root else folders[1]}, "
        "pass dataset.root=/path/to/files, or allow the download (network access, "
        "dataset.download=true)."
        + (
            " On Debian: apt-get install dataset-fashion-mnist."
            if tv_name == "FashionMNIST"
            else ""
        )
    )
