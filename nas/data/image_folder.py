"""Image folders in torchvision's ImageFolder layout, decoded once into uint8 (N, C, H, W) tensors and cached."""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from nas.data.resize import resize
from nas.data.sources import DataError, Raw, held_out_test
from nas.fileio import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CACHE_VERSION = 1
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


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
            x[i] = resize(t[None], size)[0]
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
    """A seeded, stratified 1/6 of each class held out as the test set (`held_out_test`)."""
    train, test = held_out_test([c for _, c in items])
    return [items[i] for i in train], [items[i] for i in test]


def _cache_key(root: Path, image_size, entries) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}\0{root}\0{image_size}".encode())
    for part, c, p in entries:
        st = p.stat()
        h.update(f"\0{part}/{c}/{p.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _write_cache(path: Path, raw: Raw) -> None:
    """Atomically; a cache that cannot be written is only a slower next start."""
    with contextlib.suppress(OSError), atomic_path(path) as tmp:
        torch.save({"x_train": raw.x_train, "y_train": raw.y_train, "x_test": raw.x_test, "y_test": raw.y_test,
                    "classes": list(raw.classes)}, tmp)
