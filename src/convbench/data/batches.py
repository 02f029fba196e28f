"""Splits held in memory as uint8 tensors, and mini-batches cut from them on the device.

No DataLoader and no per-sample Python: a batch is one index into the uint8 tensor, then a
conversion, normalization and augmentation of the whole batch on the device. Shuffling and
augmentation draw from generators seeded by (seed, epoch, batch index), so any batch of any epoch
can be rebuilt exactly, which is what makes mid-epoch resume exact. In a distributed run each
process takes its shard of every epoch (`Batches.num_samples`). A folder of images too large for
memory is read from disk instead (convbench.data.stream), into the same batches: the order and
the preparation on the device are `SeededBatches`', shared by both.
"""

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from convbench.data.augment import Augmentation


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Splits:
    """A dataset as a run uses it: its three splits (`Split`s in memory, or `FileSplit`s read
    from disk with dataset.stream=true), the per-channel statistics it is normalized with, and
    a fingerprint of every split's content, so that a resumed run can tell that its data is the
    data it started on."""

    train: object
    val: object
    test: object
    mean: list[float]
    std: list[float]
    fingerprint: dict[str, str]  # split name -> a hash of its images (or files) and labels

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLIT_NAMES}


SPLIT_NAMES = ("train", "val", "test")


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    """A short hash of the tensors' shapes and bytes (uint8 images and int64 labels)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def statistics(dataset_cfg, compute) -> tuple[list[float], list[float]]:
    """The config's mean and std where it gives them, else `compute()`'s (mean, std): either
    may be given alone."""
    mean, std = dataset_cfg.mean, dataset_cfg.std
    if mean is None or std is None:
        computed_mean, computed_std = compute()
        mean = computed_mean if mean is None else mean
        std = computed_std if std is None else std
    return [float(v) for v in mean], [float(v) for v in std]


def channel_statistics(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images [N, C, H, W], in [0, 1] units."""
    moments = PixelMoments(images.shape[1])
    for chunk in images.split(64):  # int64 copies of a few images at a time
        moments.add(chunk)
    return moments.statistics()


class PixelMoments:
    """Per-channel sums of uint8 pixels and of their squares, added a batch at a time. The sums
    are integers, hence exact: the statistics do not depend on how the images were cut into
    batches, so a streamed split's sample that holds every image gives the cached numbers."""

    def __init__(self, channels: int):
        self.pixels = 0  # per channel
        self.total = torch.zeros(channels, dtype=torch.int64)
        self.squares = torch.zeros(channels, dtype=torch.int64)

    def add(self, images: torch.Tensor) -> None:
        wide = images.to(torch.int64)  # [B, C, H, W]
        self.total += wide.sum(dim=(0, 2, 3))
        self.squares += (wide * wide).sum(dim=(0, 2, 3))
        self.pixels += images.numel() // images.shape[1]

    def statistics(self) -> tuple[list[float], list[float]]:
        """(mean, std) in [0, 1] units, rounded to 6 digits; std unbiased, at least 1e-6."""
        n, total, squares = self.pixels, self.total.double(), self.squares.double()
        mean = total / n / 255.0
        variance = (squares - total * total / n) / max(n - 1, 1) / 255.0**2
        std = variance.clamp_min(0).sqrt().clamp_min(1e-6)
        return [round(v, 6) for v in mean.tolist()], [round(v, 6) for v in std.tolist()]


class SeededBatches:
    """What `Batches` and `convbench.data.stream.StreamBatches` share: the size of an epoch and
    of this process's shard, the order of an epoch's images (a function of (seed, epoch), drawn
    on the device), and the preparation of a uint8 batch on the device (augmentation drawn from
    (seed, epoch, batch index), conversion, normalization, resize, memory format). Whatever
    brings the uint8 images, the batches of a given epoch are therefore the same."""

    def __init__(
        self,
        count: int,
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
        self.count = count  # images in the whole split
        self.rank, self.world_size = shard
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.image_size = image_size
        self.shuffle = shuffle
        self.augmentation = Augmentation.of(augment)
        self.augmenting = bool(self.augmentation)  # read every batch
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
        if self.world_size == 1:
            return self.count
        if self.shuffle:
            return self.count // self.world_size
        return len(range(self.rank, self.count, self.world_size))

    def _generator(self, *key: int) -> torch.Generator:
        # Distinct streams for (seed, epoch[, batch]) without keeping generator state around.
        mixed = hash((self.seed, *key)) & 0x7FFF_FFFF_FFFF_FFFF
        return torch.Generator(device=self.device).manual_seed(mixed)

    def order(self, epoch: int) -> torch.Tensor:
        """This process's split indices for `epoch`, in the order they are trained (on the
        device): batch i is order[i * batch_size : (i + 1) * batch_size]."""
        if self.shuffle:
            order = torch.randperm(self.count, generator=self._generator(epoch), device=self.device)
        else:
            order = torch.arange(self.count, device=self.device)
        if self.world_size > 1:  # this rank's shard (see num_samples)
            end = self.num_samples * self.world_size if self.shuffle else self.count
            order = order[self.rank : end : self.world_size]
        return order

    def _prepare(self, images: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        """Batch `index` of `epoch` as the model sees it, from its uint8 images on the device."""
        if self.augmenting:
            # Each rank its own draws (a single process keeps the (epoch, batch) key).
            key = (epoch, index) if self.world_size == 1 else (epoch, index, self.rank)
            images = self.augmentation(images, self._generator(*key))
        x = images.float().mul_(self.scale).sub_(self.shift)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear")
        return x.contiguous(memory_format=self.memory_format)


class Batches(SeededBatches):
    """Mini-batches of one split held on `device`, normalized (and optionally augmented) there.
    Keyword arguments: `SeededBatches`'."""

    def __init__(self, split: Split, **settings):
        super().__init__(len(split), **settings)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)

    def epoch(
        self, epoch: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of `epoch` from `start_batch` on: (float images [B, C, S, S], labels [B])."""
        order = self.order(epoch)
        for index in range(start_batch, len(self)):
            idx = order[index * self.batch_size : (index + 1) * self.batch_size]
            yield self._prepare(self.images[idx], epoch, index), self.labels[idx]
