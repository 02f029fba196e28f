"""Test-time perturbations for the lecture's claims about convnets: tolerance to shifts,
occlusion and clutter (`convbench eval RUN_DIR --shift N --occlude S --clutter S`).

All work on a whole uint8 batch at once and are seeded, so the same command perturbs the same
images the same way for every model compared:

- shift N: every image moves N pixels in one of the 8 compass directions (random per image);
  what moves in is background (0).
- occlude S: a square of S x S pixels at a random place is set to background.
- clutter S: a square of S x S pixels at a random place is replaced by the same square of another
  test image, i.e. a distractor fragment from another class (usually).
"""

import torch
import torch.nn.functional as F

# The 8 compass directions (dy, dx) a shift can take.
_DIRECTIONS = torch.tensor([[-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 1], [1, -1], [1, 0], [1, 1]])


def shift(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by `pixels` in a random compass direction, filling with zeros."""
    if pixels <= 0:
        return images
    count, _, height, width = images.shape
    direction = _DIRECTIONS[torch.randint(0, 8, (count,), generator=generator)] * pixels  # [N, 2]
    padded = F.pad(images, (pixels,) * 4)  # [N, C, H + 2p, W + 2p]
    # Output pixel (r, c) reads input pixel (r - dy, c - dx), i.e. padded (r - dy + p, c - dx + p).
    rows = (torch.arange(height) + pixels)[None, :] - direction[:, :1]  # [N, H]
    cols = (torch.arange(width) + pixels)[None, :] - direction[:, 1:]  # [N, W]
    batch = torch.arange(count)[:, None, None, None]
    channels = torch.arange(images.shape[1])[None, :, None, None]
    return padded[batch, channels, rows[:, None, :, None], cols[:, None, None, :]]


def _square_masks(images: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
    """A [N, 1, H, W] boolean mask with one side x side square at a random place per image."""
    count, _, height, width = images.shape
    side = min(side, height, width)
    top = torch.randint(0, height - side + 1, (count, 1, 1, 1), generator=generator)
    left = torch.randint(0, width - side + 1, (count, 1, 1, 1), generator=generator)
    rows = torch.arange(height).view(1, 1, height, 1)
    cols = torch.arange(width).view(1, 1, 1, width)
    return (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)


def occlude(images: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
    """Blank a random side x side square of each image."""
    if side <= 0:
        return images
    return images.masked_fill(_square_masks(images, side, generator), 0)


def clutter(images: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
    """Paste a side x side fragment of another test image at a random place of each image."""
    if side <= 0 or len(images) < 2:
        return images
    # Image i takes its fragment from image donor[i] != i (a random non-zero rotation of indices).
    offset = int(torch.randint(1, len(images), (1,), generator=generator))
    donors = images.roll(offset, dims=0)
    return torch.where(_square_masks(images, side, generator), donors, images)


def perturb(images: torch.Tensor, *, shift_pixels=0, occlude_side=0, clutter_side=0, seed=0):
    """Apply clutter, then occlusion, then the shift, to uint8 images [N, C, H, W]."""
    generator = torch.Generator().manual_seed(seed)
    images = clutter(images, clutter_side, generator)
    images = occlude(images, occlude_side, generator)
    return shift(images, shift_pixels, generator)
