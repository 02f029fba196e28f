"""Grouping runs into an answer: the analysis behind `convbench compare`.

Runs are read from their folders alone (convbench.run.folder). What a run is, for grouping, is
what ran, not what was typed: its config as composed (.hydra/config.yaml, resolved), with what
the run settled for `auto` (metrics.json) in place of `auto`, and the config group options it
was made of (`model=plainnet`: .hydra/hydra.yaml). So the default run and a run typed
`model=lenet` with the same settings are one group, and a `+model={...}` given inline is as
short as any other. Left out: the averaged-over keys (`seed` by default), the keys that say
where or how a run ran rather than what it trained (NOT_WHAT_RAN: paths, device, threads,
logging), and the extra tests it made (`robustness.*`, `report.*`).

Runs with the same settings form a group; a group's numbers are the mean, the sample standard
deviation (n - 1), the minimum and the maximum over its runs, one sample per seed: the same
settings and seed seen twice (a rerun, a sweep job run again) count once, the first to finish,
and the others are flagged as repeats. Runs
that did not finish are kept apart, never dropped.
"""

import contextlib
import functools
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from convbench.analysis.runs import where_keys
from convbench.config import schema
from convbench.run.folder import RunFolder, find_runs, read_yaml

# Settings that say where or how a run ran, or what it logged, rather than what it trained.
NOT_WHAT_RAN = (
    "dataset.root",
    "dataset.data_dir",
    "dataset.download",
    "dataset.system_dirs",
    "dataset.cache_dir",
    "dataset.max_memory_gb",
    "dataset.num_workers",
    "dataset.stream",
    "trainer.device",
    "trainer.num_threads",
    "trainer.progress",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "trainer.log_images",
    "trainer.histogram_every_n_epochs",
    "trainer.log_graph",
    "trainer.compile",
    "trainer.init_from",
    "optimizer.fused",  # one kernel or a loop over the parameters: the same update
    "robustness.",
    "report.",
    "tune.",
)
GROUPS_CHOSEN = ("model", "dataset", "optimizer", "scheduler")  # config groups named by option
# What `auto` settled follows from the model (a conv net or not, its size): explained by it.
SETTLED_BY_MODEL = ("trainer.precision", "trainer.channels_last")
SHORTEST = 40  # characters of a value shown in a table; the JSON has them whole


# metrics.json keys summarised per group, in the order of the table's columns.
MEASURES = {
    "test_acc": "test acc",
    "best_val_acc": "best val",
    "params": "params",
    "macs": "MACs",
    "train_images_per_sec": "img/s",
    "wall_time_s": "wall s",
}


@dataclass
class RunRecord:
    """One run folder, as files tell it."""

    path: Path
    settings: dict[str, str]  # what ran: dotted key -> value (module docstring)
    status: str  # finished | failed | interrupted | running | unknown
    error: str | None
    metrics: dict
    config: dict  # .hydra/config.yaml (interpolations unresolved)
    when: float = 0.0  # when it last wrote its status (a POSIX time; 0 when unknown)

    @property
    def seed(self) -> str:
        return self.settings.get("seed", "-")

    def measure(self, name: str) -> float | None:
        """A number of metrics.json: a MEASURES key, or a robustness column ("shift=2")."""
        if "=" in name:
            kind, amount = name.split("=", 1)
            value = (self.metrics.get("robustness") or {}).get(kind, {}).get(amount)
        else:
            value = self.metrics.get(name)
        return float(value) if isinstance(value, int | float) else None


@dataclass
class Spread:
    """Mean, sample standard deviation, min and max of one measure over a group's runs."""

    values: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@dataclass
class Group:
    """Finished runs that differ only in the averaged-over keys: one run per seed, and the
    repeats of a seed already counted (`repeats`: never in the numbers)."""

    settings: dict[str, str]
    runs: list[RunRecord] = field(default_factory=list)
    repeats: list[RunRecord] = field(default_factory=list)

    def add(self, record: RunRecord, over: tuple[str, ...]) -> None:
        sample = tuple(record.settings.get(key, "-") for key in over)
        counted = {tuple(run.settings.get(key, "-") for key in over) for run in self.runs}
        (self.repeats if sample in counted else self.runs).append(record)

    def spread(self, name: str) -> Spread | None:
        values = [v for run in self.runs if (v := run.measure(name)) is not None]
        return Spread(values) if values else None

    def label(self, keys: list[str]) -> str:
        return " ".join(f"{key}={shown(self, key)}" for key in keys) or "all runs"


def shown(group: Group, key: str) -> str:
    """A setting's value as a table shows it: a model by its config name and depth
    (`resnet-56`), a number to four significant digits (a study's 0.25519289562282227 as
    0.2552; the JSON keeps it whole), long values cut."""
    value = group.settings.get(key, "-")
    if key == "model" and "model.depth" in group.settings:
        value = f"{value}-{group.settings['model.depth']}"
    if len(value) > 6:
        with contextlib.suppress(ValueError):
            value = f"{float(value):.4g}"
    return value if len(value) <= SHORTEST else value[: SHORTEST - 3] + "..."


def settings_of(run: RunFolder, metrics: dict) -> dict[str, str]:
    """What ran (module docstring), flattened to dotted keys and shown as text."""
    composed = read_yaml(run.config_file)
    composed = composed if isinstance(composed, dict) else {}
    schema.register()  # the resolvers a config may use
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(composed), resolve=True)
    except Exception:  # a value that cannot resolve any more (a moved folder): as written
        resolved = composed
    found = dict(_flat(resolved))
    for key, default in schema_defaults().items():  # a key newer than the run: it ran so
        if key not in found and key.rsplit(".", 1)[0] in _blocks(found):
            found[key] = _text(default)
    settled = metrics.get("settled") if isinstance(metrics.get("settled"), dict) else {}
    for key in ("precision", "channels_last"):
        if key in settled:
            found[f"trainer.{key}"] = _text(settled[key])
    choices = run.choices()
    for group in GROUPS_CHOSEN:
        target = found.get(f"{group}._target_", "")
        found[group] = choices.get(group) or target.rsplit(".", 1)[-1].lower() or "-"
    excluded = (*NOT_WHAT_RAN, *where_keys())
    return {k: v for k, v in found.items() if not k.startswith(excluded)}


@functools.cache
def schema_defaults() -> dict:
    """The schema's plain defaults (None, booleans, numbers, text) by dotted key. A key added
    after a run was made takes its default there, as the code that added it keeps the old
    behaviour at the default: a run from before `trainer.steps` existed trained by epochs, like
    one with trainer.steps=null, and the two group together."""
    from convbench.config.reference import schema_entries

    plain = (type(None), bool, int, float, str)
    return {
        entry.key: entry.default
        for entry in schema_entries()
        if hasattr(entry, "default") and type(entry.default) in plain
    }


def _blocks(found: dict) -> set[str]:
    """The blocks (dotted prefixes) a flat config has keys in."""
    return {key.rsplit(".", 1)[0] for key in found if "." in key}


def _flat(node, prefix: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flat(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), _text(node)


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def read_record(run: RunFolder) -> RunRecord:
    metrics = run.metrics() or {}
    config = read_yaml(run.config_file)
    status = run.status() or {}
    return RunRecord(
        path=run.path,
        settings=settings_of(run, metrics),
        status=run.state(),
        error=status.get("error"),
        metrics=metrics,
        config=config if isinstance(config, dict) else {},
        when=_timestamp(status.get("updated"), run.metrics_file),
    )


def _timestamp(updated, fallback: Path) -> float:
    """status.json's "updated" as a POSIX time, else `fallback`'s modification time, else 0."""
    try:
        return datetime.fromisoformat(str(updated)).timestamp()
    except ValueError:
        try:
            return fallback.stat().st_mtime
        except OSError:
            return 0.0


def collect(folders: list[Path]) -> list[RunRecord]:
    """Every run under the folders (run folders or sweep folders), each once, in path order."""
    seen: dict[Path, RunRecord] = {}
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(folder)
        for run in find_runs(folder):
            seen.setdefault(run.path.resolve(), read_record(run))
    return [seen[path] for path in sorted(seen)]


def matches(record: RunRecord, where: dict[str, str]) -> bool:
    """Whether every KEY=VALUE of `where` holds (numbers compare as numbers: 1e-3 = 0.001)."""
    return all(_same(record.settings.get(key, "-"), value) for key, value in where.items())


def _same(ours: str, theirs: str) -> bool:
    try:
        return float(ours) == float(theirs)
    except ValueError:
        return ours == theirs


def natural_key(value: str):
    """Numbers sort as numbers (500 before 5000), everything else as text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def group_runs(
    records: list[RunRecord], over: tuple[str, ...] = ("seed",), where: dict | None = None
) -> tuple[list[Group], list[RunRecord]]:
    """(groups of finished runs, runs that did not finish), both filtered by `where`. Of the
    runs of one seed, the first to finish is the sample; the later ones are its repeats."""
    chosen = [record for record in records if matches(record, where or {})]
    groups: dict[tuple, Group] = {}
    for record in sorted(chosen, key=lambda r: r.when):
        if record.status != "finished":
            continue
        key_values = {k: v for k, v in record.settings.items() if k not in over}
        group = groups.setdefault(tuple(sorted(key_values.items())), Group(key_values))
        group.add(record, over)
    unfinished = [record for record in chosen if record.status != "finished"]
    return list(groups.values()), unfinished


def differing_keys(groups: list[Group]) -> list[str]:
    """The settings whose value is not the same in every group (a key a group lacks counts as
    its own value, "-"), without those its config group's option explains: when groups differ
    in `model`, a model.* key shows only where it differs between groups of the same model (the
    depth of two ResNets, not LeNet's channels against the MLP's widths); `model.depth` goes
    into the model's name (`shown`)."""
    keys = sorted({key for group in groups for key in group.settings})

    def differs(key: str, among: list[Group]) -> bool:
        return len({group.settings.get(key, "-") for group in among}) > 1

    found = []
    for key in keys:
        prefix = "model" if key in SETTLED_BY_MODEL else key.split(".", 1)[0]
        if not differs(key, groups) or key == f"{prefix}._target_" or key == "model.depth":
            continue
        if "." in key and prefix in GROUPS_CHOSEN and differs(prefix, groups):
            same_option: dict[str, list[Group]] = {}
            for group in groups:
                same_option.setdefault(group.settings.get(prefix, "-"), []).append(group)
            if not any(differs(key, among) for among in same_option.values()):
                continue
        found.append(key)
    if "model.depth" in keys and differs("model.depth", groups) and "model" not in found:
        found.insert(0, "model")
    return found


def robustness_columns(groups: list[Group]) -> list[str]:
    """ "kind=amount" for every perturbation any run measured, amounts in numeric order."""
    found = {
        (kind, amount)
        for group in groups
        for run in group.runs
        for kind, amounts in (run.metrics.get("robustness") or {}).items()
        for amount in amounts
    }
    ordered = sorted(found, key=lambda pair: (pair[0], natural_key(pair[1])))
    return [f"{kind}={amount}" for kind, amount in ordered]


def sort_groups(groups: list[Group], by: str | None, keys: list[str]) -> list[Group]:
    """By a measure (descending; "-name" ascending) or an override key (ascending), else by the
    differing overrides in natural order."""
    if by is None:
        return sorted(groups, key=lambda g: [natural_key(g.settings.get(k, "-")) for k in keys])
    name, descending = (by[1:], False) if by.startswith("-") else (by, True)
    if name in MEASURES or "=" in name:

        def measure(group: Group) -> float:
            spread = group.spread(name)
            return spread.mean if spread else -math.inf

        return sorted(groups, key=measure, reverse=descending)
    return sorted(groups, key=lambda group: natural_key(group.settings.get(name, "-")))


@dataclass
class SweepAnswer:
    """What a finished sweep says at a glance: its jobs' states and the best group."""

    folder: Path
    states: dict[str, int]  # state -> jobs
    best: Group | None  # by mean best validation accuracy (never by the test set)
    keys: list[str]  # the settings that differ between the groups


def sweep_answer(folder: Path) -> SweepAnswer:
    """Group a sweep's jobs as `compare` does and pick the best group by validation accuracy:
    choosing on the test set would make its accuracy an optimistic estimate."""
    records = collect([folder])
    states: dict[str, int] = {}
    for record in records:
        states[record.status] = states.get(record.status, 0) + 1
    groups, _ = group_runs(records)
    keys = differing_keys(groups)

    def validation(group: Group) -> float:
        spread = group.spread("best_val_acc")
        return spread.mean if spread else -math.inf

    return SweepAnswer(folder, states, max(groups, key=validation, default=None), keys)
