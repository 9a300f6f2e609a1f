"""MNIST-style datasets, read once from the standard IDX files into normalised in-memory tensors.

Per-sample DataLoaders with PIL transforms cost more than the tiny networks themselves, so training
batches by index into these tensors instead.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from nas.errors import UserError

ENV_VAR = "NAS_DATA_DIR"
DEFAULT_ROOT = "./data"
VAL_SIZE = 10_000  # the hold-out that ranks trials: 5,000 read too coarsely to separate the best (bench/RESULTS.md)
LEGACY_VAL_SIZE = 5000  # the hold-out of studies made before it was recorded with them
SPLIT_SEED = 0  # fixed, so every trial of every study sees the same hold-out

# folder under the root (torchvision's layout), torchvision class name, normalisation mean and std
DATASETS = {
    "mnist": ("MNIST", "MNIST", 0.1307, 0.3081),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST", 0.2860, 0.3530),
}
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049


class DataError(UserError):
    """The data cannot be found or read; the message says which file and how to fix it."""


@dataclass
class Splits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device) -> "Splits":
        return Splits(*(t.to(device) for t in self.__dict__.values()))


def resolve_root(data_dir: str | os.PathLike | None) -> Path:
    """--data-dir, else $NAS_DATA_DIR, else ./data."""
    return Path(data_dir or os.environ.get(ENV_VAR) or DEFAULT_ROOT)


def load(dataset: str = "mnist", data_dir=None, val_size: int = VAL_SIZE, train_subset: int | None = None,
         download: bool = True) -> Splits:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    root = resolve_root(data_dir)
    raw = raw_dir(dataset, root)
    failure = download_files(dataset, root) if missing_files(dataset, root) and download else None
    missing = missing_files(dataset, root)
    if missing:
        outcome = f"the download failed: {failure}" if failure else "the download did not provide them"
        raise DataError(f"{DATASETS[dataset][0]} files missing from {raw} ({', '.join(missing)}) and {outcome}. "
                        f"Put the four IDX files (.gz or not) there, or pass "
                        f"--data-dir DIR / set {ENV_VAR}=DIR to a folder holding {DATASETS[dataset][0]}/raw/.")
    x_train = read_images(_find(raw, FILES["train_images"]))
    y_train = read_labels(_find(raw, FILES["train_labels"]), len(x_train))
    x_test = read_images(_find(raw, FILES["test_images"]))
    y_test = read_labels(_find(raw, FILES["test_labels"]), len(x_test))
    _, _, mean, std = DATASETS[dataset]
    return split(normalise(x_train, mean, std), y_train, normalise(x_test, mean, std), y_test,
                 val_size=val_size, train_subset=train_subset)


def split(x_train, y_train, x_test, y_test, val_size: int = VAL_SIZE, train_subset: int | None = None) -> Splits:
    """A fixed, seeded hold-out; `train_subset` keeps only the first N of the remaining images.

    `val_size=0` trains on the whole training set, as `evaluate` does for a final claim.
    """
    if not 0 <= val_size < len(x_train):
        raise DataError(f"validation size {val_size} must be between 0 and {len(x_train) - 1}")
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val, train = order[:val_size], order[val_size:]
    if train_subset is not None:
        train = train[:train_subset]
    return Splits(x_train[train], y_train[train], x_train[val], y_train[val], x_test, y_test)


def normalise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return ((images.float() / 255.0 - mean) / std).unsqueeze(1).contiguous()


def raw_dir(dataset: str, root: Path) -> Path:
    return Path(root) / DATASETS[dataset][0] / "raw"


def missing_files(dataset: str, root: Path) -> list[str]:
    """The IDX files of `dataset` absent from its folder under `root`."""
    raw = raw_dir(dataset, root)
    return [name for name in FILES.values() if not _find(raw, name)]


def _find(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


# The IDX files are read here rather than by torchvision's read_image_file: that reads no .gz, names no file, accepts
# any image size and label value, and fails on a damaged file with a bare assert.
def _read(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot be read ({e}); replace the file or delete it to download it again") from None


def read_images(path: Path) -> torch.Tensor:
    data = _read(path)
    if len(data) < 16:
        raise DataError(f"{path}: too short to be an IDX image file ({len(data)} bytes)")
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != _IMAGE_MAGIC:
        raise DataError(f"{path}: wrong magic number {magic} (expected {_IMAGE_MAGIC}); not an IDX image file")
    if (rows, cols) != (28, 28):
        raise DataError(f"{path}: images are {rows}x{cols}, expected 28x28")
    if len(data) != 16 + n * rows * cols:
        raise DataError(f"{path}: truncated or padded: header says {n} images, the file holds "
                        f"{(len(data) - 16) / (rows * cols):.1f}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=16).view(n, rows, cols)


def read_labels(path: Path, expected: int) -> torch.Tensor:
    data = _read(path)
    if len(data) < 8:
        raise DataError(f"{path}: too short to be an IDX label file ({len(data)} bytes)")
    magic, n = struct.unpack(">II", data[:8])
    if magic != _LABEL_MAGIC:
        raise DataError(f"{path}: wrong magic number {magic} (expected {_LABEL_MAGIC}); not an IDX label file")
    if len(data) != 8 + n:
        raise DataError(f"{path}: truncated or padded: header says {n} labels, the file holds {len(data) - 8}")
    if n != expected:
        raise DataError(f"{path}: {n} labels for {expected} images")
    labels = torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=8).long()
    if n and int(labels.max()) > 9:
        raise DataError(f"{path}: label {int(labels.max())} is out of range 0-9")
    return labels


def download_files(dataset: str, root: Path) -> str | None:
    """torchvision's download, for users with internet access. Returns why it failed, in one line, or None; the
    caller reports the files still missing."""
    try:
        import torchvision.datasets as tvd

        cls = getattr(tvd, DATASETS[dataset][1])
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not downloadable here"; the caller says what to do
        # torchvision puts each mirror's error (HTTP, SSL) on the lines after "Error downloading X:", so all of them
        text = " ".join(str(e).split())
        return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__
    return None
