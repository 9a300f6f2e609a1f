"""npz arrays (x_train, y_train, x_test, y_test) read into uint8 (N, C, H, W) images and int64 labels."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from nas.data.sources import DataError, Raw

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
    return raw_from_arrays(str(path), arrays, names)


def raw_from_arrays(path: str, arrays: dict[str, np.ndarray], names: np.ndarray | None = None) -> Raw:
    """NPZ_KEYS' arrays, in any layout `read_npz` takes, checked and read into a Raw; `path` names them in errors."""
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


def _npz_images(path: str, key: str, x: np.ndarray) -> torch.Tensor:
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


def _npz_labels(path: str, key: str, y: np.ndarray) -> torch.Tensor:
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
