"""torchvision's sets read from torchvision's own file layout into uint8 (N, C, H, W) tensors, int64 labels and class
names (nas.data splits and normalises them), and what every source's reader returns (Raw) or raises (DataError).
The other readers: nas.data.image_folder and nas.data.npz_arrays.

Files already present are read as they are (gzipped or not) with no checksum; missing ones are downloaded by
torchvision's own dataset classes. Every unreadable input is a one-line DataError naming the file.
"""
from __future__ import annotations

import gzip
import pickle
import string
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from nas.errors import UserError


class DataError(UserError):
    """The data cannot be found or read; the message says which file and how to fix it."""


class TorchvisionSet(NamedTuple):
    folder: str  # under the data root, as torchvision lays it out ("" for SVHN: its files sit in the root)
    cls: str  # torchvision.datasets class
    kind: str  # "idx", "emnist", "cifar" or "svhn"
    mean_std: tuple | None  # published constants, kept so studies made with them resume; None: from the data
    split: str = ""  # EMNIST's split; CIFAR's label key
    classes: tuple[str, ...] = ()  # the IDX sets' names, as torchvision's classes give them; the others' files hold them


# The IDX sets' class names, copied from torchvision's dataset classes (a test keeps them equal): importing
# torchvision.datasets for them costs 2.5-4.8 s in every process, the search's workers included.
_DIGITS = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven",
           "8 - eight", "9 - nine")
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_KUZUSHIJI = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
_LETTERS = tuple(string.ascii_lowercase)  # labelled 1-26 in the files (torchvision's class 0 is "N/A", never used)
_BALANCED = tuple(string.digits + string.ascii_uppercase + "abdefghnqrt")
DATASETS = {
    "mnist": TorchvisionSet("MNIST", "MNIST", "idx", ((0.1307,), (0.3081,)), classes=_DIGITS),
    "fashion-mnist": TorchvisionSet("FashionMNIST", "FashionMNIST", "idx", ((0.2860,), (0.3530,)), classes=_FASHION),
    "kmnist": TorchvisionSet("KMNIST", "KMNIST", "idx", None, classes=_KUZUSHIJI),
    "emnist-letters": TorchvisionSet("EMNIST", "EMNIST", "emnist", None, "letters", _LETTERS),
    "emnist-balanced": TorchvisionSet("EMNIST", "EMNIST", "emnist", None, "balanced", _BALANCED),
    "cifar10": TorchvisionSet("cifar-10-batches-py", "CIFAR10", "cifar", None, "labels"),
    "cifar100": TorchvisionSet("cifar-100-python", "CIFAR100", "cifar", None, "fine_labels"),
    "svhn": TorchvisionSet("", "SVHN", "svhn", None),
}
FILES = {  # MNIST-like IDX files
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_FILES = {
    "cifar10": (tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta", "label_names"),
    "cifar100": (("train",), ("test",), "meta", "fine_label_names"),
}
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049


@dataclass
class Raw:
    x_train: torch.Tensor  # uint8 (N, C, H, W)
    y_train: torch.Tensor  # int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]


def held_out_test(labels: list[int]) -> tuple[list[int], list[int]]:
    """Indices of a training and a test part: a seeded, stratified 1/6 of each class (at least one image of a class
    that has two) held out as the test set, for data that comes without one."""
    g = torch.Generator().manual_seed(0)
    train, test = [], []
    for label in sorted(set(labels)):
        mine = [i for i, c in enumerate(labels) if c == label]
        order = torch.randperm(len(mine), generator=g).tolist()
        n_test = max(1, len(mine) // 6) if len(mine) > 1 else 0
        test += [mine[i] for i in order[:n_test]]
        train += [mine[i] for i in order[n_test:]]
    return train, test


# -- torchvision's sets --------------------------------------------------------------------------------------------
def raw_dir(dataset: str, root: Path) -> Path:
    """The folder torchvision keeps `dataset`'s files in under `root`."""
    s = DATASETS[dataset]
    return Path(root) / s.folder / "raw" if s.kind in ("idx", "emnist") else Path(root) / s.folder


def file_names(dataset: str) -> list[str]:
    s = DATASETS[dataset]
    if s.kind == "idx":
        return list(FILES.values())
    if s.kind == "emnist":
        return [f"emnist-{s.split}-{part}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
                for part in ("train", "test") for kind in ("images", "labels")]
    if s.kind == "cifar":
        train, test, meta, _ = CIFAR_FILES[dataset]
        return [*train, *test, meta]
    return list(SVHN_FILES)


def missing_files(dataset: str, root: Path) -> list[str]:
    """The files of `dataset` absent from its folder under `root`."""
    raw = raw_dir(dataset, root)
    return [name for name in file_names(dataset) if not find_file(raw, name)]


_WHAT = {"idx": "four IDX files", "emnist": "four IDX files", "cifar": "batch files", "svhn": "two .mat files"}


def find_file(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_torchvision(dataset: str, root: Path, download: bool = True) -> Raw:
    s = DATASETS[dataset]
    raw = raw_dir(dataset, root)
    failure = download_files(dataset, root) if missing_files(dataset, root) and download else None
    missing = missing_files(dataset, root)
    if missing:
        outcome = f"the download failed: {failure}" if failure else "the download did not provide them"
        where = f"{s.folder}/raw/" if s.kind in ("idx", "emnist") else f"{s.folder}/" if s.folder else "its files"
        raise DataError(f"{s.cls} files missing from {raw} ({', '.join(missing)}) and {outcome}. "
                        f"Put the {_WHAT[s.kind]} (.gz or not) there, or pass "
                        f"--data-dir DIR / set NAS_DATA_DIR=DIR to a folder holding {where}.")
    names = [find_file(raw, n) for n in file_names(dataset)]
    if s.kind in ("idx", "emnist"):
        classes, low = s.classes, 1 if s.split == "letters" else 0  # letters' labels 1-26 are shifted to 0-25
        x_train, x_test = read_images(names[0]), read_images(names[2])
        y_train = read_labels(names[1], len(x_train), low, low + len(classes) - 1) - low
        y_test = read_labels(names[3], len(x_test), low, low + len(classes) - 1) - low
        if s.kind == "emnist":  # EMNIST's files hold each image transposed; torchvision leaves them so
            x_train, x_test = x_train.transpose(1, 2), x_test.transpose(1, 2)
        return Raw(x_train.unsqueeze(1).contiguous(), y_train, x_test.unsqueeze(1).contiguous(), y_test, classes)
    if s.kind == "cifar":
        return _read_cifar(dataset, names)
    return _read_svhn(names)


def _read(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot be read ({e}); replace the file or delete it to download it again") from None


# The IDX files are read here rather than by torchvision's read_image_file: that reads no .gz, names no file, accepts
# any image size and label value, and fails on a damaged file with a bare assert.
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


def read_labels(path: Path, expected: int, low: int = 0, high: int = 9) -> torch.Tensor:
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
    for bad in (int(labels.max()), int(labels.min())) if n else ():
        if not low <= bad <= high:
            raise DataError(f"{path}: label {bad} is out of range {low}-{high}")
    return labels


def _read_cifar(dataset: str, paths: list[Path]) -> Raw:
    train, test, _, names_key = CIFAR_FILES[dataset]
    label_key = DATASETS[dataset].split

    def batches(files):
        xs, ys = [], []
        for path in files:
            entry = _unpickle(path)
            try:
                x = np.asarray(entry["data"], dtype=np.uint8)
                y = np.asarray(entry[label_key], dtype=np.int64)
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"{path}: not a CIFAR batch ({type(e).__name__}: {e})") from None
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
                raise DataError(f"{path}: holds {x.shape} images for {len(y)} labels, expected (N, 3072) and N labels")
            xs.append(x)
            ys.append(y)
        return torch.from_numpy(np.concatenate(xs).reshape(-1, 3, 32, 32)), torch.from_numpy(np.concatenate(ys))

    x_train, y_train = batches(paths[:len(train)])
    x_test, y_test = batches(paths[len(train):len(train) + len(test)])
    meta = paths[-1]
    try:
        classes = tuple(str(c) for c in _unpickle(meta)[names_key])
    except (KeyError, TypeError) as e:
        raise DataError(f"{meta}: not CIFAR metadata ({type(e).__name__}: {e})") from None
    _check_range(paths[0].parent, y_train, y_test, len(classes))
    return Raw(x_train, y_train, x_test, y_test, classes)


def _unpickle(path: Path) -> dict:
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            return pickle.load(f, encoding="latin1")  # noqa: S301 - torchvision's own format and reader
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e}); replace the file or delete it to "
                        f"download it again") from None


def _read_svhn(paths: list[Path]) -> Raw:
    try:
        import scipy.io as sio
    except ImportError:
        raise DataError("reading SVHN's .mat files needs scipy: pip install scipy") from None

    def read(path):
        try:
            mat = sio.loadmat(str(path))
            x, y = mat["X"], mat["y"].astype(np.int64).reshape(-1)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: cannot be read as SVHN ({type(e).__name__}: {e})") from None
        if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
            raise DataError(f"{path}: X is {x.shape}, expected (32, 32, 3, {len(y)})")
        y[y == 10] = 0  # SVHN labels the digit 0 as 10, as torchvision maps it
        # (H, W, C, N) -> (N, C, H, W), as torchvision transposes it
        return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)), dtype=np.uint8)), torch.from_numpy(y)

    (x_train, y_train), (x_test, y_test) = read(paths[0]), read(paths[1])
    _check_range(paths[0].parent, y_train, y_test, 10)
    return Raw(x_train, y_train, x_test, y_test, tuple(str(i) for i in range(10)))


def _check_range(where, y_train, y_test, n_classes):
    for y in (y_train, y_test):
        if len(y) and not (0 <= int(y.min()) and int(y.max()) < n_classes):
            raise DataError(f"{where}: label {int(y.max()) if int(y.max()) >= n_classes else int(y.min())} is out of "
                            f"range 0-{n_classes - 1}")


def download_files(dataset: str, root: Path) -> str | None:
    """torchvision's download, for users with internet access. Returns why it failed, in one line, or None; the
    caller reports the files still missing."""
    try:
        import torchvision.datasets as tvd

        s = DATASETS[dataset]
        cls = getattr(tvd, s.cls)
        if s.kind == "svhn":
            for part in ("train", "test"):
                cls(str(root), split=part, download=True)
        else:
            extra = {"split": s.split} if s.kind == "emnist" else {}
            for train in (True, False):
                cls(str(root), train=train, download=True, **extra)
    except Exception as e:  # noqa: BLE001 - any failure means "not downloadable here"; the caller says what to do
        # torchvision puts each mirror's error (HTTP, SSL) on the lines after "Error downloading X:", so all of them
        text = " ".join(str(e).split())
        return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__
    return None
