"""Augmentation of training batches (`dataset.augment.*`), on the device, a whole uint8 batch
[B, C, H, W] at a time, drawn from the generator the batch is given (seeded by seed, epoch and
batch index in convbench.data.batches, so a batch can be rebuilt exactly on resume).

Besides the usual random crop and flip, the confounders of the test-time perturbations
(convbench.data.perturb) can be trained on, so that a model can learn to ignore them:

- occlude S: each image gets a square of background whose side is drawn per image from 0 to S
  pixels, at a random place (so the model sees every size of occluder up to S, and none);
- clutter S: likewise a square, filled with the same square of another image of the batch;
- illumination s: each image gets its own gamma, contrast and brightness change, drawn as the
  test-time `illuminate` draws them at strength s (so every strength up to s is seen).

They apply in the test-time order: clutter, occlusion, the crop (a shift), the flip, then the
illumination, which lights the whole picture. An augmentation that is off draws nothing, so
turning one on does not change the draws of those before it.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from convbench.data.perturb import illuminate


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and cut a random window of the original size per image."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)  # [B, C, H + 2p, W + 2p]
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    # Every window as a view ([B, C, 2p + 1, 2p + 1, H, W], no copy), then one pick per image:
    # about a quarter of the time of indexing rows and columns pixel by pixel.
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)
    return windows[torch.arange(batch, device=device), :, dy, dx]  # [B, C, H, W]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def random_squares(images: torch.Tensor, largest: int, generator: torch.Generator) -> torch.Tensor:
    """A [B, 1, H, W] boolean mask with one square per image: its side drawn uniformly from
    0 to `largest` pixels (at most the image's shorter side), its place uniformly among those
    where it fits whole."""
    batch, _, height, width = images.shape
    device = images.device
    largest = min(largest, height, width)
    shape = (batch, 1, 1, 1)
    side = torch.randint(0, largest + 1, shape, generator=generator, device=device)
    top = (torch.rand(shape, generator=generator, device=device) * (height - side + 1)).long()
    left = (torch.rand(shape, generator=generator, device=device) * (width - side + 1)).long()
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    return (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)


def random_occlude(images: torch.Tensor, largest: int, generator: torch.Generator) -> torch.Tensor:
    """Blank a square of a random side up to `largest` pixels in each image."""
    return images.masked_fill(random_squares(images, largest, generator), 0)


def random_clutter(images: torch.Tensor, largest: int, generator: torch.Generator) -> torch.Tensor:
    """Paste into each image a square (of a random side up to `largest`) of the next image of
    the batch, which is shuffled: a fragment of a random other image, usually of another
    class. A batch of one image is left as it is."""
    if len(images) < 2:
        return images
    donors = images.roll(1, dims=0)
    return torch.where(random_squares(images, largest, generator), donors, images)


@dataclass(frozen=True)
class Augmentation:
    """The training augmentation of a run, from its `dataset.augment` block."""

    crop_padding: int = 0
    flip: bool = False
    occlude: int = 0
    clutter: int = 0
    illumination: float = 0.0

    @classmethod
    def of(cls, block) -> "Augmentation":
        """From a `dataset.augment` config block (None: no augmentation)."""
        if block is None:
            return cls()
        return cls(
            crop_padding=int(block.crop_padding),
            flip=bool(block.flip),
            occlude=int(block.occlude),
            clutter=int(block.clutter),
            illumination=float(block.illumination),
        )

    def __bool__(self) -> bool:
        return self != Augmentation()

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`images` (uint8 [B, C, H, W]) augmented with draws from `generator`."""
        if self.clutter:
            images = random_clutter(images, self.clutter, generator)
        if self.occlude:
            images = random_occlude(images, self.occlude, generator)
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, generator)
        if self.flip:
            images = random_flip(images, generator)
        if self.illumination:
            images = illuminate(images, self.illumination, generator)
        return images
