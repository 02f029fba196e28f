"""Grouping runs into an answer: the analysis behind `convbench compare`.

Runs are read from their folders alone (convbench.run.folder): the overrides they were started
with (.hydra/overrides.yaml), their status and their metrics.json. Runs whose overrides are the
same once the averaged-over keys (`seed` by default) and the keys that say where rather than
what (runfolder.where_keys: dataset.root, trainer.device, ...) are left out form one group; a group's numbers are the mean, the sample standard deviation (n - 1), the minimum
and the maximum over its runs. Runs that did not finish are kept apart, never dropped.
"""

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from convbench.analysis.runs import where_keys
from convbench.run.folder import RunFolder, find_runs, read_yaml

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
    overrides: dict[str, str]  # key -> value, as typed on the command line
    status: str  # finished | failed | interrupted | running | unknown
    error: str | None
    metrics: dict
    config: dict  # .hydra/config.yaml (interpolations unresolved)

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
    """Finished runs that differ only in the averaged-over keys."""

    overrides: dict[str, str]
    runs: list[RunRecord] = field(default_factory=list)

    def spread(self, name: str) -> Spread | None:
        values = [v for run in self.runs if (v := run.measure(name)) is not None]
        return Spread(values) if values else None

    def label(self, keys: list[str]) -> str:
        return " ".join(f"{key}={self.overrides.get(key, '-')}" for key in keys) or "all runs"


def parse_overrides(lines) -> dict[str, str]:
    """key -> value of Hydra override lines (`+key=v`, `++key=v`, `key=v`; `~key` -> "~")."""
    parsed = {}
    for line in map(str, lines or []):
        if line.startswith("~"):
            parsed[line[1:].split("=", 1)[0]] = "~"
        elif "=" in line:
            key, value = line.split("=", 1)
            parsed[key.lstrip("+")] = value
    return parsed


def read_record(run: RunFolder) -> RunRecord:
    config = read_yaml(run.config_file)
    excluded = where_keys()
    return RunRecord(
        path=run.path,
        overrides={k: v for k, v in parse_overrides(run.overrides()).items() if k not in excluded},
        status=run.state(),
        error=(run.status() or {}).get("error"),
        metrics=run.metrics() or {},
        config=config if isinstance(config, dict) else {},
    )


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
    return all(record.overrides.get(key, "-") == value for key, value in where.items())


def natural_key(value: str):
    """Numbers sort as numbers (500 before 5000), everything else as text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def group_runs(
    records: list[RunRecord], over: tuple[str, ...] = ("seed",), where: dict | None = None
) -> tuple[list[Group], list[RunRecord]]:
    """(groups of finished runs, runs that did not finish), both filtered by `where`."""
    chosen = [record for record in records if matches(record, where or {})]
    groups: dict[tuple, Group] = {}
    for record in chosen:
        if record.status != "finished":
            continue
        key_values = {k: v for k, v in record.overrides.items() if k not in over}
        groups.setdefault(tuple(sorted(key_values.items())), Group(key_values)).runs.append(record)
    unfinished = [record for record in chosen if record.status != "finished"]
    return list(groups.values()), unfinished


def differing_keys(groups: list[Group]) -> list[str]:
    """Override keys whose value is not the same in every group (a key a group lacks counts as
    its own value, "-")."""
    keys = sorted({key for group in groups for key in group.overrides})
    return [key for key in keys if len({group.overrides.get(key, "-") for group in groups}) > 1]


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
        return sorted(groups, key=lambda g: [natural_key(g.overrides.get(k, "-")) for k in keys])
    name, descending = (by[1:], False) if by.startswith("-") else (by, True)
    if name in MEASURES or "=" in name:

        def measure(group: Group) -> float:
            spread = group.spread(name)
            return spread.mean if spread else -math.inf

        return sorted(groups, key=measure, reverse=descending)
    return sorted(groups, key=lambda group: natural_key(group.overrides.get(name, "-")))
