"""Test-time shifts, occlusion, clutter and illumination (`convbench eval --shift/--occlude/
--clutter/--illumination`)."""

import json
import math

import pytest
import torch

from convbench.data.perturb import clutter, illuminate, occlude, perturb, shift
from helpers.cli import run_cli, tiny_mnist_overrides


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
        run_cli(
            "train",
            *tiny_mnist_overrides(mnist_root),
            "trainer.num_threads=1",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    reports = {}
    for args in ((), ("--shift", "0"), ("--shift", "6"), ("--occlude", "24")):
        result = run_cli("eval", str(run_dir), "--json", "--device", "cpu", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        reports[args] = json.loads(result.stdout)
    plain = reports[()]
    assert reports[("--shift", "0")]["test_acc"] == plain["test_acc"]
    assert plain["perturbation"] is None
    assert reports[("--shift", "6")]["perturbation"] == {"shift": 6, "seed": 0}
    # The fixture's classes are horizontal bars at class-specific rows: moving or hiding most of
    # them must cost accuracy (a 20-pixel square cost this barely trained net one image or none).
    assert reports[("--shift", "6")]["test_acc"] < plain["test_acc"]
    assert reports[("--occlude", "24")]["test_acc"] < plain["test_acc"]
    text = run_cli("eval", str(run_dir), "--device", "cpu", "--clutter", "5", cwd=tmp_path).stdout
    assert "perturbed: clutter 5 px" in text
