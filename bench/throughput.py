"""Speed figures for the search-speed issue, printed in one run on this machine.

    python bench/throughput.py [--data-dir DIR] [--runs 3] [--candidates 10000] [--threads N]

1. Per-epoch seconds of R1 with its recipe (Adam, batch 64): the usual torchvision DataLoader loop
   (ToTensor + Normalize per image) against this project's trainer, alternating A B A B; medians and ratio.
2. The budget filter: milliseconds per candidate over freshly sampled candidates (cache cleared).
3. Overhead share of whole trials (R1, and default-space candidates): everything that is not forward, backward or
   optimizer steps, timed inside the same trials.

Never run it beside another training: two trainings on two cores oversubscribe and distort everything.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
import torch.optim.optimizer as optimizer_hooks

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nas import data as data_mod  # noqa: E402
from nas.data import sources  # noqa: E402
from nas.deploy import export  # noqa: E402
from nas.engine import objective as objective_mod  # noqa: E402
from nas.engine import study as study_mod  # noqa: E402
from nas.space.budget import count_params  # noqa: E402
from nas.space.build import build  # noqa: E402
from nas.space.references import by_name  # noqa: E402
from nas.config import SearchConfig  # noqa: E402
from nas.engine.device import prepare_model  # noqa: E402
from nas.data import to_device
from nas.engine.objective import Objective  # noqa: E402
from nas.engine.workers import settle_heap  # noqa: E402
from nas.space.space_file import load_space  # noqa: E402
from nas.engine.train import train  # noqa: E402
from common import run_benchmark  # noqa: E402


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
    for name in sources.FILES.values():
        found = sources.find_file(sources.raw_dir("mnist", src), name)
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


class ComputeClock:
    """Seconds spent in training steps (forward pass and loss, backward pass, optimizer steps), timed inside real
    trials: from each training forward pass of a trial's network to the end of the last optimizer step after it.

    Everything else in a trial's wall time is overhead: sampling, the filter, model build, batch slicing, the
    LR schedule and EMA, evaluations, Optuna and its storage, the weights artifact.
    """

    def __init__(self):
        self.seconds = 0.0
        self._step_started = None

    def __enter__(self):
        # a hook on the trial's root network only: a global module hook would slow every layer call it times
        self._prepare_model = prepare = objective_mod.prepare_model
        objective_mod.prepare_model = lambda *args, **kwargs: self._watch(prepare(*args, **kwargs))
        self._handle = optimizer_hooks.register_optimizer_step_post_hook(self._stepped)
        return self

    def __exit__(self, *exc):
        objective_mod.prepare_model = self._prepare_model
        self._handle.remove()

    def _watch(self, model: torch.nn.Module) -> torch.nn.Module:
        model.register_forward_pre_hook(self._forward)
        return model

    def _forward(self, module, args):
        if module.training:  # evaluation runs on eval-mode copies, which carry the hook too
            self._step_started = time.perf_counter()

    def _stepped(self, optimizer, args, kwargs):
        # a step may run two optimizers (Muon for the conv filters, then the other for the rest): each one's time
        # counts, from the end of the one before it
        if self._step_started is not None:
            now = time.perf_counter()
            self.seconds += now - self._step_started
            self._step_started = now


def overhead_share(data_dir: Path, trials: int) -> None:
    """Whole trials through the real Objective, sampler, pruner and SQLite storage, against the compute inside them."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    splits = to_device(data_mod.load("mnist", data_dir), torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        config = SearchConfig(trials=1, quiet=True, device="cpu", results_dir=tmp, warm_start=True)
        study = optuna.create_study(storage=f"sqlite:///{tmp}/bench.db", direction="maximize",
                                    sampler=study_mod.make_sampler("tpe", 0), pruner=study_mod.make_pruner())
        objective = Objective(config, load_space(), splits, torch.device("cpu"),
                              export.artifact_store(Path(tmp) / "a"), Path(tmp) / "s")

        def trial(reference: str | None) -> tuple[float, float] | str:
            """(wall seconds, compute seconds) of one trained trial, or why it has none."""
            if reference:
                study.enqueue_trial({}, user_attrs={"reference": reference})
            with ComputeClock() as clock:
                start = time.perf_counter()
                # settle_heap: as a worker does after each trial
                study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[settle_heap])
                wall = time.perf_counter() - start
            last = study.trials[-1]
            if "val_acc" in last.user_attrs:
                return wall, clock.seconds
            return last.user_attrs.get("rejected") or last.user_attrs.get("fail_reason") or last.state.name.lower()

        trial("R1")  # warm-up, not reported: a worker's first trial also pays torch's lazy imports (below)
        for label, reference in (("R1 (Adam, batch 64)", "R1"), ("default-space candidates (TPE start-up)", None)):
            runs, skipped = [], []
            while len(runs) < trials and len(skipped) < 5 * trials:
                run = trial(reference)
                (runs if isinstance(run, tuple) else skipped).append(run)
            shares = [1 - compute / wall for wall, compute in runs]
            walls = ", ".join(f"{w:.1f} s ({1 - c / w:.1%})" for w, c in runs)
            print(f"overhead, {label}: {len(runs)} trials {walls}; median share {statistics.median(shares):.1%} "
                  f"not in forward/backward/optimizer steps"
                  + (f"; {len(skipped)} not trained to the end, skipped: {', '.join(skipped)}" if skipped else ""),
                  flush=True)
    code = "import time, torch; t = time.perf_counter(); import torch._dynamo; print(time.perf_counter() - t)"
    once = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    print(f"overhead, once per worker process: torch's lazy import of torch._dynamo (first optimizer built) {once:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=data_mod.resolve_root(None))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--candidates", type=int, default=10_000)
    p.add_argument("--trials", type=int, default=3, help="trials per kind for the overhead share")
    p.add_argument("--only", choices=("epoch", "filter", "overhead"))
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own, one per core); a search's "
                                                "workers run with one each by default")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d %H:%M')}")
    if args.only in (None, "filter"):
        filter_speed(args.candidates)
    if args.only in (None, "epoch"):
        epoch_speed(args.data_dir, args.runs)
    if args.only in (None, "overhead"):
        overhead_share(args.data_dir, args.trials)


if __name__ == "__main__":
    run_benchmark(main)
