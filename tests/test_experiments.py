"""Every experiment, end to end on tiny data: its sweep runs (cut to two values per swept key
and one seed), and `convbench compare` draws its picture and writes its page."""

import json

import pytest
import yaml
from PIL import Image

from convbench.config.compose import compose, config_dir
from helpers.cli import ONE_THREAD, finish, start

# Recipes (recipe_*: one run, no sweep, no picture) run through benchmarks/accuracy.py's test.
EXPERIMENTS = sorted(
    path.stem
    for path in (config_dir() / "experiment").glob("*.yaml")
    if not path.stem.startswith("recipe_")
)
TINY = [
    "dataset.val_size=100",
    "trainer.epochs=2",
    "trainer.batch_size=64",
    "trainer.eval_batch_size=256",
    "trainer.device=cpu",
    ONE_THREAD,
    "trainer.log_images=false",
]


def cut_sweep(experiment: str) -> list[str]:
    """The experiment's sweep with the first two values of each key (one seed)."""
    cfg = compose([f"experiment={experiment}"], with_hydra=True)
    cut = []
    for key, values in (cfg.hydra.sweeper.params or {}).items():
        keep = str(values).split(",")[: 1 if key == "seed" else 2]
        cut.append(f"{key}={','.join(keep)}")  # the command line wins over the params
    return cut


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_an_experiment_runs_and_compare_draws_its_picture(experiment, mnist_root, tmp_path):
    sweep = tmp_path / "sweep"
    finish(
        start(
            "train",
            "-m",
            f"experiment={experiment}",
            "dataset=mnist",
            f"dataset.root={mnist_root}",
            *TINY,
            *cut_sweep(experiment),
            f"hydra.sweep.dir={sweep}",
            cwd=tmp_path,
        )
    )
    jobs = [path for path in sweep.iterdir() if path.is_dir()]
    assert jobs and all((job / "metrics.json").is_file() for job in jobs)
    declared = yaml.safe_load((config_dir() / "experiment" / f"{experiment}.yaml").read_text())
    # What the experiment's file declares reaches its runs (the root config must not undo it).
    saved = yaml.safe_load((jobs[0] / ".hydra" / "config.yaml").read_text())
    for block in ("report", "robustness"):
        for key, value in (declared.get(block) or {}).items():
            assert saved[block][key] == value, f"{block}.{key}"
    report = compose([f"experiment={experiment}"]).report
    figure, page = tmp_path / "figure.png", tmp_path / "page.html"
    output = finish(
        start(
            "compare",
            str(sweep),
            "--plot",
            str(figure),
            "--html",
            str(page),
            "--format",
            "json",
            cwd=tmp_path,
        )
    )
    groups = json.loads(output[: output.rindex("}") + 1])["groups"]
    assert sum(group["n"] for group in groups) == len(jobs)
    panels = 1 + (
        len(str(report.x).split(","))
        if str(report.plot) == "robustness"
        else 0
        if str(report.plot) == "none"
        else 1
    )
    with Image.open(figure) as image:
        width, height = image.size
    assert round(width / height * 4.6 / 6.4) == panels, "learning curves + the experiment's panels"
    assert "data:image/png;base64," in page.read_text()
    if str(report.plot) == "robustness":
        kinds = str(report.x).split(",")
        measured = json.loads((jobs[0] / "metrics.json").read_text())["robustness"]
        assert set(kinds) <= set(measured), "the run measured what its picture shows"
