"""Readers of each kind of source into uint8 (N, C, H, W) tensors, int64 labels and class names (nas.data splits and
normalises them): torchvision's sets in torchvision's own file layout, image folders (decoded once, cached) and npz.

Files already present are read as they are (gzipped or not) with no checksum; missing ones are downloaded by
torchvision's own dataset classes. Every unreadable input is a one-line DataError naming the file.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import zipfile
from collections import Counter
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


DATASETS = {
    "mnist": TorchvisionSet("MNIST", "MNIST", "idx", ((0.1307,), (0.3081,))),
    "fashion-mnist": TorchvisionSet("FashionMNIST", "FashionMNIST", "idx", ((0.2860,), (0.3530,))),
    "kmnist": TorchvisionSet("KMNIST", "KMNIST", "idx", None),
    "emnist-letters": TorchvisionSet("EMNIST", "EMNIST", "emnist", None, "letters"),
    "emnist-balanced": TorchvisionSet("EMNIST", "EMNIST", "emnist", None, "balanced"),
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
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049
CACHE_VERSION = 1
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass
class Raw:
    x_train: torch.Tensor  # uint8 (N, C, H, W)
    y_train: torch.Tensor  # int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]


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
    return [name for name in file_names(dataset) if not _find(raw, name)]


_WHAT = {"idx": "four IDX files", "emnist": "four IDX files", "cifar": "batch files", "svhn": "two .mat files"}


def _find(raw: Path, name: str) -> Path | None:
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
    names = [_find(raw, n) for n in file_names(dataset)]
    if s.kind in ("idx", "emnist"):
        import torchvision.datasets as tvd

        if s.kind == "idx":
            classes, low = tuple(getattr(tvd, s.cls).classes), 0
        else:  # letters are labelled 1-26 ("N/A" is class 0 in torchvision, never used): shifted to 0-25
            classes = tuple(c for c in tvd.EMNIST.classes_split_dict[s.split] if c != "N/A")
            low = 1 if s.split == "letters" else 0
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


# -- npz -----------------------------------------------------------------------------------------------------------
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path) -> Raw:
    """x_train, y_train, x_test, y_test; images uint8 or float ([0, 1] if at most 1, else [0, 255]) in NHW, NHWC or
    NCHW; an optional `classes` array names the labels."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot be read as an npz file ({type(e).__name__}: {e})") from None
    with archive:
        missing = [k for k in NPZ_KEYS if k not in archive.files]
        if missing:
            raise DataError(f"{path}: missing arrays {', '.join(missing)} (it holds {', '.join(archive.files) or 'none'}; "
                            f"expected {', '.join(NPZ_KEYS)})")
        try:
            arrays = {k: archive[k] for k in NPZ_KEYS}
            names = archive["classes"] if "classes" in archive.files else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
    x_train, x_test = (_npz_images(path, k, arrays[k]) for k in ("x_train", "x_test"))
    y_train, y_test = (_npz_labels(path, k, arrays[k]) for k in ("y_train", "y_test"))
    for x, y, kx, ky in ((x_train, y_train, "x_train", "y_train"), (x_test, y_test, "x_test", "y_test")):
        if len(x) != len(y):
            raise DataError(f"{path}: {kx} holds {len(x)} images but {ky} {len(y)} labels")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{path}: x_train images are {tuple(x_train.shape[1:])} (C, H, W) but x_test's "
                        f"{tuple(x_test.shape[1:])}")
    if len(x_train) == 0 or len(x_test) == 0:
        raise DataError(f"{path}: {'x_train' if len(x_train) == 0 else 'x_test'} holds no images")
    if len(torch.unique(y_train)) < 2:
        raise DataError(f"{path}: y_train holds one class only; a classifier needs at least two")
    n_classes = len(names) if names is not None else int(y_train.max()) + 1
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        bad = y[(y < 0) | (y >= n_classes)]
        if len(bad):
            raise DataError(f"{path}: {key} has label {int(bad[0])}, out of range 0-{n_classes - 1}"
                            + ("" if names is not None else " (the training labels' range)"))
    classes = tuple(str(c) for c in names) if names is not None else tuple(str(i) for i in range(n_classes))
    return Raw(x_train, y_train, x_test, y_test, classes)


def _npz_images(path: Path, key: str, x: np.ndarray) -> torch.Tensor:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)  # NHWC: a view, channels_last in memory
        elif x.shape[1] not in (1, 3):
            raise DataError(f"{path}: {key} is {x.shape}; expected NHW, NHWC or NCHW with 1 or 3 channels")
    else:
        raise DataError(f"{path}: {key} is {x.shape}; expected NHW, NHWC or NCHW images")
    if x.dtype == np.uint8:
        return torch.from_numpy(x)
    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            raise DataError(f"{path}: {key} holds NaN or infinite values (first at index "
                            f"{np.unravel_index(np.argmin(finite), x.shape)[0]})")
        del finite
        top, low = float(x.max()), float(x.min())
        scale = 255.0 if top <= 1.0 else 1.0
        if low < 0 or top > 255:
            raise DataError(f"{path}: {key} values run from {low:g} to {top:g}; expected [0, 1] or [0, 255]")
        out = torch.empty(x.shape, dtype=torch.uint8)
        for i in range(0, len(x), 4096):  # a chunk at a time: no float copy of the whole set
            out[i:i + 4096] = torch.from_numpy(np.rint(x[i:i + 4096].astype(np.float32) * scale).astype(np.uint8))
        return out
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{path}: {key} values run from {x.min()} to {x.max()}; expected 0-255")
        return torch.from_numpy(x.astype(np.uint8))
    raise DataError(f"{path}: {key} has dtype {x.dtype}; expected uint8 or float images")


def _npz_labels(path: Path, key: str, y: np.ndarray) -> torch.Tensor:
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1:
        raise DataError(f"{path}: {key} is {y.shape}; expected one label per image")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise DataError(f"{path}: {key} holds NaN or infinite labels")
        if (y != np.round(y)).any():
            raise DataError(f"{path}: {key} holds labels that are not whole numbers")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{path}: {key} has dtype {y.dtype}; expected integer labels")
    return torch.from_numpy(y.astype(np.int64))


# -- image folders -------------------------------------------------------------------------------------------------
def list_folder(root: Path) -> dict[str, dict[str, list[Path]]]:
    """{"train": {class: [files]}, "test": ...} of an ImageFolder layout; no test/ gives no "test" key."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; --dataset folder reads DIR/train/<class>/*.png (and optionally "
                        f"DIR/test/<class>/*)")
    if not (root / "train").is_dir():
        raise DataError(f"{root}: no train/ folder; put the images in {root}/train/<class>/ (and optionally "
                        f"{root}/test/<class>/)")
    found = {}
    for part in ("train", "test"):
        if not (root / part).is_dir():
            continue
        classes = sorted(d.name for d in os.scandir(root / part) if d.is_dir() and not d.name.startswith("."))
        found[part] = {c: sorted(p for p in (root / part / c).iterdir()
                                 if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()) for c in classes}
        found[part] = {c: files for c, files in found[part].items() if files}
    if not found["train"]:
        raise DataError(f"{root / 'train'}: no images (PNG, JPEG, BMP or WebP) in any train/<class>/ folder")
    if len(found["train"]) < 2:
        raise DataError(f"{root / 'train'}: one class only ({next(iter(found['train']))}); a classifier needs at "
                        f"least two class folders")
    extra = sorted(set(found.get("test", {})) - set(found["train"]))
    if extra:
        raise DataError(f"{root / 'test'}: class {extra[0]!r} is not in {root / 'train'} (classes: "
                        f"{', '.join(found['train'])})")
    if "test" in found and not found["test"]:
        raise DataError(f"{root / 'test'}: no images in any test/<class>/ folder; fill it or remove it")
    return found


def read_folder(root: Path, image_size: int | None = None, cache_dir=None) -> Raw:
    """Decoded once; with `cache_dir`, kept there as <key>.pt, keyed by every file's name, size and modification
    time and by `image_size`, and read from there while none of them changes."""
    found = list_folder(root)
    classes = tuple(found["train"])
    entries = [(part, c, p) for part, by_class in found.items() for c, files in by_class.items() for p in files]
    key = _cache_key(root, image_size, entries)
    cached = Path(cache_dir) / f"{key}.pt" if cache_dir else None
    if cached is not None and cached.is_file():
        try:
            d = torch.load(cached, weights_only=True)
            return Raw(d["x_train"], d["y_train"], d["x_test"], d["y_test"], tuple(d["classes"]))
        except Exception:  # noqa: BLE001 - a damaged cache is decoded again and rewritten
            pass
    index = {c: i for i, c in enumerate(classes)}
    parts = {part: [(p, index[c]) for _, c, p in entries if _ == part] for part in found}
    if "test" not in parts:
        parts["train"], parts["test"] = _hold_out(parts["train"])
    # file-name order across classes (then class): a folder written with numbered names keeps its images' order
    for part in parts:
        parts[part].sort(key=lambda item: (item[0].name, item[1]))
    images = {part: [_decode(p) for p, _ in items] for part, items in parts.items()}
    every = images["train"] + images["test"]
    grey = sum(a.ndim == 2 for a in every)
    channels = 1 if grey == len(every) else 3
    if 0 < grey < len(every):
        print(f"{root}: {grey:,} grey and {len(every) - grey:,} colour images; the grey ones are converted to RGB")
    size = (image_size, image_size) if image_size else Counter(a.shape[:2] for a in every).most_common(1)[0][0]
    sizes = Counter(a.shape[:2] for a in every)
    if image_size is None and len(sizes) > 1:
        print(f"{root}: images of {len(sizes)} sizes; all resized to {size[0]}x{size[1]} (the most common; "
              f"--image-size N chooses)")
    out = {}
    for part, arrays in images.items():
        x = torch.empty((len(arrays), channels, *size), dtype=torch.uint8)
        for i, a in enumerate(arrays):
            t = torch.from_numpy(a)
            t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
            if t.shape[0] != channels:
                t = t.expand(channels, -1, -1)
            if tuple(t.shape[1:]) != size:
                t = torch.nn.functional.interpolate(t[None].float(), size=size, mode="bilinear", antialias=True,
                                                    align_corners=False)[0].round_().clamp_(0, 255).to(torch.uint8)
            x[i] = t
        out[part] = x
        arrays.clear()
    raw = Raw(out["train"], torch.tensor([c for _, c in parts["train"]], dtype=torch.int64), out["test"],
              torch.tensor([c for _, c in parts["test"]], dtype=torch.int64), classes)
    if cached is not None:
        _write_cache(cached, raw)
    return raw


def _decode(path: Path) -> np.ndarray:
    """(H, W) grey or (H, W, 3) colour uint8."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in GREY_MODES:
                return np.array(im.convert("L"), dtype=np.uint8)
            return np.array(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise DataError(f"{path}: cannot be decoded as an image ({type(e).__name__}: {e}); fix or remove it") from None


def _hold_out(items: list[tuple[Path, int]]) -> tuple[list, list]:
    """A seeded, stratified 1/6 of each class (at least one image of a class that has two) held out as the test set."""
    g = torch.Generator().manual_seed(0)
    train, test = [], []
    for label in sorted({c for _, c in items}):
        mine = [item for item in items if item[1] == label]
        order = torch.randperm(len(mine), generator=g).tolist()
        n_test = max(1, len(mine) // 6) if len(mine) > 1 else 0
        test += [mine[i] for i in order[:n_test]]
        train += [mine[i] for i in order[n_test:]]
    return train, test


def _cache_key(root: Path, image_size, entries) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}\0{root}\0{image_size}".encode())
    for part, c, p in entries:
        st = p.stat()
        h.update(f"\0{part}/{c}/{p.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _write_cache(path: Path, raw: Raw) -> None:
    """Atomically; a cache that cannot be written is only a slower next start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x_train": raw.x_train, "y_train": raw.y_train, "x_test": raw.x_test, "y_test": raw.y_test,
                    "classes": list(raw.classes)}, tmp)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
