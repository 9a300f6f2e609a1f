"""Speed figures for the search-speed issue, printed in one run on this machine.

    python bench/throughput.py [--data-dir DIR] [--runs 3] [--candidates 10000]

1. Per-epoch seconds of R1 with its recipe (Adam, batch 64): the usual torchvision DataLoader loop
   (ToTensor + Normalize per image) against this project's trainer, alternating A B A B; medians and ratio.
2. The budget filter: milliseconds per candidate over freshly sampled candidates (cache cleared).
3. Overhead share of a whole trial: everything that is not forward, backward or optimizer steps.

Never run it beside another training: two trainings on two cores oversubscribe and distort everything.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nas import data as data_mod  # noqa: E402
from nas import export  # noqa: E402
from nas.budget import count_params  # noqa: E402
from nas.build import build  # noqa: E402
from nas.references import by_name  # noqa: E402
from nas.search import Objective, SearchConfig, prepare_model, to_device  # noqa: E402
from nas.space import load_space  # noqa: E402
from nas.train import make_optimizer, train  # noqa: E402


def dataloader_epoch(root: Path, indices: torch.Tensor) -> float:
    """What users run today: torchvision MNIST, per-image ToTensor + Normalize, DataLoader batch 64, Adam."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    ds = Subset(datasets.MNIST(str(root), train=True, download=False, transform=tf), indices.tolist())
    r1 = by_name("R1")
    model = build(r1.arch, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=r1.recipe.lr, weight_decay=r1.recipe.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    for x, y in DataLoader(ds, batch_size=64, shuffle=True):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return time.perf_counter() - start


def trainer_epoch(splits) -> float:
    r1 = by_name("R1")
    return train(prepare_model(r1, 0, torch.device("cpu")), r1.recipe, splits).train_seconds


def unpacked_root(src: Path) -> Path:
    """torchvision's MNIST class reads the unzipped IDX files; unpack a copy once."""
    root = Path(tempfile.mkdtemp(prefix="bench-mnist-"))
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data_mod.FILES.values():
        found = data_mod._find(data_mod.raw_dir("mnist", src), name)
        with (gzip.open(found) if found.suffix == ".gz" else open(found, "rb")) as f, open(raw / name, "wb") as out:
            shutil.copyfileobj(f, out)
    return root


def epoch_speed(data_dir: Path, runs: int) -> None:
    splits = to_device(data_mod.load("mnist", data_dir), torch.device("cpu"))
    order = torch.randperm(60_000, generator=torch.Generator().manual_seed(data_mod.SPLIT_SEED))
    train_idx = order[data_mod.VAL_SIZE:]
    root = unpacked_root(data_dir)
    loop, ours = [], []
    try:
        for i in range(runs):
            loop.append(dataloader_epoch(root, train_idx))
            ours.append(trainer_epoch(splits))
            print(f"  run {i + 1}: DataLoader loop {loop[-1]:.1f} s, project trainer {ours[-1]:.1f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    a, b = statistics.median(loop), statistics.median(ours)
    print(f"per-epoch R1 (Adam, batch 64, {len(train_idx):,} images, {torch.get_num_threads()} threads): "
          f"DataLoader loop median {a:.1f} s, project trainer median {b:.1f} s, speed-up {a / b:.2f}x")


def filter_speed(n: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    start = time.perf_counter()
    candidates = []
    for _ in range(n):
        trial = study.ask()
        candidates.append(space.sample(trial, 25_000))
        study.tell(trial, 0.0)
    sample_s = time.perf_counter() - start
    count_params.cache_clear()  # the sampler's width search warmed it; time the filter cold
    costs = []
    over = 0
    start = time.perf_counter()
    for c in candidates:
        t = time.perf_counter()
        over += count_params(c.arch) >= 25_000
        costs.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    print(f"budget filter: {n:,} candidates checked in {total:.1f} s, median {statistics.median(costs) * 1e3:.2f} ms, "
          f"p90 {sorted(costs)[int(0.9 * n)] * 1e3:.2f} ms per candidate ({over} over budget); "
          f"sampling them took {sample_s:.1f} s ({sample_s / n * 1e3:.1f} ms each, budget-aware width search included)")


def overhead_share(data_dir: Path) -> None:
    """A whole trial through the real Objective and storage, against its pure forward/backward/step time."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = to_device(data_mod.load("mnist", data_dir), torch.device("cpu"))
    r1 = by_name("R1")
    # pure compute: the same steps on one pre-sliced batch, no slicing, no evaluation, no Optuna
    model = prepare_model(r1, 0, torch.device("cpu"))
    opt = make_optimizer(model, r1.recipe)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = splits.x_train[:64], splits.y_train[:64]
    steps = len(splits.x_train) // 64
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    compute = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        config = SearchConfig(trials=1, quiet=True, device="cpu", results_dir=tmp, warm_start=True)
        storage = f"sqlite:///{tmp}/bench.db"
        study = optuna.create_study(storage=storage, direction="maximize")
        study.enqueue_trial({}, user_attrs={"reference": "R1"})
        objective = Objective(config, load_space(), splits, torch.device("cpu"),
                              export.artifact_store(Path(tmp) / "a"), Path(tmp) / "s")
        start = time.perf_counter()
        study.optimize(objective, n_trials=1)
        whole = time.perf_counter() - start
    share = 1 - compute / whole
    print(f"overhead: whole R1 trial {whole:.1f} s (ask, filter, train, 4 pruner readings, final val+test "
          f"evaluation, weights artifact, storage) vs {compute:.1f} s of forward/backward/step: {share:.1%} overhead")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=data_mod.resolve_root(None))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--candidates", type=int, default=10_000)
    p.add_argument("--only", choices=("epoch", "filter", "overhead"))
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d %H:%M')}")
    if args.only in (None, "filter"):
        filter_speed(args.candidates)
    if args.only in (None, "epoch"):
        epoch_speed(args.data_dir, args.runs)
    if args.only in (None, "overhead"):
        overhead_share(args.data_dir)


if __name__ == "__main__":
    main()
