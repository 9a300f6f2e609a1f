"""Weight EMA (issue 17): the hand-written `nas.engine.train._Ema` against torch's AveragedModel doing the same average.

    python bench/ema.py [--data-dir DIR] [--pairs 7] [--updates 2000] [--epoch-pairs 3] [--images 20000]

1. Values: both averages after 300 SGD steps on R1 and on a default-space candidate; max abs difference.
2. Microseconds per update on the same two networks, alternating A B A B, at 1 and 2 threads; medians and ratio.
3. One epoch through nas.engine.train.train on real MNIST (1 thread, EMA decay 0.99), alternating A B A B: training-loop
   seconds, medians and ratio, and the validation accuracy each reaches.

Never run it beside another training: two trainings on two cores oversubscribe and distort everything.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import optuna
import torch
from torch.optim.swa_utils import AveragedModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nas import data as data_mod  # noqa: E402
from nas.engine import train as train_mod  # noqa: E402
from nas.engine.device import prepare_model  # noqa: E402
from nas.data import to_device
from nas.space.references import by_name  # noqa: E402
from nas.space.space_file import load_space  # noqa: E402
from common import run_benchmark  # noqa: E402

HAND = train_mod._Ema


class LibEma:
    """The same warm-up EMA through AveragedModel: its first update copies, so it is made at construction, like
    _Ema's deep copy, and the n_averaged it then passes counts the updates since, like _Ema.updates."""

    def __init__(self, model: torch.nn.Module, decay: float):
        @torch.no_grad()
        def average(avg, cur, n):
            if avg[0].dtype.is_floating_point:
                n = int(n)
                torch._foreach_lerp_(avg, cur, 1 - min(decay, (1 + n) / (10 + n)))
            else:  # BatchNorm's batch counts: copied, as _Ema does
                torch._foreach_copy_(avg, cur)

        self.averaged = AveragedModel(model, multi_avg_fn=average, use_buffers=True)
        self.averaged.update_parameters(model)
        self.model = self.averaged.module

    def update(self, model: torch.nn.Module) -> None:
        self.averaged.update_parameters(model)


def networks():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    return {"R1": by_name("R1"), "default-space candidate": load_space().sample(trial, 25_000)}


def check_values(candidate) -> float:
    model = prepare_model(candidate, 0, torch.device("cpu"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    emas = HAND(model, 0.99), LibEma(model, 0.99)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        x = torch.randn(16, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (16,), generator=g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for ema in emas:
            ema.update(model)
    a, b = (ema.model.state_dict() for ema in emas)
    assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype for k in a)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def per_update_us(cls, model, updates: int) -> float:
    ema = cls(model, 0.99)
    start = time.perf_counter()
    for _ in range(updates):
        ema.update(model)
    return (time.perf_counter() - start) / updates * 1e6


def epoch(cls, candidate, splits) -> tuple[float, float]:
    train_mod._Ema = cls
    try:
        recipe = dataclasses.replace(candidate.recipe, ema=0.99)
        result = train_mod.train(prepare_model(candidate, 0, torch.device("cpu")), recipe, splits)
    finally:
        train_mod._Ema = HAND
    return result.train_seconds, result.val_acc


def alternate(pairs: int, a, b) -> tuple[list, list]:
    runs = [[], []]
    for _ in range(pairs):
        for i, run in enumerate((a, b)):
            runs[i].append(run())
    return runs[0], runs[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--epoch-pairs", type=int, default=3)
    parser.add_argument("--images", type=int, default=20_000)
    args = parser.parse_args()
    nets = networks()
    print(f"torch {torch.__version__}; A = hand-written _Ema, B = AveragedModel")

    torch.set_num_threads(1)
    for name, candidate in nets.items():
        print(f"values, {name}: max abs difference after 300 updates {check_values(candidate):g}")

    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, candidate in nets.items():
            model = prepare_model(candidate, 0, torch.device("cpu"))
            a, b = alternate(args.pairs, lambda: per_update_us(HAND, model, args.updates),
                             lambda: per_update_us(LibEma, model, args.updates))
            ma, mb = statistics.median(a), statistics.median(b)
            print(f"per update, {threads} thread(s), {name} ({len(model.state_dict())} tensors): "
                  f"A {ma:.1f} us, B {mb:.1f} us, B/A {mb / ma:.2f}")

    torch.set_num_threads(1)
    splits = to_device(data_mod.load("mnist", args.data_dir, train_subset=args.images), torch.device("cpu"))
    for name, candidate in nets.items():
        a, b = alternate(args.epoch_pairs, lambda: epoch(HAND, candidate, splits), lambda: epoch(LibEma, candidate, splits))
        ma, mb = (statistics.median(s for s, _ in runs) for runs in (a, b))
        print(f"epoch, 1 thread, {name} (batch {candidate.recipe.batch_size}, {args.images} images): "
              f"A {ma:.2f} s {[round(s, 2) for s, _ in a]}, B {mb:.2f} s {[round(s, 2) for s, _ in b]}, "
              f"B/A {mb / ma:.3f}; val acc A {sorted({v for _, v in a})}, B {sorted({v for _, v in b})}")


if __name__ == "__main__":
    run_benchmark(main)
