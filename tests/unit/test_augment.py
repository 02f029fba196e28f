"""Training augmentation (dataset.augment): the confounders of the test-time perturbations, drawn
per image and seeded, applied to the training batches only."""

import torch
from omegaconf import OmegaConf

from convbench.data.augment import Augmentation, random_clutter, random_occlude, random_squares
from convbench.data.batches import Batches, Split
from convbench.data.perturb import illuminate


def white(count: int = 400, side: int = 28) -> torch.Tensor:
    return torch.full((count, 1, side, side), 255, dtype=torch.uint8)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_each_image_gets_one_square_whose_side_is_drawn_up_to_the_largest():
    masks = random_squares(white(), 12, generator())
    for mask in masks[:, 0]:
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        if len(rows) == 0:
            continue
        height, width = len(rows), len(cols)
        assert height == width <= 12, "a square, no larger than the largest side"
        assert int(mask.sum()) == height * width, "one solid square"
        assert rows.max() - rows.min() + 1 == height, "in one piece"
    sides = masks[:, 0].any(2).sum(1)
    assert set(sides.tolist()) == set(range(13)), "every side from 0 to 12 is drawn"


def test_occlusion_blanks_its_square_and_nothing_else():
    images = white()
    occluded = random_occlude(images, 16, generator())
    mask = random_squares(images, 16, generator())
    assert torch.equal(occluded == 0, mask)


def test_clutter_pastes_a_fragment_of_another_image_of_the_batch():
    images = torch.arange(8, dtype=torch.uint8).mul(30).view(8, 1, 1, 1).expand(8, 1, 28, 28)
    cluttered = random_clutter(images.contiguous(), 28, generator(3))
    mask = random_squares(images, 28, generator(3))
    for i in range(8):
        inside, outside = cluttered[i][mask[i]], cluttered[i][~mask[i]]
        assert (outside == 30 * i).all(), "the rest of the image is its own"
        assert (inside == 30 * ((i - 1) % 8)).all(), "the square comes from another image"
    assert torch.equal(random_clutter(images[:1], 28, generator()), images[:1])


def test_the_augmentation_is_seeded_and_off_draws_nothing():
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    full = Augmentation(occlude=10, clutter=10, illumination=1.0)
    assert torch.equal(full(images, generator(5)), full(images, generator(5)))
    assert not torch.equal(full(images, generator(5)), full(images, generator(6)))
    assert torch.equal(Augmentation()(images, generator()), images)
    assert not Augmentation() and full
    # Illumination last, on the draws left after the squares: alone it is the test-time one.
    lit = Augmentation(illumination=0.5)(images, generator(1))
    assert torch.equal(lit, illuminate(images, 0.5, generator(1)))


def augment_block(**values):
    block = dict(crop_padding=0, flip=False, occlude=0, clutter=0, illumination=0.0)
    return OmegaConf.create(block | values)


def batches(augment, *, shuffle=True) -> Batches:
    images = torch.full((256, 1, 28, 28), 200, dtype=torch.uint8)
    split = Split(images=images, labels=torch.zeros(256, dtype=torch.int64))
    return Batches(
        split,
        batch_size=64,
        device=torch.device("cpu"),
        mean=[0.0],
        std=[1.0],
        image_size=28,
        shuffle=shuffle,
        augment=augment,
        seed=0,
    )


def test_training_batches_carry_the_confounders_and_can_be_rebuilt():
    occluded = batches(augment_block(occlude=20))
    first = [x for x, _ in occluded.epoch(0)]
    blank = torch.cat(first).eq(0).flatten(1).sum(1)  # background pixels per image
    assert (blank > 0).float().mean() > 0.8, "most images lose a square"
    assert blank.max() <= 20 * 20
    again = [x for x, _ in occluded.epoch(0, start_batch=2)]
    assert torch.equal(again[0], first[2]), "batch 2 of epoch 0 is rebuilt exactly"
    lit = torch.cat([x for x, _ in batches(augment_block(illumination=1.0)).epoch(0)])
    per_image = lit.flatten(1).mean(1)
    assert per_image.std() > 0.05, "each image its own light"
    clean = torch.cat([x for x, _ in batches(augment_block()).epoch(0)])
    assert torch.allclose(clean, torch.full_like(clean, 200 / 255))


def test_evaluation_batches_are_never_augmented():
    evaluation = batches(None, shuffle=False)
    assert not evaluation.augmentation and not evaluation.augmenting
    assert all(torch.allclose(x, torch.full_like(x, 200 / 255)) for x, _ in evaluation.epoch(0))
