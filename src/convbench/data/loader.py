"""The whole dataset as uint8 tensors in memory, and mini-batches cut from it on the device.

No DataLoader and no per-sample Python: a batch is one index into the uint8 tensor, then a
conversion, normalization and augmentation of the whole batch on the device. Shuffling and
augmentation draw from generators seeded by (seed, epoch, batch index), so any batch of any epoch
can be rebuilt exactly, which is what makes mid-epoch resume exact. In a distributed run each
process takes its shard of every epoch (`Batches.num_samples`).
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from convbench.data.sources import load_raw
from convbench.errors import DatasetError


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


def load_splits(dataset_cfg) -> dict[str, Split]:
    """Train, validation (carved from train with `split_seed`) and test splits."""
    train_x, train_y, test_x, test_y = load_raw(dataset_cfg)
    expected = (dataset_cfg.in_channels, dataset_cfg.native_size, dataset_cfg.native_size)
    for images in (train_x, test_x):
        if tuple(images.shape[1:]) != expected:
            raise DatasetError(
                f"{dataset_cfg.name}: files hold images of shape {tuple(images.shape[1:])}, the "
                f"config says {expected} (in_channels, native_size). Check dataset.root."
            )
    for labels in (train_y, test_y):
        if len(labels) and int(labels.max()) >= dataset_cfg.num_classes:
            raise DatasetError(
                f"{dataset_cfg.name}: the files hold labels up to {int(labels.max())}, but "
                f"dataset.num_classes={dataset_cfg.num_classes}. Set dataset.num_classes to "
                f"{int(labels.max()) + 1} or more, or check dataset.root."
            )
    val_size = dataset_cfg.val_size
    if not 0 <= val_size < len(train_y):
        raise DatasetError(
            f"dataset.val_size={val_size} must be between 0 and the {len(train_y)} training images."
        )
    order = torch.randperm(
        len(train_y), generator=torch.Generator().manual_seed(dataset_cfg.split_seed)
    )
    val_idx, train_idx = order[:val_size], order[val_size:]
    if dataset_cfg.train_limit is not None:
        if dataset_cfg.train_limit < 1:
            raise DatasetError(f"dataset.train_limit={dataset_cfg.train_limit} must be at least 1.")
        train_idx = train_idx[: dataset_cfg.train_limit]
    return {
        "train": Split(train_x[train_idx], train_y[train_idx]),
        "val": Split(train_x[val_idx], train_y[val_idx]),
        "test": Split(test_x, test_y),
    }


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and cut a random window of the original size per image."""
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)  # [B, C, H + 2p, W + 2p]
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]  # [B, 1, H, 1]
    cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]  # [B, 1, 1, W]
    batch_idx = torch.arange(batch, device=device)[:, None, None, None]
    channel_idx = torch.arange(channels, device=device)[None, :, None, None]
    return padded[batch_idx, channel_idx, rows, cols]  # [B, C, H, W]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


class Batches:
    """Mini-batches of one split, normalized (and optionally augmented) on `device`."""

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        device: torch.device,
        mean: list[float],
        std: list[float],
        image_size: int,
        shuffle: bool = False,
        augment=None,
        channels_last: bool = False,
        seed: int = 0,
        shard: tuple[int, int] = (0, 1),
    ):
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.rank, self.world_size = shard
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.image_size = image_size
        self.shuffle = shuffle
        self.crop_padding = augment.crop_padding if augment is not None else 0
        self.flip = bool(augment.flip) if augment is not None else False
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.seed = seed
        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        # (x / 255 - mean) / std  ==  x * scale - shift, one fused multiply-add per batch.
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = mean_t / std_t

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    @property
    def num_samples(self) -> int:
        """Images this process takes per epoch: its shard of the split.

        Shuffled (training) splits are cut into equal shards, rank r taking every world_size-th
        image of the epoch's permutation from position r; the last `n % world_size` images of
        the permutation, a different few each epoch, are left out, so every rank runs the same
        number of steps and none waits forever for another. In-order (evaluation) splits are
        cut the same way without leaving anything out: every image is tested exactly once.
        """
        count = len(self.labels)
        if self.world_size == 1:
            return count
        if self.shuffle:
            return count // self.world_size
        return len(range(self.rank, count, self.world_size))

    def _generator(self, *key: int) -> torch.Generator:
        # Distinct streams for (seed, epoch[, batch]) without keeping generator state around.
        mixed = hash((self.seed, *key)) & 0x7FFF_FFFF_FFFF_FFFF
        return torch.Generator(device=self.device).manual_seed(mixed)

    def epoch(
        self, epoch: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of `epoch` from `start_batch` on: (float images [B, C, S, S], labels [B])."""
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self._generator(epoch), device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        if self.world_size > 1:  # this rank's shard (see num_samples)
            end = self.num_samples * self.world_size if self.shuffle else n
            order = order[self.rank : end : self.world_size]
        for index in range(start_batch, len(self)):
            idx = order[index * self.batch_size : (index + 1) * self.batch_size]
            yield self._prepare(self.images[idx], epoch, index), self.labels[idx]

    def _prepare(self, images: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        if self.crop_padding or self.flip:
            # Each rank its own draws (a single process keeps the (epoch, batch) key).
            key = (epoch, index) if self.world_size == 1 else (epoch, index, self.rank)
            generator = self._generator(*key)
            if self.crop_padding:
                images = random_crop(images, self.crop_padding, generator)
            if self.flip:
                images = random_flip(images, generator)
        x = images.float().mul_(self.scale).sub_(self.shift)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear")
        return x.contiguous(memory_format=self.memory_format)
