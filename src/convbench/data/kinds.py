"""The kinds of test-time perturbation (convbench.data.perturb) and the units of their amounts:
the one table of them, from which the config's `robustness` block, `eval`'s options and the
reports are made. Plain Python: the config's schema reads it before torch is imported."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One kind of perturbation: the unit of its amounts and how messages describe them."""

    unit: str  # "px" or "strength"
    meaning: str  # what an amount is
    example: str  # amounts to try, as `eval --KIND` takes them

    @property
    def whole(self) -> bool:
        """Pixels are whole numbers; a strength is a number in [0, 1]."""
        return self.unit == "px"


KINDS = {
    "shift": Kind("px", "pixels", "0,2,4"),
    "occlude": Kind("px", "the side of a square, in pixels", "0,6,10"),
    "clutter": Kind("px", "the side of a square, in pixels", "0,6,10"),
    "illumination": Kind(
        "strength", "a strength: 0 leaves the images unchanged, 1 changes them most", "0,0.5,1"
    ),
}


def amount_key(value) -> str:
    """A perturbation amount as metrics.json's keys and the tables show it: 2, 0.5, 1 (a whole
    number without ".0", whether it came as an int or a float)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)
