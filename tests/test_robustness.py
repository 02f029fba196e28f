"""Robustness measured in every run (the `robustness` block) and by `convbench eval` with lists:
the same code and seed, so the numbers agree exactly; TensorBoard draws accuracy against the
amount; a resume of a run stopped while measuring records the same numbers; bad values are one
paragraph; `--feature-maps` draws the conv stages."""

import json
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from convbench.cli import app
from convbench.config.compose import compose
from convbench.errors import ConvbenchError
from convbench.monitor import pictures as visuals
from convbench.run import robustness
from convbench.run.checkpoint import Settled, load_checkpoint
from helpers.cli import (
    ONE_THREAD,
    TRUSTED,
    finish,
    run_cli,
    slow_overrides,
    start,
    tiny_mnist_overrides,
    wait_until,
)

EVALUATE = ["robustness.shift=[0,2]", "robustness.illumination=[0,0.5]"]


@pytest.fixture(scope="module")
def run_dir(mnist_root, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("robust")
    result = run_cli(
        "train",
        *tiny_mnist_overrides(mnist_root),
        ONE_THREAD,
        *EVALUATE,
        f"hydra.run.dir={work / 'run'}",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    return work / "run"


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def eval_cli(*args: str):
    # In-process: torch is already imported here, so this costs a fraction of a subprocess.
    return CliRunner().invoke(app, ["eval", *args, "--device", "cpu"])


def eval_json(*args: str) -> dict:
    result = eval_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- the run ------------------------------------------------------------------------------------


def test_the_run_records_each_value_and_the_clean_one_is_its_test_accuracy(run_dir):
    metrics = metrics_of(run_dir)
    robust = metrics["robustness"]
    assert {kind: list(values) for kind, values in robust.items()} == {
        "shift": ["0", "2"],
        "illumination": ["0", "0.5"],
    }
    assert robust["shift"]["0"] == metrics["test_acc"] == robust["illumination"]["0"]
    log = (run_dir / "train.log").read_text()
    assert f"test acc under shift (px): 0 -> {metrics['test_acc']:.4f} | 2 -> " in log
    assert "test acc under illumination (strength): 0 -> " in log
    assert "occlude" not in log and "clutter" not in log, "kinds not listed are not tested"


@pytest.mark.parametrize(
    ("option", "kind", "key"),
    [("--shift", "shift", "2"), ("--illumination", "illumination", "0.5")],
)
def test_eval_reproduces_the_recorded_accuracy_exactly(run_dir, option, kind, key):
    report = eval_json(str(run_dir), option, key)
    assert report["test_acc"] == metrics_of(run_dir)["robustness"][kind][key]
    amount = float(key) if kind == "illumination" else int(key)
    assert report["perturbation"] == {kind: amount, "seed": 0}


def test_tensorboard_draws_accuracy_against_the_amount(run_dir):
    events = EventAccumulator(str(run_dir))
    events.Reload()
    robust = metrics_of(run_dir)["robustness"]
    shift = [(event.step, event.value) for event in events.Scalars("robust/shift_acc")]
    assert shift == [
        (0, pytest.approx(robust["shift"]["0"])),
        (2, pytest.approx(robust["shift"]["2"])),
    ]
    # Illumination strengths are floats: the step is round(100 * strength).
    light = [(event.step, event.value) for event in events.Scalars("robust/illumination_acc")]
    assert light == [
        (0, pytest.approx(robust["illumination"]["0"])),
        (50, pytest.approx(robust["illumination"]["0.5"])),
    ]
    assert not {"robust/occlude_acc", "robust/clutter_acc"} & set(events.Tags()["scalars"])


def test_a_run_with_nothing_to_evaluate_does_nothing_more():
    """robustness.measure with empty lists, given or as the default config composes them,
    returns before it touches the run's test batches (this stand-in run has none to touch)."""
    empty = {"shift": [], "occlude": [], "clutter": [], "illumination": [], "seed": 0}
    for cfg in (OmegaConf.create({"robustness": empty}), compose([])):
        assert robustness.measure(SimpleNamespace(cfg=cfg)) == []


def test_a_run_stopped_while_measuring_records_the_same_numbers_on_resume(mnist_root, tmp_path):
    """SIGKILL after the shift values are measured, while the illumination values are (each
    evaluation batch sleeps), then `convbench resume`: the same numbers as an uninterrupted run,
    and each TensorBoard point once."""
    slow = ["trainer.log_images=false", "+model.seconds_per_eval_batch=0.5", *EVALUATE]
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    finish(start("train", *slow_overrides(mnist_root, reference, epochs=1), *slow, cwd=tmp_path))
    proc = start("train", *slow_overrides(mnist_root, run_dir, epochs=1), *slow, cwd=tmp_path)
    log = run_dir / "train.log"
    wait_until(
        lambda: log.is_file() and "test acc under shift" in log.read_text(),
        proc,
        "the shift values were measured",
    )
    proc.send_signal(signal.SIGKILL)
    finish(proc, expected=-signal.SIGKILL)
    assert not (run_dir / "metrics.json").exists(), "killed before the end of the phase"
    finish(start("resume", str(run_dir), *TRUSTED, cwd=tmp_path))
    ours, theirs = metrics_of(run_dir), metrics_of(reference)
    assert ours["robustness"] == theirs["robustness"]
    assert ours["test_acc"] == theirs["test_acc"]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    for kind, steps in (("shift", [0, 2]), ("illumination", [0, 50])):
        assert [event.step for event in events.Scalars(f"robust/{kind}_acc")] == steps


# --- eval with lists ----------------------------------------------------------------------------


def test_eval_with_lists_prints_one_line_per_value(run_dir):
    result = eval_cli(str(run_dir), "--shift", "0,2", "--illumination", "0,0.5", "--occlude", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("Kind"))) :]
    assert table[0].split() == ["Kind", "Value", "Unit", "Acc"]
    rows = [line.split() for line in table[1:]]
    assert [(kind, value, unit) for kind, value, unit, _ in rows] == [
        ("shift", "0", "px"),
        ("shift", "2", "px"),
        ("occlude", "3", "px"),  # with a list, every option's values are tested on their own
        ("illumination", "0", "strength"),
        ("illumination", "0.5", "strength"),
    ]
    recorded = metrics_of(run_dir)["robustness"]
    by_row = {(kind, value): float(acc) for kind, value, _, acc in rows}
    assert by_row[("shift", "2")] == pytest.approx(recorded["shift"]["2"], abs=5e-5)
    assert "test acc under each perturbation alone (seed 0)" in result.stdout


def test_eval_lists_as_json_give_the_rows(run_dir):
    report = eval_json(str(run_dir), "--shift", "0,2", "--illumination", "0,0.5")
    rows = report["results"]
    assert [(row["kind"], row["value"]) for row in rows] == [
        ("shift", 0),
        ("shift", 2),
        ("illumination", 0.0),
        ("illumination", 0.5),
    ]
    recorded = metrics_of(run_dir)["robustness"]
    assert [row["test_acc"] for row in rows] == [
        recorded["shift"]["0"],
        recorded["shift"]["2"],
        recorded["illumination"]["0"],
        recorded["illumination"]["0.5"],
    ]
    assert report["seed"] == 0 and report["images"] == 200


def test_a_single_value_keeps_the_per_class_report(run_dir):
    result = eval_cli(str(run_dir), "--illumination", "0.5")
    assert result.exit_code == 0, result.output
    assert "| perturbed: illumination 0.5, seed 0\n" in result.stdout
    assert "Class" in result.stdout and "Kind" not in result.stdout


@pytest.mark.parametrize(
    ("args", "named", "allowed"),
    [
        (["--shift", "-1"], "--shift -1: -1 is out of range", "whole numbers >= 0 and <= 4096"),
        (["--shift", "0,2,x"], "--shift 0,2,x: 'x' is not a whole number", ">= 0 and <= 4096"),
        (["--occlude", "1.5"], "--occlude 1.5: '1.5' is not a whole number", ">= 0"),
        (["--clutter", "5000"], "--clutter 5000: 5000 is out of range", "<= 4096"),
        (
            ["--illumination", "0,1.5"],
            "--illumination 0,1.5: 1.5 is out of range",
            "numbers >= 0 and <= 1",
        ),
        (["--illumination", "nan"], "--illumination nan: nan is out of range", ">= 0 and <= 1"),
        (["--illumination", "bright"], "'bright' is not a number", ">= 0 and <= 1"),
        (["--seed", str(2**64)], f"--seed {2**64} is out of range", "<= 9,223,372,036,854"),
        (["--feature-maps", "maps.jpg"], "--feature-maps maps.jpg", ".png or .svg"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_bad_value_exits_2_with_one_paragraph(run_dir, tmp_path, args, named, allowed):
    result = run_cli("eval", str(run_dir), *args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert named in lines[0] and allowed in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr and not result.stdout


# --- feature maps -------------------------------------------------------------------------------


def test_feature_maps_get_the_first_4_test_images_as_the_model_sees_them(
    run_dir, monkeypatch, tmp_path
):
    """What eval hands to visuals.save_feature_maps, whatever that draws: a stand-in records it
    (the drawing itself is tested below and in test_tensorboard.py)."""
    import torch

    from convbench.analysis import retest
    from convbench.data.loader import load_splits
    from convbench.run.build import eval_batches

    calls = []
    monkeypatch.setattr(
        retest,  # where eval looks visuals.save_feature_maps up
        "save_feature_maps",
        lambda model, images, path: calls.append((model, images, path)),
    )
    report = eval_json(str(run_dir), "--shift", "2", "--feature-maps", str(tmp_path / "maps.png"))
    assert report["feature_maps"] == str(tmp_path / "maps.png")
    ((model, images, path),) = calls
    assert path == tmp_path / "maps.png" and not model.training
    # The run's config and what it settled, as eval reads them (the config still says `auto`).
    best = run_dir / "checkpoints" / "best.pt"
    payload = load_checkpoint(best)
    cfg, settled = OmegaConf.create(payload["config"]), Settled.from_dict(payload["settled"], best)
    test = load_splits(cfg.dataset).test
    shifted = robustness.perturbed(test, {"shift": 2}, 0)  # as tested: the whole split, then cut
    batches = eval_batches(cfg, shifted, device=torch.device("cpu"), settled=settled)
    expected, _ = next(batches.epoch(0))
    assert images.shape == (4, 1, 28, 28) and images.dtype == torch.float32
    assert torch.equal(images, expected[:4])


NO_FEATURE_MAPS = not hasattr(visuals, "save_feature_maps")


@pytest.mark.skipif(
    NO_FEATURE_MAPS, reason="convbench.monitor.pictures has no save_feature_maps yet"
)
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_feature_maps_are_drawn_to_the_file(run_dir, tmp_path, suffix):
    target = tmp_path / "maps" / f"features{suffix}"
    result = eval_cli(str(run_dir), "--feature-maps", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith(f"feature maps: {target}")
    drawn = target.read_bytes()
    if suffix == ".png":
        assert drawn.startswith(b"\x89PNG\r\n\x1a\n")
    else:
        assert b"<svg" in drawn[:2000]


@pytest.mark.skipif(
    NO_FEATURE_MAPS, reason="convbench.monitor.pictures has no save_feature_maps yet"
)
def test_feature_maps_of_a_model_without_conv_layers_are_a_user_error(mnist_root, tmp_path):
    run = tmp_path / "mlp"
    assert (
        run_cli(
            "train",
            "model=mlp",
            *tiny_mnist_overrides(mnist_root),
            "trainer.epochs=1",
            ONE_THREAD,
            f"hydra.run.dir={run}",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    result = eval_cli(str(run), "--feature-maps", str(tmp_path / "maps" / "maps.png"))
    assert isinstance(result.exception, ConvbenchError)  # main() prints it and exits 2
    assert "--feature-maps" in str(result.exception) and "no conv layer" in str(result.exception)
    assert not (tmp_path / "maps").exists(), "refused before any folder is made"
