"""`convbench compare`: grouping over seeds with known numbers on hand-made run folders, every
output format, filters, runs that did not finish, the figure and the page. Each command is
`convbench` in this process (helpers.inprocess)."""

import csv
import io
import json
import os
from pathlib import Path

import pytest
import yaml
from PIL import Image

from helpers.inprocess import convbench
from helpers.runfolders import dead_pid


def make_run(
    folder: Path,
    overrides: list[str],
    test_acc: float | None,
    *,
    status="finished",
    robustness=None,
    report=None,
    params=61_706,
    epochs=3,
) -> Path:
    """A run folder as a finished (or failed, or killed) run leaves it, without training: its
    config holds what the KEY=VALUE overrides set (group options such as dataset=mnist left
    to the config's own dataset.name)."""
    hydra = folder / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"model": {"_target_": "convbench.models.lenet.LeNet"}, "dataset": {"name": "mnist"}}
    for override in overrides:
        key, value = override.split("=", 1)
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        if parents:
            node[leaf] = yaml.safe_load(value)
        elif key == "seed":
            config["seed"] = int(value)
    if report:
        config["report"] = report
    (hydra / "config.yaml").write_text(yaml.safe_dump(config))
    record = {
        "status": status,
        "epoch": epochs,
        "step": 10,
        "epochs": epochs,
        "best_val_acc": None,
        "error": "loss became nan" if status == "failed" else None,
        "pid": dead_pid() if status == "running" else os.getpid(),
        "host": os.uname()[1],
    }
    (folder / "status.json").write_text(json.dumps(record))
    if test_acc is not None:
        history = [
            {"epoch": e, "val_acc": test_acc - 0.1 / e, "train_loss": 1.0 / e}
            for e in range(1, epochs + 1)
        ]
        metrics = {
            "status": "finished",
            "test_acc": test_acc,
            "best_val_acc": test_acc + 0.01,
            "params": params,
            "macs": 416_920,
            "train_images_per_sec": 1000.0,
            "wall_time_s": 10.0,
            "epochs": epochs,
            "history": history,
        }
        if robustness:
            metrics["robustness"] = robustness
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def sweep(tmp_path) -> Path:
    """LeNet with max and avg pooling, three seeds each (max: 0.80, 0.82, 0.84; avg: 0.70,
    0.74), plus a failed and a killed run, all on MNIST."""
    root = tmp_path / "sweep"
    shared = ["dataset=mnist", "dataset.root=/data/mnist", "trainer.device=cpu"]
    for seed, acc in enumerate((0.80, 0.82, 0.84)):
        shift = {"shift": {"0": acc, "2": acc - 0.3}}
        make_run(
            root / f"max_{seed}",
            ["model.pooling=max", f"seed={seed}", *shared],
            acc,
            robustness=shift,
        )
    for seed, acc in enumerate((0.70, 0.74)):
        shift = {"shift": {"0": acc, "2": acc - 0.1}}
        make_run(
            root / f"avg_{seed}",
            ["model.pooling=avg", f"seed={seed}", *shared],
            acc,
            robustness=shift,
        )
    make_run(root / "avg_9", ["model.pooling=avg", "seed=9", *shared], None, status="failed")
    make_run(root / "max_9", ["model.pooling=max", "seed=9", *shared], None, status="running")
    return root


def compare_json(*args: str, cwd: Path) -> dict:
    result = convbench("compare", *args, "--format", "json", cwd=cwd)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_groups_over_seeds_with_mean_and_sample_std(sweep, tmp_path):
    report = compare_json(str(sweep), cwd=tmp_path)
    groups = {g["settings"]["model.pooling"]: g for g in report["groups"]}
    assert set(groups) == {"max", "avg"} and groups["max"]["n"] == 3 and groups["avg"]["n"] == 2
    best = groups["max"]["measures"]["test_acc"]
    assert best["mean"] == pytest.approx(0.82) and best["std"] == pytest.approx(0.02)
    assert (best["min"], best["max"]) == (0.80, 0.84)
    worse = groups["avg"]["measures"]["test_acc"]
    assert worse["mean"] == pytest.approx(0.72) and worse["std"] == pytest.approx(0.0282843, 1e-5)
    assert groups["max"]["measures"]["shift=2"]["mean"] == pytest.approx(0.52)
    # what ran, without where it ran (dataset.root, trainer.device) or the seed averaged over
    settings = groups["max"]["settings"]
    assert settings["model.pooling"] == "max" and settings["dataset.name"] == "mnist"
    assert not {"dataset.root", "trainer.device", "seed"} & set(settings)
    unfinished = {Path(u["run"]).name: u["status"] for u in report["unfinished"]}
    assert unfinished == {"avg_9": "failed", "max_9": "interrupted"}, "listed apart, not dropped"


def test_the_table_shows_only_the_overrides_that_differ(sweep, tmp_path):
    result = convbench("compare", str(sweep), cwd=tmp_path)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["model.pooling", "n", "test", "acc"]
    assert "dataset" not in lines[0], "every group trained on mnist: no column"
    rows = {line.split()[0]: line for line in lines[1:3]}
    assert "0.8200 ± 0.0200" in rows["max"] and "0.7200 ± 0.0283" in rows["avg"]
    assert "shift=2" in lines[0] and "0.5200" in rows["max"]
    assert "Not finished (2), left out of the groups:" in result.stdout
    assert "avg_9: failed (loss became nan)" in result.stdout


def test_markdown_and_csv(sweep, tmp_path):
    markdown = convbench("compare", str(sweep), "--format", "markdown", cwd=tmp_path).stdout
    lines = markdown.splitlines()
    assert lines[0].startswith("| model.pooling | n | test acc |")
    assert lines[1].startswith("|---|---:|---:|")
    assert "| avg | 2 | 0.7200 ± 0.0283 |" in markdown
    text = convbench("compare", str(sweep), "--format", "csv", cwd=tmp_path).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    by_pooling = {row["model.pooling"]: row for row in rows}
    assert float(by_pooling["max"]["test_acc_mean"]) == pytest.approx(0.82)
    assert float(by_pooling["max"]["test_acc_std"]) == pytest.approx(0.02)
    assert by_pooling["avg"]["n"] == "2"


def test_where_sort_and_over(sweep, tmp_path):
    only_avg = compare_json(str(sweep), "--where", "model.pooling=avg", cwd=tmp_path)
    assert [g["settings"]["model.pooling"] for g in only_avg["groups"]] == ["avg"]
    assert [Path(u["run"]).name for u in only_avg["unfinished"]] == ["avg_9"]
    table = convbench("compare", str(sweep), "--sort", "test_acc", cwd=tmp_path).stdout
    assert [line.split()[0] for line in table.splitlines()[1:3]] == ["max", "avg"]
    ascending = convbench("compare", str(sweep), "--sort=-test_acc", cwd=tmp_path).stdout
    assert [line.split()[0] for line in ascending.splitlines()[1:3]] == ["avg", "max"]
    # averaged over the pooling instead: one group per seed
    per_seed = compare_json(str(sweep), "--over", "model.pooling", cwd=tmp_path)
    seeds = sorted(g["settings"]["seed"] for g in per_seed["groups"])
    assert seeds == ["0", "1", "2"]


def test_figure_and_page(sweep, tmp_path):
    for run in sweep.iterdir():  # the experiment declares its picture in its config
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        config["report"] = {"plot": "robustness", "x": "shift"}
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    png, svg, page = tmp_path / "c.png", tmp_path / "c.svg", tmp_path / "c.html"
    result = convbench("compare", str(sweep), "--plot", str(png), "--html", str(page), cwd=tmp_path)
    assert result.code == 0, result.stderr
    with Image.open(png) as image:
        width, height = image.size
    assert width == 900, "sized for a README's column"
    assert height < width, "learning curves and accuracy against shift side by side"
    assert convbench("compare", str(sweep), "--plot", str(svg), cwd=tmp_path).code == 0
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    html = page.read_text()
    assert "<td>max</td>" in html and "<td>0.8200 ± 0.0200</td>" in html
    assert 'src="data:image/png;base64,' in html
    assert "http://" not in html and "https://" not in html, "self-contained: opens offline"
    assert "avg_9" in html and "failed" in html


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nowhere"], "is not a folder"),
        (["{sweep}", "--where", "pooling"], "KEY=VALUE"),
        (["{sweep}", "--plot", "x.jpg"], ".png or .svg"),
        (["{sweep}", "--metric", "speed"], "choose one of val_acc"),
        (["{sweep}", "--where", "model.pooling=median"], "match model.pooling=median"),
        (["{sweep}", "--plot", "{tmp}/no/such/folder/x.png"], "could not write"),
    ],
)
def test_bad_input_is_one_paragraph(sweep, tmp_path, args, expected):
    args = [a.format(sweep=sweep, tmp=tmp_path) for a in args]
    result = convbench("compare", *args, cwd=tmp_path)
    assert result.code == 2, result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_measures_chooses_the_columns(sweep, tmp_path):
    result = convbench(
        "compare",
        str(sweep),
        "--format",
        "markdown",
        "--measures",
        "test_acc,shift=2,params",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "| model.pooling | n | test acc | shift=2 | params |"
    unknown = convbench("compare", str(sweep), "--measures", "speed", cwd=tmp_path)
    assert unknown.code == 2 and "no such column" in unknown.stderr
    assert "shift=2" in unknown.stderr, "the message lists the columns there are"


def test_a_figure_says_the_step_budget_its_runs_share_or_their_epochs(tmp_path):
    from convbench.analysis.compare import Group, RunRecord
    from convbench.analysis.report import figure_title

    def group(**settings):
        base = {"dataset.name": "fashionmnist", "trainer.epochs": "15", "seed": "0"}
        record = RunRecord(tmp_path, base | settings, "finished", None, {}, {})
        return Group(settings=base | settings, runs=[record])

    by_steps = [group(**{"trainer.steps": "2000", "model": m}) for m in ("mlp", "lenet")]
    assert "2,000 steps" in figure_title(by_steps) and "epochs" not in figure_title(by_steps)
    by_epochs = [group(**{"trainer.steps": "None", "model": m}) for m in ("mlp", "lenet")]
    assert "15 epochs" in figure_title(by_epochs) and "steps" not in figure_title(by_epochs)


def test_the_legend_names_settings_short_and_every_group_apart(tmp_path):
    from convbench.analysis.compare import Group
    from convbench.analysis.report import group_styles, legend_columns, legend_label

    groups = [
        Group(settings={"model": model, "dataset.augment.occlude": occlude, "seed": "0"})
        for model in ("mlp", "lenet", "resnet")
        for occlude in ("0", "16")
    ]
    keys = ["dataset.augment.occlude", "model"]
    assert legend_label(groups[1], keys) == "occlude=16 model=mlp"
    clash = Group(settings={"a.size": "1", "b.size": "2"})
    assert legend_label(clash, ["a.size", "b.size"]) == "a.size=1 b.size=2", "ambiguous: whole"
    styles = group_styles(groups)
    looks = {(s["color"], s["linestyle"], s["marker"]) for s in styles}
    assert len(looks) == 6, "every group drawn its own way"
    assert {s["marker"] for s in styles[0::2]} != {s["marker"] for s in styles[1::2]}, (
        "points without lines still tell the trainings apart"
    )
    assert legend_columns(["x=1"] * 6, 6) == 3 and legend_columns(["y" * 95] * 6, 6) == 1


def test_curves_of_runs_on_a_step_budget_line_up_on_the_step(tmp_path):
    from matplotlib.figure import Figure

    from convbench.analysis.compare import Group, RunRecord
    from convbench.analysis.report import group_styles, learning_curves

    def group(limit: str, steps: str, epochs: int, per_epoch: int):
        settings = {"dataset.train_limit": limit, "trainer.steps": steps, "seed": "0"}
        history = [
            {"epoch": e, "step": e * per_epoch, "val_acc": 0.5} for e in range(1, epochs + 1)
        ]
        run = RunRecord(tmp_path, settings, "finished", None, {"history": history}, {})
        return Group(settings=settings, runs=[run])

    on_budget = [group("300", "2000", 400, 5), group("55000", "2000", 3, 860)]
    axes = Figure().add_subplot()
    learning_curves(axes, on_budget, "val_acc", styles=group_styles(on_budget))
    ends = sorted(line.get_xdata()[-1] for line in axes.get_lines())
    assert ends == [2000, 2580] and axes.get_xlabel() == "optimizer step"
    assert axes.get_lines()[0].get_marker() in (None, "None", ""), "400 points: no markers"
    by_epoch = [group("300", "None", 4, 5), group("55000", "None", 4, 860)]
    axes = Figure().add_subplot()
    learning_curves(axes, by_epoch, "val_acc", styles=group_styles(by_epoch))
    assert [line.get_xdata()[-1] for line in axes.get_lines()] == [4, 4]
    assert axes.get_xlabel() == "epoch"


def test_depths_of_one_model_get_styles_of_their_own():
    from convbench.analysis.compare import Group
    from convbench.analysis.report import group_styles

    groups = [
        Group(settings={"model": model, "model.depth": depth, "seed": "0"})
        for model in ("resnet", "plainnet")
        for depth in ("20", "56")
    ]
    styles = group_styles(groups, colour_key="model")
    assert len({(s["color"], s["linestyle"], s["marker"]) for s in styles}) == 4
    assert styles[0]["color"] == styles[1]["color"] != styles[2]["color"], "a colour a model"


def test_one_setting_keeps_one_style_across_models_of_any_depth():
    """ResNet-20 beside LeNet and the MLP: its depth is no reason for another style, so
    crop_padding=4 looks the same on every model."""
    from convbench.analysis.compare import Group
    from convbench.analysis.report import group_styles

    groups = []
    for model in ("lenet", "mlp", "resnet"):
        for crop in ("0", "4"):
            settings = {"model": model, "dataset.augment.crop_padding": crop, "seed": "0"}
            if model == "resnet":
                settings["model.depth"] = "20"
            groups.append(Group(settings=settings))
    styles = group_styles(groups)
    for crop in ("0", "4"):
        looks = {
            (style["linestyle"], style["marker"])
            for group, style in zip(groups, styles, strict=True)
            if group.settings["dataset.augment.crop_padding"] == crop
        }
        assert len(looks) == 1, crop
