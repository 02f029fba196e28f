"""A study on disk and in its storage.

The study folder holds the study's record (study.yaml: what was typed, the search space, the
storage, the budget), the SQLite database when no storage URL is given (study.db), and one
ordinary run folder per trial (trial-0007/). `convbench resume STUDY_DIR` needs nothing else.
Workers on other machines join through the same storage URL and study name.
"""

import contextlib
import fcntl
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from convbench.errors import ConvbenchError
from convbench.files import atomic_write
from convbench.run.pruning import open_storage, pruner
from convbench.tune import space

RECORD = "study.yaml"
DATABASE = "study.db"


def is_study_dir(folder: Path) -> bool:
    return (Path(folder) / RECORD).is_file()


@dataclass(kw_only=True)
class StudyRecord:
    """What a study is, as study.yaml keeps it."""

    name: str  # the study's name in its storage
    option: str  # the tune option (conf/tune/NAME.yaml)
    overrides: list[str]  # as typed after `convbench tune`
    config_dirs: list[str]  # --config-dir folders given to `convbench tune`
    storage: str  # the URL as given; "" is SQLite in the study folder
    params: dict  # the search space, checked
    metric: str
    direction: str
    n_trials: int
    sampler: str
    pruner: str
    startup_trials: int
    warmup_epochs: int
    epochs: int  # each trial's budget (trainer.epochs)
    seed: int | None
    workers: int = 1  # on this machine, unless `convbench resume` is told otherwise
    created: str = ""
    baseline: dict = field(default_factory=dict)  # the config's own values, asked as trial 0

    def as_dict(self) -> dict:
        return dict(vars(self))


class StudyFolder:
    """Every path of a study folder."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def record_file(self) -> Path:
        return self.path / RECORD

    @property
    def database(self) -> Path:
        return self.path / DATABASE

    def trial_dir(self, number: int) -> Path:
        return self.path / f"trial-{number:04d}"

    def storage_url(self, record: StudyRecord) -> str:
        """The record's URL, or the folder's own SQLite file (found where the folder is now)."""
        return record.storage or f"sqlite:///{self.database.resolve()}"

    def read(self) -> StudyRecord:
        try:
            found = yaml.safe_load(self.record_file.read_text())
            return StudyRecord(**found)
        except (OSError, yaml.YAMLError, TypeError) as exc:
            raise ConvbenchError(
                f"{self.record_file} cannot be read as a study's record ({exc}). It is written "
                "by `convbench tune` when a study starts; a folder without a whole one is not a "
                "study folder."
            ) from None

    def write(self, record: StudyRecord) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(record.as_dict(), sort_keys=False)
        atomic_write(self.record_file, lambda handle: handle.write(text.encode()))

    def lock_file(self, record: StudyRecord) -> Path:
        """The file `asking` locks: beside the SQLite database, which every process of the
        study shares; in this folder for a server's storage (the processes that share the
        folder are held, those of other folders are not)."""
        url = self.storage_url(record)
        if not url.startswith("sqlite:///"):
            return self.path / ".lock"
        database = Path(url.removeprefix("sqlite:///"))
        return database.with_name(database.name + ".lock")

    @contextlib.contextmanager
    def asking(self, record: StudyRecord):
        """Held while a worker counts the trials and asks for one and while a process settles
        the running trials, so that workers never ask beyond tune.n_trials and a trial is never
        seen between its asking and its naming (`lock_file`)."""
        with open(self.lock_file(record), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def new_record(cfg, *, option: str, overrides: list[str], config_dirs: list[str]) -> StudyRecord:
    """The record of a study of the composed config `cfg`, its space checked."""
    params = space.read_space(cfg)
    tune = cfg.tune
    if tune.sampler == "grid":
        space.grid(params)  # refuses a continuous range
    if cfg.trainer.steps is not None:
        raise ConvbenchError(
            f"trainer.steps={cfg.trainer.steps} cannot budget a study's trials: the pruner "
            "compares trials epoch by epoch, so each trial's budget is trainer.epochs. Give "
            "trainer.epochs instead (and trainer.steps=null)."
        )
    return StudyRecord(
        name=tune.study_name or option,
        option=option,
        overrides=list(overrides),
        config_dirs=list(config_dirs),
        storage=tune.storage,
        params=params,
        metric=tune.metric,
        direction=str(tune.direction),
        n_trials=tune.n_trials,
        sampler=str(tune.sampler),
        pruner=str(tune.pruner),
        startup_trials=tune.startup_trials,
        warmup_epochs=tune.warmup_epochs,
        epochs=cfg.trainer.epochs,
        seed=tune.seed,
        workers=tune.workers,
        created=datetime.now().astimezone().isoformat(timespec="seconds"),
        baseline=space.own_values(cfg, params) if tune.baseline and tune.sampler != "grid" else {},
    )


def sampler(record: StudyRecord, *, trials: int = 0):
    """The record's sampler. Its seed is tune.seed plus the trials the study already holds, so
    that a resumed study, or a worker that joins one, does not draw its first values again."""
    import optuna

    seed = None if record.seed is None else record.seed + trials
    if record.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if record.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(record.params), seed=seed)
    if record.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed)


def open_study(folder: StudyFolder, record: StudyRecord, *, create: bool):
    """(the study in its storage, with the record's sampler and pruner; the storage): created
    when `create` and missing. A study of the same name with another search space or metric is
    refused."""
    import optuna

    storage = open_storage(folder.storage_url(record))
    kind = dict(
        kind=record.pruner,
        startup_trials=record.startup_trials,
        warmup_epochs=record.warmup_epochs,
        epochs=record.epochs,
    )
    options = dict(
        study_name=record.name,
        storage=storage,
        sampler=sampler(record),
        pruner=pruner(**kind),
    )
    try:
        study = optuna.load_study(**options)
    except KeyError:  # no such study yet
        if not create:
            raise ConvbenchError(
                f"the storage {folder.storage_url(record)} holds no study named {record.name}: "
                "it was removed, or the record points elsewhere."
            ) from None
        # Another worker of the same study may create it between the load and here: then
        # this one joins it, and records the search (the same values) if that one has not yet.
        study = optuna.create_study(direction=record.direction, load_if_exists=True, **options)
        if "params" not in study.user_attrs:
            study.set_user_attr("params", record.params)
            study.set_user_attr("metric", record.metric)
    check_same_study(study, record)
    study.sampler = sampler(record, trials=len(study.get_trials(deepcopy=False)))
    return study, storage


def check_same_study(study, record: StudyRecord) -> None:
    theirs = (study.user_attrs.get("params"), study.user_attrs.get("metric"))
    direction = study.direction.name.lower()
    if theirs != (record.params, record.metric) or direction != record.direction:
        raise ConvbenchError(
            f"the study {record.name} in its storage searches another space or metric "
            f"({direction} {theirs[1]} over {sorted(theirs[0] or {})}) than this one "
            f"({record.direction} {record.metric} over {sorted(record.params)}). Give this "
            "search a study name of its own (tune.study_name=...) or a new folder."
        )
