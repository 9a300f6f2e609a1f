"""Any small-image classification set, read once into compact uint8 tensors in memory, and normalised per batch.

Sources (nas.data.sources reads them): torchvision's sets (`DATASETS`), an image folder in ImageFolder layout, and an npz
file of arrays. Per-sample DataLoaders with PIL transforms cost more than the tiny networks themselves, so training
batches by index into these tensors instead; the trainer normalises each gathered chunk with `normalise`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from nas import config as config_mod
from nas.data.image_folder import read_folder
from nas.data.npz_arrays import read_npz
from nas.data.resize import resize
from nas.data.sources import DATASETS, DataError, read_torchvision

ENV_VAR = "NAS_DATA_DIR"
DEFAULT_ROOT = "./data"
VAL_SIZE = 10_000  # the hold-out that ranks trials: 5,000 read too coarsely to separate the best (bench/RESULTS.md)
VAL_FRACTION = 6  # a small set holds out at most 1/6 of its training images (60,000 / 6 = VAL_SIZE: MNIST as before)
SPLIT_SEED = 0  # fixed, so every trial of every study sees the same hold-out
MIN_IMAGE_SIZE = 8
CACHE_DIR = ".cache"  # under the results folder: decoded image folders (nas.data.image_folder.read_folder)


@dataclass(frozen=True)
class DataInfo:
    """What a network trained on the data needs to know, and what a study records."""

    source: str  # "mnist", "cifar10", "folder:<absolute dir>", "npz:<absolute file>"
    shape: tuple[int, int, int]  # (C, H, W) as trained, after --image-size
    classes: tuple[str, ...]  # label i is classes[i]
    mean: tuple[float, ...]  # per channel, of the training split's images scaled to [0, 1]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "DataInfo":
        return cls(source=str(d["source"]), shape=tuple(int(v) for v in d["shape"]),
                   classes=tuple(str(c) for c in d["classes"]), mean=tuple(float(v) for v in d["mean"]),
                   std=tuple(float(v) for v in d["std"]))


@dataclass
class Splits:
    """x_* are uint8 (N, C, H, W) as loaded (float tensors, e.g. tests' synthetic ones, are taken as already
    normalised); y_* int64. `info` defaults to one read from the tensors, with mean 0 and std 1."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: DataInfo = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        if self.info is None:
            labels = [int(y.max()) for y in (self.y_train, self.y_val, self.y_test) if len(y)]
            channels = self.x_train.shape[1]
            self.info = DataInfo("tensors", tuple(self.x_train.shape[1:]), tuple(str(i) for i in range(max(labels) + 1)),
                                 (0.0,) * channels, (1.0,) * channels)

    def to(self, device) -> "Splits":
        return Splits(*(getattr(self, k).to(device) for k in TENSORS), info=self.info)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the network is fed for images `x` of these splits."""
        return normalise(x, self.info) if x.dtype == torch.uint8 else x


TENSORS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def split_fingerprint(splits: Splits) -> str:
    """A hash of the splits' image shapes and their labels in order: it changes when images are added, removed or
    relabelled (which also redraws the hold-out), not with how a library decodes or resizes the same images."""
    h = hashlib.sha256()
    for name in TENSORS:
        t = getattr(splits, name)
        h.update(repr(tuple(t.shape)).encode())
        if name.startswith("y_"):
            h.update(t.cpu().numpy().astype("int64").tobytes())
    return h.hexdigest()[:16]


def normalise(x: torch.Tensor, info_or_mean_std) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 ((x / 255) - mean) / std per channel, channels_last.

    One channel is computed with Python floats exactly as the images were normalised before this module kept uint8,
    so MNIST studies resume with bit-identical inputs."""
    mean, std = ((info_or_mean_std.mean, info_or_mean_std.std) if isinstance(info_or_mean_std, DataInfo)
                 else info_or_mean_std)
    mean, std = (tuple(v) if isinstance(v, (tuple, list)) else (float(v),) for v in (mean, std))
    x = x.float().div_(255.0)  # in place from here: this runs on every chunk the trainer gathers
    if len(mean) == 1:
        x.sub_(mean[0]).div_(std[0])
    else:
        shape = (1, len(mean), 1, 1)
        x.sub_(torch.tensor(mean, device=x.device).view(shape)).div_(torch.tensor(std, device=x.device).view(shape))
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def resolve_root(data_dir: str | os.PathLike | None) -> Path:
    """--data-dir, else $NAS_DATA_DIR, else ./data."""
    return Path(data_dir or os.environ.get(ENV_VAR) or DEFAULT_ROOT)


def source_of(dataset: str, data_dir=None) -> str:
    """What a study records as its data: the set's name, or the folder or file, absolute."""
    if dataset not in config_mod.DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; known: {', '.join(config_mod.DATASETS)}")
    if dataset in DATASETS:
        return dataset
    if not data_dir:
        what = "DIR (holding train/<class>/ images)" if dataset == "folder" else "FILE.npz"
        raise DataError(f"--dataset {dataset} needs --data-dir {what}")
    return f"{dataset}:{Path(data_dir).expanduser().resolve()}"


def load(dataset: str = "mnist", data_dir=None, val_size: int = VAL_SIZE, train_subset: int | None = None,
         image_size: int | None = None, download: bool = True, cache_dir=None) -> Splits:
    """The training set split into train and hold-out (seeded), and the test set; `cache_dir` keeps decoded image
    folders (nas.data.image_folder.read_folder)."""
    source = source_of(dataset, data_dir)
    if image_size is not None and image_size < MIN_IMAGE_SIZE:
        raise DataError(f"--image-size {image_size}: must be at least {MIN_IMAGE_SIZE}")
    if dataset in DATASETS:
        raw = read_torchvision(dataset, resolve_root(data_dir), download)
    elif dataset == "folder":
        raw = read_folder(Path(source.split(":", 1)[1]), image_size, cache_dir)
    else:
        raw = read_npz(Path(source.split(":", 1)[1]))
    x_train, x_test = resize(raw.x_train, image_size), resize(raw.x_test, image_size)
    published = DATASETS[dataset].mean_std if dataset in DATASETS else None
    mean, std = published if published else channel_stats(x_train)
    info = DataInfo(source, tuple(x_train.shape[1:]), tuple(raw.classes), mean, std)
    return split(x_train, raw.y_train, x_test, raw.y_test, val_size=val_size, train_subset=train_subset, info=info,
                 in_place=True)


def split(x_train, y_train, x_test, y_test, val_size: int = VAL_SIZE, train_subset: int | None = None,
          info: DataInfo | None = None, in_place: bool = False) -> Splits:
    """A fixed, seeded hold-out of `val_size` images, at most 1/6 of the training set; `train_subset` keeps only
    the first N of the remaining images.

    `val_size=0` trains on the whole training set, as `evaluate` does for a final claim. `in_place` reorders
    `x_train` itself rather than copying it, so a large set never sits in memory twice (load does so).
    """
    val_size = min(val_size, len(x_train) // VAL_FRACTION)
    if not 0 <= val_size < len(x_train):
        raise DataError(f"validation size {val_size} must be between 0 and {len(x_train) - 1}")
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    if not in_place:
        val, train = order[:val_size], order[val_size:]
        if train_subset is not None:
            train = train[:train_subset]
        return Splits(x_train[train], y_train[train], x_train[val], y_train[val], x_test, y_test, info=info)
    permute_rows_(x_train, order)
    y_train = y_train[order]
    end = None if train_subset is None else val_size + train_subset
    x_val, x_train = x_train[:val_size], x_train[val_size:end]
    if end is not None:  # a subset: copies, so the rest of the set is freed
        x_val, x_train = x_val.clone(), x_train.clone()
    return Splits(x_train, y_train[val_size:end], x_val, y_train[:val_size], x_test, y_test, info=info)


def permute_rows_(x: torch.Tensor, order: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """x[:] = x[order], in place, holding at most `chunk` rows aside: along each cycle of the permutation, rows move
    up one place a chunk at a time."""
    nxt = order.tolist()
    seen = bytearray(len(nxt))
    for start in range(len(nxt)):
        if seen[start] or nxt[start] == start:
            continue
        cycle, i = [], start
        while not seen[i]:
            seen[i] = 1
            cycle.append(i)
            i = nxt[i]
        first = x[cycle[0]].clone()
        c = torch.tensor(cycle)
        for k in range(0, len(cycle) - 1, chunk):  # new x[c[k]] = old x[c[k + 1]]
            src = c[k + 1:k + 1 + chunk]
            x.index_copy_(0, c[k:k + len(src)], x.index_select(0, src))
        x[cycle[-1]] = first
    return x


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], exact (from each channel's histogram, without a
    float copy of the images)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        n = counts.sum()
        mean = float((counts * values).sum() / n)
        var = float((counts * (values - mean) ** 2).sum() / n)
        means.append(round(mean, 6))
        stds.append(round(max(var, 1e-12) ** 0.5, 6))
    return tuple(means), tuple(stds)


# -- the search's data, as its settings name it ---------------------------------------------------------------
def read_data(config: config_mod.SearchConfig, val_size: int = VAL_SIZE) -> Splits:
    """The search's data as `config` names it, in memory on the CPU; an image folder is decoded once and cached under
    <results-dir>/.cache."""
    return load(config.dataset, config.data_dir, val_size=val_size, train_subset=config.train_subset,
                image_size=config.image_size, cache_dir=Path(config.results_dir) / CACHE_DIR)


def recorded_data(info: DataInfo, config: config_mod.SearchConfig) -> config_mod.SearchConfig:
    """`config` set to read the data `info` records again: a torchvision set under --data-dir (else $NAS_DATA_DIR),
    or the image folder or npz file it names (--data-dir, if given, where it has moved), at the recorded size."""
    kind, _, where = info.source.partition(":")
    if kind in DATASETS and not where:
        data_dir = config.data_dir
    elif kind in ("folder", "npz"):
        data_dir = config.data_dir or where
    else:
        raise DataError(f"the model was trained on {info.source!r}, which cannot be read again; "
                             f"only a torchvision set, an image folder or an npz file can be")
    _, h, w = info.shape
    # square: resized to HxH, or already that size (a no-op); images of another shape were never resized
    return dataclasses.replace(config, dataset=kind, data_dir=data_dir, image_size=h if h == w else None)


def check_fits(splits: Splits, shape: tuple[int, int, int], classes: int, what: str) -> None:
    """A DataError unless the data holds images of `shape` (C, H, W) in `classes` classes, as `what` says."""
    held = (tuple(splits.info.shape), len(splits.info.classes))
    if held != (tuple(shape), classes):
        raise DataError(f"{splits.info.source}: holds {held[0]} images in {held[1]} classes, but {what} "
                             f"{tuple(shape)} in {classes}")


def load_data(config: config_mod.SearchConfig, device: torch.device, val_size: int = VAL_SIZE) -> Splits:
    return to_device(read_data(config, val_size), device)


def to_device(splits: Splits, device: torch.device) -> Splits:
    """On CUDA the data lives on the GPU; channels_last makes the convolutions faster on a CPU. uint8 images stay as
    they are (4x smaller than floats, and not copied): the trainer normalises each chunk it gathers into channels_last
    floats (nas.data.normalise)."""
    splits = splits.to(device)
    for name in ("x_train", "x_val", "x_test"):
        x = getattr(splits, name)
        if x.is_floating_point():
            setattr(splits, name, x.contiguous(memory_format=torch.channels_last))
    return splits
