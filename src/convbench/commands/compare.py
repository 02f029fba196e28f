"""`convbench compare [DIR ...]`: group runs over seeds and put a mean and a spread on a claim."""

import csv
import io
import json
from pathlib import Path
from typing import Literal

import typer

from convbench.analysis.tables import fitted_table
from convbench.errors import ConvbenchError

# The measures a page can sort its groups by (convbench.analysis.compare.MEASURES' keys).
MEASURE_NAMES = (
    "test_acc",
    "best_val_acc",
    "params",
    "macs",
    "train_images_per_sec",
    "wall_time_s",
)


def compare(
    folders: list[Path] = typer.Argument(
        None,
        metavar="[DIR]...",
        help="Run or sweep folders (default outputs/), searched recursively.",
    ),
    over: list[str] = typer.Option(
        ["seed"], "--over", help="Keys averaged over (repeat the option for several)."
    ),
    where: list[str] = typer.Option(
        [], "--where", help="Keep runs whose override KEY=VALUE (repeat: all must hold)."
    ),
    sort: str | None = typer.Option(
        None,
        help="Sort by a measure (test_acc, best_val_acc, params, ..., descending; "
        "'-test_acc' ascending) or an override key.",
    ),
    output: Literal["table", "markdown", "csv", "json"] = typer.Option(
        "table", "--format", help="table (aligned text), markdown, csv or json."
    ),
    plot: Path | None = typer.Option(
        None,
        help="Write a figure (FILE.png or FILE.svg): learning curves per group, and the "
        "experiment's own picture when its config declares one.",
    ),
    metric: str = typer.Option(
        "val_acc", help="The learning curves' metric: val_acc, val_loss, train_acc or train_loss."
    ),
    page: Path | None = typer.Option(
        None, "--html", help="Write one self-contained HTML page: the table and the figure."
    ),
    measures: str | None = typer.Option(
        None,
        help="Only these columns, comma-separated (e.g. test_acc,shift=2,params); "
        "default: every measure.",
    ),
    baseline: str | None = typer.Option(
        None,
        metavar="KEY=VALUE",
        help="The group the page's differences are measured from (default: the best), e.g. "
        "--baseline model=mlp.",
    ),
) -> None:
    """Group runs by what ran (their resolved config), over the seed (or the --over keys), and
    show per group: n (one run per seed; a seed run twice counts once), mean +- standard
    deviation of test and best validation accuracy, any robustness measured, parameters, MACs,
    images/s and wall time. Columns appear only for the settings that differ. Runs that did not
    finish are listed apart."""
    from convbench.analysis.compare import collect, differing_keys, group_runs, sort_groups

    folders = folders or [Path("outputs")]
    filters = _parse_where(where)
    _check_outputs(plot, page, metric)
    try:
        records = collect(folders)
    except FileNotFoundError as missing:
        raise ConvbenchError(
            f"{missing} is not a folder. Pass run or sweep folders (see `convbench runs`), or "
            "run from the folder holding outputs/."
        ) from None
    groups, unfinished = group_runs(records, over=tuple(over), where=filters)
    if not groups and not unfinished:
        raise ConvbenchError(
            f"no runs under {', '.join(map(str, folders))}"
            + (f" match {' '.join(where)}" if where else "")
            + ". `convbench runs DIR` lists what is there."
        )
    groups = sort_groups(groups, sort, differing_keys(groups))
    reference = _baseline(groups, baseline)
    header, rows, columns = table_rows(groups, _wanted(measures))
    typer.echo(
        render(
            output, header=header, rows=rows, measures=columns, groups=groups, unfinished=unfinished
        )
    )
    if plot or page:
        _write_pictures(
            groups,
            unfinished,
            rows=rows,
            header=header,
            plot=plot,
            page=page,
            metric=metric,
            folders=folders,
            baseline=reference,
            measure=sort.lstrip("-") if sort and sort.lstrip("-") in MEASURE_NAMES else "test_acc",
        )


def _parse_where(where: list[str]) -> dict[str, str]:
    filters = {}
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConvbenchError(f"--where {item}: write KEY=VALUE, e.g. --where model=lenet.")
        filters[key.lstrip("+")] = value
    return filters


def _check_outputs(plot: Path | None, page: Path | None, metric: str) -> None:
    from convbench.analysis.report import HISTORY_METRICS

    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        raise ConvbenchError(f"--plot {plot}: the file must end in .png or .svg.")
    if page is not None and page.suffix.lower() not in (".html", ".htm"):
        raise ConvbenchError(f"--html {page}: the file must end in .html.")
    if metric not in HISTORY_METRICS:
        raise ConvbenchError(f"--metric {metric}: choose one of {', '.join(HISTORY_METRICS)}.")


def _format(name: str, spread) -> str:
    if spread is None:
        return "-"
    mean = spread.mean
    if name in ("params", "macs"):
        return f"{mean:,.0f}" if name == "params" else f"{mean / 1e6:,.3f} M"
    if name == "train_images_per_sec":
        return f"{mean:,.0f}"
    if name == "wall_time_s":
        return f"{mean:,.1f}"
    spread = f" ± {spread.std:.4f}" if len(spread.values) > 1 else ""
    return f"{mean:.4f}{spread}"


def _wanted(measures: str | None) -> list[str] | None:
    return [name.strip() for name in measures.split(",") if name.strip()] if measures else None


def table_rows(groups, wanted: list[str] | None = None):
    """(header, rows of text, measure names) of the groups, in their order; `wanted`: only
    those measures."""
    from convbench.analysis.compare import MEASURES, differing_keys, robustness_columns, shown

    keys = differing_keys(groups)
    measures = ["test_acc", "best_val_acc", *robustness_columns(groups), *list(MEASURES)[2:]]
    if wanted is not None:
        unknown = [name for name in wanted if name not in measures]
        if unknown:
            raise ConvbenchError(
                f"--measures {','.join(unknown)}: no such column; these runs have "
                f"{', '.join(measures)}."
            )
        measures = wanted
    header = [*keys, "n", *(MEASURES.get(name, name) for name in measures)]
    rows = [
        [
            *(shown(group, key) for key in keys),
            f"{len(group.runs)}" + (f" (+{len(group.repeats)} repeat)" if group.repeats else ""),
            *(_format(name, group.spread(name)) for name in measures),
        ]
        for group in groups
    ]
    return header, rows, measures


def render(output: str, *, header, rows, measures, groups, unfinished) -> str:
    if output == "json":
        return json.dumps(_as_json(groups, unfinished, measures), indent=2)
    if output == "csv":
        return _as_csv(groups, measures)
    numeric = header[len(header) - len(measures) - 1 :]
    if output == "markdown":
        lines = ["| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join("---:" if h in numeric else "---" for h in header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        lines = fitted_table(header, rows, right=numeric, drop=("wall s", "img/s", "MACs"))
    if unfinished:
        lines += ["", f"Not finished ({len(unfinished)}), left out of the groups:"]
        lines += [
            f"  {run.path}: {run.status}" + (f" ({_one_line(run.error)})" if run.error else "")
            for run in unfinished
        ]
    return "\n".join(lines)


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _as_json(groups, unfinished, measures) -> dict:
    def spread_dict(spread):
        if spread is None:
            return None
        return {
            "mean": spread.mean,
            "std": spread.std,
            "min": spread.low,
            "max": spread.high,
            "values": spread.values,
        }

    return {
        "groups": [
            {
                "settings": group.settings,
                "n": len(group.runs),
                "repeats": [str(run.path) for run in group.repeats],
                "runs": [str(run.path) for run in group.runs],
                "measures": {name: spread_dict(group.spread(name)) for name in measures},
            }
            for group in groups
        ],
        "unfinished": [
            {"run": str(run.path), "status": run.status, "error": run.error} for run in unfinished
        ],
    }


def _as_csv(groups, measures) -> str:
    from convbench.analysis.compare import differing_keys, shown

    keys = differing_keys(groups)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*keys, "n", *(f"{m}_{part}" for m in measures for part in ("mean", "std"))])
    for group in groups:
        numbers = []
        for name in measures:
            spread = group.spread(name)
            numbers += ["", ""] if spread is None else [repr(spread.mean), repr(spread.std)]
        writer.writerow([*(shown(group, k) for k in keys), len(group.runs), *numbers])
    return buffer.getvalue().rstrip("\n")


def _report_spec(groups) -> dict | None:
    """The picture the runs' experiment declares (their config's `report` block), if any: the
    first run's that declares one (the runs of one experiment declare the same)."""
    for group in groups:
        for run in group.runs:
            report = run.config.get("report")
            if isinstance(report, dict) and (report.get("plot") or "none") != "none":
                return report
    return None


def _baseline(groups, baseline: str | None):
    """The group --baseline KEY=VALUE names, or None (the best is the reference)."""
    from convbench.analysis.compare import matches

    if baseline is None:
        return None
    where = _parse_where([baseline])
    found = [group for group in groups if all(matches(run, where) for run in group.runs)]
    if len(found) != 1:
        raise ConvbenchError(
            f"--baseline {baseline} matches {len(found)} groups: name one group with a setting "
            "that differs between them (the table's columns), e.g. --baseline model=lenet."
        )
    return found[0]


def _write_pictures(
    groups, unfinished, *, header, rows, plot, page, metric, folders, baseline, measure
) -> None:
    from convbench.analysis.compare import differing_keys
    from convbench.analysis.report import command_line, draw, figure_title, html_page, save
    from convbench.tune.pictures import study_figures

    figure = draw(groups, metric, report=_report_spec(groups), title=figure_title(groups))
    try:
        if plot:
            save(figure, plot)
            typer.echo(f"figure: {plot}", err=True)
        if page:
            title = "convbench compare: " + ", ".join(map(str, folders))
            text = html_page(
                title,
                groups=groups,
                keys=differing_keys(groups),
                measure=measure,
                baseline=baseline,
                command=command_line(folders),
                unfinished=unfinished,
                figure=figure,
                page=page,
                more_figures=[f for folder in folders for f in study_figures(folder)],
            )
            page.write_text(text)
            typer.echo(f"page: {page}", err=True)
    except OSError as exc:
        raise ConvbenchError(
            f"could not write {exc.filename or plot or page}: {exc.strerror or exc}. Pick a "
            "folder that exists and can be written."
        ) from None
