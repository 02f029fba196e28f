"""Value ranges: every numeric setting of the schema has limits (convbench.config.schema), each
limit is enforced with a message naming the key, the value and the range, and preflight (ranges,
the model on the meta device, the image size, the schedule) refuses a bad config before any run
folder.

Two views of the same limits. The hand-written table first: each bound written out from what its
setting means, on both sides, so a bound loosened or tightened in the schema fails here (a table
derived from the schema would move with it). Then cases generated from the schema and from
conf/model/*.yaml, so a new setting or a new model argument is tested without anyone remembering
to. Composing is fast and models are built on the meta device; the reported user commands run
`convbench` in this process (helpers.inprocess).
"""

import dataclasses
import enum
import json
import math
import re
import types
import typing

import pytest
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from convbench.config.compose import compose, config_dir
from convbench.config.schema import MAX_IMAGE_SIDE, Config, check_ranges, limited_settings
from convbench.errors import ConvbenchError
from convbench.launch.preflight import preflight
from helpers.cli import ONE_THREAD, tiny_mnist_overrides
from helpers.configs import composed
from helpers.imagefolders import write_class_folders
from helpers.inprocess import convbench

# --- each bound by hand, from its meaning ---------------------------------------------------------

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


def with_override(override: str):
    """The default config with `override` set, as the typed schema takes it (a wrong type would
    fail here, not in the range check)."""
    key, text = override.split("=", 1)
    value = float("nan") if text == "nan" else yaml.safe_load(text)
    cfg = composed([])
    OmegaConf.update(cfg, key, value)
    return cfg


@pytest.mark.parametrize("override, accepted", CASES, ids=[case for case, _ in CASES])
def test_the_bound_is_where_its_meaning_puts_it(override, accepted):
    cfg = with_override(override)
    if accepted:
        check_ranges(cfg)
    else:
        key = override.split("=")[0]
        with pytest.raises(ValueError, match=rf"^{key.replace('.', '[.]')}="):
            check_ranges(cfg)


def test_nan_is_no_value_of_any_range():
    for override in ("trainer.label_smoothing=nan", "trainer.ema=nan", "dataset.val_size=nan"):
        with pytest.raises(ValueError, match="out of range"):
            check_ranges(with_override(override))


# --- the schema's numeric settings --------------------------------------------------------------


def _number_type(hint) -> type | None:
    """int or float for a numeric type; None for anything else (bools and enums are not numbers
    here, though bool and IntEnum are ints to Python)."""
    if not isinstance(hint, type) or issubclass(hint, bool | enum.Enum):
        return None
    if issubclass(hint, float):
        return float
    return int if issubclass(hint, int) else None


def _without_none(hint):
    """X for Optional[X] (or X | None); the hint itself otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def numeric_fields(schema=Config, prefix: str = "") -> dict[str, tuple[type, bool]]:
    """Every number and list of numbers in the schema, Optional included, through nested
    dataclasses: dotted key -> (int or float, whether it is a list). `Any` fields (model,
    optimizer, scheduler) are not the schema's to check."""
    found = {}
    hints = typing.get_type_hints(schema)
    for item in dataclasses.fields(schema):
        key, hint = f"{prefix}{item.name}", _without_none(hints[item.name])
        if dataclasses.is_dataclass(hint):
            found |= numeric_fields(hint, f"{key}.")
        elif typing.get_origin(hint) is list:
            kind = _number_type(typing.get_args(hint)[0])
            if kind:
                found[key] = (kind, True)
        elif kind := _number_type(hint):
            found[key] = (kind, False)
    return found


NUMBERS = numeric_fields()
LIMITED = limited_settings()
# Numbers that deliberately have no limits, with the reason. A new setting belongs in the schema's
# limits, not here.
UNBOUNDED = {"dataset.mean": "a channel's mean: any real number can be subtracted"}

# Three channels, so a list setting (dataset.std) gets its bad value next to good ones.
BASE = ("dataset=cifar10",)
BASE_CFG = compose(BASE)


def base(key: str) -> tuple[str, ...]:
    """BASE, with a search of its own for the settings of a search (tune.*: null in a run)."""
    return ("tune=lenet_sgd", *BASE) if key.startswith("tune.") else BASE


def setting(key: str, value, *others: tuple[str, object]) -> DictConfig:
    """`key`'s base config (composed once) with `key` set to `value`, and the `others`
    (key, value) pairs, as the typed schema takes them: a value of the wrong type fails here,
    not in the range check. Hydra's parsing of the same values on a command line is tested
    through `convbench train` below (REPORTED)."""
    cfg = composed(base(key))
    for name, item in ((key, value), *others):
        OmegaConf.update(cfg, name, item)
    return cfg


def test_every_numeric_setting_has_limits():
    missing = set(NUMBERS) - set(LIMITED) - set(UNBOUNDED)
    assert not missing, f"numeric settings without metadata=limits(...): {sorted(missing)}"
    assert set(LIMITED) <= set(NUMBERS), "limits on a setting that is not a number"
    stale = set(UNBOUNDED) - (set(NUMBERS) - set(LIMITED))
    assert not stale, f"UNBOUNDED names settings that have limits or are gone: {sorted(stale)}"
    empty = [key for key, (lim, _) in LIMITED.items() if lim.low is None and lim.high is None]
    assert not empty, f"limits without a bound admit everything: {empty}"


def test_the_schema_walk_sees_every_kind_of_field():
    """The generated cases are only as complete as `numeric_fields`."""
    assert NUMBERS["dataset.augment.crop_padding"] == (int, False)  # a nested dataclass
    assert NUMBERS["trainer.grad_clip_norm"] == (float, False)  # Optional[float]
    assert NUMBERS["trainer.num_threads"] == (int, False)  # Optional[int]
    assert NUMBERS["dataset.std"] == (float, True)
    assert NUMBERS["robustness.shift"] == (int, True)  # a list of ints, empty by default
    assert NUMBERS["robustness.illumination"] == (float, True)
    assert NUMBERS["seed"] == (int, False)  # the top level
    not_numbers = {"trainer.compile", "trainer.progress", "trainer.device", "dataset.format"}
    not_numbers |= {"dataset.name", "dataset.classes", "model", "optimizer", "scheduler"}
    assert not not_numbers & set(NUMBERS)


@pytest.mark.parametrize(
    "dataset", sorted(p.stem for p in (config_dir() / "dataset").glob("*.yaml"))
)
def test_every_shipped_dataset_is_in_range(dataset, tmp_path):
    overrides = [f"dataset={dataset}"]
    if dataset == "imagefolder":  # its classes and channels come from a folder
        write_class_folders(tmp_path / "images", per_class=2)
        overrides.append(f"dataset.root={tmp_path / 'images'}")
    check_ranges(compose(overrides))


# --- every limit, just outside and at its bounds -------------------------------------------------


def _with_item(key: str, value):
    """What to give `key` so that it holds `value`: the value itself, or for a list setting the
    base config's list (one item per channel) with its middle item replaced, or the value alone
    where that list is empty (robustness.*)."""
    kind, is_list = NUMBERS[key]
    if not is_list or value is None:
        return value
    items = [kind(item) for item in OmegaConf.select(BASE_CFG, key)] or [value]
    items[len(items) // 2] = value
    return items


def _shown(value) -> str:
    """A value as a message shows it."""
    return f"[{', '.join(map(str, value))}]" if isinstance(value, list) else str(value)


def _names(message: str, key: str, value) -> bool:
    """Whether `message` says `key=value`, not merely a longer key or number containing it
    (seed=... inside dataset.split_seed=..., -1 inside -1.5)."""
    pattern = rf"(?<![\w.]){re.escape(key)}={re.escape(_shown(value))}(?![\w.])"
    return re.search(pattern, message) is not None


def _just_outside(key: str) -> list[tuple[str, object]]:
    limits, _ = LIMITED[key]
    kind, _ = NUMBERS[key]
    found = []
    if limits.low is not None:
        if limits.low_open:
            found.append(("at-open-low", kind(limits.low)))
        else:
            below = limits.low - 1 if kind is int else math.nextafter(limits.low, -math.inf)
            found.append(("below-low", kind(below)))
    if limits.high is not None:
        above = limits.high + 1 if kind is int else math.nextafter(limits.high, math.inf)
        found.append(("above-high", kind(above)))
    return found


def _at_bounds(key: str) -> list[tuple[str, object]]:
    limits, optional = LIMITED[key]
    kind, _ = NUMBERS[key]
    found = {}
    if limits.low is not None:
        if not limits.low_open:
            found.setdefault(kind(limits.low), "low")
        else:
            above = limits.low + 1 if kind is int else math.nextafter(limits.low, math.inf)
            found.setdefault(kind(above), "just-above-open-low")
    if limits.high is not None:
        found.setdefault(kind(limits.high), "high")
    if limits.off:
        found.setdefault(kind(0), "off")
    cases = [(name, value) for value, name in found.items()]
    return [*cases, ("null", None)] if optional else cases


def _cases(values_of) -> list:
    """One case per setting and kind of value, named KEY-KIND."""
    return [
        pytest.param(key, value, id=f"{key}-{kind}")
        for key in LIMITED
        for kind, value in values_of(key)
    ]


OUTSIDE = _cases(_just_outside)
INSIDE = _cases(_at_bounds)


@pytest.mark.parametrize(("key", "value"), OUTSIDE)
def test_a_value_just_outside_the_limits_is_rejected(key, value):
    limits, optional = LIMITED[key]
    given = _with_item(key, value)
    with pytest.raises(ValueError) as caught:
        check_ranges(setting(key, given))
    message = str(caught.value)
    assert _names(message, key, given), message
    assert limits.describe() in message, message
    assert ("null" in message) == optional, "says null is allowed exactly where it is"


def _per_channel(key: str, value) -> list[tuple[str, list[float]]]:
    """(key, value) pairs that keep dataset.mean and dataset.std at one item per channel when
    `key` is the number of channels (check_ranges checks that too)."""
    if key != "dataset.in_channels":
        return []
    return [(f"dataset.{name}", [0.5] * value) for name in ("mean", "std")]


@pytest.mark.parametrize(("key", "value"), INSIDE)
def test_a_value_at_the_bounds_is_accepted(key, value):
    cfg = setting(key, _with_item(key, value), *_per_channel(key, value))
    check_ranges(cfg)
    assert OmegaConf.select(cfg, key) == _with_item(key, value), "the override took effect"


@pytest.mark.parametrize("key", [key for key in LIMITED if NUMBERS[key][0] is float])
def test_nan_is_outside_every_float_range(key):
    with pytest.raises(ValueError, match=re.escape(key)):
        check_ranges(setting(key, _with_item(key, math.nan)))


# --- zero means off -----------------------------------------------------------------------------

OFF = [key for key, (limits, _) in LIMITED.items() if limits.off]


def test_the_settings_where_zero_means_off_say_so():
    documented = {"dataset.augment.crop_padding", "trainer.grad_clip_norm"}
    documented |= {f"trainer.{name}" for name in ("log_every_n_steps", "checkpoint_every_n_steps")}
    documented |= {"trainer.nonfinite_skips", "trainer.histogram_every_n_epochs"}
    assert documented <= set(OFF)


@pytest.mark.parametrize("key", OFF)
def test_zero_is_accepted_where_it_means_off_and_the_message_explains_it(key):
    limits, _ = LIMITED[key]
    kind, _ = NUMBERS[key]
    check_ranges(setting(key, kind(0)))
    with pytest.raises(ValueError) as caught:
        check_ranges(setting(key, kind(-1)))
    assert f"0 means {limits.off}" in str(caught.value)


# --- the CLI, with the values a user reported ----------------------------------------------------

REPORTED = [
    "trainer.batch_size=-4",
    "trainer.batch_size=0",
    "trainer.eval_batch_size=0",
    "dataset.image_size=0",
    "trainer.num_threads=-2",
    "dataset.augment.crop_padding=-3",
    "trainer.epochs=0",
    "trainer.grad_clip_norm=-1",
    "trainer.checkpoint_every_n_steps=-1",
]


def _tiny_run(mnist_root, without: str = "") -> list[str]:
    """Overrides for a seconds-long run on the tiny MNIST fixture (were a bad value accepted, the
    run would train, and the test fail, quickly), less those of the key `without`."""
    overrides = [*tiny_mnist_overrides(mnist_root), "trainer.epochs=1", ONE_THREAD]
    return [override for override in overrides if override.split("=", 1)[0] != without]


def _one_error_line(result) -> bool:
    lines = result.stderr.strip().splitlines()
    return (
        len(lines) == 1
        and lines[0].startswith("Error: ")
        and "Traceback" not in result.stdout + result.stderr
    )


@pytest.mark.parametrize("override", REPORTED)
def test_a_reported_value_is_refused_before_a_run_folder_exists(mnist_root, tmp_path, override):
    key = override.split("=")[0]
    result = convbench("train", *_tiny_run(mnist_root, without=key), override, cwd=tmp_path)
    assert result.code == 2, result.stdout + result.stderr
    assert override in result.stderr  # the key and the value (-1 shows as -1.0 for a float)
    assert LIMITED[key][0].describe() in result.stderr
    assert _one_error_line(result), result.stderr
    assert not (tmp_path / "outputs").exists(), "a rejected config must not make a run folder"


def test_a_schedule_that_fails_when_stepped_is_refused_before_the_run(mnist_root, tmp_path):
    step_size_0 = ["scheduler=step", "scheduler.step_size=0"]
    result = convbench("train", *_tiny_run(mnist_root), *step_size_0, cwd=tmp_path)
    assert result.code == 2, result.stdout + result.stderr
    assert "scheduler: torch.optim.lr_scheduler.StepLR" in result.stderr
    assert _one_error_line(result), result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("scheduler", ["cosine", "step", "none"])
def test_a_warm_up_as_long_as_the_run_is_refused_before_the_run(mnist_root, tmp_path, scheduler):
    warm_up = [f"scheduler={scheduler}", "trainer.epochs=2", "scheduler.warmup_epochs=2"]
    result = convbench(
        "train", *_tiny_run(mnist_root, without="trainer.epochs"), *warm_up, cwd=tmp_path
    )
    assert result.code == 2, result.stdout + result.stderr
    assert "scheduler.warmup_epochs=2" in result.stderr and "trainer.epochs=2" in result.stderr
    assert "below 2" in result.stderr
    assert _one_error_line(result), result.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_global_batch_that_does_not_split_is_refused(mnist_root, tmp_path):
    result = convbench(
        "train",
        *tiny_mnist_overrides(mnist_root),
        "trainer.batch_size=63",
        "trainer.devices=2",
        cwd=tmp_path,
    )
    assert result.code == 2 and "does not split over 2 processes" in result.stderr
    assert not (tmp_path / "outputs").exists()


# --- model arguments, generated from conf/model/*.yaml -------------------------------------------

MODEL_NAMES = sorted(path.stem for path in (config_dir() / "model").glob("*.yaml"))
# (model, key) -> why -1 is a sound value for it. Empty: every numeric argument refuses -1.
ACCEPTS_MINUS_ONE: dict[tuple[str, str], str] = {}


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric_arguments(node: DictConfig, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, -1 or [-1]) for every number and non-empty list of ints the model config
    sets itself: no _target_/_partial_, no interpolated dataset values, no strings ("auto")."""
    found = []
    for key in node:
        if str(key).startswith("_") or OmegaConf.is_interpolation(node, key):
            continue
        value, dotted = node[key], f"{prefix}{key}"
        if isinstance(value, DictConfig):
            found += _numeric_arguments(value, f"{dotted}.")
        elif isinstance(value, ListConfig):
            if value and all(
                isinstance(item, int) and not isinstance(item, bool) for item in value
            ):
                found.append((dotted, "[-1]"))
        elif _is_number(value):
            found.append((dotted, "-1"))
    return found


def _model_cases() -> list:
    cases = []
    for name in MODEL_NAMES:
        for key, bad in _numeric_arguments(compose([f"model={name}"]).model):
            reason = ACCEPTS_MINUS_ONE.get((name, key))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(name, key, bad, id=f"{name}.{key}={bad}", marks=marks))
    return cases


MODEL_CASES = _model_cases()


def test_every_model_config_has_generated_cases():
    covered = {(param.values[0], param.values[1]) for param in MODEL_CASES}
    assert {name for name, _ in covered} == set(MODEL_NAMES)
    some = [("lenet", "channels"), ("lenet", "kernel_size"), ("mlp", "hidden"), ("mlp", "dropout")]
    assert {*some, ("resnet", "width_multiplier")} <= covered
    assert not {key for _, key in covered} & {"num_classes", "in_channels", "image_size"}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_shipped_model_passes_preflight(name):
    """So that a rejection below is the override's doing."""
    preflight(composed([f"model={name}"]))


@pytest.mark.parametrize(("name", "key", "bad"), MODEL_CASES)
def test_a_negative_model_argument_is_refused_by_preflight(name, key, bad):
    cfg = composed([f"model={name}"])
    OmegaConf.update(cfg, f"model.{key}", yaml.safe_load(bad))
    with pytest.raises(ConvbenchError) as caught:
        preflight(cfg)
    assert f"model.{key}=" in str(caught.value), str(caught.value)


# --- images smaller than the model's minimum -----------------------------------------------------


def _smallest_side_named(overrides: list[str]) -> int:
    cfg = compose(overrides)
    with pytest.raises(ConvbenchError) as caught:
        preflight(cfg)
    message = str(caught.value)
    assert f"dataset.image_size={cfg.dataset.image_size} is too small" in message, message
    found = re.search(r"at least (\d+)x\1\b", message)
    assert found, message
    return int(found.group(1))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # 5x5 conv, 2x2 pool, 5x5 conv, 2x2 pool: ((side - 4) // 2 - 4) // 2 >= 1
        (["model.pad_input_to=null", "dataset.image_size=8"], 16),
        # 11x11/4 conv (padding 2) and three 3x3/2 pools, each needing a 3x3 input
        (["model=alexnet", "model.stem=imagenet", "dataset=cifar10"], 63),
    ],
    ids=["lenet-unpadded-8", "alexnet-imagenet-stem-cifar10"],
)
def test_an_image_too_small_for_the_model_names_the_smallest_side(overrides, expected):
    smallest = _smallest_side_named(overrides)
    assert smallest == expected
    preflight(compose([*overrides, f"dataset.image_size={smallest}"]))
    assert _smallest_side_named([*overrides, f"dataset.image_size={smallest - 1}"]) == smallest


def test_the_search_stops_at_the_schemas_largest_image():
    assert LIMITED["dataset.image_size"][0].high == MAX_IMAGE_SIDE


# --- sweeps -------------------------------------------------------------------------------------


def test_a_swept_value_out_of_range_fails_only_its_own_job(mnist_root, tmp_path):
    sweep = tmp_path / "sweep"
    base = [*_tiny_run(mnist_root, without="trainer.batch_size"), f"hydra.sweep.dir={sweep}"]
    result = convbench("train", "-m", "trainer.batch_size=0,64", *base, cwd=tmp_path)
    assert result.code == 1, result.stdout + result.stderr
    summary = result.stderr[result.stderr.index("1 job(s) of the sweep failed:") :]
    lines = summary.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("  job 0 ("), summary
    # After the folder's name, which holds trainer.batch_size=0 too: the job's own message.
    range_text = LIMITED["trainer.batch_size"][0].describe()
    assert f"): trainer.batch_size=0 is out of range: it must be {range_text}" in lines[1]
    jobs = {path.name.split("_")[0]: path for path in sweep.iterdir() if path.is_dir()}
    assert (jobs["1"] / "metrics.json").is_file(), "the other job ran to the end"
    assert not (jobs["0"] / "metrics.json").exists()
    assert json.loads((jobs["0"] / "status.json").read_text())["status"] == "failed"


def test_a_shared_value_out_of_range_stops_the_sweep_before_any_job(mnist_root, tmp_path):
    sweep = tmp_path / "sweep"
    base = [*_tiny_run(mnist_root, without="trainer.batch_size"), f"hydra.sweep.dir={sweep}"]
    result = convbench(
        "train", "-m", "model=mlp,lenet", *base, "trainer.batch_size=0", cwd=tmp_path
    )
    assert result.code == 2, result.stdout + result.stderr
    assert "trainer.batch_size=0" in result.stderr
    assert LIMITED["trainer.batch_size"][0].describe() in result.stderr
    assert _one_error_line(result), result.stderr
    assert "Launching" not in result.stdout + result.stderr, "no job was started"
    assert not sweep.exists() and not (tmp_path / "outputs").exists()


# --- values that are no numbers at all, and facts only the data know ------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=vgg", "model.pool_size=true"],  # a bool is no pool size
        ["model=resnet", "model.width_multiplier=inf"],
        ["model=mlp", "model.dropout=nan"],
        ["model.pad_input_to=0"],  # null turns the padding off, 0 is no size
        ["scheduler=step", "scheduler.gamma=-1"],  # a negative learning rate after epoch 5
    ],
    ids=lambda overrides: " ".join(overrides),
)
def test_values_that_are_no_usable_numbers_are_rejected_before_the_run(overrides):
    with pytest.raises(ConvbenchError):
        preflight(compose(overrides))


def test_labels_beyond_num_classes_are_named(mnist_root, tmp_path):
    result = convbench(
        "train", *tiny_mnist_overrides(mnist_root), "dataset.num_classes=2", cwd=tmp_path
    )
    assert result.code == 2, result.stderr
    assert "labels up to 9, but dataset.num_classes=2" in result.stderr
    assert "Traceback" not in result.stderr
