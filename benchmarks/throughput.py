"""Training throughput: convbench's engine against a bare tensor loop and torchvision's pipeline.

For each model, in one process, on the same images and from the same initial weights, one
training epoch is timed these ways:

  bare        the whole training set as one uint8 tensor on the device; each epoch a randperm,
              each step an index, a normalization, forward, loss, backward, step, zero_grad.
              No logging, no metrics: the fastest simple loop a PyTorch user writes, with the
              optimizer as a user writes it (the config's class and hyperparameters, torch's
              default implementation). Twice: in fp32 and in bf16 autocast (both in the memory
              format `auto` picks: channels_last for conv nets on a CPU), so the baseline is the
              better of the two, whichever that is for the model and the machine.
  convbench   `convbench.engine.train_one_epoch` with real `convbench.data.Batches`, the
              trainer's default EngineOptions (`convbench.run.build.engine_options` of
              conf/trainer/default.yaml: log_every_n_steps 50), a real TensorBoard SummaryWriter
              and the console's NoProgress (what a run off a terminal uses); no checkpoints
              during the epoch.
  dataloader  torchvision's usual stack: `torchvision.datasets.FashionMNIST` (or CIFAR10) with
              ToTensor + Normalize, `torch.utils.data.DataLoader(shuffle=True)`, one worker count
              per `--workers` entry; the fastest one is reported and named.

Each variant is warmed up for a few steps, then timed over whole epochs (the device is
synchronized before and after), `--repeats` times, the variants in a rotating order; the table
shows their median images/s and convbench/dataloader (what the in-memory path buys over the
usual stack; targets >= 4 for mlp and >= 1.4 for lenet).

convbench against the faster bare loop (the target: >= 1.0, as fast as a hand-written loop at
its best) is measured apart, in paired rounds: each round trains `--chunk-steps` steps with
convbench, with each bare loop, and with the bare loop in convbench's precision given
convbench's own optimizer (its fused kernel), one right after the other in a rotating order,
and takes the ratios of the times to convbench's; the target is judged on the median over the
`--rounds` rounds of the ratio against that round's faster bare loop, and the ratio against the
bare loop with convbench's optimizer shows what the engine itself (metrics, sync points,
logging) costs. On a shared virtual machine whole epochs drift by 10-25 % from one repeat to
the next, more than the few percent asked about; two neighbouring chunks see the same machine,
so the drift cancels in their ratio. The ratio of the epochs' medians is shown beside it.
Augmentation is off in every variant, so all do the same work.

Examples:
  python benchmarks/throughput.py                                    # mlp, lenet, resnet20 on CPU
  python benchmarks/throughput.py --device cuda --precision bf16 --channels-last \
      --models resnet18 --dataset cifar10 --images 50000             # GPU: ~2-3 minutes
  python benchmarks/throughput.py --smoke                            # seconds; used by the tests
"""

import argparse
import copy
import dataclasses
import gzip
import json
import os
import pickle
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from common import fashion_mnist_dir
from convbench.config.auto import choose_channels_last, choose_precision
from convbench.config.compose import compose
from convbench.data.batches import Batches, Split
from convbench.data.formats import write_cifar_batch, write_idx
from convbench.engine import EngineOptions, Optimization, RunIO, TrainState, train_one_epoch
from convbench.monitor.console import NoProgress
from convbench.run.build import (
    AUTOCAST_DTYPES,
    build_model,
    build_optimization,
    count_macs,
    engine_options,
)
from convbench.run.checkpoint import Settled
from convbench.run.ranks import Solo
from convbench.run.signals import StopRequest

FASHION_MNIST_DIR = fashion_mnist_dir()
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
BARE_TARGET = 1.0  # convbench / the faster bare loop, every model
BARE_PRECISIONS = ("fp32", "bf16")  # the bare loops
IMPLEMENTATION_KEYS = ("fused", "foreach")  # how an optimizer computes, not what
DATALOADER_TARGETS = {"mlp": 4.0, "lenet": 1.4}  # convbench/dataloader


# ----------------------------------------------------------------------------- data


@dataclass
class Data:
    """The training images once, for every variant."""

    images: torch.Tensor  # uint8 [N, C, H, W], CPU
    labels: torch.Tensor  # int64 [N], CPU
    source: str  # where the images came from, printed with the results
    torchvision_dataset: torch.utils.data.Dataset  # the same images through torchvision


def random_images(count: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)
    return images, rng.integers(0, 10, size=count, dtype=np.uint8)


def prepare_fashion_mnist(root: Path, count: int, generated: bool) -> tuple[Path, str]:
    """Put Fashion-MNIST's four IDX files (uncompressed: torchvision reads them only after its
    own download step extracted them) in `root`/FashionMNIST/raw; returns (root, source)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    if not generated and all((FASHION_MNIST_DIR / f"{n}.gz").is_file() for n in IDX_FILES):
        for name in IDX_FILES:
            with gzip.open(FASHION_MNIST_DIR / f"{name}.gz") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return root, f"real Fashion-MNIST ({FASHION_MNIST_DIR})"
    for prefix, size, seed in (("train", count, 0), ("t10k", 100, 1)):
        images, labels = random_images(size, (28, 28), seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root, "generated random uint8 images in Fashion-MNIST's IDX format"


class GeneratedCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10 reader, minus the md5 checks against the official archive
    (generated files cannot pass them); reading and __getitem__ are torchvision's own."""

    def _check_integrity(self) -> bool:
        return True

    def _load_meta(self) -> None:
        with open(Path(self.root) / self.base_folder / "batches.meta", "rb") as handle:
            self.classes = pickle.load(handle)["label_names"]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def write_cifar10(root: Path, count: int) -> Path:
    """CIFAR-10's python layout with random images: data_batch_1..5 and test_batch as the
    original files are written, and the batches.meta that torchvision's reader also wants."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    sizes = [count // 5 + (i < count % 5) for i in range(5)]
    names = [f"data_batch_{i + 1}" for i in range(5)] + ["test_batch"]
    for seed, (name, size) in enumerate(zip(names, [*sizes, 100], strict=True)):
        write_cifar_batch(folder / name, *random_images(size, (3, 32, 32), seed))
    meta = {"label_names": [f"class{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def load_data(dataset: str, count: int, mean, std, tmp: Path, generated: bool) -> Data:
    """The first `count` training images, read by torchvision, shared by every variant."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    if dataset == "fashionmnist":
        root, source = prepare_fashion_mnist(tmp / "data", count, generated)
        tv_dataset = torchvision.datasets.FashionMNIST(root, train=True, transform=transform)
        images = tv_dataset.data[:count].unsqueeze(1)  # [N, 28, 28] -> [N, 1, 28, 28]
    elif dataset == "cifar10":
        root = write_cifar10(tmp / "data", count)
        source = "generated random uint8 images in CIFAR-10's python pickle format"
        tv_dataset = GeneratedCIFAR10(str(root), train=True, transform=transform)
        images = torch.from_numpy(tv_dataset.data[:count]).permute(0, 3, 1, 2)  # HWC -> CHW
    else:
        raise SystemExit(f"--dataset {dataset}: choose fashionmnist or cifar10")
    if len(images) < count:
        raise SystemExit(f"--images {count}: the dataset has only {len(images)} training images")
    # Truncate torchvision's own arrays, so its __getitem__ path stays exactly as shipped.
    tv_dataset.data, tv_dataset.targets = tv_dataset.data[:count], tv_dataset.targets[:count]
    labels = torch.as_tensor(tv_dataset.targets, dtype=torch.long)
    return Data(images.contiguous(), labels, source, tv_dataset)


# ----------------------------------------------------------------------------- models


@dataclass
class Setup:
    """One model's config, initial weights and the settings every variant shares."""

    name: str
    cfg: object  # the composed config
    initial_model: nn.Module  # CPU; each timed epoch trains a deep copy
    options: EngineOptions  # the convbench variant's; its autocast dtype serves every variant
    device: torch.device
    precision: str  # as settled for the convbench variant (fp32, bf16, fp16)
    channels_last: bool
    batch_size: int
    warmup_steps: int

    def in_precision(self, precision: str) -> "Setup":
        """The same setup with another autocast precision (a bare loop's)."""
        options = dataclasses.replace(self.options, autocast_dtype=AUTOCAST_DTYPES[precision])
        return dataclasses.replace(self, precision=precision, options=options)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        dtype = self.options.autocast_dtype
        return nullcontext() if dtype is None else torch.autocast(self.device.type, dtype)

    def fresh(self) -> tuple[nn.Module, Optimization]:
        """A copy of the initial model on the device, and its loss, optimizer and scaler as
        `convbench.run.build` makes them from the config (the fp16 scaler by `precision`)."""
        model = copy.deepcopy(self.initial_model).to(self.device, memory_format=self.memory_format)
        cfg = copy.deepcopy(self.cfg)
        cfg.trainer.precision = self.precision
        return model, build_optimization(cfg, model, self.device, epochs=cfg.trainer.epochs)


def model_overrides(name: str) -> list[str]:
    """`resnet20` -> model=resnet model.depth=20; `lenet` -> model=lenet."""
    match = re.fullmatch(r"(resnet|plainnet)(\d+)", name)
    if match:
        return [f"model={match[1]}", f"model.depth={match[2]}"]
    return [f"model={name}"]


def benchmark_options(cfg, settled: Settled, log_every_n_steps) -> EngineOptions:
    """The trainer's EngineOptions with no checkpoints inside the epoch and, when given,
    --log-every-n-steps in place of the config's value."""
    changes = {"checkpoint_every_n_steps": 0}
    if log_every_n_steps is not None:
        changes["log_every_n_steps"] = log_every_n_steps
    return dataclasses.replace(engine_options(cfg, settled), **changes)


def make_setup(name: str, args, seed: int = 0) -> Setup:
    """One model's setup: --precision and --channels-last settled as a run settles them (`auto`:
    convbench.config.auto, per model and device), so that the autocast dtype, the fp16 scaler
    and the memory format of the convbench variant are what a run of it would use."""
    cfg = compose([f"dataset={args.dataset}", *model_overrides(name)])
    device = torch.device(args.device)
    macs = count_macs(cfg)
    meta_model = build_model(cfg, torch.device("meta"))
    precision = choose_precision(args.precision, device, macs).value
    layout = choose_channels_last(args.channels_last, meta_model, device=device, macs=macs).value
    data = cfg.dataset
    settled = Settled(
        precision=precision,
        channels_last=layout,
        mean=list(data.mean),
        std=list(data.std),
        fingerprint={},
        reasons={},
    )
    torch.manual_seed(seed)
    return Setup(
        name,
        cfg,
        initial_model=build_model(cfg, torch.device("cpu")),
        options=benchmark_options(cfg, settled, args.log_every_n_steps),
        device=device,
        precision=precision,
        channels_last=layout,
        batch_size=args.batch_size,
        warmup_steps=args.warmup_steps,
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], None]) -> float:
    """Wall-clock seconds of `work()`, with the device idle before and after."""
    synchronize(device)
    started = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - started


# ----------------------------------------------------------------------------- variants


def make_step(setup: Setup, model: nn.Module, optimization: Optimization) -> Callable:
    """The plain training step of the bare loop and the DataLoader loop."""
    loss_fn, optimizer, scaler = optimization.loss_fn, optimization.optimizer, optimization.scaler

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        with setup.autocast():
            loss = loss_fn(model(images), labels)
        if scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def written_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The config's optimizer as a user writes it: its class and hyperparameters, with torch's
    own defaults for the implementation (on a CPU a loop over the parameters), not the fused
    kernel that convbench's configs ask for."""
    settings = OmegaConf.to_container(cfg.optimizer, resolve=True)
    target = settings.pop("_target_")
    settings = {
        key: value
        for key, value in settings.items()
        if not key.startswith("_") and key not in IMPLEMENTATION_KEYS
    }
    return hydra.utils.get_class(target)(model.parameters(), **settings)


def bare_runner(setup: Setup, data: Data, *, as_written: bool = True) -> Callable[[int], float]:
    """The bare tensor loop, warmed up: a function of a count of images (whole batches, at most
    the training set) that trains on that many and returns the seconds it took. Its model and
    optimizer carry on from one call to the next, as in a longer run. `as_written`: the
    optimizer as a user writes it (written_optimizer); otherwise convbench's, kernel included."""
    device, size = setup.device, setup.batch_size
    images, labels = data.images.to(device), data.labels.to(device)
    cfg = setup.cfg.dataset
    mean = torch.tensor(cfg.mean, device=device).view(1, -1, 1, 1) * 255
    std = torch.tensor(cfg.std, device=device).view(1, -1, 1, 1) * 255
    model, optimization = setup.fresh()
    if as_written:
        optimization = dataclasses.replace(
            optimization, optimizer=written_optimizer(setup.cfg, model)
        )
    model.train()
    step = make_step(setup, model, optimization)

    def train(count: int) -> None:
        order = torch.randperm(len(labels), device=device)
        for start in range(0, min(count, len(labels)), size):
            index = order[start : start + size]
            batch = (images[index].float() - mean) / std
            step(batch.contiguous(memory_format=setup.memory_format), labels[index])

    train(setup.warmup_steps * size)
    return lambda count: timed(device, lambda: train(count))


class NoCheckpointer:
    def save(self, state, is_best: bool) -> None:
        raise AssertionError("the benchmark asks for no checkpoints inside the epoch")


def convbench_batches(setup: Setup, data: Data, count: int) -> Batches:
    """The first `count` images as the convbench variant's shuffled, un-augmented batches."""
    cfg = setup.cfg.dataset
    return Batches(
        Split(data.images[:count], data.labels[:count]),
        batch_size=setup.batch_size,
        device=setup.device,
        mean=list(cfg.mean),
        std=list(cfg.std),
        image_size=cfg.image_size,
        shuffle=True,
        augment=None,
        channels_last=setup.channels_last,
        seed=0,
    )


def convbench_runner(setup: Setup, data: Data, writer) -> Callable[[int], float]:
    """`convbench.engine.train_one_epoch`, warmed up: a function of a count of images that trains
    one epoch of that many (the first ones of the training set, shuffled) and returns the
    seconds it took; the model and optimizer carry on between calls, the epoch's state does not
    (each call is an epoch, with its own sums and its closing sync point)."""
    model, optimization = setup.fresh()
    # A StopRequest never entered installs no signal handler: `requested` stays None.
    io = RunIO(writer, NoProgress(), NoCheckpointer(), StopRequest(), Solo())

    def train(epoch_batches: Batches) -> None:
        state = TrainState()
        train_one_epoch(
            model, epoch_batches, optimization, state=state, options=setup.options, io=io
        )

    def run(count: int) -> float:
        batches = convbench_batches(setup, data, count)
        return timed(setup.device, lambda: train(batches))

    run(setup.warmup_steps * setup.batch_size)
    return run


def time_dataloader(setup: Setup, data: Data, workers: int) -> float:
    """Seconds for one epoch of torchvision's dataset + DataLoader (workers start inside it)."""
    on_gpu = setup.device.type == "cuda"
    loader = DataLoader(
        data.torchvision_dataset,
        batch_size=setup.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=on_gpu,
    )
    model, optimization = setup.fresh()
    model.train()
    step = make_step(setup, model, optimization)

    def run(batches: int | None) -> None:
        for index, (images, labels) in enumerate(loader):
            if batches is not None and index == batches:
                break
            images = images.to(setup.device, non_blocking=on_gpu)
            labels = labels.to(setup.device, non_blocking=on_gpu)
            step(images.contiguous(memory_format=setup.memory_format), labels)

    run(setup.warmup_steps)
    return timed(setup.device, lambda: run(None))


# ----------------------------------------------------------------------------- measurement


def warm_shapes(setup: Setup, data: Data) -> None:
    """One step at the full and at the last (partial) batch size on a throwaway copy, so that
    one-time costs per shape (cudnn.benchmark's search, allocator growth) fall on no variant."""
    step = make_step(setup, *setup.fresh())
    for size in {setup.batch_size, len(data.labels) % setup.batch_size or setup.batch_size}:
        images = data.images[:size].to(setup.device).float()
        step(
            images.contiguous(memory_format=setup.memory_format),
            data.labels[:size].to(setup.device),
        )
    synchronize(setup.device)


def rotation(names: list[str], number: int) -> list[str]:
    """`names` starting at position `number` (modulo their count): round `number`'s order."""
    shift = number % len(names)
    return names[shift:] + names[:shift]


def rotated(runners: dict, repeats: int, images: int, model: str) -> dict[str, list[float]]:
    """images/s of every variant per repeat, each repeat an epoch of `images`; the order of the
    variants rotates from one repeat to the next."""
    names = list(runners)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in rotation(names, repeat):
            rates[name].append(images / runners[name]())
            print(
                f"  {model:<10} repeat {repeat + 1}/{repeats}  {name:<24}"
                f"{rates[name][-1]:>12,.0f} img/s",
                flush=True,
            )
    return rates


def paired_ratios(loops: dict, *, rounds: int, images: int, model: str) -> dict[str, list]:
    """convbench's speed over each other loop's, a round at a time. Each round trains `images`
    with every loop, one right after the other (the order rotating), and takes the ratios of
    their times to convbench's: the loops meet the machine in nearly the same state, so the slow
    drifts of a shared machine, which move whole epochs by 10-25 % here, cancel in the ratio
    instead of deciding it. `loops` maps names to runners, "convbench" among them."""
    names = list(loops)
    ratios: dict[str, list[float]] = {name: [] for name in names if name != "convbench"}
    for number in range(rounds):
        seconds = {name: loops[name](images) for name in rotation(names, number)}
        for name in ratios:
            ratios[name].append(seconds[name] / seconds["convbench"])
        shown = "  ".join(f"convbench/{name} {values[-1]:.3f}" for name, values in ratios.items())
        print(f"  {model:<10} round {number + 1}/{rounds}  {shown}", flush=True)
    return ratios


def measure_model(setup: Setup, data: Data, workers: list[int], args, tmp: Path) -> dict:
    """Whole epochs of every variant (the table's images/s), then convbench against the faster
    bare loop in paired rounds (the ratio the target is judged on)."""
    from torch.utils.tensorboard import SummaryWriter

    warm_shapes(setup, data)
    writer = SummaryWriter(str(tmp / f"tb-{setup.name}"))
    try:
        loops = {f"bare[{p}]": bare_runner(setup.in_precision(p), data) for p in BARE_PRECISIONS}
        loops["convbench"] = convbench_runner(setup, data, writer)
        count = len(data.labels)
        epochs = {name: (lambda run=run: run(count)) for name, run in loops.items()}
        for workers_count in workers:
            epochs[f"dataloader[workers={workers_count}]"] = lambda n=workers_count: (
                time_dataloader(setup, data, n)
            )
        rates = rotated(epochs, args.repeats, count, setup.name)
        bares = [f"bare[{p}]" for p in BARE_PRECISIONS]
        best_bare = max(bares, key=lambda name: statistics.median(rates[name]))
        chunk = min(args.chunk_steps * setup.batch_size, count)
        # The bare loop in convbench's own precision, given convbench's optimizer.
        paired = {name: loops[name] for name in ("convbench", *bares)}
        paired["same"] = bare_runner(setup, data, as_written=False)
        ratios = paired_ratios(paired, rounds=args.rounds, images=chunk, model=setup.name)
        # Against the faster bare loop of each round (the smaller time, the smaller ratio).
        ratios["bare"] = [min(v) for v in zip(*(ratios[name] for name in bares), strict=True)]
    finally:
        writer.close()
    return summarize(setup.name, rates, ratios, best_bare) | {"runs_in": runs_in(setup)}


def runs_in(setup: Setup) -> str:
    """What the convbench (and DataLoader) variant of this model ran in: `bf16+cl`, `fp32`..."""
    return setup.precision + ("+cl" if setup.channels_last else "")


def quartiles(values: list[float]) -> list[float]:
    """The first and third quartiles (the one value twice when there is one)."""
    found = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return [found[0], found[2]]


def summarize(model: str, rates: dict[str, list[float]], ratios: dict, best_bare: str) -> dict:
    medians = {name: statistics.median(values) for name, values in rates.items()}
    loaders = {name: rate for name, rate in medians.items() if name.startswith("dataloader")}
    bares = {name: rate for name, rate in medians.items() if name.startswith("bare")}
    best_loader = max(loaders, key=loaders.get)
    return {
        "model": model,
        "images_per_sec": rates,
        "median_images_per_sec": medians,
        **{name.replace("[", "_").rstrip("]"): rate for name, rate in bares.items()},
        "bare": bares[best_bare],
        "bare_variant": best_bare,
        "convbench": medians["convbench"],
        "dataloader": loaders[best_loader],
        "dataloader_variant": best_loader,
        "paired_ratios": ratios["bare"],
        "paired_ratios_by_loop": {
            name: ratios[name] for name in ratios if name.startswith("bare[")
        },
        "convbench_over_bare": statistics.median(ratios["bare"]),
        "convbench_over_bare_quartiles": quartiles(ratios["bare"]),
        "paired_ratios_same_optimizer": ratios["same"],
        "convbench_over_bare_same_optimizer": statistics.median(ratios["same"]),
        "convbench_over_bare_same_optimizer_quartiles": quartiles(ratios["same"]),
        "epoch_medians_ratio": medians["convbench"] / bares[best_bare],
        "convbench_over_dataloader": medians["convbench"] / loaders[best_loader],
    }


# ----------------------------------------------------------------------------- report


def table(results: list[dict]) -> str:
    columns = [("model", "model", "<10", "s"), ("convbench in", "runs_in", "<13", "s")]
    columns += [(f"bare {p}", f"bare_{p}", ">11", ",.0f") for p in BARE_PRECISIONS]
    columns += [
        ("convbench", "convbench", ">11", ",.0f"),
        ("dataloader", "dataloader", ">12", ",.0f"),
        ("epochs' ratio", "epoch_medians_ratio", ">15", ".3f"),
        ("convbench/best bare", "convbench_over_bare", ">21", ".3f"),
        ("(quartiles)", "quartiles", ">15", "s"),
        ("same optimizer", "convbench_over_bare_same_optimizer", ">16", ".3f"),
        ("convbench/dataloader", "convbench_over_dataloader", ">22", ".2f"),
    ]
    header = "".join(f"{title:{align[0]}{align[1:]}}" for title, _, align, _ in columns)
    lines = [
        "images/s: medians of whole epochs; epochs' ratio: convbench's median over the faster "
        "bare loop's.",
        "convbench/best bare (the target's): the median ratio of the paired rounds, against each "
        "round's faster bare loop, its optimizer as a user writes it;",
        "same optimizer: the same rounds against the bare loop given convbench's optimizer "
        "(fused kernel): what the engine itself costs.",
        header,
        "-" * len(header),
    ]
    for r in results:
        low, high = r["convbench_over_bare_quartiles"]
        row = r | {"quartiles": f"{low:.3f}-{high:.3f}"}
        lines.append("".join(f"{row[key]:{align}{fmt}}" for _, key, align, fmt in columns))
    return "\n".join(lines)


def verdicts(results: list[dict]) -> list[tuple[bool | None, str]]:
    """(passed, text) per target; passed is None when the target's model was not run."""
    worst = min(results, key=lambda r: r["convbench_over_bare"])
    lowest = f"{worst['model']} {worst['convbench_over_bare']:.3f}"
    lines = [
        (
            worst["convbench_over_bare"] >= BARE_TARGET,
            f"convbench/best bare loop >= {BARE_TARGET} for every model (lowest: {lowest})",
        )
    ]
    by_model = {r["model"]: r for r in results}
    for model, target in DATALOADER_TARGETS.items():
        text = f"convbench/dataloader >= {target} for {model}"
        if model in by_model:
            ratio = by_model[model]["convbench_over_dataloader"]
            lines.append((ratio >= target, f"{text} ({ratio:.2f})"))
        else:
            lines.append((None, f"{text} (not run)"))
    return lines


def describe(args, data: Data) -> str:
    precision = args.precision + (" autocast" if args.precision in ("bf16", "fp16") else "")
    log_every = "from config" if args.log_every_n_steps is None else args.log_every_n_steps
    shape = tuple(data.images.shape[1:])
    return "\n".join(
        [
            f"convbench throughput: torch {torch.__version__}, torchvision {torchvision.__version__}",
            f"device {args.device}, torch threads {torch.get_num_threads()} (torch's default, "
            f"unchanged), convbench's precision {precision}, channels_last {args.channels_last} "
            f"(each model's settings in the table); bare loops in {', '.join(BARE_PRECISIONS)}",
            f"data: {data.source}; {len(data.labels):,} training images {shape}, "
            f"batch {args.batch_size}, augmentation off in every variant",
            f"convbench: log_every_n_steps {log_every}, no checkpoints in the epoch, NoProgress",
            f"{args.repeats} epoch(s) per variant, order rotated, medians; then "
            f"{args.rounds} paired rounds of {args.chunk_steps} steps: convbench, both bare "
            "loops and the bare loop with convbench's optimizer, back to back; "
            f"{args.warmup_steps} warm-up steps each",
        ]
    )


def report(args, data: Data, results: list[dict]) -> None:
    """The table and a PASS/FAIL/SKIP line per target; with --json, every measurement too."""
    print()
    print(table(results))
    checks = verdicts(results)
    for passed, text in checks:
        print(f"{'SKIP' if passed is None else 'PASS' if passed else 'FAIL'}  {text}")
    if args.json:
        payload = {
            "settings": vars(args) | {"json": str(args.json)},
            "data": data.source,
            "torch_threads": torch.get_num_threads(),
            "results": results,
            "targets": [{"passed": p, "text": t} for p, t in checks],
        }
        args.json.write_text(json.dumps(payload, indent=2))


# ----------------------------------------------------------------------------- command line


def default_workers() -> str:
    return ",".join(str(n) for n in sorted({0, 2, min(8, os.cpu_count() or 1)}))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        help="comma-separated: mlp, lenet, resnet20, resnet18, vgg11, ... "
        "(default: mlp,lenet,resnet20; with --smoke: mlp,lenet)",
    )
    parser.add_argument("--dataset", default="fashionmnist", choices=["fashionmnist", "cifar10"])
    parser.add_argument("--images", type=int, default=20_000, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="whole epochs per variant")
    parser.add_argument(
        "--rounds",
        type=int,
        default=8,
        help="paired rounds of convbench and the faster bare loop (the target's ratio)",
    )
    parser.add_argument(
        "--chunk-steps",
        type=int,
        default=100,
        help="steps per loop and round (default 100: two sync points, as in an epoch at "
        "log_every_n_steps 50)",
    )
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument(
        "--workers",
        help="DataLoader num_workers values to try, the fastest is reported "
        "(default: 0, 2 and min(8, CPU cores); with --smoke: 0)",
    )
    parser.add_argument(
        "--log-every-n-steps",
        type=int,
        help="override trainer.log_every_n_steps for the convbench variant "
        "(default: the config's, 50; 0 shows what its sync points cost)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", *sorted(AUTOCAST_DTYPES)],
        help="every variant's (default: auto, what a run picks per model and device)",
    )
    parser.add_argument(
        "--channels-last",
        nargs="?",
        const="true",
        default="auto",
        choices=["auto", "true", "false"],
        help="every variant's memory format (default: auto, as a run picks; alone: true)",
    )
    parser.add_argument(
        "--generated-data",
        action="store_true",
        help="use random images even where the real dataset is on disk",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds: 256 images, batch 64, 1 repeat, 1 warm-up step (checks that the script "
        "works; the numbers mean little)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.batch_size, args.repeats, args.warmup_steps = 256, 64, 1, 1
        args.rounds, args.chunk_steps = 2, 2
    args.models = args.models or ("mlp,lenet" if args.smoke else "mlp,lenet,resnet20")
    args.workers = args.workers or ("0" if args.smoke else default_workers())
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # every variant alike: what a GPU user sets
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="convbench-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        setups = [make_setup(name, args) for name in models]
        mean, std = setups[0].cfg.dataset.mean, setups[0].cfg.dataset.std
        data = load_data(args.dataset, args.images, list(mean), list(std), tmp, args.generated_data)
        print(describe(args, data), flush=True)
        results = [measure_model(setup, data, workers, args, tmp) for setup in setups]
    report(args, data, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
