"""The pictures and the page of `convbench compare`: learning curves per group, the experiment's
own picture, and one self-contained HTML file.

matplotlib is imported here only, inside the functions, and draws on its Agg canvas (no
window, no global pyplot state), so the other commands never pay for it.

An experiment declares its picture in its config (`report.*`, convbench.config.schema.ReportConfig):
- `robustness`: test accuracy against the amount of a perturbation (`report.x`: shift,
  occlude, clutter or illumination, as recorded by the run's `evaluate` block; several,
  comma-separated, give a panel each), a line per group;
- `sweep`: test accuracy against an override's value (`report.x`, e.g. dataset.train_limit or
  model.depth), a line per value of `report.series` (e.g. model);
- `params`: test accuracy against the number of parameters, a labelled point per group.
Each point is the mean over the group's runs (one per seed), marked where it was measured, with
a band (curves) or a bar (the experiment's pictures) of one sample standard deviation either
side: the same spread as the table's ±. Accuracy axes span at least ten points, so that a small
gap is not magnified into a large one; an axis of epochs shows whole epochs only.

Every panel draws a group in the same style, and one legend below the panels names them: with
one swept key a colour per group; with several, a colour per value of the key with the most
values (e.g. model) and a line style and marker per combination of the others (e.g.
augmentation), so twelve groups stay tellable apart where a colour cycle would repeat, on the
curves and on the pictures' points alike. The legend names a setting by the last part of its key
where that is unambiguous (`occlude=16` for dataset.augment.occlude) and takes as many columns
as its longest name leaves room for.
"""

import base64
import html
import io
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from convbench.analysis.compare import Group, differing_keys, natural_key, shown
from convbench.run.folder import RunFolder

HISTORY_METRICS = ("val_acc", "val_loss", "train_acc", "train_loss")
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")
# The swept keys of the shipped experiments, in words with units, for the pictures' x axes.
AXIS_NAMES = {
    "dataset.train_limit": "training images",
    "model.depth": "depth (layers)",
    "dataset.augment.crop_padding": "random shift in training (pixels)",
    "trainer.batch_size": "batch size (images)",
    "optimizer.lr": "learning rate",
}


def group_styles(groups: list[Group], colour_key: str | None = None) -> list[dict]:
    """matplotlib's color, linestyle and marker for each group (module docstring); a colour
    per value of `colour_key` when it differs between the groups (a sweep picture's series)."""
    from matplotlib import colormaps

    keys = differing_keys(groups)

    def values(key: str) -> list[str]:
        return sorted({group.settings.get(key, "-") for group in groups}, key=natural_key)

    if colour_key not in keys:
        colour_key = max(keys, key=lambda key: len(values(key))) if keys else None
    others = [key for key in keys if key != colour_key]
    depths: dict[str, set[str]] = {}
    for group in groups:
        depths.setdefault(group.settings.get("model", "-"), set()).add(
            group.settings.get("model.depth", "-")
        )
    if colour_key == "model" and any(len(found) > 1 for found in depths.values()):
        others.append("model.depth")  # folded into the model's name, but a style of its own
    colour_of = values(colour_key) if colour_key else ["-"]
    combinations = sorted(
        {tuple(group.settings.get(key, "-") for key in others) for group in groups},
        key=lambda combination: [natural_key(value) for value in combination],
    )
    palette = colormaps["tab10" if len(colour_of) <= 10 else "tab20"]
    styles = []
    for group in groups:
        colour = colour_of.index(group.settings.get(colour_key, "-")) if colour_key else 0
        combination = tuple(group.settings.get(key, "-") for key in others)
        style = combinations.index(combination)
        styles.append(
            {
                "color": palette(colour % palette.N),
                "linestyle": LINE_STYLES[style % len(LINE_STYLES)],
                "marker": MARKERS[style % len(MARKERS)],
            }
        )
    return styles


def legend_label(group: Group, keys: list[str]) -> str:
    """The group as the legend names it: each differing key by the last part of its name where
    no other differing key ends the same (`occlude=16`), else whole."""
    ends = [key.rsplit(".", 1)[-1] for key in keys]
    parts = []
    for key, end in zip(keys, ends, strict=True):
        name = end if ends.count(end) == 1 else key
        parts.append(f"{name}={shown(group, key)}")
    return " ".join(parts) or "all runs"


def legend_columns(labels: list[str], groups: int) -> int:
    """As many columns (up to three) as the longest label leaves room for in 900 pixels."""
    longest = max((len(label) for label in labels), default=1)
    room = int(FIGURE_WIDTH_IN * DPI // (longest * 6.5 + 45))
    return max(1, min(3, groups, room))


FIGURE_WIDTH_IN, DPI = 9.0, 100  # 900 pixels wide: the width of a README or a report page
MIN_ACCURACY_SPAN = 0.10


def _figure(panels: int, legend_rows: int = 0, title: str = ""):
    """A figure 900 pixels wide, its panels two to a row."""
    from matplotlib.figure import Figure

    columns = min(panels, 2)
    rows = -(-panels // columns)
    height = 3.4 * rows + 0.25 * legend_rows + (0.4 if title else 0)
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height), layout="constrained", dpi=DPI)
    if title:
        figure.suptitle(title, fontsize="medium")
    return figure, [figure.add_subplot(rows, columns, index + 1) for index in range(panels)]


def _spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def honest_accuracy_axis(axes) -> None:
    """At least MIN_ACCURACY_SPAN of accuracy on the axis, within [0, 1]."""
    low, high = axes.get_ylim()
    if high - low < MIN_ACCURACY_SPAN:
        middle = (low + high) / 2
        low = min(max(0.0, middle - MIN_ACCURACY_SPAN / 2), 1.0 - MIN_ACCURACY_SPAN)
        axes.set_ylim(low, low + MIN_ACCURACY_SPAN)


def step_budget(settings: dict) -> int | None:
    """A run's trainer.steps as its settings show it (text; "None" when it trained by epochs)."""
    steps = settings.get("trainer.steps")
    return None if steps in (None, "None", "null") else int(steps)


def on_step_budget(groups: list[Group]) -> bool:
    """Whether the runs trained on a trainer.steps budget: their epochs then differ with the
    size of the data, and their curves line up on the optimizer step instead."""
    return any(step_budget(group.settings) is not None for group in groups)


MARKED_POINTS = 30  # a curve of more points than this is drawn without markers


def learning_curves(axes, groups: list[Group], metric: str, *, styles: list[dict]) -> None:
    """`metric` of metrics.json's per-epoch history against the epoch (or, on a step budget,
    the optimizer step at the epoch's end): the mean over each group's runs, a point per epoch,
    and a band of one standard deviation either side."""
    keys = differing_keys(groups)
    by_step = on_step_budget(groups)
    seen: set[int] = set()
    for group, style in zip(groups, styles, strict=True):
        per_x: dict[int, list[float]] = {}
        for run in group.runs:
            for record in run.metrics.get("history") or []:
                if isinstance(record.get(metric), int | float):
                    x = int(record["step"] if by_step else record["epoch"])
                    per_x.setdefault(x, []).append(record[metric])
        if not per_x:
            continue
        xs = sorted(per_x)
        seen.update(xs)
        means, stds = zip(*(_spread(per_x[x]) for x in xs), strict=True)
        label = legend_label(group, keys)
        if len(xs) > MARKED_POINTS:
            style = {**style, "marker": None}
        line = axes.plot(xs, means, markersize=3, label=label, **style)[0]
        lows = [m - s for m, s in zip(means, stds, strict=True)]
        highs = [m + s for m, s in zip(means, stds, strict=True)]
        axes.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)
    what = metric.replace("_", " ").replace("acc", "accuracy").replace("val", "validation")
    if by_step:
        axes.set(xlabel="optimizer step", ylabel=what, title=f"{what} per epoch, by step")
        if seen:
            axes.set_xlim(0, max(seen) * 1.02)
    else:
        axes.set(xlabel="epoch", ylabel=what, title=f"{what} per epoch")
    if seen and not by_step:  # whole epochs only, with room around a single one
        if len(seen) <= 12:
            axes.set_xticks(sorted(seen))
        axes.set_xlim(min(seen) - 0.5, max(seen) + 0.5)
    if metric.endswith("acc"):
        honest_accuracy_axis(axes)
    axes.grid(alpha=0.3)


def _points(axes, xs, values_per_x, *, label: str, **style) -> None:
    """Measured points only: a marker per x with a bar of one standard deviation either side;
    no line, which would suggest measurements between them."""
    means, stds = zip(*(_spread(v) for v in values_per_x), strict=True)
    axes.errorbar(
        xs,
        means,
        yerr=stds,
        fmt=style.get("marker", "o"),
        capsize=3,
        label=label,
        color=style.get("color"),
        markersize=5,
    )


UNITS = {
    "shift": "shift (pixels)",
    "occlude": "occluder side (pixels)",
    "clutter": "clutter side (pixels)",
    "illumination": "illumination strength (0 to 1)",
}


def robustness_picture(axes, groups: list[Group], kind: str, *, styles: list[dict]) -> None:
    keys = differing_keys(groups)
    for group, style in zip(groups, styles, strict=True):
        per_amount: dict[str, list[float]] = {}
        for run in group.runs:
            for amount, accuracy in ((run.metrics.get("robustness") or {}).get(kind) or {}).items():
                per_amount.setdefault(amount, []).append(accuracy)
        amounts = sorted(per_amount, key=natural_key)
        if amounts:
            xs = [float(a) for a in amounts]
            label = legend_label(group, keys)
            _points(axes, xs, [per_amount[a] for a in amounts], label=label, **style)
    axes.set(xlabel=UNITS.get(kind, kind), ylabel="test accuracy", title=f"under {kind}")
    honest_accuracy_axis(axes)
    axes.grid(alpha=0.3)


def sweep_picture(
    axes, groups: list[Group], *, x: str, series: str | None, log_x: bool, styles: list[dict]
) -> None:
    lines: dict[str, dict[float, list[float]]] = {}
    series_styles: dict[str, dict] = {}  # a series in its groups' colour and first marker
    for group, style in zip(groups, styles, strict=True):
        test = group.spread("test_acc")
        value = group.settings.get(x)
        if test is None or value is None or natural_key(value)[0] != 0:
            continue
        name = f"{series}={group.settings.get(series, '-')}" if series else "runs"
        lines.setdefault(name, {}).setdefault(float(value), []).extend(test.values)
        series_styles.setdefault(name, style)
    for name in sorted(lines):
        xs = sorted(lines[name])
        _points(axes, xs, [lines[name][v] for v in xs], label=name, **series_styles[name])
    if series and len(lines) > 1:  # the series' own key: the legend below names the groups
        axes.legend(fontsize="small")
    if log_x:
        log_axis(axes)
    words = AXIS_NAMES.get(x, x)
    axes.set(xlabel=words, ylabel="test accuracy", title=f"test accuracy against {words}")
    honest_accuracy_axis(axes)
    axes.grid(alpha=0.3)


def log_axis(axes) -> None:
    """A logarithmic x axis labelled at its powers of ten only (the 2x, 3x, ... labels of a
    short range run into each other)."""
    from matplotlib.ticker import NullFormatter

    axes.set_xscale("log")
    axes.xaxis.set_minor_formatter(NullFormatter())


def params_picture(axes, groups: list[Group], *, styles: list[dict]) -> None:
    keys = differing_keys(groups)
    for group, style in zip(groups, styles, strict=True):
        params, test = group.spread("params"), group.spread("test_acc")
        if params is None or test is None:
            continue
        axes.errorbar(
            params.mean,
            test.mean,
            yerr=test.std,
            fmt=style["marker"],
            color=style["color"],
            capsize=3,
        )
        axes.annotate(
            legend_label(group, keys),
            (params.mean, test.mean),
            fontsize="small",
            xytext=(4, 4),
            textcoords="offset points",
        )
    log_axis(axes)
    axes.set(
        xlabel="parameters (log scale)",
        ylabel="test accuracy",
        title="test accuracy against parameters",
    )
    honest_accuracy_axis(axes)
    axes.grid(alpha=0.3)


def picture_panels(report: dict | None) -> list[tuple[str, str | None]]:
    """(kind, x) of each panel the experiment's `report` block asks for; [] for none. A
    robustness picture gets a panel per perturbation kind listed in `x`."""
    kind = (report or {}).get("plot") or "none"
    if kind == "robustness":
        return [(kind, x.strip()) for x in str(report.get("x") or "").split(",") if x.strip()]
    return [] if kind == "none" else [(kind, report.get("x"))]


def draw(groups: list[Group], metric: str, *, report: dict | None, title: str = ""):
    """The figure of `--plot` and of the page: learning curves of accuracy and loss, and the
    experiment's own picture, under one title and one legend."""
    panels = picture_panels(report)
    loss = metric.replace("acc", "loss") if metric.endswith("acc") else "val_acc"
    keys = differing_keys(groups)
    columns = legend_columns([legend_label(group, keys) for group in groups], len(groups))
    figure, axes = _figure(2 + len(panels), -(-len(groups) // max(columns, 1)), title)
    series = report.get("series") if report and report.get("plot") == "sweep" else None
    styles = group_styles(groups, colour_key=series)
    learning_curves(axes[0], groups, metric, styles=styles)
    learning_curves(axes[1], groups, loss, styles=styles)
    for panel_axes, (kind, x) in zip(axes[2:], panels, strict=True):
        if kind == "robustness":
            robustness_picture(panel_axes, groups, x, styles=styles)
        elif kind == "sweep":
            sweep_picture(
                panel_axes,
                groups,
                x=x,
                series=report.get("series"),
                log_x=report.get("log_x", False),
                styles=styles,
            )
        else:
            params_picture(panel_axes, groups, styles=styles)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # the groups' styles are the same in every panel: one legend for all
        figure.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize="small")
    return figure


def figure_title(groups: list[Group]) -> str:
    """What a figure is of: the experiment, the data and the epochs every run shares."""
    shared = shared_settings(groups)
    runs = [run for group in groups for run in group.runs]
    experiment = next((RunFolder(run.path).choices().get("experiment") for run in runs), None)
    parts = [f"experiment {experiment}" if experiment else "convbench compare"]
    if "dataset.name" in shared:
        limit = shared.get("dataset.train_limit")
        images = f", {int(limit):,} training images" if limit not in (None, "None") else ""
        parts.append(f"{shared['dataset.name']}{images}")
    steps = step_budget(shared)
    if steps is not None:
        parts.append(f"{steps:,} steps")
    elif "trainer.epochs" in shared:
        parts.append(f"{shared['trainer.epochs']} epochs")
    seeds = {run.seed for run in runs}
    parts.append(f"{len(runs)} runs over {len(seeds)} seed(s)")
    return ", ".join(parts)


def command_line(folders: list[Path]) -> str:
    """The command that made the runs of a sweep folder among `folders` (its multirun.yaml),
    or "" when none is a sweep."""
    from convbench.launch.sweeps import SWEEP_FILE, read_sweep_record

    lines = []
    for folder in folders:
        if (folder / SWEEP_FILE).is_file():
            try:
                task = read_sweep_record(folder)["overrides"].get("task") or []
            except Exception:  # a record that does not read: the page goes without it
                continue
            lines.append("convbench train -m " + " ".join(task))
    return "\n".join(lines)


def save(figure, path: Path) -> None:
    """PNG or SVG, by the file's suffix."""
    figure.savefig(path, format=path.suffix.lstrip(".").lower(), dpi=DPI)


def _png_data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass
class Standing:
    """A group's place in the comparison: its mean and spread of the measure, and how far it is
    from the reference group (the best, or the --baseline)."""

    group: Group
    mean: float | None
    std: float | None
    delta: float | None  # mean - the reference's mean
    delta_error: float | None  # the difference's standard error; None with a single run


def standings(groups: list[Group], measure: str, baseline: Group | None = None):
    """The groups, best first by `measure`, with their difference from the reference: the
    standard error of a difference of two means, sqrt(s1^2/n1 + s2^2/n2), when both groups have
    at least two runs."""

    def mean_of(group):
        spread = group.spread(measure)
        return spread.mean if spread else -math.inf

    ordered = sorted(groups, key=mean_of, reverse=True)
    reference = baseline or (ordered[0] if ordered else None)
    base = reference.spread(measure) if reference else None
    found = []
    for group in ordered:
        spread = group.spread(measure)
        if spread is None:
            found.append(Standing(group, None, None, None, None))
            continue
        delta = spread.mean - base.mean if base else None
        error = None
        if base and len(spread.values) > 1 and len(base.values) > 1 and group is not reference:
            error = (spread.std**2 / len(spread.values) + base.std**2 / len(base.values)) ** 0.5
        found.append(Standing(group, spread.mean, spread.std, delta, error))
    return found, reference


def shared_settings(groups: list[Group]) -> dict[str, str]:
    """The settings every group has, with the same value (the seed left out)."""
    if not groups:
        return {}
    first = groups[0].settings
    return {
        key: value
        for key, value in sorted(first.items())
        if key != "seed" and all(g.settings.get(key) == value for g in groups)
    }


def html_page(
    title: str,
    *,
    groups,
    keys,
    measure,
    baseline,
    command,
    unfinished,
    figure,
    page: Path,
    more_figures: list[tuple[str, object]] = (),
) -> str:
    """One self-contained page that answers "which is better, and by how much": the groups
    sorted by `measure`, the best marked, each one's difference from the reference with its
    uncertainty, what ± means, the figure, the settings every run shares, the command line,
    one row per run with a link to its folder, and the runs that did not finish; then
    `more_figures` (caption, figure), such as a study's own pictures. No script, no external
    file: it opens offline and can be mailed."""
    ranked, reference = standings(groups, measure, baseline)
    best = ranked[0].group if ranked else None
    against = "the best" if baseline is None else "the baseline"
    head = [
        "",
        *keys,
        "n",
        f"{measure} (mean ± sd)",
        f"difference from {against} (± se)",
        "best val",
        "params",
        "img/s",
        "wall s",
    ]
    rows = []
    for standing in ranked:
        group = standing.group
        marks = "★ best" if group is best else ("baseline" if group is reference else "")
        value = "-" if standing.mean is None else f"{standing.mean:.4f} ± {standing.std:.4f}"
        if standing.delta is None or group is reference:
            delta = "-"
        else:
            error = "" if standing.delta_error is None else f" ± {standing.delta_error:.4f}"
            delta = f"{standing.delta:+.4f}{error}"
        val, params = group.spread("best_val_acc"), group.spread("params")
        speed, wall = group.spread("train_images_per_sec"), group.spread("wall_time_s")
        cells = [
            marks,
            *(shown(group, key) for key in keys),
            str(len(group.runs)),
            value,
            delta,
            f"{val.mean:.4f}" if val else "-",
            f"{params.mean:,.0f}" if params else "-",
            f"{speed.mean:,.0f}" if speed else "-",
            f"{wall.mean:,.1f}" if wall else "-",
        ]
        rows.append((cells, "best" if group is best else ""))
    per_run = []
    for standing in ranked:
        group = standing.group
        for run in sorted(group.runs + group.repeats, key=lambda r: natural_key(r.seed)):
            link = os.path.relpath(run.path, page.parent) if page else str(run.path)
            test = run.measure("test_acc")
            per_run.append(
                [
                    legend_label(group, keys),
                    run.seed,
                    "-" if test is None else f"{test:.4f}",
                    "repeat (not counted)" if run in group.repeats else "",
                    f'<a href="{html.escape(link)}">{html.escape(link)}</a>',
                ]
            )
    return PAGE.format(
        title=html.escape(title),
        when=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M"),
        command=f"<pre>{html.escape(command)}</pre>" if command else "",
        # A dotted key may break after a dot; numbers (0.8873 ± 0.0026) never break.
        header="".join(f"<th>{html.escape(h).replace('.', '.<wbr>')}</th>" for h in head),
        rows="".join(
            f'<tr class="{css}">' + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
            for cells, css in rows
        ),
        measure=html.escape(measure),
        image=f'<img alt="learning curves and the experiment\'s picture" src="{_png_data_uri(figure)}">'
        if figure
        else "",
        shared="".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
            for k, v in shared_settings(groups).items()
        ),
        runs="".join(
            "<tr>"
            + "".join(f"<td>{c if c.startswith('<a') else html.escape(c)}</td>" for c in cells)
            + "</tr>"
            for cells in per_run
        ),
        unfinished=_unfinished(unfinished),
        more=_more_figures(more_figures),
    )


def _more_figures(figures) -> str:
    if not figures:
        return ""
    items = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="{_png_data_uri(figure)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, figure in figures
    )
    return f'<h2>The search</h2><div id="study">{items}</div>'


def _unfinished(unfinished) -> str:
    items = "".join(
        f"<li><code>{html.escape(str(run.path))}</code>: {html.escape(run.status)}"
        + (f" ({html.escape(' '.join(str(run.error).split()))})" if run.error else "")
        + "</li>"
        for run in unfinished
    )
    return f"<h2>Not finished</h2><ul>{items}</ul>" if items else ""


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1000px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
td {{ white-space: nowrap; }}
#shared td, #runs td {{ white-space: normal; text-align: left; overflow-wrap: anywhere; }}
div.wide {{ overflow-x: auto; }}
th {{ background: #f3f3f3; }}
tr.best td {{ font-weight: bold; background: #eef7ee; }}
pre {{ background: #f6f6f6; padding: 0.6em; white-space: pre-wrap; }}
img {{ max-width: 100%; }}
p.note {{ color: #555; font-size: 0.9em; }}
</style></head>
<body>
<h1>{title}</h1>
<p>convbench compare, {when}</p>
{command}
<h2>Which is better</h2>
<div class="wide"><table id="groups"><thead><tr>{header}</tr></thead><tbody>{rows}</tbody>
</table></div>
<p class="note">Groups are sorted by {measure}. Each group is the runs whose settings are the
same but for the seed, one run per seed (a seed run twice counts once). ± after a mean is the
sample standard deviation over its runs (n - 1); the difference is the group's mean minus the
reference's, ± its standard error (sqrt(sd1²/n1 + sd2²/n2), given when both have two runs or
more). In the figure, bands and bars are one standard deviation either side of the mean.</p>
{image}
{more}
<h2>Settings every run shares</h2>
<div class="wide"><table id="shared"><tbody>{shared}</tbody></table></div>
<h2>Runs</h2>
<div class="wide"><table id="runs"><thead><tr><th>group</th><th>seed</th><th>test acc</th>
<th></th><th>folder</th></tr></thead><tbody>{runs}</tbody></table></div>
{unfinished}
</body></html>
"""
