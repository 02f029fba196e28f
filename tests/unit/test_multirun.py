"""Sweeps (`convbench train -m`) through Hydra's basic launcher, in this process
(helpers.inprocess): every combination runs, a failing job leaves the others to finish, and
every experiment runs its own sweep (cut to two values per swept key and one seed), after which
`convbench compare` draws its picture and writes its page. Other launchers, and sweeps stopped
from outside, are in tests/process/test_sweeps.py."""

import json
import re

import pytest
import yaml
from hydra._internal.hydra import Hydra

from convbench.config.compose import compose, config_dir
from helpers.cli import ONE_THREAD, tiny_mnist_overrides
from helpers.inprocess import convbench
from helpers.runfolders import assert_complete_run


def test_multirun_runs_every_combination_through_hydra(mnist_root, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = convbench(
        "train",
        "-m",
        "model=mlp,lenet",
        "optimizer.lr=0.01,0.1",
        *tiny_mnist_overrides(mnist_root),
        "trainer.epochs=1",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    job_dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert len(job_dirs) == 4
    assert (sweep_dir / "multirun.yaml").is_file()  # written by Hydra's own sweeper
    seen = set()
    for job_dir in job_dirs:
        assert_complete_run(job_dir, epochs=1)
        config = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
        seen.add((config["model"]["_target_"].rsplit(".", 1)[-1], config["optimizer"]["lr"]))
    assert seen == {("MLP", 0.01), ("MLP", 0.1), ("LeNet", 0.01), ("LeNet", 0.1)}


def test_sweep_with_a_failing_job_finishes_the_others(mnist_root, tmp_path):
    sweep = tmp_path / "sweep"
    result = convbench(
        "train",
        "-m",
        "model.activation=relu,swishy,tanh",
        *tiny_mnist_overrides(mnist_root),
        "trainer.epochs=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.code == 1
    assert "1 job(s) of the sweep failed" in result.stderr and "job 1" in result.stderr
    statuses = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        statuses[job.name.split("_")[0]] = (job / "status.json").read_text()
    assert '"finished"' in statuses["0"] and '"finished"' in statuses["2"]
    assert '"failed"' in statuses["1"] and "swishy" in statuses["1"]
    assert len(list(sweep.glob("[02]_*/metrics.json"))) == 2
    assert not list(sweep.glob("1_*/metrics.json"))


def test_an_experiment_runs_its_own_sweep(mnist_root, tmp_path):
    """`-m experiment=conv_vs_dense` sweeps the models the experiment names (MLP vs LeNet; one
    of its three seeds here, the command line's seed=0 overriding the experiment's)."""
    sweep_dir = tmp_path / "sweep"
    result = convbench(
        "train",
        "-m",
        "experiment=conv_vs_dense",
        *tiny_mnist_overrides(mnist_root),
        "trainer.epochs=1",
        "seed=0",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    params = sorted(
        json.loads(path.read_text())["params"] for path in sweep_dir.glob("*/metrics.json")
    )
    assert params == [61_706, 535_818]  # LeNet-5 and the MLP baseline on 28x28 images


# --- the mode: one run or a sweep ------------------------------------------------------------------


def _counting_compositions(monkeypatch) -> list:
    """Hydra's compositions from here on, one entry each."""
    calls, compose_config = [], Hydra.compose_config

    def counted(self, *args, **kwargs):
        calls.append(None)
        return compose_config(self, *args, **kwargs)

    monkeypatch.setattr(Hydra, "compose_config", counted)
    return calls


def test_a_single_run_composes_its_config_once(mnist_root, tmp_path, monkeypatch):
    calls = _counting_compositions(monkeypatch)
    overrides = [*tiny_mnist_overrides(mnist_root), ONE_THREAD, "trainer.epochs=1"]
    result = convbench("train", *overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert len(calls) == 1, f"Hydra composed the config {len(calls)} times"


def test_hydra_mode_on_the_command_line_still_chooses_a_sweep(mnist_root, tmp_path):
    """hydra.mode=MULTIRUN without -m: Hydra reads the mode from the config, as it always does."""
    sweep = tmp_path / "sweep"
    result = convbench(
        "train",
        "hydra.mode=MULTIRUN",
        "model=mlp,lenet",
        *tiny_mnist_overrides(mnist_root),
        ONE_THREAD,
        "trainer.epochs=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0_model=mlp", "1_model=lenet"]


# --- every experiment, end to end -----------------------------------------------------------------

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


# Swept values a CPU test cannot afford, and the smaller ones it runs instead.
SMALLER = {"model.depth": ["20"]}


def cut_sweep(experiment: str) -> list[str]:
    """The experiment's sweep with the first two values of each key (one seed), the depth cut to
    the smallest CIFAR-style stack, a step budget cut to 8 steps, and two batches of training
    images where the sweep leaves the training set alone (what is checked here is that every
    run and picture of the experiment is made, not what the runs learn)."""
    cfg = compose([f"experiment={experiment}"], with_hydra=True)
    swept = cfg.hydra.sweeper.params or {}
    cut = [] if "dataset.train_limit" in swept else ["dataset.train_limit=128"]
    if cfg.trainer.steps is not None:  # a step budget (sample_efficiency: 2,000): a few steps
        cut.append("trainer.steps=8")
    for key, values in swept.items():
        keep = SMALLER.get(key) or str(values).split(",")[: 1 if key == "seed" else 2]
        cut.append(f"{key}={','.join(keep)}")  # the command line wins over the params
    return cut


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_an_experiment_runs_and_compare_draws_its_picture(experiment, mnist_root, tmp_path):
    sweep = tmp_path / "sweep"
    trained = convbench(
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
    assert trained.code == 0, trained
    jobs = [path for path in sweep.iterdir() if path.is_dir()]
    assert jobs and all((job / "metrics.json").is_file() for job in jobs)
    declared = yaml.safe_load((config_dir() / "experiment" / f"{experiment}.yaml").read_text())
    # What the experiment's file declares reaches its runs (the root config must not undo it).
    saved = yaml.safe_load((jobs[0] / ".hydra" / "config.yaml").read_text())
    for block in ("report", "robustness"):
        for key, value in (declared.get(block) or {}).items():
            assert saved[block][key] == value, f"{block}.{key}"
    report = compose([f"experiment={experiment}"]).report
    figure, page = tmp_path / "figure.svg", tmp_path / "page.html"
    compared = convbench(
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
    assert compared.code == 0, compared
    output = compared.stdout
    groups = json.loads(output[: output.rindex("}") + 1])["groups"]
    assert sum(group["n"] for group in groups) == len(jobs)
    panels = 2 + (  # accuracy and loss curves, then the experiment's own
        len(str(report.x).split(","))
        if str(report.plot) == "robustness"
        else 0
        if str(report.plot) == "none"
        else 1
    )
    drawn = re.findall(r'<g id="axes_\d+">', figure.read_text())  # matplotlib's SVG: one per panel
    assert len(drawn) == panels, "learning curves + the experiment's panels"
    assert "data:image/png;base64," in page.read_text()
    if str(report.plot) == "robustness":
        kinds = str(report.x).split(",")
        measured = json.loads((jobs[0] / "metrics.json").read_text())["robustness"]
        assert set(kinds) <= set(measured), "the run measured what its picture shows"
