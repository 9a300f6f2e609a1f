"""Data handed over in memory (arrays, tensors, or a dataset object of (image, label) pairs), saved once as an npz
file that workers, reports and exports read like any other. The file is named by a hash of the images, labels and
class names, so the study records a fingerprint of the data itself and resumes only on the same data."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from nas.fileio import atomic_path
from nas.data.npz_arrays import NPZ_KEYS, raw_from_arrays
from nas.data.sources import DataError, Raw, held_out_test

WHERE = "data"  # how errors name data in memory
PREFIX = "arrays-"  # the cached file's name: arrays-<hash>.npz


def is_in_memory(data) -> bool:
    """Arrays or a dataset object, rather than a name or a path."""
    return not isinstance(data, (str, Path))


def save_npz(data, cache_dir: Path) -> Path:
    """`data` checked and saved as `cache_dir/arrays-<hash>.npz` (kept if already there); DataError if unusable.

    `data` is (x_train, y_train) or (x_train, y_train, x_test, y_test), arrays or tensors in any layout the npz reader
    takes, or an object with __len__ and __getitem__ giving (image, label), e.g. a torchvision dataset. Without test
    images, a seeded, stratified 1/6 of the training images is held out as the test set, as for an image folder."""
    raw = _raw(data)
    h = hashlib.sha256()
    for name in NPZ_KEYS:
        t = getattr(raw, name)
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    h.update("\0".join(raw.classes).encode())
    path = Path(cache_dir) / f"{PREFIX}{h.hexdigest()[:12]}.npz"
    if not path.is_file():
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{name: getattr(raw, name).numpy() for name in NPZ_KEYS}, classes=np.array(raw.classes))
    return path


def _raw(data) -> Raw:
    names = None
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        arrays = [_array(a) for a in data]
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (tuple, list, dict)):
        arrays = _pairs(data)
        names = getattr(data, "classes", None)
        names = None if names is None else np.array([str(c) for c in names])
    else:
        got = type(data).__name__ + (f" of {len(data)} items" if isinstance(data, (tuple, list)) else "")
        raise DataError(f"{WHERE}: expected a dataset name, a folder or .npz path, (x_train, y_train), "
                        f"(x_train, y_train, x_test, y_test), or a dataset of (image, label) pairs; got {got}")
    if len(arrays) == 2:
        x, y = arrays
        if len(x) != len(y):
            raise DataError(f"{WHERE}: x_train holds {len(x)} images but y_train {len(y)} labels")
        train, test = (np.array(part, dtype=np.int64) for part in held_out_test(np.asarray(y).reshape(-1).tolist()))
        arrays = [x[train], y[train], x[test], y[test]]
    return raw_from_arrays(WHERE, dict(zip(NPZ_KEYS, arrays)), names)


def _array(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as e:
        raise DataError(f"{WHERE}: cannot be read as an array ({type(e).__name__}: {e})") from None


def _pairs(dataset) -> list[np.ndarray]:
    """A dataset's images stacked and its labels, as (x_train, y_train)."""
    if len(dataset) == 0:
        raise DataError(f"{WHERE}: the dataset holds no images")
    images, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise DataError(f"{WHERE}: item {i} of the dataset is a {type(item).__name__}, not an (image, label) pair")
        image, label = item
        images.append(_array(image))
        labels.append(int(label))
    shapes = {x.shape for x in images}
    if len(shapes) > 1:
        some = ", ".join(map(str, sorted(shapes)[:3]))
        raise DataError(f"{WHERE}: the dataset's images have {len(shapes)} shapes ({some}...); resize them to one "
                        f"size first")
    return [np.stack(images), np.array(labels, dtype=np.int64)]
