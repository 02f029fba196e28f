"""Test-time shifts, occlusion and clutter (`convbench eval --shift/--occlude/--clutter`)."""

import json

import torch

from convbench.data.perturb import clutter, occlude, perturb, shift
from helpers.cli import run_cli, tiny_mnist_overrides


def _images(count=6, size=8) -> torch.Tensor:
    values = torch.arange(1, count * size * size + 1) % 250 + 1  # no zeros: background is 0
    return values.to(torch.uint8).view(count, 1, size, size)


def test_shift_moves_every_image_by_n_pixels_and_fills_with_background():
    images = _images()
    moved = shift(images, 2, torch.Generator().manual_seed(0))
    for original, result in zip(images, moved, strict=True):
        padded = torch.nn.functional.pad(original, (2, 2, 2, 2))
        windows = {(dy, dx): padded[:, 2 - dy : 10 - dy, 2 - dx : 10 - dx]
                   for dy in (-2, 0, 2) for dx in (-2, 0, 2) if (dy, dx) != (0, 0)}  # fmt: skip
        assert any(torch.equal(result, w) for w in windows.values())
        assert (result == 0).sum() >= 2 * 8  # at least two background rows or columns


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
    first = perturb(images, shift_pixels=1, occlude_side=2, clutter_side=2, seed=5)
    assert torch.equal(
        first, perturb(images, shift_pixels=1, occlude_side=2, clutter_side=2, seed=5)
    )
    assert not torch.equal(
        first, perturb(images, shift_pixels=1, occlude_side=2, clutter_side=2, seed=6)
    )
    assert torch.equal(perturb(images), images)


def test_eval_reports_accuracy_on_perturbed_test_images(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("train", *tiny_mnist_overrides(mnist_root), "trainer.num_threads=1",
                   f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0  # fmt: skip
    reports = {}
    for args in ((), ("--shift", "0"), ("--shift", "6"), ("--occlude", "20")):
        result = run_cli("eval", str(run_dir), "--json", "--device", "cpu", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        reports[args] = json.loads(result.stdout)
    plain = reports[()]
    assert reports[("--shift", "0")]["test_acc"] == plain["test_acc"]
    assert plain["perturbation"] is None
    assert reports[("--shift", "6")]["perturbation"] == {"shift": 6}
    # The fixture's classes are horizontal bars at class-specific rows: moving or hiding them
    # must cost accuracy.
    assert reports[("--shift", "6")]["test_acc"] < plain["test_acc"]
    assert reports[("--occlude", "20")]["test_acc"] < plain["test_acc"]
    text = run_cli("eval", str(run_dir), "--device", "cpu", "--clutter", "5", cwd=tmp_path).stdout
    assert "perturbed: clutter 5 px" in text
