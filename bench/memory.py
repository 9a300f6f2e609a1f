"""Peak memory of one worker training on a large colour set: 100,000 32x32 RGB images must fit in 1.5 GiB.

    python bench/memory.py [--images 100000] [--size 32] [--threads 1]

Writes a synthetic npz of that size (uint8, NHWC, 10 classes), then, in a fresh process (so that making the file
does not count), loads it as a search worker does (nas.engine.device.load_data: nas.data.load, the hold-out, to_device),
trains a small network for one epoch through nas.engine.train.train, and prints the process's peak RSS from
resource.getrusage. Never run it beside another training.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import run_benchmark  # noqa: E402

LIMIT_GIB = 1.5


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def make(path: Path, images: int, size: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, images + images // 10)
    x = rng.integers(0, 200, (len(y), size, size, 3), dtype=np.uint8)
    x[:, :, :, 0] //= (1 + y % 3).astype(np.uint8)[:, None, None]  # something to learn: the red level follows the class
    n = images
    np.savez(path, x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:])


def measure(path: Path, threads: int) -> None:
    import torch

    from nas.config import SearchConfig
    from nas.data import load_data
    from nas.space.spec import ArchSpec, TrainRecipe
    from nas.space.blocks import Conv, GlobalAvgPool, Linear, Pool
    from nas.engine.train import train

    torch.set_num_threads(threads)
    after_import = peak_gib()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as results:
        splits = load_data(SearchConfig(dataset="npz", data_dir=str(path), results_dir=results), torch.device("cpu"))
    loaded, load_s = peak_gib(), time.perf_counter() - start
    info = splits.info
    stored = sum(getattr(splits, k).nbytes for k in ("x_train", "x_val", "x_test")) / 2**30
    arch = ArchSpec(blocks=(Conv(8, bn=True, act="relu"), Pool(), Conv(16, bn=True, act="relu"), Pool(),
                            GlobalAvgPool(), Linear(len(info.classes))),
                    input_shape=info.shape, num_classes=len(info.classes))
    from nas.space.build import build

    model = build(arch, seed=0).to(memory_format=torch.channels_last)
    result = train(model, TrainRecipe(optimizer="adam", lr=0.01, batch_size=128), splits, seed=0)
    print(f"{len(splits.x_train):,} training, {len(splits.x_val):,} hold-out, {len(splits.x_test):,} test images "
          f"{info.shape}, stored as {splits.x_train.dtype}: {stored:.2f} GiB (float32 would be {stored * 4:.2f} GiB)")
    print(f"peak RSS: {after_import:.2f} GiB after imports, {loaded:.2f} GiB after loading ({load_s:.1f} s), "
          f"{peak_gib():.2f} GiB after one epoch ({result.train_seconds:.0f} s, {result.steps} steps, "
          f"val {result.val_acc:.1%}, test {result.test_acc:.1%}); limit {LIMIT_GIB} GiB per worker: "
          f"{'within' if peak_gib() <= LIMIT_GIB else 'OVER'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a search's workers run with one each)")
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the fresh process's side
    args = p.parse_args()
    if args.measure:
        measure(args.measure, args.threads)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.npz"
        make(path, args.images, args.size)
        print(f"{path.stat().st_size / 2**20:,.0f} MiB npz: {args.images:,} training images {args.size}x{args.size} RGB",
              flush=True)
        subprocess.run([sys.executable, __file__, "--measure", str(path), "--threads", str(args.threads)], check=True)


if __name__ == "__main__":
    run_benchmark(main)
