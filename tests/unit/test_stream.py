"""dataset.stream=true: a folder of real PNG and JPEG files read from disk every epoch by
DataLoader worker processes gives exactly the cached path's batches (images and labels, every
epoch, augmented or not, resumed mid-epoch, sharded over ranks), and a streamed run trains to
the cached run's weights (`convbench` in this process, helpers.inprocess). A streamed run stopped
by SIGTERM and resumed is in tests/process/test_resume.py."""

import json
from pathlib import Path

import pytest
import torch

from convbench.config.compose import compose
from convbench.data.batches import SPLIT_NAMES, Batches
from convbench.data.folder import CACHE_FOLDER
from convbench.data.loader import load_splits
from convbench.data.stream import FileSplit, StreamBatches
from convbench.errors import ConvbenchError, DatasetError
from convbench.run.build import eval_batches, make_batches
from convbench.run.checkpoint import Settled, load_checkpoint
from convbench.run.ranks import Place
from helpers.cli import ONE_THREAD
from helpers.imagefolders import write_shape_folders
from helpers.inprocess import convbench

NATIVE = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_shape_folders(tmp_path_factory.mktemp("stream") / "images", per_class=20)


def dataset_overrides(root: Path, *extra: str) -> list[str]:
    """The folder as a dataset; the batch layout set, as a run settles `auto` before batching."""
    return [
        "dataset=imagefolder",
        f"dataset.root={root}",
        f"dataset.native_size={NATIVE}",
        "dataset.val_size=0.2",
        "dataset.test_size=0.2",
        "trainer.channels_last=false",
        *extra,
    ]


def composed(root: Path, cache: Path, *extra: str):
    """The config with the decoded cache under `cache` (outside the folder)."""
    return compose([*dataset_overrides(root, f"dataset.cache_dir={cache}"), *extra])


def both_splits(folder: Path, tmp_path: Path, *extra: str):
    cached_cfg = composed(folder, tmp_path / "cache", *extra)
    streamed_cfg = composed(folder, tmp_path / "cache", "dataset.stream=true", *extra)
    cached, streamed = load_splits(cached_cfg.dataset), load_splits(streamed_cfg.dataset)
    return (cached_cfg, cached), (streamed_cfg, streamed)


def assert_same_batches(ours, theirs) -> None:
    ours, theirs = list(ours), list(theirs)
    assert len(ours) == len(theirs) > 0
    for (x, y), (x_ref, y_ref) in zip(ours, theirs, strict=True):
        assert torch.equal(y, y_ref)
        assert torch.equal(x, x_ref)


CPU = torch.device("cpu")
SOLO = Place()


def by_name(splits) -> dict:
    """A `Splits`' three splits by name: {"train": ..., "val": ..., "test": ...}."""
    return {name: getattr(splits, name) for name in SPLIT_NAMES}


def settled_for(splits) -> Settled:
    """What a run on `splits` settles before batching: fp32, no channels_last, their statistics."""
    return Settled(
        precision="fp32",
        channels_last=False,
        mean=splits.mean,
        std=splits.std,
        fingerprint=splits.fingerprint,
        reasons={},
    )


def batches_for(cfg, splits) -> dict:
    return make_batches(cfg, splits, device=CPU, settled=settled_for(splits), here=SOLO)


def test_streamed_splits_are_the_cached_ones_pixel_for_pixel(folder, tmp_path):
    (_, cached_splits), (_, streamed_splits) = both_splits(folder, tmp_path)
    streamed, cached = by_name(streamed_splits), by_name(cached_splits)
    assert all(isinstance(split, FileSplit) for split in streamed.values())
    for name in ("train", "val", "test"):
        assert torch.equal(streamed[name].labels, cached[name].labels), name
        # What the perturbed tests decode: the same pixels as the cache's, file for file.
        assert torch.equal(streamed[name].images, cached[name].images), name
    # 60 images: val and test 0.2 of all 60 (12 each), the rest trains
    assert [len(streamed[n]) for n in ("train", "val", "test")] == [36, 12, 12]
    # mean/std from a sample that holds every training image: the cached numbers exactly.
    assert streamed_splits.mean == cached_splits.mean
    assert streamed_splits.std == cached_splits.std
    assert not (folder / CACHE_FOLDER).exists()


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "crop+flip"])
def test_a_streamed_epoch_yields_the_cached_batches(folder, tmp_path, augment):
    extra = ("dataset.augment.crop_padding=3", "dataset.augment.flip=true") if augment else ()
    (cached_cfg, cached), (streamed_cfg, streamed) = both_splits(folder, tmp_path, *extra)
    streamed_cfg.dataset.num_workers = 2  # real worker processes
    for cfg in (cached_cfg, streamed_cfg):
        cfg.trainer.batch_size, cfg.trainer.eval_batch_size = 8, 5  # 36 = 4 x 8 + 4; 12 = 2 x 5 + 2
        cfg.trainer.channels_last = False
    ours = batches_for(streamed_cfg, streamed)
    theirs = batches_for(cached_cfg, cached)
    assert all(isinstance(b, StreamBatches) for b in ours.values())
    assert all(type(b) is Batches for b in theirs.values())
    for name in ("train", "val", "test"):
        assert (len(ours[name]), ours[name].num_samples) == (
            len(theirs[name]),
            theirs[name].num_samples,
        )
    for epoch in (0, 1, 2):
        assert_same_batches(ours["train"].epoch(epoch), theirs["train"].epoch(epoch))
    assert_same_batches(ours["val"].epoch(0), theirs["val"].epoch(0))
    assert_same_batches(ours["test"].epoch(0), theirs["test"].epoch(0))
    # The epochs differ from each other (the order is drawn per epoch), as the cached ones do.
    first, second = (torch.cat([y for _, y in ours["train"].epoch(e)]) for e in (0, 1))
    assert not torch.equal(first, second)


def test_resuming_from_a_batch_gives_the_rest_of_the_same_epoch(folder, tmp_path):
    (cached_cfg, cached), (streamed_cfg, streamed) = both_splits(
        folder, tmp_path, "dataset.augment.crop_padding=2", "dataset.augment.flip=true"
    )
    streamed_cfg.dataset.num_workers = 2
    for cfg in (cached_cfg, streamed_cfg):
        cfg.trainer.batch_size = 8
    ours = batches_for(streamed_cfg, streamed)["train"]
    theirs = batches_for(cached_cfg, cached)["train"]
    whole = list(theirs.epoch(3))
    for start_batch in (1, 3, 4):  # 4: the short last batch alone
        assert_same_batches(ours.epoch(3, start_batch), whole[start_batch:])
    assert list(ours.epoch(3, len(ours))) == []  # an epoch resumed at its end: nothing left
    # A pass abandoned after its first batch (as the sample images take it) leaves the next
    # epoch whole.
    next(ours.epoch(0))
    assert_same_batches(ours.epoch(3, 2), whole[2:])


def _indices(batches: StreamBatches, epoch: int) -> list[int]:
    batches.sampler.set_epoch(epoch)
    return list(batches.sampler)


def test_two_ranks_take_disjoint_shards_by_the_rule(folder, tmp_path):
    (_, cached), (streamed_cfg, streamed) = both_splits(folder, tmp_path)
    settled = settled_for(streamed)
    cached, streamed = by_name(cached), by_name(streamed)
    settings = {"device": CPU, "mean": [0.5] * 3, "std": [0.25] * 3, "image_size": NATIVE}
    train = {"batch_size": 4, "shuffle": True, "seed": 7, **settings}
    whole = StreamBatches(streamed["train"], **train)  # one process: the permutation itself
    for epoch in (0, 1):
        permutation = _indices(whole, epoch)
        assert sorted(permutation) == list(range(36))
        ranks = [
            StreamBatches(streamed["train"], shard=(r, 2), num_workers=2, **train) for r in (0, 1)
        ]
        shards = [_indices(rank, epoch) for rank in ranks]
        # Rank r takes every second image of the epoch's permutation from position r.
        assert shards == [permutation[0::2], permutation[1::2]]
        assert not set(shards[0]) & set(shards[1])
        assert all(rank.num_samples == 18 and len(rank) == 5 for rank in ranks)
        # And the images they read are the cached ranks' batches.
        for rank, streamed_rank in zip((0, 1), ranks, strict=True):
            cached_rank = Batches(cached["train"], shard=(rank, 2), **train)
            assert_same_batches(streamed_rank.epoch(epoch), cached_rank.epoch(epoch))
    # 39 images over 2 ranks: one, a different one each epoch, is left out of the training.
    odd = FileSplit(
        streamed["train"].files + streamed["val"].files[:1],
        torch.cat([streamed["train"].labels, streamed["val"].labels[:1]]),
        NATIVE,
        3,
    )
    ranks = [StreamBatches(odd, shard=(r, 2), **train) for r in (0, 1)]
    permutation = _indices(StreamBatches(odd, **train), 0)
    shards = [_indices(rank, 0) for rank in ranks]
    assert shards == [permutation[0:36:2], permutation[1:36:2]]
    # Evaluation shards leave nothing out: every image exactly once.
    val = [
        eval_batches(streamed_cfg, streamed["val"], device=CPU, settled=settled, shard=(r, 2))
        for r in (0, 1)
    ]
    assert sorted(_indices(val[0], 0) + _indices(val[1], 0)) == list(range(len(streamed["val"])))


def test_a_bad_file_stops_the_stream_or_is_left_out(tmp_path):
    root = write_shape_folders(tmp_path / "images", per_class=6)
    bad = root / "square" / "001.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    cfg = compose(
        [
            *dataset_overrides(root, "dataset.stream=true"),
            "dataset.val_size=2",
            "dataset.test_size=2",
            "dataset.mean=[0.5,0.5,0.5]",
            "dataset.std=[0.2,0.2,0.2]",
            "dataset.num_workers=1",
        ]
    )
    loaded = load_splits(cfg.dataset)
    settled, splits = settled_for(loaded), by_name(loaded)
    everything = FileSplit(
        [f for s in splits.values() for f in s.files],
        torch.cat([s.labels for s in splits.values()]),
        NATIVE,
        3,
    )
    batches = eval_batches(cfg, everything, device=CPU, settled=settled)
    with pytest.raises(DatasetError, match=r"001\.jpg.*skip_bad_images=true"):
        list(batches.epoch(0))
    everything.skip_bad_images = True
    kept = list(eval_batches(cfg, everything, device=CPU, settled=settled).epoch(0))
    assert sum(len(y) for _, y in kept) == len(everything) - 1


def test_stream_is_refused_for_a_dataset_held_in_memory(mnist_root):
    from convbench.launch.preflight import preflight

    cfg = compose(["dataset=mnist", f"dataset.root={mnist_root}", "dataset.stream=true"])
    with pytest.raises(ConvbenchError, match="dataset=imagefolder"):
        preflight(cfg)


# --- whole runs ----------------------------------------------------------------------------------


def run_overrides(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        *dataset_overrides(root),
        "trainer.epochs=2",
        "trainer.batch_size=8",
        "trainer.eval_batch_size=16",
        "trainer.device=cpu",
        ONE_THREAD,
        "dataset.augment.crop_padding=2",
        "dataset.augment.flip=true",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def assert_same_weights(run_dir: Path, reference: Path, which: str = "last.pt") -> None:
    ours = load_checkpoint(run_dir / "checkpoints" / which)["model"]
    theirs = load_checkpoint(reference / "checkpoints" / which)["model"]
    assert ours.keys() == theirs.keys()
    for key, tensor in theirs.items():
        assert torch.equal(ours[key], tensor), f"{which}: {key} differs"


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A folder of its own for the runs (a cached run writes its cache into it)."""
    return write_shape_folders(tmp_path_factory.mktemp("runs") / "images", per_class=24, seed=1)


@pytest.fixture(scope="module")
def streamed_run(tmp_path_factory, run_folder) -> Path:
    """An uninterrupted streamed run with two reading processes."""
    cwd = tmp_path_factory.mktemp("streamed")
    stream = ("dataset.stream=true", "dataset.num_workers=2")
    result = convbench("train", *run_overrides(run_folder, cwd / "run", *stream), cwd=cwd)
    assert result.code == 0, result.stderr
    return cwd / "run"


def test_a_streamed_run_trains_like_the_cached_run_and_writes_no_cache(
    streamed_run, run_folder, tmp_path
):
    assert not (run_folder / CACHE_FOLDER).exists()
    streamed = metrics(streamed_run)
    assert streamed["best_epoch"] >= 1 and len(streamed["history"]) == 2
    result = convbench("train", *run_overrides(run_folder, tmp_path / "run"), cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (run_folder / CACHE_FOLDER).is_dir()  # the cached run did write one
    cached = metrics(tmp_path / "run")
    assert streamed["test_acc"] == cached["test_acc"]
    assert [h["train_loss"] for h in streamed["history"]] == [
        h["train_loss"] for h in cached["history"]
    ]
    # The same batches in the same order: the same weights, bit for bit.
    assert_same_weights(streamed_run, tmp_path / "run", "last.pt")
    assert_same_weights(streamed_run, tmp_path / "run", "best.pt")
