"""nas.space.tflm_budget's estimates against TensorFlow Lite Micro: the tensor arena and the .tflite size of int8 exports.

    python bench/tflm_arena.py             # R1, R2, R4, 30 networks drawn from the two MNIST spaces, 3 GELU ones
    python bench/tflm_arena.py --count 10 --seed 1
    python bench/tflm_arena.py --shape 3,32,32 --classes 10   # CIFAR-shaped colour data (no R networks)

Each network is exported as nas.deploy.tflite_export does it (litert-torch, ai-edge-quantizer's full-integer int8, the
metadata, no tensor names); TFLM's recording allocator measures its arena after one inference, and the file's size is
taken. Both are set against the estimates from the spec alone, one line per network, then the worst and median ratios.

The drawn networks (seeded) come from search_spaces/mnist.toml (one in three) and mnist_broad.toml, at budgets
log-uniform from 3k to 25k params; the broad space's block kind, head, residual, pool kind and placement, activation
(ReLU, SiLU) and BatchNorm are dealt round-robin, each in its own shuffled order, so that every choice appears. A
network whose export fails is shown and another drawn. TFLM has no GELU kernel: --gelu GELU networks are drawn
besides, for their file size only (and R4, a GELU network, likewise).

Weights are random, but BatchNorm statistics are drawn as training leaves them: with PyTorch's initial ones every
folded bias is zero and the converter merges equal constants into one tensor, which a trained network never has.
Targets: every arena estimate at or above its measurement and at most 10% over; every file estimate within 5%. Exits
with code 1 if one fails.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import run_benchmark  # noqa: E402

ARENA_OVER, FLASH_WITHIN = 1.10, 0.05
BUDGETS = (3000, 25000)
# the broad space's choices dealt round-robin, each key in its own shuffled order
DEALT = {"block": ["conv", "separable", "bottleneck"],
         "head": ["gap", "conv1x1_gap", "flatten_linear", "flatten_mlp"],
         "residual": ["none", "identity", "conv1x1"], "pool_placement": ["early", "late"], "pool": ["max", "avg"],
         "bn": [True, False], "activation": ["relu", "silu"]}
SHOWN = ("block", "head", "residual", "pools", "pool", "pool_placement", "activation", "bn")


def draws(seed: int, gelu: bool = False, shape=(1, 28, 28), classes: int = 10):
    """Endless (label, candidate, layout text) drawn from the two spaces, laid out for `shape` images in `classes`
    classes; `gelu`: from the broad one, with GELU."""
    import optuna

    from nas.space.space_file import SPACES_DIR, load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spaces = {name: load_space(SPACES_DIR / f"{name}.toml") for name in ("mnist", "mnist_broad")}
    stream = seed + 1000 * gelu  # the GELU draws are a stream of their own
    studies = {name: optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=stream)) for name in spaces}
    rng = random.Random(stream)
    dealt = {key: [] for key in DEALT}
    for i in itertools.count():
        name = "mnist" if i % 3 == 0 and not gelu else "mnist_broad"
        budget = round(math.exp(rng.uniform(*map(math.log, BUDGETS))))
        if name == "mnist_broad":
            for key, values in DEALT.items():
                dealt[key] = dealt[key] or rng.sample(values, len(values))
            fixed = {key: dealt[key].pop() for key in DEALT}
            studies[name].enqueue_trial(fixed | ({"activation": "gelu"} if gelu else {}))
        trial = studies[name].ask()
        candidate = spaces[name].sample(trial, budget, shape, classes)
        arch = spaces[name].arch
        chosen = {key: trial.params.get(key, arch.get(key)) for key in SHOWN}
        layout = (f"{chosen['block']}/{chosen['head']}/res:{chosen['residual']}/{chosen['pools']}{chosen['pool']}"
                  f"-{chosen['pool_placement']}/{chosen['activation']}/{'bn' if chosen['bn'] else 'nobn'}")
        yield f"{'gelu' if gelu else name}#{i}@{budget // 1000}k", candidate, layout


def trained_like(net, seed: int) -> None:
    """Draws each BatchNorm's running statistics and affine weights as a trained network has them."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def measure(candidate, info, images, seed: int):
    """(file bytes, measured Arena or the reason there is none) of the candidate's export."""
    from nas.deploy import export, tflite_export, tflite_runtime
    from nas.space.build import build
    from nas.errors import UserError

    net = build(candidate.arch, seed=0).eval()
    trained_like(net, seed)
    model = export.Normalised(net, info).eval()
    with tflite_runtime.captured_output():
        fp32 = tflite_export.fp32_flatbuffer(model, info.shape)
        flatbuffer = tflite_export.int8_model(fp32, images, candidate, info)
    try:
        return len(flatbuffer), tflite_runtime.measured_arena(flatbuffer)
    except UserError as e:  # TFLM cannot run it
        return len(flatbuffer), str(e)


def first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:90] if text else type(e).__name__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30,
                        help="networks drawn and measured (one whose export fails is replaced); default 30")
    parser.add_argument("--gelu", type=int, default=3, help="GELU networks drawn besides, for the file size only")
    parser.add_argument("--seed", type=int, default=0, help="the draw's seed")
    parser.add_argument("--shape", type=lambda s: tuple(map(int, s.split(","))), default=(1, 28, 28),
                        help="the images' C,H,W; default 1,28,28 (MNIST's)")
    parser.add_argument("--classes", type=int, default=10, help="the data's classes; default 10")
    parser.add_argument("--calibration", type=int, default=50, help="random calibration images per export")
    args = parser.parse_args()

    from nas.deploy import tflite_export, tflite_runtime

    with tflite_runtime.captured_output():  # importing the toolchain logs to stderr
        tflite_export.require()
    import torch

    from nas.space import references
    from nas.data import DATASETS, DataInfo

    mnist = args.shape == (1, 28, 28) and args.classes == 10
    if mnist:
        info = DataInfo("mnist", args.shape, DATASETS["mnist"].classes, *DATASETS["mnist"].mean_std)
    else:  # a mean and std per channel, unequal as real colour data has them (equal ones would fold as one channel)
        c = args.shape[0]
        info = DataInfo("images", args.shape, tuple(f"class{i}" for i in range(args.classes)),
                        tuple(0.4 + 0.05 * i for i in range(c)), tuple(0.25 + 0.02 * i for i in range(c)))
    images = (torch.rand((args.calibration, *info.shape), generator=torch.Generator().manual_seed(args.seed)) * 255
              ).to(torch.uint8)
    print(f"images {'x'.join(map(str, info.shape))}, {len(info.classes)} classes, seed {args.seed}")
    print(f"{'network':<20} {'params':>6}  {'layout':<52} {'head':>7} {'tail':>6} {'arena':>7} {'est':>7} "
          f"{'ratio':>6}  {'flash':>7} {'est':>7} {'ratio':>6}")
    results = Results()
    for label, candidate in references.all_references().items() if mnist else ():  # laid out for MNIST
        run(label, candidate, "reference", info, images, args.seed, results)
    drawn = draws(args.seed, shape=args.shape, classes=args.classes)
    while results.drawn < args.count and results.failed <= args.count:
        results.drawn += run(*next(drawn), info, images, args.seed, results) == "arena"
    for network in itertools.islice(draws(args.seed, True, args.shape, args.classes), args.gelu):
        run(*network, info, images, args.seed, results)

    print()
    ok = summarise("arena", results.arena, lambda r: 1 <= r <= ARENA_OVER, "within 10% above, never below")
    ok &= summarise("flash", results.flash, lambda r: abs(r - 1) <= FLASH_WITHIN, "within 5%")
    for label, reason in results.skipped:
        print(f"not measured: {label}: {reason}")
    print(f"estimate time per network (arena and flash, from the spec): median "
          f"{statistics.median(results.seconds) * 1000:.2f} ms, most {max(results.seconds) * 1000:.2f} ms")
    if not ok:
        sys.exit(1)


@dataclasses.dataclass
class Results:
    arena: list = dataclasses.field(default_factory=list)  # (estimate / measured, label)
    flash: list = dataclasses.field(default_factory=list)
    seconds: list = dataclasses.field(default_factory=list)  # per estimate
    skipped: list = dataclasses.field(default_factory=list)  # (label, why)
    drawn: int = 0  # drawn networks measured
    failed: int = 0  # exports that failed


def run(label: str, candidate, layout: str, info, images, seed: int, results: Results) -> str:
    """Estimates, exports and measures one network, prints its row; "arena", "flash" (TFLM cannot run it) or
    "failed" (the export failed)."""
    from nas.space import tflite_graph, tflm_budget
    from nas.space.budget import count_params

    spec = candidate.arch
    started = time.perf_counter()
    tflite_graph.graph.cache_clear()  # time the estimate from scratch
    estimate = tflm_budget.arena(spec)
    flash_estimate = tflm_budget.flash_bytes(spec, tflm_budget.metadata_bytes(candidate, info))
    results.seconds.append(time.perf_counter() - started)
    row = f"{label:<20} {count_params(spec):>6}  {layout[:52]:<52} "
    try:
        flash, measured = measure(candidate, info, images, seed)
    except Exception as e:  # noqa: BLE001 - any converter failure is reported, and the network skipped
        results.skipped.append((label, f"export failed: {first_line(e)}"))
        results.failed += 1
        print(row + f"export failed: {first_line(e)}", flush=True)
        return "failed"
    results.flash.append((flash_estimate / flash, label))
    flash_text = f"{flash:>7} {flash_estimate:>7} {flash_estimate / flash:>6.3f}"
    if isinstance(measured, str):
        why = f"no {'/'.join(tflite_graph.UNSUPPORTED)} kernel" if tflite_graph.unsupported_layers(spec) else measured
        results.skipped.append((label, f"TFLM cannot run it: {why}"))
        print(row + f"{'-':>7} {'-':>6} {'-':>7} {estimate.total:>7} {'-':>6}  {flash_text}  TFLM: {why}",
              flush=True)
        return "flash"
    results.arena.append((estimate.total / measured.total, label))
    print(row + f"{measured.head:>7} {measured.tail:>6} {measured.total:>7} {estimate.total:>7} "
                f"{estimate.total / measured.total:>6.3f}  {flash_text}", flush=True)
    return "arena"


def summarise(what: str, ratios: list[tuple[float, str]], holds, target: str) -> bool:
    """Prints one line on the estimate/measured ratios; whether the target holds for every one."""
    if not ratios:
        print(f"{what}: nothing measured")
        return False
    values = [r for r, _ in ratios]
    low, high = min(ratios), max(ratios)
    failed = [label for r, label in ratios if not holds(r)]
    below = sum(r < 1 for r in values)
    print(f"{what}: {len(values)} networks, estimate/measured median {statistics.median(values):.3f}, "
          f"lowest {low[0]:.3f} ({low[1]}), highest {high[0]:.3f} ({high[1]}), {below} below their measurement; "
          f"target ({target}) {'holds' if not failed else 'FAILS for ' + ', '.join(failed)}")
    return not failed


if __name__ == "__main__":
    run_benchmark(main)
