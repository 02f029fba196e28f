"""Perturbations and robustness. The test-time perturbations themselves (convbench.data.perturb:
shift, occlusion, clutter, illumination), pixel by pixel; robustness measured in every run (the
`robustness` block) and by `convbench eval` (--shift/--occlude/--clutter/--illumination, single
values or lists): the same code and seed, so the numbers agree exactly; TensorBoard draws accuracy
against the amount; bad values are one paragraph; `--feature-maps` draws the conv stages. Runs
and evaluations are `convbench` in this process; a run killed while measuring and resumed is in
tests/process/test_resume.py."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from convbench.cli import app
from convbench.config.compose import compose
from convbench.data.perturb import clutter, illuminate, occlude, perturb, shift
from convbench.errors import ConvbenchError
from convbench.run import robustness
from convbench.run.checkpoint import Settled, load_checkpoint
from helpers.cli import ONE_THREAD, tiny_mnist_overrides
from helpers.inprocess import convbench

# --- the perturbations --------------------------------------------------------------------------


def _images(count=6, size=8) -> torch.Tensor:
    values = torch.arange(1, count * size * size + 1) % 250 + 1  # no zeros: background is 0
    return values.to(torch.uint8).view(count, 1, size, size)


def test_shift_moves_every_image_by_n_pixels_and_fills_with_background():
    images = _images()
    moved = shift(images, 2, torch.Generator().manual_seed(0))
    for original, result in zip(images, moved, strict=True):
        padded = torch.nn.functional.pad(original, (2, 2, 2, 2))
        windows = {
            (dy, dx): padded[:, 2 - dy : 10 - dy, 2 - dx : 10 - dx]
            for dy in (-2, 0, 2)
            for dx in (-2, 0, 2)
            if (dy, dx) != (0, 0)
        }
        assert any(torch.equal(result, w) for w in windows.values())
        assert (result == 0).sum() >= 2 * 8  # at least two background rows or columns


def test_a_shift_beyond_the_image_leaves_only_background():
    images = _images()
    for pixels in (8, 9, 10_000):  # as far as the side, and far beyond (no huge padding)
        assert not shift(images, pixels, torch.Generator().manual_seed(0)).any()


def test_occlude_blanks_one_square_per_image():
    occluded = occlude(_images(), 3, torch.Generator().manual_seed(0))
    assert ((occluded == 0).flatten(1).sum(1) == 9).all()


def test_clutter_pastes_a_square_of_another_image():
    images = torch.arange(1, 7, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 1, 8, 8).clone()
    cluttered = clutter(images, 3, torch.Generator().manual_seed(0))
    for index, result in enumerate(cluttered):
        foreign = result != index + 1
        assert foreign.sum() == 9 and len(result[foreign].unique()) == 1  # one donor image


def test_perturbations_are_seeded():
    images = _images()
    first = perturb(images, {"shift": 1, "occlude": 2, "clutter": 2}, seed=5)
    assert torch.equal(first, perturb(images, {"shift": 1, "occlude": 2, "clutter": 2}, seed=5))
    assert not torch.equal(first, perturb(images, {"shift": 1, "occlude": 2, "clutter": 2}, seed=6))
    assert torch.equal(perturb(images, {}), images)


# --- illumination ------------------------------------------------------------------------------


def _documented_illumination(images: torch.Tensor, strength: float, seed: int):
    """What illuminate's docstring says, pixel by pixel in double precision: the rounded value
    and the unrounded 255 * y before clamping, for each pixel of each image."""
    draws = torch.rand((len(images), 3), generator=torch.Generator().manual_seed(seed)).tolist()
    expected = {}
    for index, (image, (u_gamma, u_contrast, u_brightness)) in enumerate(
        zip(images.tolist(), draws, strict=True)
    ):
        gamma = 2 ** (strength * (2 * u_gamma - 1))
        contrast = 2 ** (strength * (2 * u_contrast - 1))
        brightness = 0.5 * strength * (2 * u_brightness - 1)
        for channel, plane in enumerate(image):
            for row, line in enumerate(plane):
                for col, pixel in enumerate(line):
                    y = contrast * ((pixel / 255) ** gamma - 0.5) + 0.5 + brightness
                    expected[index, channel, row, col] = 255 * y
    return expected


def _matches(result: int, unclamped: float) -> bool:
    """`result` is round(clamp(unclamped, 0, 255)); within 1e-3 of a rounding tie, float32
    arithmetic may land on either side, so both neighbours count."""
    value = min(max(unclamped, 0.0), 255.0)
    if abs(value - math.floor(value) - 0.5) < 1e-3:
        return result in (math.floor(value), math.ceil(value))
    return result == round(value)


def _ramp(count=5, channels=2, size=4) -> torch.Tensor:
    """Every value from black to white: steps of 255 / (pixels - 1), one ramp per image."""
    pixels = channels * size * size
    ramp = torch.linspace(0, 255, pixels).round().to(torch.uint8)
    return torch.stack([ramp.roll(7 * i) for i in range(count)]).view(count, channels, size, size)


def test_illumination_at_strength_0_is_the_identity():
    images = _ramp()
    generator = torch.Generator().manual_seed(3)
    assert illuminate(images, 0.0, generator) is images
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(3).get_state()), (
        "nothing drawn, so the perturbations after it are unchanged"
    )
    assert torch.equal(perturb(images, {"illumination": 0.0}, seed=3), images)


@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_illumination_is_the_documented_transform_pixel_by_pixel(strength):
    images = _ramp()
    result = illuminate(images, strength, torch.Generator().manual_seed(11))
    assert result.dtype == torch.uint8 and result.shape == images.shape
    expected = _documented_illumination(images, strength, seed=11)
    mismatches = [
        (where, int(result[where]), unclamped)
        for where, unclamped in expected.items()
        if not _matches(int(result[where]), unclamped)
    ]
    assert not mismatches, mismatches[:5]
    # Every channel of an image changes alike: a change of light, not of colour.
    assert torch.equal(
        result[:, 0], illuminate(images[:, :1], strength, torch.Generator().manual_seed(11))[:, 0]
    )


def test_illumination_clamps_to_black_and_white_instead_of_wrapping():
    images = _ramp(count=40)
    result = illuminate(images, 1.0, torch.Generator().manual_seed(0))
    expected = _documented_illumination(images, 1.0, seed=0)
    above = [where for where, value in expected.items() if value > 255.5]
    below = [where for where, value in expected.items() if value < -0.5]
    assert above and below, "the strength-1 draws must push some pixels past both ends"
    assert all(int(result[where]) == 255 for where in above)
    assert all(int(result[where]) == 0 for where in below)


def test_illumination_is_seeded_and_differs_per_image():
    images = _ramp(count=1).repeat(5, 1, 1, 1)  # five copies of one image
    first = perturb(images, {"illumination": 0.5}, seed=5)
    assert torch.equal(first, perturb(images, {"illumination": 0.5}, seed=5))
    assert not torch.equal(first, perturb(images, {"illumination": 0.5}, seed=6))
    assert len({tuple(image.flatten().tolist()) for image in first}) == 5, "drawn per image"
    assert not torch.equal(first, perturb(images, {"illumination": 0.9}, seed=5)), (
        "the strength acts"
    )


def test_eval_reports_accuracy_on_perturbed_test_images(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    assert (
        convbench(
            "train",
            *tiny_mnist_overrides(mnist_root),
            "trainer.num_threads=1",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        ).code
        == 0
    )
    reports = {}
    for args in ((), ("--shift", "0"), ("--shift", "6"), ("--occlude", "24")):
        result = convbench("eval", str(run_dir), "--json", "--device", "cpu", *args, cwd=tmp_path)
        assert result.code == 0, result.stderr
        reports[args] = json.loads(result.stdout)
    plain = reports[()]
    assert reports[("--shift", "0")]["test_acc"] == plain["test_acc"]
    assert plain["perturbation"] is None
    assert reports[("--shift", "6")]["perturbation"] == {"shift": 6, "seed": 0}
    # The fixture's classes are horizontal bars at class-specific rows: moving or hiding most of
    # them must cost accuracy (a 20-pixel square cost this barely trained net one image or none).
    assert reports[("--shift", "6")]["test_acc"] < plain["test_acc"]
    assert reports[("--occlude", "24")]["test_acc"] < plain["test_acc"]
    text = convbench("eval", str(run_dir), "--device", "cpu", "--clutter", "5", cwd=tmp_path).stdout
    assert "perturbed: clutter 5 px" in text


# --- robustness measured by a run and by eval ------------------------------------------------

EVALUATE = ["robustness.shift=[0,2]", "robustness.illumination=[0,0.5]"]


@pytest.fixture(scope="module")
def run_dir(mnist_root, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("robust")
    result = convbench(
        "train",
        *tiny_mnist_overrides(mnist_root),
        ONE_THREAD,
        *EVALUATE,
        f"hydra.run.dir={work / 'run'}",
        cwd=work,
    )
    assert result.code == 0, result.stderr
    return work / "run"


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def eval_cli(*args: str):
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
        (["--seed", str(2**64)], f"--seed {2**64} is out of range", "a 64-bit integer"),
        (["--feature-maps", "maps.jpg"], "--feature-maps maps.jpg", ".png or .svg"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_bad_value_exits_2_with_one_paragraph(run_dir, tmp_path, args, named, allowed):
    result = convbench("eval", str(run_dir), *args, cwd=tmp_path)
    assert result.code == 2, result.stderr
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


def test_feature_maps_of_a_model_without_conv_layers_are_a_user_error(mnist_root, tmp_path):
    run = tmp_path / "mlp"
    assert (
        convbench(
            "train",
            "model=mlp",
            *tiny_mnist_overrides(mnist_root),
            "trainer.epochs=1",
            ONE_THREAD,
            f"hydra.run.dir={run}",
            cwd=tmp_path,
        ).code
        == 0
    )
    result = eval_cli(str(run), "--feature-maps", str(tmp_path / "maps" / "maps.png"))
    assert isinstance(result.exception, ConvbenchError)  # main() prints it and exits 2
    assert "--feature-maps" in str(result.exception) and "no conv layer" in str(result.exception)
    assert not (tmp_path / "maps").exists(), "refused before any folder is made"
