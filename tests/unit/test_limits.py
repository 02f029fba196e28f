"""Every numeric setting's range, written out by hand from what each setting means, on both
sides of each bound: a bound loosened or tightened in the schema fails here (a table derived
from the schema would move with it)."""

import copy

import pytest
import yaml
from omegaconf import OmegaConf

from convbench.config.compose import compose
from convbench.config.schema import check_ranges

# (override, accepted): each bound from its meaning, the last value in and the first one out.
CASES = [
    ("trainer.epochs=1", True),
    ("trainer.epochs=0", False),
    ("trainer.epochs=100000", True),
    ("trainer.epochs=100001", False),
    ("trainer.batch_size=1", True),
    ("trainer.batch_size=0", False),
    ("trainer.eval_batch_size=0", False),
    ("trainer.grad_clip_norm=0", True),  # 0: no clipping
    ("trainer.grad_clip_norm=-0.1", False),
    ("trainer.log_every_n_steps=0", True),
    ("trainer.log_every_n_steps=-1", False),
    ("trainer.checkpoint_every_n_steps=-1", False),
    ("trainer.nonfinite_skips=-1", False),
    ("trainer.histogram_every_n_epochs=-1", False),
    ("trainer.num_threads=1", True),
    ("trainer.num_threads=0", False),
    ("trainer.num_threads=1025", False),
    ("trainer.label_smoothing=0.5", True),
    ("trainer.label_smoothing=0.51", False),
    ("trainer.label_smoothing=-0.01", False),
    ("trainer.ema=0.99999", True),
    ("trainer.ema=1.0", False),  # a decay of 1 never moves the average
    ("trainer.ema=-0.1", False),
    ("trainer.early_stop_patience=-1", False),
    ("trainer.devices=1024", True),
    ("trainer.devices=0", False),
    ("trainer.devices=1025", False),
    ("dataset.num_classes=2", True),
    ("dataset.num_classes=1", False),  # one class is nothing to tell apart
    ("dataset.in_channels=0", False),
    ("dataset.native_size=0", False),
    ("dataset.image_size=4096", True),
    ("dataset.image_size=4097", False),
    ("dataset.image_size=0", False),
    ("dataset.std=[0.001]", True),
    ("dataset.std=[0]", False),  # dividing by it
    ("dataset.val_size=0.0001", True),
    ("dataset.val_size=0", False),  # best.pt is chosen on it
    ("dataset.test_size=0", False),
    ("dataset.train_limit=1", True),
    ("dataset.train_limit=0", False),
    ("dataset.max_memory_gb=0", False),
    ("dataset.num_workers=0", True),
    ("dataset.num_workers=-1", False),
    ("dataset.num_workers=1025", False),
    ("dataset.augment.crop_padding=0", True),
    ("dataset.augment.crop_padding=-1", False),
    ("dataset.augment.crop_padding=4097", False),
    ("robustness.shift=[0,4096]", True),
    ("robustness.shift=[-1]", False),
    ("robustness.occlude=[4097]", False),
    ("robustness.clutter=[-2]", False),
    ("robustness.illumination=[0,1]", True),
    ("robustness.illumination=[1.01]", False),
    ("robustness.illumination=[-0.1]", False),
    ("seed=-9223372036854775808", True),
    ("seed=9223372036854775807", True),
    ("seed=9223372036854775808", False),  # beyond what torch.manual_seed takes
    ("dataset.split_seed=-9223372036854775809", False),
    ("robustness.seed=9223372036854775808", False),
]


@pytest.fixture(scope="module")
def default():
    return compose([])


def with_override(default, override: str):
    """The default config with `override` set, as the typed schema takes it (a wrong type would
    fail here, not in the range check)."""
    key, text = override.split("=", 1)
    value = float("nan") if text == "nan" else yaml.safe_load(text)
    cfg = copy.deepcopy(default)
    OmegaConf.update(cfg, key, value)
    return cfg


@pytest.mark.parametrize("override, accepted", CASES, ids=[case for case, _ in CASES])
def test_the_bound_is_where_its_meaning_puts_it(default, override, accepted):
    cfg = with_override(default, override)
    if accepted:
        check_ranges(cfg)
    else:
        key = override.split("=")[0]
        with pytest.raises(ValueError, match=rf"^{key.replace('.', '[.]')}="):
            check_ranges(cfg)


def test_nan_is_no_value_of_any_range(default):
    for override in ("trainer.label_smoothing=nan", "trainer.ema=nan", "dataset.val_size=nan"):
        with pytest.raises(ValueError, match="out of range"):
            check_ranges(with_override(default, override))
