"""One rank of `torchrun --nproc-per-node=2 load_in_turn.py OUT GOOD BAD`: joins the real gloo
group, loads the image folder GOOD, then BAD, through `convbench.run.build.load_splits_in_turn`, and
writes what it logged and raised for each to OUT/rank<r>.json (tests/process/test_distributed.py)."""

import json
import logging
import sys
from pathlib import Path

from convbench.config.compose import compose
from convbench.run.build import load_splits_in_turn
from convbench.run.ranks import collective, join, leave, place


class Messages(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def load(root: str) -> dict:
    messages = Messages()
    logger = logging.getLogger("convbench")
    logger.setLevel(logging.INFO)
    logger.addHandler(messages)
    overrides = ["dataset=imagefolder", f"dataset.root={root}", "dataset.native_size=16"]
    try:
        splits = load_splits_in_turn(compose(overrides).dataset, collective(place()))
        outcome = {"images": sum(splits.sizes().values())}
    except Exception as error:
        outcome = {"error": f"{type(error).__name__}: {error}"}
    finally:
        logger.removeHandler(messages)
    return outcome | {"log": messages.lines}


if __name__ == "__main__":
    out, good, bad = sys.argv[1:]
    here = place()
    join(here)
    result = {"good": load(good), "bad": load(bad)}
    Path(out, f"rank{here.rank}.json").write_text(json.dumps(result))
    leave()
