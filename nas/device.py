"""Where the work runs: the device, the default number of workers, and data and models placed on it."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from nas import data
from nas.build import build
from nas.config import SearchConfig
from nas.errors import SearchError
from nas.spec import Candidate

CACHE_DIR = ".cache"  # under the results folder: decoded image folders (nas.image_folder.read_folder)


def resolve_device(name: str) -> torch.device:
    """"auto": cuda, then mps, then cpu. An unavailable device named outright is a SearchError."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SearchError("--device cuda: no CUDA GPU is available here; use --device cpu or --device auto")
    if name == "mps" and not mps:
        raise SearchError("--device mps: Apple's MPS is not available here; use --device cpu or --device auto")
    return torch.device(name)


def default_jobs(device: torch.device) -> int:
    """One single-threaded worker per core on a CPU (small convolutions scale poorly across threads), one worker
    on an accelerator."""
    return (os.cpu_count() or 1) if device.type == "cpu" else 1


def read_data(config: SearchConfig, val_size: int = data.VAL_SIZE) -> data.Splits:
    """The search's data as `config` names it, in memory on the CPU; an image folder is decoded once and cached under
    <results-dir>/.cache."""
    return data.load(config.dataset, config.data_dir, val_size=val_size, train_subset=config.train_subset,
                     image_size=config.image_size, cache_dir=Path(config.results_dir) / CACHE_DIR)


def recorded_data(info: data.DataInfo, config: SearchConfig) -> SearchConfig:
    """`config` set to read the data `info` records again: a torchvision set under --data-dir (else $NAS_DATA_DIR),
    or the image folder or npz file it names (--data-dir, if given, where it has moved), at the recorded size."""
    kind, _, where = info.source.partition(":")
    if kind in data.DATASETS and not where:
        data_dir = config.data_dir
    elif kind in ("folder", "npz"):
        data_dir = config.data_dir or where
    else:
        raise data.DataError(f"the model was trained on {info.source!r}, which cannot be read again; "
                             f"only a torchvision set, an image folder or an npz file can be")
    _, h, w = info.shape
    # square: resized to HxH, or already that size (a no-op); images of another shape were never resized
    return dataclasses.replace(config, dataset=kind, data_dir=data_dir, image_size=h if h == w else None)


def check_fits(splits: data.Splits, shape: tuple[int, int, int], classes: int, what: str) -> None:
    """A DataError unless the data holds images of `shape` (C, H, W) in `classes` classes, as `what` says."""
    held = (tuple(splits.info.shape), len(splits.info.classes))
    if held != (tuple(shape), classes):
        raise data.DataError(f"{splits.info.source}: holds {held[0]} images in {held[1]} classes, but {what} "
                             f"{tuple(shape)} in {classes}")


def load_data(config: SearchConfig, device: torch.device, val_size: int = data.VAL_SIZE) -> data.Splits:
    return to_device(read_data(config, val_size), device)


def to_device(splits: data.Splits, device: torch.device) -> data.Splits:
    """On CUDA the data lives on the GPU; channels_last makes the convolutions faster on a CPU. uint8 images stay as
    they are (4x smaller than floats, and not copied): the trainer normalises each chunk it gathers into channels_last
    floats (nas.data.normalise)."""
    splits = splits.to(device)
    for name in ("x_train", "x_val", "x_test"):
        x = getattr(splits, name)
        if x.is_floating_point():
            setattr(splits, name, x.contiguous(memory_format=torch.channels_last))
    return splits


def prepare_model(candidate: Candidate, seed: int, device: torch.device) -> torch.nn.Module:
    return build(candidate.arch, seed=seed).to(device=device, memory_format=torch.channels_last)
