"""What a latency ceiling costs per candidate, and why the TorchScript exporter measures it.

    python bench/latency.py [--candidates 20] [--pairs 3]

1. Exporter time on R1, alternating torch's TorchScript exporter (dynamo=False, what nas.deploy.onnx_export uses) and its
   dynamo exporter, `--pairs` times; medians and their ratio.
2. For R1, R2, R4 and `--candidates` networks sampled from the default space at 25k (RandomSampler, seed 0): the
   latency `nas.deploy.latency.latency_ms` gives, and the seconds one uncached measurement takes (export, session, 35 runs).
   Measured twice, to show how much a latency repeats on this machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.space import references  # noqa: E402
from nas.space.build import build  # noqa: E402
from nas.deploy.latency import latency_ms  # noqa: E402
from nas.deploy.onnx_export import onnx_bytes  # noqa: E402
from nas.space.space_file import load_space  # noqa: E402
from common import run_benchmark  # noqa: E402


def export_seconds(model: torch.nn.Module, dynamo: bool) -> float:
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (torch.rand(1, 1, 28, 28),), dynamo=True, verbose=False)
        else:
            onnx_bytes(model, (1, 28, 28))
    return time.perf_counter() - started


def timed_latency(spec) -> tuple[float, float]:
    """(latency ms, seconds the uncached measurement took)."""
    started = time.perf_counter()
    value = latency_ms.__wrapped__(spec)
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    r1 = build(references.by_name("R1").arch).eval()
    export_seconds(r1, False), export_seconds(r1, True)  # warm-up: the first export of each loads its machinery
    times = {False: [], True: []}
    for _ in range(args.pairs):
        for dynamo in (False, True):
            times[dynamo].append(export_seconds(r1, dynamo))
    script, dyn = statistics.median(times[False]), statistics.median(times[True])
    print(f"export R1: TorchScript {script:.3f} s, dynamo {dyn:.3f} s (medians of {args.pairs}); dynamo / "
          f"TorchScript {dyn / script:.1f}x")

    space = load_space()
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    specs = [(name, references.by_name(name).arch) for name in references.all_references()]
    for i in range(args.candidates):
        specs.append((f"sample {i}", space.sample(study.ask(), 25_000).arch))
    costs, spreads = [], []
    print(f"{'network':<10} {'ms (1st)':>9} {'ms (2nd)':>9} {'cost s':>7}")
    for name, spec in specs:
        (first, cost), (second, _) = timed_latency(spec), timed_latency(spec)
        costs.append(cost)
        spreads.append(abs(second - first) / first)
        print(f"{name:<10} {first:>9.3f} {second:>9.3f} {cost:>7.3f}")
    print(f"measurement cost per candidate: median {statistics.median(costs):.3f} s, max {max(costs):.3f} s; "
          f"repeat difference: median {statistics.median(spreads):.1%}, max {max(spreads):.1%}")


if __name__ == "__main__":
    run_benchmark(main)
