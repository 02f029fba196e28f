"""Test-time perturbations for the lecture's claims about convnets: tolerance to shifts,
occlusion, clutter and strange illuminations (`convbench eval RUN_DIR --shift N --occlude S
--clutter S --illumination s`, or a run's `robustness` block); convbench.data.kinds names them.

All work on a whole uint8 batch at once and are seeded, so the same command perturbs the same
images the same way for every model compared:

- shift N: every image moves N pixels in one of the 8 compass directions (random per image);
  what moves in is background (0).
- occlude S: a square of S x S pixels at a random place is set to background.
- clutter S: a square of S x S pixels at a random place is replaced by the same square of another
  test image, i.e. a distractor fragment from another class (usually).
- illumination s: every image gets its own gamma, contrast and brightness change, whose spread
  grows with the strength s in [0, 1] (see `illuminate`).
"""

import torch
import torch.nn.functional as F

from convbench.data.kinds import KINDS

# The 8 compass directions (dy, dx) a shift can take.
_DIRECTIONS = torch.tensor([[-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 1], [1, -1], [1, 0], [1, 1]])


def shift(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by `pixels` in a random compass direction, filling with zeros."""
    if pixels <= 0:
        return images
    count, _, height, width = images.shape
    # Beyond the longer side every shift leaves only background: padding more would cost memory.
    pixels = min(pixels, max(height, width))
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


def illuminate(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Change the lighting of each uint8 image [N, C, H, W] by a random amount at `strength`.

    Three numbers per image come from one draw, `u = torch.rand((N, 3), generator=generator)`,
    each mapped to `v = 2 * u - 1` in [-1, 1): v[:, 0] sets the gamma, v[:, 1] the contrast and
    v[:, 2] the brightness. With s = strength and x = pixel / 255 in [0, 1], every pixel of
    image i (all channels alike: a change of light, not of colour) becomes

        gamma      = 2 ** (s * v[i, 0])            in [2**-s, 2**s]   ([0.5, 2] at s = 1)
        contrast   = 2 ** (s * v[i, 1])            in [2**-s, 2**s], around mid-grey 0.5
        brightness = 0.5 * s * v[i, 2]             in [-s/2, s/2]     (half the range at s = 1)
        y          = contrast * (x ** gamma - 0.5) + 0.5 + brightness
        pixel'     = round(255 * clamp(y, 0, 1))   (to nearest, ties to even; as uint8)

    s = 0 leaves every image unchanged (returned as it is, drawing nothing). At s = 1 an image
    can get a gamma up to 2 (mid-grey 0.5 falls to 0.25) or down to 0.5 (it rises to 0.71),
    half or twice the contrast, and up to half the range of light more or less, all at once.
    Computed in float32 on the whole batch, with no per-image loop.
    """
    if strength <= 0:
        return images
    count = images.shape[0]
    draws = torch.rand((count, 3), generator=generator, device=generator.device)
    draws = draws.to(images.device) * 2 - 1  # [N, 3]
    gamma, contrast, brightness = (column.view(count, 1, 1, 1) for column in draws.unbind(1))
    gamma, contrast = 2 ** (strength * gamma), 2 ** (strength * contrast)
    brightness = 0.5 * strength * brightness
    pixels = images.float().div_(255).pow_(gamma).sub_(0.5).mul_(contrast)
    pixels = pixels.add_(0.5 + brightness).clamp_(0, 1).mul_(255).round_()
    return pixels.to(torch.uint8)


def perturb(images: torch.Tensor, amounts: dict, seed: int = 0) -> torch.Tensor:
    """Apply `amounts` ({kind: amount} of KINDS, a missing kind 0) to uint8 images
    [N, C, H, W]: clutter, then occlusion, then the shift, then the illumination (which lights
    the whole picture, background and occluder included).

    The draws come from one generator seeded with `seed`, in that order; a perturbation at 0
    draws nothing, so a perturbation's draws do not depend on whether a later one is on.
    """
    unknown = set(amounts) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown perturbation(s) {sorted(unknown)}; known: {list(KINDS)}")
    generator = torch.Generator().manual_seed(seed)
    images = clutter(images, int(amounts.get("clutter", 0)), generator)
    images = occlude(images, int(amounts.get("occlude", 0)), generator)
    images = shift(images, int(amounts.get("shift", 0)), generator)
    return illuminate(images, float(amounts.get("illumination", 0.0)), generator)
