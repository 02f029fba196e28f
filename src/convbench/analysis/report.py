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
Each line is the mean over the group's runs with a band from the minimum to the maximum.

Every panel draws a group in the same style, and one legend below the panels names them: with
one swept key a colour per group; with several, a colour per value of the key with the most
values (e.g. model) and a line style per combination of the others (e.g. augmentation), so twelve
groups stay tellable apart where a colour cycle would repeat.
"""

import base64
import html
import io
from datetime import datetime
from pathlib import Path

from convbench.analysis.compare import Group, differing_keys, natural_key

HISTORY_METRICS = ("val_acc", "val_loss", "train_acc", "train_loss")
LINE_STYLES = ("-", "--", ":", "-.")


def group_styles(groups: list[Group]) -> list[dict]:
    """matplotlib's color and linestyle for each group (module docstring)."""
    from matplotlib import colormaps

    keys = differing_keys(groups)

    def values(key: str) -> list[str]:
        return sorted({group.overrides.get(key, "-") for group in groups}, key=natural_key)

    colour_key = max(keys, key=lambda key: len(values(key))) if keys else None
    others = [key for key in keys if key != colour_key]
    colour_of = values(colour_key) if colour_key else ["-"]
    combinations = sorted(
        {tuple(group.overrides.get(key, "-") for key in others) for group in groups},
        key=lambda combination: [natural_key(value) for value in combination],
    )
    palette = colormaps["tab10" if len(colour_of) <= 10 else "tab20"]
    styles = []
    for group in groups:
        colour = colour_of.index(group.overrides.get(colour_key, "-")) if colour_key else 0
        combination = tuple(group.overrides.get(key, "-") for key in others)
        style = combinations.index(combination) % len(LINE_STYLES)
        styles.append({"color": palette(colour % palette.N), "linestyle": LINE_STYLES[style]})
    return styles


def _figure(panels: int, legend_rows: int = 0):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4 * panels, 4.6 + 0.25 * legend_rows), layout="constrained")
    return figure, [figure.add_subplot(1, panels, index + 1) for index in range(panels)]


def learning_curves(axes, groups: list[Group], metric: str) -> None:
    """`metric` of metrics.json's per-epoch history against the epoch: the mean over each
    group's runs, and a band from their minimum to their maximum."""
    keys = differing_keys(groups)
    for group, style in zip(groups, group_styles(groups), strict=True):
        per_epoch: dict[int, list[float]] = {}
        for run in group.runs:
            for record in run.metrics.get("history") or []:
                if isinstance(record.get(metric), int | float):
                    per_epoch.setdefault(int(record["epoch"]), []).append(record[metric])
        if not per_epoch:
            continue
        epochs = sorted(per_epoch)
        means = [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs]
        label = group.label(keys)
        line = axes.plot(epochs, means, marker="o", markersize=3, label=label, **style)[0]
        lows, highs = [min(per_epoch[e]) for e in epochs], [max(per_epoch[e]) for e in epochs]
        axes.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.15)
    axes.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=f"{metric} per epoch")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)


def _finish(axes) -> None:
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")


def _band(axes, xs, values_per_x, *, label: str, **style) -> None:
    means = [sum(v) / len(v) for v in values_per_x]
    line = axes.plot(xs, means, marker="o", label=label, **style)[0]
    lows, highs = [min(v) for v in values_per_x], [max(v) for v in values_per_x]
    axes.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)


def robustness_picture(axes, groups: list[Group], kind: str) -> None:
    keys = differing_keys(groups)
    for group, style in zip(groups, group_styles(groups), strict=True):
        per_amount: dict[str, list[float]] = {}
        for run in group.runs:
            for amount, accuracy in ((run.metrics.get("robustness") or {}).get(kind) or {}).items():
                per_amount.setdefault(amount, []).append(accuracy)
        amounts = sorted(per_amount, key=natural_key)
        if amounts:
            xs = [float(a) for a in amounts]
            _band(axes, xs, [per_amount[a] for a in amounts], label=group.label(keys), **style)
    axes.set(xlabel=kind, ylabel="test accuracy", title=f"test accuracy against {kind}")
    axes.grid(alpha=0.3)


def sweep_picture(axes, groups: list[Group], *, x: str, series: str | None, log_x: bool) -> None:
    lines: dict[str, dict[float, list[float]]] = {}
    for group in groups:
        test = group.spread("test_acc")
        value = group.overrides.get(x)
        if test is None or value is None or natural_key(value)[0] != 0:
            continue
        name = f"{series}={group.overrides.get(series, '-')}" if series else "runs"
        lines.setdefault(name, {}).setdefault(float(value), []).extend(test.values)
    for name in sorted(lines):
        xs = sorted(lines[name])
        _band(axes, xs, [lines[name][v] for v in xs], label=name)
    if log_x:
        axes.set_xscale("log")
    axes.set(xlabel=x, ylabel="test accuracy", title=f"test accuracy against {x}")
    _finish(axes)


def params_picture(axes, groups: list[Group]) -> None:
    keys = differing_keys(groups)
    for group in groups:
        params, test = group.spread("params"), group.spread("test_acc")
        if params is None or test is None:
            continue
        axes.errorbar(
            params.mean,
            test.mean,
            yerr=[[test.mean - test.low], [test.high - test.mean]],
            fmt="o",
            capsize=3,
        )
        axes.annotate(
            group.label(keys),
            (params.mean, test.mean),
            fontsize="small",
            xytext=(4, 4),
            textcoords="offset points",
        )
    axes.set_xscale("log")
    axes.set(xlabel="parameters", ylabel="test accuracy", title="test accuracy against parameters")
    axes.grid(alpha=0.3)


def picture_panels(report: dict | None) -> list[tuple[str, str | None]]:
    """(kind, x) of each panel the experiment's `report` block asks for; [] for none. A
    robustness picture gets a panel per perturbation kind listed in `x`."""
    kind = (report or {}).get("plot") or "none"
    if kind == "robustness":
        return [(kind, x.strip()) for x in str(report.get("x") or "").split(",") if x.strip()]
    return [] if kind == "none" else [(kind, report.get("x"))]


def draw(groups: list[Group], metric: str, report: dict | None):
    """The figure of `--plot`: learning curves, and the experiment's picture beside them."""
    panels = picture_panels(report)
    columns = min(len(groups), 2 if not panels else 3 * len(panels))
    figure, axes = _figure(1 + len(panels), -(-len(groups) // max(columns, 1)))
    learning_curves(axes[0], groups, metric)
    for panel_axes, (kind, x) in zip(axes[1:], panels, strict=True):
        if kind == "robustness":
            robustness_picture(panel_axes, groups, x)
        elif kind == "sweep":
            sweep_picture(
                panel_axes,
                groups,
                x=x,
                series=report.get("series"),
                log_x=report.get("log_x", False),
            )
        else:
            params_picture(panel_axes, groups)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # the groups' styles are the same in every panel: one legend for all
        figure.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize="small")
    return figure


def save(figure, path: Path) -> None:
    """PNG or SVG, by the file's suffix."""
    figure.savefig(path, format=path.suffix.lstrip(".").lower(), dpi=120)


def _png_data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def html_page(title: str, *, table: list[list[str]], header: list[str], unfinished, figure) -> str:
    """One self-contained page: the table, the figure (inline PNG) and the runs that did not
    finish. No script, no external file: it opens offline and can be mailed."""
    cells = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in table
    )
    missing = "".join(
        f"<li><code>{html.escape(str(run.path))}</code>: {html.escape(run.status)}"
        + (f" ({html.escape(' '.join(str(run.error).split()))})" if run.error else "")
        + "</li>"
        for run in unfinished
    )
    image = f'<img alt="learning curves" src="{_png_data_uri(figure)}">' if figure else ""
    return PAGE.format(
        title=html.escape(title),
        when=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M"),
        header=cells,
        rows=rows,
        image=image,
        unfinished=f"<h2>Not finished</h2><ul>{missing}</ul>" if missing else "",
    )


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; }}
</style></head>
<body>
<h1>{title}</h1>
<p>convbench compare, {when}</p>
<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>
{image}
{unfinished}
</body></html>
"""
