"""A folder dataset read from disk every epoch (dataset.stream=true), for images that do not fit
in memory: torch's DataLoader with worker processes decodes each batch's files into a uint8
batch, and the training process normalizes and augments it on the device exactly as `Batches`
does (`SeededBatches`, shared with it).

The batches are the cached path's, tensor for tensor: the splits are the same files
(`folder.folder_files`, carved as `folder.folder_splits` carves the decoded images), each file
is decoded by the same `folder.decode`, and the sampler yields the epoch's permutation that
`Batches` would draw (a function of (seed, epoch), this rank's shard of it in a distributed run)
from `start_batch * batch_size` on, so a resumed epoch continues where it stopped.

No image is held but those of the batches in flight: the workers' prefetched uint8 batches
(2 per worker) and the one being trained on; the splits themselves are lists of paths.
"""

import hashlib
import logging
import math
import os
import signal
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from convbench.data.batches import PixelMoments, SeededBatches, Splits, statistics
from convbench.data.folder import bad_image_error, decode_all, decode_or_problem, folder_files
from convbench.errors import DatasetError

log = logging.getLogger("convbench")

# Training images decoded (spread evenly over the split) for mean/std when the config has none:
# every image of a smaller split, so its statistics equal the cached path's to the last digit.
STATISTICS_SAMPLE = 1000
STATISTICS_CHUNK = 64  # images decoded at once for them
READER_GRACE_S = 5.0  # a reader's life after SIGTERM (reader_signals)


@dataclass
class FileSplit:
    """A split as files, read when its batches are: what `load_splits` gives with
    dataset.stream=true in place of a `Split`."""

    files: list[Path]
    labels: torch.Tensor  # int64 [N]
    side: int  # images are decoded to channels x side x side (folder.decode)
    channels: int
    skip_bad_images: bool = False

    def __len__(self) -> int:
        return len(self.files)

    @property
    def images(self) -> torch.Tensor:
        """Every image, decoded into memory: uint8 [N, C, side, side]. Only the perturbed tests
        (`robustness.*`, `convbench eval --shift ...`: a perturbation draws over the whole split
        at once) and `convbench eval --feature-maps` ask for it. A file that cannot be decoded
        stops them (the labels would no longer match)."""
        log.info(
            "decoding the %d images of a streamed split into memory for the perturbed "
            "test or the feature maps",
            len(self.files),
        )
        labelled = list(zip(self.files, self.labels.tolist(), strict=True))
        return decode_all(labelled, side=self.side, channels=self.channels, skip_bad=False).images


class ImageFiles(Dataset):
    """torchvision's ImageFolder reading, on convbench's file lists: item i is (the decoded
    file i as uint8 [C, side, side], its class index, "" or what is wrong with the file). A bad
    file comes back as zeros and a problem, not an exception, so that the training process
    decides (stop, or leave it out) and words the error without a worker's traceback."""

    def __init__(self, split: FileSplit):
        self.samples = list(zip(split.files, split.labels.tolist(), strict=True))
        self.side, self.channels = split.side, split.channels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        path, label = self.samples[index]
        image, problem = decode_or_problem(path, self.side, self.channels)
        if image is None:
            image = torch.zeros((self.channels, self.side, self.side), dtype=torch.uint8)
        return image, label, problem


class EpochSampler(Sampler[int]):
    """The split indices of one epoch of `batches` (`SeededBatches.order`: the permutation, or
    the shard of it, that `Batches` trains on), from batch `start_batch` on. `set_epoch` picks
    them before each pass; the DataLoader iterates the sampler in the training process."""

    def __init__(self, batches: SeededBatches):
        # A weak reference: batches -> loader -> sampler -> batches would be a cycle, and a
        # DataLoader freed by the cycle collector rather than at its last reference waits
        # seconds for each worker to stop.
        self.batches = weakref.proxy(batches)
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        order = self.batches.order(self.epoch).cpu()  # drawn on the device, as Batches draws it
        return iter(order[self.start_batch * self.batches.batch_size :].tolist())

    def __len__(self) -> int:
        return max(0, self.batches.num_samples - self.start_batch * self.batches.batch_size)


def reader_signals(worker_id: int) -> None:
    """In a reading process, the stop signals are the training process's to act on: it
    finishes the step, saves last.pt and then stops its readers (convbench.run.signals). Ctrl-C
    (sent to the whole process group) and SIGUSR1 are ignored here. SIGTERM, which SLURM sends
    to every process of a job, and which is also what stops a reader that does not stop by
    itself, ends the reader READER_GRACE_S later with exit status 0: meanwhile it delivers the
    batches already asked for, which the training process may be waiting for before it can stop
    (a reader gone at once would fail the run), and status 0 is not taken for a crash. A reader
    keeping the training process's own handler would log the stop a second time and never end."""

    for name in ("SIGINT", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _leave_soon)


def _leave_soon(number, frame) -> None:

    # A thread: the reader's main thread may be inside a long decode when the time is up.
    timer = threading.Timer(READER_GRACE_S, os._exit, args=(0,))
    timer.daemon = True
    timer.start()


class StreamBatches(SeededBatches):
    """`Batches`' interface over a `FileSplit`: the same batches, read from disk every epoch by
    `num_workers` processes (0: by the training process). Keyword arguments: `SeededBatches`'."""

    def __init__(self, split: FileSplit, *, num_workers: int = 0, **settings):
        super().__init__(len(split), **settings)
        self.split = split
        self.num_workers = num_workers
        self.sampler = EpochSampler(self)
        self._loader: DataLoader | None = None  # made at the first epoch: no idle workers before
        self._reported: set[str] = set()  # bad files already named in the log

    @property
    def images(self) -> torch.Tensor:
        return self.split.images

    @property
    def labels(self) -> torch.Tensor:
        return self.split.labels

    def loader(self) -> DataLoader:
        if self._loader is None:
            self._loader = DataLoader(
                ImageFiles(self.split),
                batch_size=self.batch_size,
                sampler=self.sampler,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,  # started once, not every epoch
                pin_memory=self.device.type == "cuda",
                worker_init_fn=reader_signals,
                # The workers' base seed is drawn from this generator, not from torch's global
                # one, which would then give dropout other masks than a cached run's.
                generator=torch.Generator().manual_seed(self.seed & 0x7FFF_FFFF_FFFF_FFFF),
            )
        return self._loader

    def epoch(
        self, epoch: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of `epoch` from `start_batch` on: (float images [B, C, S, S], labels [B])."""
        self.sampler.set_epoch(epoch, start_batch)
        for index, (images, labels, problems) in enumerate(self.loader(), start_batch):
            if any(problems):
                images, labels = self._without_bad_files(images, labels, problems)
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield self._prepare(images, epoch, index), labels

    def _without_bad_files(self, images, labels, problems: list[str]):
        """The batch without the files that could not be decoded (dataset.skip_bad_images),
        each named in the log once; without that setting the first one stops the run."""
        bad = [problem for problem in problems if problem]
        if not self.split.skip_bad_images:
            raise bad_image_error(bad[0])
        for problem in bad:
            if problem not in self._reported:
                self._reported.add(problem)
                log.warning("skipped an unreadable image: %s", problem)
        keep = torch.tensor([not problem for problem in problems])
        return images[keep], labels[keep]


def file_splits(cfg) -> Splits:
    """Train, validation and test of a folder dataset as files (dataset.stream=true): the
    splits the cached path decodes (`folder.folder_files`), dataset.train_limit applied. A
    config without mean/std gets those of up to STATISTICS_SAMPLE training images spread evenly
    over the split (all of them when it is no larger, then the numbers equal the cached path's),
    decoded a few at a time and not kept."""
    side, channels = int(cfg.native_size), int(cfg.in_channels)
    skip = bool(cfg.skip_bad_images)
    splits = {}
    for name, labelled in folder_files(cfg).items():
        if name == "train" and cfg.train_limit is not None:
            labelled = labelled[: cfg.train_limit]
        labels = torch.tensor([label for _, label in labelled], dtype=torch.long)
        if len(labels) and int(labels.max()) >= cfg.num_classes:
            raise DatasetError(
                f"{cfg.name}: the folder holds {int(labels.max()) + 1} classes, but "
                f"dataset.num_classes={cfg.num_classes}. Leave dataset.num_classes to the "
                "folder, or check dataset.root."
            )
        splits[name] = FileSplit([path for path, _ in labelled], labels, side, channels, skip)
    mean, std = statistics(cfg, lambda: sample_statistics(splits["train"]))
    fingerprint = {name: _files_fingerprint(split) for name, split in splits.items()}
    return Splits(**splits, mean=mean, std=std, fingerprint=fingerprint)


def _files_fingerprint(split: FileSplit) -> str:
    """A short hash of a split's file names (relative to nothing: as listed) and labels."""
    digest = hashlib.sha256()
    for path in split.files:
        digest.update(str(path).encode() + b"\0")
    digest.update(split.labels.numpy().tobytes())
    return digest.hexdigest()[:16]


def sample_statistics(split: FileSplit) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (`loader.channel_statistics`' numbers) of up to
    STATISTICS_SAMPLE images of `split`, spread evenly; files that cannot be decoded are left
    out (the batches name them)."""
    step = max(1, math.ceil(len(split) / STATISTICS_SAMPLE))
    sample = split.files[::step]
    log.info("mean/std from %d of the %d training images", len(sample), len(split))
    moments = PixelMoments(split.channels)
    with ThreadPoolExecutor(max_workers=4) as pool:  # Pillow decodes outside the GIL
        for start in range(0, len(sample), STATISTICS_CHUNK):
            chunk = sample[start : start + STATISTICS_CHUNK]
            decoded = pool.map(lambda p: decode_or_problem(p, split.side, split.channels), chunk)
            images = [image for image, _ in decoded if image is not None]
            if images:
                moments.add(torch.stack(images))
    if not moments.pixels:
        raise bad_image_error(f"{sample[0]} (and every other sampled training image)")
    return moments.statistics()
