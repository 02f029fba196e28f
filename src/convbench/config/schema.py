"""The typed schema under the YAML configs, and the Hydra registration that goes with it.

The schema holds types, the YAML holds values. Composing `conf/config.yaml` merges every group
into these dataclasses, so `trainer.epochs=ten`, `trainer.device=gpu` or `dataset.batchsize=1`
fail at compose time with a clear message instead of mid-run. Models, optimizers and schedulers
are `Any`: their fields are the constructor arguments of their `_target_`, checked when built.
Optional fields are spelled `Optional[X]`: OmegaConf 2.3.0, which the pins allow, does not read
`X | None` in structured configs (pyproject.toml exempts this file from ruff's UP045).
"""

import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from omegaconf import MISSING, OmegaConf


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

    low: float | None = None
    high: float | None = None
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


SEED_LIMITS = {"low": -(2**63), "high": 2**63 - 1}  # what torch.manual_seed accepts


@dataclass
class AugmentConfig:
    # random crop after zero-padding by this many pixels; 0 = off
    crop_padding: int = field(default=0, metadata=limits(low=0, off="no crop"))
    flip: bool = False  # random horizontal flip


@dataclass
class DatasetConfig:
    name: str = MISSING
    format: DataFormat = MISSING
    torchvision_name: str = MISSING  # folder under data_dir and torchvision.datasets class
    system_dirs: list[str] = field(default_factory=list)  # OS packages holding the files
    num_classes: int = field(default=MISSING, metadata=limits(low=2))
    in_channels: int = field(default=MISSING, metadata=limits(low=1))
    native_size: int = field(default=MISSING, metadata=limits(low=1))  # side of the stored images
    # side the model sees; batches are resized when it differs (each model has its own minimum)
    image_size: int = field(default=MISSING, metadata=limits(low=1, high=4096))
    # per channel, in [0, 1] units; null: the training split's, computed when it is loaded
    mean: list[float] | None = None
    std: list[float] | None = field(
        default=None, metadata=limits(low=0, low_open=True, each=True)
    )
    classes: list[str] = field(default_factory=list)
    root: str | None = None  # an explicit folder; nothing else is searched
    data_dir: str = "${oc.env:CONVBENCH_DATA_DIR,data}"  # torchvision layout, downloads land here
    download: bool = True
    # carved from the training set with split_seed: a count (>= 1) or a fraction (< 1); best.pt
    # is chosen on it, so it holds at least one image
    val_size: float = field(default=5000, metadata=limits(low=0, low_open=True))
    # folder datasets without a test/ folder: the test split, carved like val_size
    test_size: float | None = field(default=None, metadata=limits(low=0, low_open=True))
    split_seed: int = field(default=0, metadata=limits(**SEED_LIMITS))
    # use only N training images
    train_limit: int | None = field(default=None, metadata=limits(low=1))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # folder datasets (convbench.data.folder): where the decoded cache goes (null: ROOT's
    # .convbench-cache/), the memory the decoded images may take (null: half of this machine's),
    # whether unreadable images are skipped (and counted) instead of stopping the run
    cache_dir: str | None = None
    max_memory_gb: float | None = field(default=None, metadata=limits(low=0, low_open=True))
    skip_bad_images: bool = False
    stream: bool = False  # read the images from disk every epoch (a DataLoader with workers)
    # dataset.stream=true: the processes that read and decode images (per loader)
    num_workers: int = field(
        default=4, metadata=limits(low=0, high=1024, off="the training process reads them")
    )


@dataclass
class TrainerConfig:
    epochs: int = field(default=MISSING, metadata=limits(low=1))
    batch_size: int = field(default=MISSING, metadata=limits(low=1))
    eval_batch_size: int = field(default=MISSING, metadata=limits(low=1))
    device: Device = MISSING
    precision: Precision = MISSING
    # auto | true | false (a string: YAML's true/false arrive as "True"/"False"); convbench.config.auto
    channels_last: str = MISSING
    compile: bool = MISSING
    grad_clip_norm: float | None = field(default=None, metadata=limits(low=0, off="no clipping"))
    log_every_n_steps: int = field(
        default=MISSING, metadata=limits(low=0, off="no step points, no step syncs")
    )
    checkpoint_every_n_steps: int = field(
        default=MISSING, metadata=limits(low=0, off="at epoch ends only")
    )
    nonfinite_skips: int = field(default=MISSING, metadata=limits(low=0, off="stop at the first"))
    init_from: str | None = None
    log_images: bool = MISSING
    histogram_every_n_epochs: int = field(
        default=MISSING, metadata=limits(low=0, off="no histograms")
    )
    log_graph: bool = MISSING
    progress: bool | None = None  # None: a bar only on a terminal
    # None: torch's default
    num_threads: int | None = field(default=None, metadata=limits(low=1, high=1024))
    # cross-entropy against (1 - s) one-hot + s uniform targets (Szegedy et al. 2016); 0: off
    label_smoothing: float = field(default=0.0, metadata=limits(low=0, high=0.5))
    # an exponential moving average of the weights with this decay (e.g. 0.999) is what is
    # validated, kept as best.pt and tested; 0: off
    ema: float = field(default=0.0, metadata=limits(low=0, high=0.99999, off="no average"))
    # stop when validation accuracy has not improved for N epochs; 0: off
    early_stop_patience: int = field(default=0, metadata=limits(low=0, off="never stop early"))
    # processes of one run; more than 1 starts them through torch's elastic launcher
    devices: int = field(default=1, metadata=limits(low=1, high=1024))
    sync_bn: bool = False  # batch norm statistics over all processes (SyncBatchNorm)


# Pixels of a shift or sides of a square: beyond an image's side every amount does the same, so
# the bound is the schema's largest image side.
PIXEL_LIMITS = {"low": 0, "high": 4096, "each": True}


@dataclass
class EvaluateConfig:
    """Robustness measured at the end of a run: the best weights tested once per value of each
    list (one perturbation at a time; see convbench.data.perturb), recorded in metrics.json and
    TensorBoard. Empty lists: nothing is tested."""

    shift: list[int] = field(default_factory=list, metadata=limits(**PIXEL_LIMITS))  # pixels
    occlude: list[int] = field(default_factory=list, metadata=limits(**PIXEL_LIMITS))  # side
    clutter: list[int] = field(default_factory=list, metadata=limits(**PIXEL_LIMITS))  # side
    # strength: 0 unchanged, 1 the strongest lighting changes
    illumination: list[float] = field(
        default_factory=list, metadata=limits(low=0, high=1, each=True)
    )
    seed: int = field(default=0, metadata=limits(**SEED_LIMITS))  # as `convbench eval --seed`


class Plot(StrEnum):
    none = "none"  # learning curves only
    robustness = "robustness"  # accuracy against the amounts of the perturbations in `x`
    sweep = "sweep"  # accuracy against the override `x`, a line per value of `series`
    params = "params"  # accuracy against the number of parameters


@dataclass
class ReportConfig:
    """The picture an experiment's question wants, drawn by `convbench compare --plot/--html`
    beside the learning curves (see convbench.analysis.report)."""

    plot: Plot = Plot.none
    # robustness: the perturbation kinds, comma-separated (a panel each); sweep: an override key
    x: str | None = None
    series: str | None = None  # sweep: the override whose values get a line each
    log_x: bool = False


@dataclass
class Config:
    model: Any = MISSING
    dataset: DatasetConfig = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: TrainerConfig = MISSING
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    seed: int = field(default=0, metadata=limits(**SEED_LIMITS))


def limited_settings(schema=Config, prefix: str = "") -> dict[str, tuple[Limits, bool]]:
    """Every setting of the schema with limits: dotted key -> (limits, whether None is allowed)."""
    import dataclasses
    import typing

    found = {}
    hints = typing.get_type_hints(schema)
    for item in dataclasses.fields(schema):
        key, hint = f"{prefix}{item.name}", hints[item.name]
        if dataclasses.is_dataclass(hint):
            found |= limited_settings(hint, f"{key}.")
        elif "limits" in item.metadata:
            optional = type(None) in typing.get_args(hint)
            found[key] = (item.metadata["limits"], optional)
    return found


def check_ranges(cfg) -> None:
    """Raise ValueError naming the first setting of `cfg` outside its limits, its value and the
    range it accepts."""
    for key, (limits, optional) in limited_settings().items():
        value = OmegaConf.select(cfg, key)
        if value is None and optional:
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
    from hydra.core.config_store import ConfigStore

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


def _folder_classes(root: str) -> list[str]:
    from convbench.data.folder import folder_classes

    return list(folder_classes(str(root)))


def _folder_channels(root: str) -> int:
    from convbench.data.folder import folder_channels

    return folder_channels(str(root))
