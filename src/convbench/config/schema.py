"""The typed schema under the YAML configs, and the Hydra registration that goes with it.

The schema holds types, the YAML holds values. Composing `conf/config.yaml` merges every group
into these dataclasses, so `trainer.epochs=ten`, `trainer.device=gpu` or `dataset.batchsize=1`
fail at compose time with a clear message instead of mid-run. Models, optimizers and schedulers
are `Any`: their fields are the constructor arguments of their `_target_`, checked when built.
Optional fields are spelled `Optional[X]`: OmegaConf 2.3.0, which the pins allow, does not read
`X | None` in structured configs (pyproject.toml exempts this file from ruff's UP045).
"""

import dataclasses
import secrets
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from convbench.data.kinds import KINDS


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(StrEnum):
    auto = "auto"  # convbench.config.auto: bf16 where it is native and pays, else fp32
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class DataFormat(StrEnum):
    idx = "idx"  # MNIST-style IDX files (optionally gzipped)
    cifar = "cifar"  # CIFAR-10 python pickle batches
    folder = "folder"  # your own images in class folders (convbench.data.folder)


@dataclass(frozen=True)
class Limits:
    """The values a numeric setting accepts; `check_ranges` enforces them after composing.

    `low`/`high` are inclusive bounds (`low_open`: `low` itself excluded). `off` says what 0
    means where 0 turns a feature off. `each`: the bounds apply to every item of a list. None is
    allowed wherever the field is Optional.
    """

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    off: str = ""
    each: bool = False

    def admits(self, value) -> bool:
        if value != value:  # NaN: no comparison holds, so no bound would catch it
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        if (self.low, self.high) == (-(2**63), 2**63 - 1):  # a seed: torch's whole range
            return "a 64-bit integer"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high is not None:
            bounds.append(f"<= {_number(self.high)}")
        text = " and ".join(bounds) + (" (every item)" if self.each else "")
        return f"{text}; 0 means {self.off}" if self.off else text


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10_000 else str(value)


def limits(**bounds) -> dict:
    """Field metadata: the value must lie within `Limits(**bounds)`."""
    return {"limits": Limits(**bounds)}


def key(help: str, default=MISSING, *, factory=None, **bounds):
    """A schema field with its meaning (`help`: what `convbench train --help` and
    docs/configuration.md say of it) and, given bounds, the `Limits` it must lie within."""
    metadata = {"help": help, **(limits(**bounds) if bounds else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


SEED_LIMITS = {"low": -(2**63), "high": 2**63 - 1}  # what torch.manual_seed accepts
MAX_IMAGE_SIDE = 4096  # dataset.image_size, and the pixel amounts of the perturbations


@dataclass
class AugmentConfig:
    crop_padding: int = key(
        "random translation: zero-pad by N pixels, then crop a random window of the original "
        "size (each image moves by up to N pixels); below the images' side",
        0,
        low=0,
        high=MAX_IMAGE_SIDE,
        off="no crop",
    )
    flip: bool = key("flip half of the images left-right", False)
    # The confounders of the test-time perturbations (KINDS), trained on; shifts are the crop.
    occlude: int = key(
        "blank a square of each image, its side drawn per image from 0 to N pixels",
        0,
        low=0,
        high=MAX_IMAGE_SIDE,
        off="none",
    )
    clutter: int = key(
        "paste into each image a square of another image of the batch, its side drawn per "
        "image from 0 to N pixels",
        0,
        low=0,
        high=MAX_IMAGE_SIDE,
        off="none",
    )
    illumination: float = key(
        "give each image its own gamma, contrast and brightness change, drawn as the "
        "test-time illumination at this strength in [0, 1] draws them",
        0.0,
        low=0.0,
        high=1.0,
        off="none",
    )


@dataclass
class DatasetConfig:
    name: str = key("the dataset's name (its config file in conf/dataset/)")
    format: DataFormat = key("how its files are stored: idx, cifar or folder")
    torchvision_name: str = key("folder under data_dir, and the torchvision.datasets class")
    system_dirs: list[str] = key("folders OS packages install the files to", factory=list)
    num_classes: int = key("classes to tell apart", low=2)
    in_channels: int = key("channels of an image: 1 grey, 3 colour", low=1)
    native_size: int = key("side of the stored (or decoded) images, in pixels", low=1)
    image_size: int = key(
        "side of the images the model sees; batches are resized on the device when it differs "
        "from native_size",
        low=1,
        high=MAX_IMAGE_SIDE,
    )
    mean: Optional[list[float]] = key(
        "per-channel mean in [0, 1] units; null: the training split's", None
    )
    std: Optional[list[float]] = key(
        "per-channel standard deviation; null: the training split's",
        None,
        low=0,
        low_open=True,
        each=True,
    )
    classes: list[str] = key("class names, in label order", factory=list)
    root: Optional[str] = key(
        "the folder holding the files (or the images); when set, nothing else is searched", None
    )
    data_dir: str = key(
        "torchvision's layout and downloads go here ($CONVBENCH_DATA_DIR, else ./data)",
        "${oc.env:CONVBENCH_DATA_DIR,data}",
    )
    download: bool = key("download through torchvision when no files are found", True)
    val_size: float = key(
        "the validation split carved from the training images with split_seed: a count, or a "
        "fraction (< 1); best.pt is chosen on it",
        5000,
        low=0,
        low_open=True,
    )
    test_size: Optional[float] = key(
        "image folders without a test/ folder: the test split, carved like val_size",
        None,
        low=0,
        low_open=True,
    )
    split_seed: int = key("seed of the carved splits", 0, **SEED_LIMITS)
    train_limit: Optional[int] = key("train on the first N training images only", None, low=1)
    augment: AugmentConfig = key("augmentation of the training batches", factory=AugmentConfig)
    cache_dir: Optional[str] = key(
        "image folders: where decoded images are cached; null: ROOT/.convbench-cache/", None
    )
    max_memory_gb: Optional[float] = key(
        "image folders: the memory decoded images may take; null: half of this machine's",
        None,
        low=0,
        low_open=True,
    )
    skip_bad_images: bool = key(
        "image folders: leave out (and count) images that cannot be decoded instead of stopping",
        False,
    )
    stream: bool = key(
        "image folders: read the files from disk every epoch instead of decoding them once",
        False,
    )
    num_workers: int = key(
        "stream=true: processes that read and decode images",
        4,
        low=0,
        high=1024,
        off="the training process reads them",
    )


@dataclass
class TrainerConfig:
    epochs: int = key("passes over the training split", low=1, high=100_000)
    steps: Optional[int] = key(
        "a budget of optimizer steps instead: the run trains ceil(steps / steps per epoch) "
        "epochs, so training sets of any size get the same number of steps (to within one "
        "epoch's), and trainer.epochs is not used; null: trainer.epochs",
        None,
        low=1,
        high=100_000_000,
    )
    batch_size: int = key(
        "images per step (the global batch: each of N processes takes batch_size / N)", low=1
    )
    eval_batch_size: int = key("images per batch for validation and the test", low=1)
    device: Device = key("auto (cuda, then mps, then cpu), cpu, cuda or mps")
    precision: Precision = key(
        "autocast: auto (bf16 where the device computes it natively and it pays), fp32, bf16, "
        "fp16 (with a gradient scaler)"
    )
    # a string: YAML's true/false arrive as "True"/"False" (convbench.config.auto)
    channels_last: str = key(
        "memory format: auto (conv nets on a CPU, large ones on a GPU), true or false"
    )
    compile: bool = key("torch.compile the model")
    grad_clip_norm: Optional[float] = key(
        "clip the global gradient norm to this value", None, low=0, off="no clipping"
    )
    log_every_n_steps: int = key(
        "a train/loss_step point (the mean of the last N steps) and a NaN check every N steps",
        low=0,
        off="no step points, no step syncs",
    )
    checkpoint_every_n_steps: int = key(
        "also save last.pt every N steps", low=0, off="at epoch ends only"
    )
    nonfinite_skips: int = key(
        "skip up to N steps whose loss is NaN or infinite (one host sync per step)",
        low=0,
        off="stop at the first",
    )
    init_from: Optional[str] = key("start from the weights of this checkpoint", None)
    log_images: bool = key(
        "TensorBoard pictures: a training batch, filters and feature maps every epoch, the "
        "confusion matrix"
    )
    histogram_every_n_epochs: int = key(
        "TensorBoard weight and gradient histograms every N epochs", low=0, off="no histograms"
    )
    log_graph: bool = key("TensorBoard: the model graph, traced once at the start")
    progress: Optional[bool] = key("the progress bar; null: only on a terminal", None)
    num_threads: Optional[int] = key(
        "torch's CPU threads; null: torch's default", None, low=1, high=1024
    )
    label_smoothing: float = key(
        "cross-entropy against (1 - s) one-hot + s uniform targets (Szegedy et al. 2016)",
        0.0,
        low=0,
        high=0.5,
    )
    ema: float = key(
        "decay of an exponential moving average of the weights (e.g. 0.999): what is "
        "validated, kept as best.pt and tested",
        0.0,
        low=0,
        high=0.99999,
        off="no average",
    )
    early_stop_patience: int = key(
        "stop after N epochs without a better validation accuracy", 0, low=0, off="never"
    )
    devices: int = key(
        "processes of one run (DistributedDataParallel); more than 1 starts them itself",
        1,
        low=1,
        high=1024,
    )
    sync_bn: bool = key(
        "with several processes: batch norm statistics over every process's batch", False
    )


def _robustness_fields() -> list:
    """One list per perturbation kind of convbench.data.perturb.KINDS: pixels (whole numbers up
    to the largest image side: beyond it every amount does the same) or a strength in [0, 1]."""
    fields = []
    for kind, about in KINDS.items():
        help = f"test again under {kind} of each amount listed ({about.meaning})"
        if about.whole:
            bounds = {"low": 0, "high": MAX_IMAGE_SIDE, "each": True}
            fields.append((kind, list[int], key(help, factory=list, **bounds)))
        else:
            bounds = {"low": 0, "high": 1, "each": True}
            fields.append((kind, list[float], key(help, factory=list, **bounds)))
    seed = key("seed of the perturbations, as `convbench eval --seed`", 0, **SEED_LIMITS)
    return [*fields, ("seed", int, seed)]


# Robustness measured at the end of a run: the best weights tested once per value of each list
# (one perturbation at a time; see convbench.data.perturb), recorded in metrics.json and
# TensorBoard. Empty lists: nothing is tested.
RobustnessConfig = dataclasses.make_dataclass("RobustnessConfig", _robustness_fields())


class Plot(StrEnum):
    none = "none"  # learning curves only
    robustness = "robustness"  # accuracy against the amounts of the perturbations in `x`
    sweep = "sweep"  # accuracy against the override `x`, a line per value of `series`
    params = "params"  # accuracy against the number of parameters


@dataclass
class ReportConfig:
    """The picture an experiment's question wants, drawn by `convbench compare --plot/--html`
    beside the learning curves (see convbench.analysis.report)."""

    plot: Plot = key(
        "none (learning curves only), robustness (accuracy against the amounts of the kinds in "
        "x), sweep (accuracy against the key x, a line per value of series), params (accuracy "
        "against parameters)",
        Plot.none,
    )
    x: Optional[str] = key(
        "robustness: the perturbation kinds, comma-separated; sweep: a config key", None
    )
    series: Optional[str] = key("sweep: the key whose values get a line each", None)
    log_x: bool = key("a logarithmic x axis", False)


class Direction(StrEnum):
    maximize = "maximize"
    minimize = "minimize"


class Sampler(StrEnum):
    tpe = "tpe"  # Optuna's default: a tree-structured Parzen estimator
    random = "random"
    grid = "grid"  # every combination of the listed values (choices, or int/float with a step)
    cmaes = "cmaes"  # CMA-ES, for float and int keys only


class Pruner(StrEnum):
    median = "median"  # stop a trial below the median of the others at the same epoch
    hyperband = "hyperband"
    halving = "halving"  # successive halving
    none = "none"


@dataclass
class TuneConfig:
    """A hyperparameter search (`convbench tune`, conf/tune/): the keys to search, each with a
    distribution, and how the study runs (convbench.tune)."""

    params: dict[str, Any] = key(
        "the search space: a key of the run config -> {type: float|int|categorical, low, high, "
        "log, step, choices}",
        factory=dict,
    )
    metric: str = key(
        "what a trial is judged by, per epoch: val_acc or val_loss (never the test set)",
        "val_acc",
    )
    direction: Direction = key("maximize or minimize the metric", Direction.maximize)
    n_trials: int = key("trials in the study, all workers together", 20, low=1, high=100_000)
    workers: int = key(
        "trials run at once on this machine (one torch thread each on a CPU)", 1, low=1, high=256
    )
    sampler: Sampler = key("tpe, random, grid or cmaes", Sampler.tpe)
    pruner: Pruner = key("median, hyperband, halving or none", Pruner.median)
    startup_trials: int = key("trials run whole before the pruner judges any", 5, low=0)
    warmup_epochs: int = key("epochs of each trial the pruner never stops", 1, low=0)
    storage: str = key(
        "an Optuna storage URL (sqlite:///..., postgresql://...); empty: SQLite in the study "
        "folder",
        "",
    )
    study_name: Optional[str] = key(
        "the study's name in its storage; null: the tune option's name. Workers that give the "
        "same storage and name join one study",
        None,
    )
    dir: Optional[str] = key(
        "the study folder; null: outputs/tune/<date>/<time>-<name>-<random>", None
    )
    seed: Optional[int] = key("the sampler's seed; null: a random one", 0, **SEED_LIMITS)
    baseline: bool = key(
        "trial 0 trains the config's own values of the searched keys (where they lie in the "
        "space), so the answer says by how much the best trial beats them",
        True,
    )
    trial: Optional[int] = key(
        "set by `convbench tune` on each trial's run: the trial it reports to", None, low=0
    )


@dataclass
class Config:
    model: Any = key("the network: a model config (conf/model/), its _target_ a class")
    dataset: DatasetConfig = key("the data (conf/dataset/)")
    optimizer: Any = key("a torch.optim class and its arguments (conf/optimizer/)")
    scheduler: Any = key(
        "a torch.optim.lr_scheduler class, stepped once per epoch (conf/scheduler/)"
    )
    trainer: TrainerConfig = key("how the run trains, logs and saves (conf/trainer/)")
    robustness: RobustnessConfig = key(
        "perturbed tests at the end of the run", factory=RobustnessConfig
    )
    report: ReportConfig = key(
        "the picture `convbench compare --plot` draws (experiments set it)", factory=ReportConfig
    )
    seed: int = key(
        "seeds Python, NumPy and torch, and the order of the training batches", 0, **SEED_LIMITS
    )
    tune: Optional[TuneConfig] = key(
        "a hyperparameter search (conf/tune/, `convbench tune`); null in a plain run", None
    )


def limited_settings(schema=Config, prefix: str = "") -> dict[str, tuple[Limits, bool]]:
    """Every setting of the schema with limits: dotted key -> (limits, whether None is allowed),
    the settings of optional blocks (`tune`) included."""

    found = {}
    hints = typing.get_type_hints(schema)
    for item in dataclasses.fields(schema):
        key, hint = f"{prefix}{item.name}", hints[item.name]
        block = next(
            (h for h in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(h)), None
        )
        if block is not None:
            found |= limited_settings(block, f"{key}.")
        elif "limits" in item.metadata:
            optional = type(None) in typing.get_args(hint)
            found[key] = (item.metadata["limits"], optional)
    return found


def check_ranges(cfg) -> None:
    """Raise ValueError naming the first setting of `cfg` outside its limits, its value and the
    range it accepts."""
    for key, (limits, optional) in limited_settings().items():
        value = OmegaConf.select(cfg, key)
        parent = OmegaConf.select(cfg, key.rpartition(".")[0]) if "." in key else cfg
        if value is None and (optional or parent is None):  # null, or in a block left out
            continue
        values = list(value) if limits.each else [value]
        if all(limits.admits(item) for item in values):
            continue
        shown = f"[{', '.join(map(str, values))}]" if limits.each else str(value)
        raise ValueError(
            f"{key}={shown} is out of range: it must be {limits.describe()}"
            + ("; null (the default) is also allowed." if optional else ".")
        )
    data = cfg.dataset
    for key in ("mean", "std"):
        if data[key] is not None and len(data[key]) != data.in_channels:
            raise ValueError(
                f"dataset.{key} has {len(data[key])} values but dataset.in_channels="
                f"{data.in_channels}: give one value per channel."
            )


def register() -> None:
    """Register the schema and the `convbench_uid` resolver. Safe to call more than once."""

    ConfigStore.instance().store(name="convbench_schema", node=Config)
    # use_cache: resolved once per config, so a run dir names the same folder every time.
    OmegaConf.register_new_resolver(
        "convbench_uid", lambda: secrets.token_hex(3), use_cache=True, replace=True
    )
    # ${minus:a,b}: a - b, e.g. the epochs a schedule has after its warm-up.
    OmegaConf.register_new_resolver("minus", lambda a, b: a - b, replace=True)
    # Facts of a folder dataset, read from the folder (conf/dataset/imagefolder.yaml).
    OmegaConf.register_new_resolver("folder_classes", _folder_classes, replace=True)
    OmegaConf.register_new_resolver("folder_channels", _folder_channels, replace=True)
    OmegaConf.register_new_resolver("len", len, replace=True)


# The folder readers import Pillow and torch: only a config of an image folder pays for them,
# so that a mistake in any other config is told before torch is imported.


def _folder_classes(root: str) -> list[str]:
    from convbench.data.folder import folder_classes

    return list(folder_classes(str(root)))


def _folder_channels(root: str) -> int:
    from convbench.data.folder import folder_channels

    return folder_channels(str(root))
