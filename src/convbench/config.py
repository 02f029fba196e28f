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
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class DataFormat(StrEnum):
    idx = "idx"  # MNIST-style IDX files (optionally gzipped)
    cifar = "cifar"  # CIFAR-10 python pickle batches


@dataclass
class AugmentConfig:
    crop_padding: int = 0  # random crop after zero-padding by this many pixels; 0 = off
    flip: bool = False  # random horizontal flip


@dataclass
class DatasetConfig:
    name: str = MISSING
    format: DataFormat = MISSING
    torchvision_name: str = MISSING  # folder under data_dir and torchvision.datasets class
    system_dirs: list[str] = field(default_factory=list)  # OS packages holding the files
    num_classes: int = MISSING
    in_channels: int = MISSING
    native_size: int = MISSING  # side of the stored images
    image_size: int = MISSING  # side the model sees; batches are resized when it differs
    mean: list[float] = MISSING
    std: list[float] = MISSING
    classes: list[str] = field(default_factory=list)
    root: Optional[str] = None  # an explicit folder; nothing else is searched
    data_dir: str = "${oc.env:CONVBENCH_DATA_DIR,data}"  # torchvision layout, downloads land here
    download: bool = True
    val_size: int = 5000  # carved from the training set with split_seed
    split_seed: int = 0
    train_limit: Optional[int] = None  # use only N training images
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TrainerConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    device: Device = MISSING
    precision: Precision = MISSING
    channels_last: bool = MISSING
    compile: bool = MISSING
    grad_clip_norm: Optional[float] = None
    log_every_n_steps: int = MISSING
    checkpoint_every_n_steps: int = MISSING
    nonfinite_skips: int = MISSING
    init_from: Optional[str] = None
    log_images: bool = MISSING
    histogram_every_n_epochs: int = MISSING
    log_graph: bool = MISSING
    progress: Optional[bool] = None  # None: a bar only on a terminal
    num_threads: Optional[int] = None


@dataclass
class Config:
    model: Any = MISSING
    dataset: DatasetConfig = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: TrainerConfig = MISSING
    seed: int = 0


def register() -> None:
    """Register the schema and the `convbench_uid` resolver. Safe to call more than once."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="convbench_schema", node=Config)
    # use_cache: resolved once per config, so a run dir names the same folder every time.
    OmegaConf.register_new_resolver(
        "convbench_uid", lambda: secrets.token_hex(3), use_cache=True, replace=True
    )
