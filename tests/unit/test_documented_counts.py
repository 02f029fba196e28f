"""The parameter counts the documentation gives (docs/usage.md's model table) are what the
models have: each row's model is built from its class directly, outside the code that prints
the table, and its parameters counted one by one."""

import re
from pathlib import Path

import pytest
import torch

from convbench.config.compose import compose

TABLE = Path(__file__).resolve().parents[2] / "docs" / "usage.md"
ROW = re.compile(r"^\| `(\w+)` \| `([^`]*)` \| ([\d,]+) \| [^|]+ \| ([\d,]+) \|", re.M)


def rows() -> list[tuple[str, list[str], int, int]]:
    found = [
        (
            model,
            [] if overrides == "-" else overrides.split(),
            int(fm.replace(",", "")),
            int(cifar.replace(",", "")),
        )
        for model, overrides, fm, cifar in ROW.findall(TABLE.read_text())
    ]
    assert len(found) >= 14, "the model table of docs/usage.md"
    return found


def counted(model: str, overrides: list[str], dataset: str) -> int:
    """Parameters of the model of `model=... overrides dataset=...`, its class called with the
    config's arguments on the meta device (shapes, no weights)."""
    node = compose([f"model={model}", *overrides, f"dataset={dataset}"]).model
    arguments = {k: v for k, v in node.items() if not k.startswith("_")}
    cls = getattr(
        __import__(node._target_.rsplit(".", 1)[0], fromlist=["_"]), node._target_.rsplit(".", 1)[1]
    )
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in cls(**arguments).parameters())


@pytest.mark.parametrize(
    "model, overrides, fashionmnist, cifar10",
    rows(),
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_the_documented_count_is_the_models(model, overrides, fashionmnist, cifar10):
    assert counted(model, overrides, "fashionmnist") == fashionmnist
    assert counted(model, overrides, "cifar10") == cifar10
