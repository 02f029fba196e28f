"""`python -m helpers.loadsplits OUT ROOT [OVERRIDE...]`: `load_splits` of the image folder ROOT
in a fresh process, as a new run loads it (nothing read earlier in the process: convbench reads
a folder's index once per process), saving the splits' tensors to OUT (torch.save) and logging
convbench's messages to stderr."""

import logging
import sys

import torch


def main(out: str, root: str, *overrides: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    from convbench.config.compose import compose
    from convbench.data.batches import SPLIT_NAMES
    from convbench.data.loader import load_splits

    cfg = compose(["dataset=imagefolder", f"dataset.root={root}", *overrides]).dataset
    splits = load_splits(cfg)
    saved = {name: getattr(splits, name) for name in SPLIT_NAMES}
    torch.save({name: (split.images, split.labels) for name, split in saved.items()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
