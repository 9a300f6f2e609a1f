"""What the live progress display costs a search: the same searches with it (A) and without it (B), alternating
A B A B after one uncounted warm-up, each into its own fresh results folder; prints each run's wall and training seconds, then the medians and
the B/A ratios.

The random sampler with one seed draws the same candidates in every run, so both arms train the same networks.
Progress is off in B by replacing `nas.engine.progress.shown` with a context that shows nothing; the per-trial lines and the
summary print in both (to a file, so no terminal is involved: the plain-lines path, which reads the storage just as
the terminal's bar does).

    NAS_DATA_DIR=../shared/datasets python bench/progress_overhead.py --pairs 2 --trials 8 --train-subset 10000
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from nas.engine import progress  # noqa: E402
from nas import run
from nas.config import SearchConfig  # noqa: E402


def one_search(args, shown: bool) -> tuple[float, float]:
    """(wall seconds, summed training seconds) of one search into a fresh folder."""
    with tempfile.TemporaryDirectory(prefix="nas-progress-") as folder, open(Path(folder) / "out.log", "w") as log:
        config = SearchConfig(trials=args.trials, train_subset=args.train_subset, sampler="random", seed=args.seed,
                              jobs=args.jobs, results_dir=folder, study="s")
        real = progress.shown
        if not shown:
            progress.shown = lambda *a, **k: contextlib.nullcontext()
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(log):
                run.run(config)
        finally:
            progress.shown = real
        wall = time.perf_counter() - started
        study = optuna.load_study(study_name="s", storage=config.storage_url)
        return wall, sum(t.user_attrs.get("train_seconds", 0.0) for t in study.get_trials())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--train-subset", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    one_search(args, True)  # warm-up, not counted: the first search in a process pays for imports and caches
    runs = {True: [], False: []}
    for pair in range(args.pairs):
        for shown in (True, False):
            wall, trained = one_search(args, shown)
            runs[shown].append((wall, trained))
            print(f"pair {pair} {'A with progress' if shown else 'B without':<16} wall {wall:6.1f} s, "
                  f"training {trained:6.1f} s", flush=True)
    for i, what in enumerate(("wall", "training")):
        a, b = (statistics.median(r[i] for r in runs[k]) for k in (True, False))
        print(f"median {what}: with progress {a:.1f} s, without {b:.1f} s; without / with = {b / a:.3f}")


if __name__ == "__main__":
    main()
