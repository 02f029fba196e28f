"""A dataset's three splits, found and read: the built-in datasets from their files
(convbench.data.sources), image folders decoded once and cached (convbench.data.folder) or read
from disk every epoch (convbench.data.stream)."""

import torch

from convbench.data.batches import Split, Splits, channel_statistics, statistics, tensor_fingerprint
from convbench.data.folder import folder_splits, split_count
from convbench.data.sources import load_raw
from convbench.data.stream import file_splits
from convbench.errors import DatasetError


def load_splits(dataset_cfg) -> Splits:
    """Train, validation and test splits as uint8 tensors (`Split`). The built-in datasets carve
    the validation split from their training files with `split_seed`; folder datasets follow
    their layout (convbench.data.folder). Mean and std are the config's, or the training
    split's when the config has none (the config itself is never changed).

    A folder dataset with dataset.stream=true gives the same splits as files instead, decoded
    when their batches are read (`convbench.data.stream.file_splits`, `FileSplit`)."""
    if str(dataset_cfg.format) == "folder" and dataset_cfg.stream:
        return file_splits(dataset_cfg)
    if str(dataset_cfg.format) == "folder":
        pairs = folder_splits(dataset_cfg)
    else:
        pairs = _carve_validation(dataset_cfg, load_raw(dataset_cfg))
    for images, labels in pairs.values():
        _check_shape_and_labels(dataset_cfg, images, labels)
    train_x, train_y = pairs["train"]
    if dataset_cfg.train_limit is not None:
        train_x, train_y = train_x[: dataset_cfg.train_limit], train_y[: dataset_cfg.train_limit]
    splits = {
        "train": Split(train_x, train_y),
        "val": Split(*pairs["val"]),
        "test": Split(*pairs["test"]),
    }
    mean, std = statistics(dataset_cfg, lambda: channel_statistics(train_x))
    fingerprint = {name: tensor_fingerprint(s.images, s.labels) for name, s in splits.items()}
    return Splits(**splits, mean=mean, std=std, fingerprint=fingerprint)


def _carve_validation(dataset_cfg, raw) -> dict:
    train_x, train_y, test_x, test_y = raw
    val_size = split_count(dataset_cfg.val_size, len(train_y), "val_size")
    order = torch.randperm(
        len(train_y), generator=torch.Generator().manual_seed(dataset_cfg.split_seed)
    )
    val_idx, train_idx = order[:val_size], order[val_size:]
    return {
        "train": (train_x[train_idx], train_y[train_idx]),
        "val": (train_x[val_idx], train_y[val_idx]),
        "test": (test_x, test_y),
    }


def _check_shape_and_labels(dataset_cfg, images: torch.Tensor, labels: torch.Tensor) -> None:
    expected = (dataset_cfg.in_channels, dataset_cfg.native_size, dataset_cfg.native_size)
    if tuple(images.shape[1:]) != expected:
        raise DatasetError(
            f"{dataset_cfg.name}: files hold images of shape {tuple(images.shape[1:])}, the "
            f"config says {expected} (in_channels, native_size). Check dataset.root."
        )
    if len(labels) and int(labels.max()) >= dataset_cfg.num_classes:
        raise DatasetError(
            f"{dataset_cfg.name}: the files hold labels up to {int(labels.max())}, but "
            f"dataset.num_classes={dataset_cfg.num_classes}. Set dataset.num_classes to "
            f"{int(labels.max()) + 1} or more, or check dataset.root."
        )
