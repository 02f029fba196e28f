"""What trainer.precision=auto and trainer.channels_last=auto rest on: training speed in fp32,
bf16 autocast, channels_last and both, per model, on this machine, in one run.

Each variant trains one epoch of convbench's engine (`train_one_epoch`, as a run does) on the
same images from the same initial weights, after a few warm-up steps; repeats rotate the order;
the table shows the median images/s and each variant's speed against fp32. convbench.config.auto
takes bf16 and channels_last on a CPU with native bf16 for every model, and on a GPU for models of
at least MIN_MACS multiply-accumulates per image.

    python benchmarks/precision.py                       # mlp, lenet, resnet20; 6,000 images
    python benchmarks/precision.py --smoke               # seconds; used by the tests
"""

import argparse
import copy
import statistics
import time

import torch

from convbench.config.auto import MIN_MACS, native_bf16
from convbench.config.compose import compose
from convbench.data.batches import Batches
from convbench.data.loader import load_splits
from convbench.engine import EngineOptions, RunIO, TrainState, train_one_epoch
from convbench.monitor.eventlog import SilentLog
from convbench.run.build import build_model, build_optimization, count_macs
from convbench.run.ranks import Solo

VARIANTS = {  # name -> (precision, channels_last)
    "fp32": ("fp32", False),
    "bf16": ("bf16", False),
    "fp32+cl": ("fp32", True),
    "bf16+cl": ("bf16", True),
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


class Quiet:
    """A progress display, a checkpointer and a stop request that do nothing."""

    requested = None

    def start_epoch(self, *args, **kwargs) -> None:
        pass

    advance = show = stop = save = start_epoch


def model_overrides(name: str) -> list[str]:
    if name.startswith("resnet"):
        return ["model=resnet", f"model.depth={name.removeprefix('resnet')}"]
    return [f"model={name}"]


def epoch_seconds(cfg, initial, split, variant: str, batch_size: int) -> float:
    precision, channels_last = VARIANTS[variant]
    model = copy.deepcopy(initial).to(
        memory_format=torch.channels_last if channels_last else torch.preserve_format
    )
    batches = Batches(
        split,
        batch_size=batch_size,
        device=torch.device("cpu"),
        mean=list(cfg.dataset.mean),
        std=list(cfg.dataset.std),
        image_size=cfg.dataset.image_size,
        shuffle=True,
        channels_last=channels_last,
    )
    optimization = build_optimization(cfg, model, torch.device("cpu"), epochs=cfg.trainer.epochs)
    io = RunIO(
        writer=SilentLog(), progress=Quiet(), checkpointer=Quiet(), stop=Quiet(), group=Solo()
    )
    options = EngineOptions(autocast_dtype=DTYPES[precision], log_every_n_steps=50)
    started = time.perf_counter()
    train_one_epoch(model, batches, optimization, state=TrainState(), options=options, io=io)
    return time.perf_counter() - started


def measure(name: str, images: int, repeats: int, batch_size: int) -> dict:
    cfg = compose([*model_overrides(name), "dataset=fashionmnist", f"dataset.train_limit={images}"])
    cfg.trainer.precision, cfg.trainer.channels_last = "fp32", False
    torch.manual_seed(0)
    initial = build_model(cfg, torch.device("cpu"))
    split = load_splits(cfg.dataset).train
    rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    names = list(VARIANTS)
    warm_up = type(split)(split.images[: 5 * batch_size], split.labels[: 5 * batch_size])
    for variant in names:  # one-time costs (kernel choice, allocator growth) fall on no timing
        epoch_seconds(cfg, initial, warm_up, variant, batch_size)
    for repeat in range(repeats):
        for variant in names[repeat % 4 :] + names[: repeat % 4]:
            rates[variant].append(
                len(split) / epoch_seconds(cfg, initial, split, variant, batch_size)
            )
    medians = {variant: statistics.median(values) for variant, values in rates.items()}
    return {"model": name, "macs": count_macs(cfg), "images_per_sec": medians}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,lenet,resnet20")
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--smoke", action="store_true", help="mlp and lenet, 512 images, 1 repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.images, args.repeats = "mlp,lenet", 512, 1
    cpu = torch.device("cpu")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16 on this "
        f"CPU: {native_bf16(cpu)}; auto takes bf16 and channels_last on such a CPU for every "
        f"model (on a GPU from {MIN_MACS / 1e6:.0f} M MACs per image)"
    )
    header = f"{'model':<10}{'MACs':>10}" + "".join(f"{v + ' img/s':>16}" for v in VARIANTS)
    print(header + "".join(f"{v + '/fp32':>14}" for v in list(VARIANTS)[1:]))
    for name in args.models.split(","):
        result = measure(name.strip(), args.images, args.repeats, args.batch_size)
        rates = result["images_per_sec"]
        print(
            f"{name:<10}{result['macs'] / 1e6:>9.1f}M"
            + "".join(f"{rates[v]:>16,.0f}" for v in VARIANTS)
            + "".join(f"{rates[v] / rates['fp32']:>14.2f}" for v in list(VARIANTS)[1:])
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
