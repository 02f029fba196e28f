"""The two on-disk formats: IDX (MNIST, Fashion-MNIST) and CIFAR-10 pickle batches.

The readers return uint8 tensors shaped [N, C, H, W] (images) or [N] (labels) and name the
offending file in a `DatasetError` when it is missing, truncated or corrupt. The writers
(`idx_bytes`, `write_idx`, `write_cifar_batch`) make files exactly like the originals, for the
tests' and benchmarks' generated datasets.
"""

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from convbench.errors import DatasetError

_IDX_UBYTE = 0x08


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (gzipped or not) into a uint8 tensor of its shape."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
        raise DatasetError(
            f"{path} is not an IDX file of unsigned bytes (bad magic number). "
            "Delete it and let convbench fetch the dataset again, or point dataset.root at a good copy."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path} is truncated inside its header. Delete it and fetch it again.")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DatasetError(
            f"{path} holds {len(raw):,} bytes but its header promises {expected:,} "
            f"(shape {dims}): the file is truncated or corrupt. Delete it and fetch it again."
        )
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(
            f"{path} cannot be read ({exc}): the file is truncated or corrupt. "
            "Delete it and fetch it again, or point dataset.root at a good copy."
        ) from None


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: numpy arrays and builtins, never arbitrary callables."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR-10 python batch -> (images uint8 [N, 3, 32, 32], labels int64 [N])."""
    raw = _read_bytes(path)
    try:
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32)  # rows are 3072 = 3 planes of 32x32, channel-major
    except Exception as exc:  # any malformed content is the same user-facing problem
        raise DatasetError(
            f"{path} is not a valid CIFAR-10 batch ({type(exc).__name__}: {exc}). "
            "Delete the cifar-10-batches-py folder and fetch it again."
        ) from None
    if len(images) != len(labels):
        raise DatasetError(f"{path} has {len(images)} images but {len(labels)} labels.")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic (0, 0, 0x08, ndim), big-endian dims, then the data."""
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, _IDX_UBYTE, array.ndim]) + dims + np.ascontiguousarray(array).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file, gzipped when `path` ends in .gz."""
    data = idx_bytes(np.asarray(array, dtype=np.uint8))
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


class _Python2Pickler(pickle._Pickler):
    """Writes `bytes` as Python 2 strings (BINSTRING opcodes), as the original CIFAR-10 batches
    hold their keys and array data, so readers that decode them as bytes (convbench) and as text
    (torchvision's `encoding="latin1"`) both read the file."""

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch = pickle._Pickler.dispatch.copy()
    dispatch[bytes] = save_bytes


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write a CIFAR-10 python batch as the original files are: a protocol-2 pickle of a dict
    with Python 2 string keys, `data` the images as rows of 3072 bytes (3 planes of 32x32),
    `labels` a list of ints."""
    images = np.asarray(images, dtype=np.uint8).reshape(len(images), 3 * 32 * 32)
    batch = {
        b"batch_label": path.name.encode(),
        b"labels": [int(label) for label in labels],
        b"data": images,
        b"filenames": [f"{index}.png".encode() for index in range(len(images))],
    }
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(batch)
    path.write_bytes(buffer.getvalue())
    return path
