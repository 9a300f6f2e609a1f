"""How often a search under one device ceiling proposes a candidate over it (issue 20: at most 20% in 50 trials).

For each single ceiling, at a value that binds for the default space at 25k on MNIST (the proposals' medians are
about 2.9 MFLOPs, 74 KB peak at fp32, 18 KB at int8 and 0.33 ms on the machine it was written on), runs the real
search (`nas.run.run`, TPE, with a small --train-subset so trials are quick) into a scratch results folder, then
prints the share of proposals rejected.

    python bench/ceilings.py                          # 50 trials per ceiling, 2,000 training images
    python bench/ceilings.py --trials 5 --only kb     # a quick check
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas import run as search  # noqa: E402
from nas.config import SearchConfig  # noqa: E402
from nas.results.report import trials_frame  # noqa: E402
from nas.engine.storage import open_storage  # noqa: E402
from nas.engine.study import load_study  # noqa: E402
from common import run_benchmark  # noqa: E402

# name -> the settings of one ceiling, binding for the default space at 25k
CEILINGS = {
    "mflops": dict(max_mflops=2.0),
    "kb": dict(max_peak_kb=48.0),
    "int8kb": dict(max_peak_kb=12.0, int8_memory=True),
    "latency": dict(max_latency_ms=0.2),
}


def rejected_share(settings: dict, args: argparse.Namespace, results: Path) -> tuple[int, dict, float]:
    """Runs one search under `settings`; (proposals, rejections by kind, seconds)."""
    config = SearchConfig(trials=args.trials, train_subset=args.train_subset, data_dir=args.data_dir, jobs=args.jobs,
                          seed=args.seed, device="cpu", results_dir=str(results), quiet=True, **settings)
    started = time.perf_counter()
    search.run(config)
    seconds = time.perf_counter() - started
    study = load_study(open_storage(config.storage_url), config.study_name(search.load_space(config.space)))
    df = trials_frame(study)
    return len(df), df["rejected"].value_counts().to_dict(), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--train-subset", type=int, default=2000)
    parser.add_argument("--data-dir", default=os.environ.get("NAS_DATA_DIR"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, help="the latency ceiling (default 0.2; it is this machine's)")
    parser.add_argument("--only", help="comma-separated ceilings: " + ", ".join(CEILINGS))
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(CEILINGS)
    if args.latency_ms:
        CEILINGS["latency"] = dict(max_latency_ms=args.latency_ms)
    print(f"{'ceiling':<36} {'proposals':>9} {'rejected':>8} {'share':>6} {'time':>7}  by kind")
    with tempfile.TemporaryDirectory() as scratch:
        for name in chosen:
            settings = CEILINGS[name]
            proposals, kinds, seconds = rejected_share(settings, args, Path(scratch) / name)
            rejected = sum(kinds.values())
            label = ", ".join(f"{k}={v}" for k, v in settings.items())
            print(f"{label:<36} {proposals:>9} {rejected:>8} {rejected / proposals:>6.1%} {seconds:>6.0f}s  "
                  f"{kinds or '-'}", flush=True)


if __name__ == "__main__":
    run_benchmark(main)
