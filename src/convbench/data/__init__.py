"""Datasets held in memory as uint8 tensors, and batches cut from them on the device."""

from convbench.data.loader import Batches, Split, load_splits

__all__ = ["Batches", "Split", "load_splits"]
